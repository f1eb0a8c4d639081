Feature: Mandatory authentication on the device
  From power-on, the device firewall blocks every flow except the sign-in
  flow until the user signs in. The exceptions are scoped by program AND
  the agent's service identity AND destination. When the device session
  expires or is revoked the lockdown comes back, and connections opened
  while signed in are cut at their next packet.

  Each scenario is played by the lab's engine on the default lab
  (fixtures/labs/default.toml); the oracle checks every flow and request
  of the run against the invariants (E1: no flow from a device without a
  live session outside the lockdown allow-list).

  Background:
    Given the default lab

  Scenario: From power-on nothing but the sign-in flow leaves the device
    When the device boots
    Then the agent is locked
    When the updater program fetches "https://updates.example.com/check"
    Then the device firewall blocks it
    When the browser program fetches "https://chat.lab.test/"
    Then the device firewall blocks it
    When alice signs in
    Then the agent is connected
    When the updater program fetches "https://updates.example.com/check"
    Then it gets HTTP 200
    And the oracle finds no violation

  Scenario: The sign-in exception belongs to the agent's service, not to its image path
    When the device boots
    And the user starts the program "auth-lookalike"
    And the auth-lookalike program fetches "https://idp.lab.test/.well-known/openid-configuration"
    Then the device firewall blocks it
    When the browser program fetches "https://idp.lab.test/.well-known/openid-configuration"
    Then the device firewall blocks it
    And the oracle finds no violation

  Scenario: When the session expires the lockdown returns and open connections are cut
    Given device sessions last 1 minute
    When the device boots
    And alice signs in
    And teams opens a long-lived connection "live" to "www.example.com:7000"
    Then it succeeds
    When 61 seconds pass
    And teams sends a line on the connection "live"
    Then the connection is cut
    When the updater program fetches "https://updates.example.com/check"
    Then nothing gets through
    When the agent is asked for its state
    Then the agent is locked
    And the oracle finds no violation

  Scenario: A revoked session is refused by the gateway at once and the device re-locks at its next check
    When the device boots
    And alice signs in
    And alice opens "https://chat.lab.test/" in the browser
    Then it gets HTTP 200
    When the administrator revokes alice's sessions
    Then 2 sessions are revoked
    When a script in the browser fetches "https://chat.lab.test/api/messages"
    Then it gets HTTP 401
    When 11 seconds pass
    And the agent is asked for its state
    Then the agent is locked
    When the updater program fetches "https://updates.example.com/check"
    Then nothing gets through
    And the oracle finds no violation

  @negative-control
  Scenario: The oracle catches an agent that does not re-lock at expiry
    Given device sessions last 1 minute
    And an agent that forgets to re-lock at expiry (a known-bad build)
    When the device boots
    And alice signs in
    And teams opens a long-lived connection "live" to "www.example.com:7000"
    And 61 seconds pass
    And teams sends a line on the connection "live"
    Then it succeeds
    And the oracle reports a violation of E1 naming "teams"
    And the oracle reports violations of exactly E1

  @negative-control
  Scenario: The oracle catches a lockdown that forgets IPv6
    Given the shipped scenario "ipv6-parity-broken"
    When it is run
    Then every step meets its expectation
    And the oracle reports violations of exactly E1
    And the run passes as the scenario declares
