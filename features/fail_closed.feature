Feature: Faults fail closed
  The lockdown lives in the operating system: persistent filters, with a
  boot-time copy that acts before the Base Filtering Engine (BFE) has
  loaded them. Only the permit that lifts the lockdown belongs to the
  running agent. So a crashed or upgrading agent, a BFE restart or a
  reboot leave the device locked, never open (E3: no lapse from the moment
  a fault begins until the agent reports again).

  Background:
    Given the default lab

  Scenario: A crashed agent leaves the device locked, and a crash while connected fails closed
    When the device boots
    And the agent is killed
    And the updater program fetches "https://updates.example.com/check"
    Then the device firewall blocks it
    When 6 seconds pass
    And alice signs in
    Then the agent is connected
    When teams opens a long-lived connection "chat" to "www.example.com:7000"
    And the agent is killed
    And teams sends a line on the connection "chat"
    Then the connection is cut
    When 6 seconds pass
    And the agent is asked for its state
    Then the agent is connected
    And the oracle finds no violation

  Scenario: A BFE restart while connected keeps the device locked until the agent is back
    When the device boots
    And alice signs in
    And BFE stops
    And the updater program fetches "https://updates.example.com/check"
    Then nothing gets through
    When BFE starts
    And the agent is asked for its state
    Then the agent is connected
    When the updater program fetches "https://updates.example.com/check"
    Then it gets HTTP 200
    And the oracle finds no violation

  Scenario: The gap of an agent upgrade is blocked, not open
    When the device boots
    And alice signs in
    And the agent is upgraded
    And the updater program fetches "https://updates.example.com/check"
    Then nothing gets through
    When 4 seconds pass
    And the agent is asked for its state
    Then the agent is connected
    And the oracle finds no violation

  Scenario: Programs that start before the agent, and reboots, never see an open device
    Given the shipped scenario "reboot-race"
    When it is run
    Then every step meets its expectation
    And the oracle finds no violation

  @negative-control
  Scenario: The oracle catches filters that die with the agent
    Given an agent that keeps its lockdown in a dynamic BFE session (a known-bad design)
    When the device boots
    And the agent is killed
    And the updater program fetches "https://updates.example.com/check"
    Then it gets HTTP 200
    And the oracle reports a violation of E3 naming "agent stopped"
    And the oracle reports violations of exactly E1 and E3

  @negative-control
  Scenario: The oracle catches static filters that leave the boot open
    Given the shipped scenario "reboot-race-static-filters"
    When it is run
    Then every step meets its expectation
    And the oracle reports violations of exactly E1 and E3
    And the run passes as the scenario declares

  Scenario: A transition grants no revocation grace
    When the device boots
    And alice signs in
    And teams opens a long-lived connection "chat" to "www.example.com:7000"
    And the administrator revokes alice's sessions
    And the device's network changes
    And the agent is asked for its state
    Then the agent is locked
    When teams sends a line on the connection "chat"
    Then the connection is cut
    When alice signs in
    And the device's network changes
    And the agent is asked for its state
    Then the agent is connected
    When the administrator revokes alice's sessions
    And the device sleeps
    And the device resumes
    And the agent is asked for its state
    Then the agent is locked
    And the oracle finds no violation

  Scenario: A known-bad agent that never re-locks lets a revoked session through a sleep (E3)
    Given an agent that forgets to re-lock at expiry (a known-bad build)
    When the device boots
    And alice signs in
    And the administrator revokes alice's sessions
    And the device sleeps
    And the device resumes
    And the updater program fetches "https://updates.example.com/check"
    Then the oracle reports a violation of E3
