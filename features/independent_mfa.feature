Feature: Independent MFA at the edge
  An MFA service at the gateway, independent of the identity provider,
  asks for a second factor per application policy: a security key,
  platform biometrics or a TOTP code. Its verification is bound to the
  user's session and device. A hijacked SSO session or a compromised
  identity provider opens nothing behind it (E5: no request reaches an
  MFA-protected app without a valid edge verification; E7: no TOTP code
  accepted twice, no cloned key accepted).

  In the default lab the source-code app ("code") requires a security key
  or platform biometrics; chat follows the organization, which asks for
  nothing.

  Background:
    Given the default lab

  Scenario: Each application's policy decides whether a second factor is asked for
    Given bob owns a security key "yubikey"
    And bob has signed in on the device
    When bob opens "https://chat.lab.test/" in the browser
    Then it gets HTTP 200
    # Refused while bob has no factor of an allowed type.
    When bob opens "https://code.lab.test/" in the browser
    Then it gets HTTP 403
    When bob enrols the security key "yubikey" as security_key
    Then it gets HTTP 201
    # Stuck at the MFA prompt without the key.
    When bob opens "https://code.lab.test/" in the browser
    Then it gets HTTP 401
    When bob opens "https://code.lab.test/" in the browser, answering MFA with "yubikey"
    Then it gets HTTP 200
    And the oracle finds no violation

  Scenario: Platform biometrics satisfy a policy that allows them
    Given bob's laptop has a platform authenticator with biometrics "hello"
    And bob has signed in on the device
    When bob enrols the platform authenticator "hello" as biometrics
    Then it gets HTTP 201
    When bob opens "https://code.lab.test/" in the browser, answering MFA with "hello"
    Then it gets HTTP 200
    And the oracle finds no violation

  Scenario: A hijacked SSO session opens nothing behind the edge MFA
    Given bob owns a security key "yubikey"
    And bob has signed in on the device
    When bob enrols the security key "yubikey" as security_key
    And bob opens "https://code.lab.test/" in the browser, answering MFA with "yubikey"
    Then it gets HTTP 200
    When the attacker replays the browser's cookies against "https://code.lab.test/"
    Then it gets HTTP 401
    And the oracle finds no violation

  Scenario: Control: without the edge MFA the same hijack gets in
    Given the "code" application does not ask for a second factor
    And bob has signed in on the device
    When bob opens "https://code.lab.test/" in the browser
    Then it gets HTTP 200
    When the attacker replays the browser's cookies against "https://code.lab.test/"
    Then it gets HTTP 200
    And the oracle finds no violation

  @negative-control
  Scenario: The oracle catches a gateway that forwards without the edge verification
    Given a gateway that forwards without the edge MFA check (a known-bad build)
    And bob owns a security key "yubikey"
    And bob has signed in on the device
    When bob enrols the security key "yubikey" as security_key
    And bob opens "https://code.lab.test/" in the browser, answering MFA with "yubikey"
    And the attacker replays the browser's cookies against "https://code.lab.test/"
    Then it gets HTTP 200
    And the oracle reports a violation of E5 naming "without any edge MFA verification"

  Scenario: A compromised identity provider opens nothing that requires MFA
    Given the identity provider is compromised and vouches for anyone
    And bob owns a security key "yubikey"
    And bob has signed in on the device
    When bob enrols the security key "yubikey" as security_key
    And the attacker opens "https://chat.lab.test/" signing in as bob with the password "not-bobs-password"
    Then it gets HTTP 200
    When the attacker opens "https://code.lab.test/" signing in as bob with the password "not-bobs-password"
    Then it gets HTTP 401
    When bob opens "https://code.lab.test/" in the browser, answering MFA with "yubikey"
    Then it gets HTTP 200
    And the oracle finds no violation

  Scenario: A TOTP code is accepted once, in its step and never after
    Given the organization requires a second factor for every application (allowed: totp, security_key; MFA session: 1h)
    And alice has an authenticator app "phone"
    And alice has signed in on the device
    When alice enrols the TOTP app "phone" as totp
    Then it gets HTTP 201
    When 30 seconds pass
    And alice opens "https://chat.lab.test/" in the browser, answering MFA with "phone"
    Then it gets HTTP 200
    When the attacker, with alice's phished password, opens "https://chat.lab.test/" typing the code "phone" showed last
    Then it gets HTTP 401
    When 29 seconds pass
    And the attacker, with alice's phished password, opens "https://chat.lab.test/" typing the code "phone" showed last
    Then it gets HTTP 401
    And the oracle finds no violation

  @negative-control
  Scenario: The oracle catches an MFA service that accepts a TOTP code twice
    Given the organization requires a second factor for every application (allowed: totp, security_key; MFA session: 1h)
    And an MFA service that accepts a TOTP code twice (a known-bad build)
    And alice has an authenticator app "phone"
    And alice has signed in on the device
    When alice enrols the TOTP app "phone" as totp
    And 30 seconds pass
    And alice opens "https://chat.lab.test/" in the browser, answering MFA with "phone"
    And the attacker, with alice's phished password, opens "https://chat.lab.test/" typing the code "phone" showed last
    Then it gets HTTP 200
    And the oracle reports a violation of E7 naming "accepted twice"

  Scenario: A cloned security key is refused once its counter falls behind
    Given the organization requires a second factor for every application (allowed: security_key; MFA session: 0s)
    And the "code" application requires a second factor (allowed: security_key; MFA session: 0s)
    And bob owns a security key "yubikey"
    And bob has signed in on the device
    When bob enrols the security key "yubikey" as security_key
    And bob opens "https://chat.lab.test/" in the browser, answering MFA with "yubikey"
    Then it gets HTTP 200
    When the attacker clones "yubikey" into "clone"
    And bob opens "https://code.lab.test/" in the browser, answering MFA with "yubikey"
    Then it gets HTTP 200
    When the attacker, with bob's phished password, opens "https://chat.lab.test/", answering MFA with "clone"
    Then it gets HTTP 401
    And the oracle finds no violation

  Scenario: The identity provider's own MFA claims do not downgrade the edge requirement
    Given the shipped scenario "mfa-downgrade"
    When it is run
    Then every step meets its expectation
    And the oracle finds no violation

  Scenario: A phishing proxy cannot relay a security key, and a relayed TOTP code is reported
    Given the shipped scenario "aitm-phishing-proxy"
    When it is run
    Then every step meets its expectation
    And the oracle finds no violation
    And a finding reports "phishable factor"

  Scenario: The first-factor enrollment gap is reported as a finding
    Given the shipped scenario "first-enrollment-race"
    When it is run
    Then every step meets its expectation
    And a finding reports "the attacker enrolled `attackers-key`"

  Scenario: An administrator-issued enrollment code closes the first-factor gap
    Given the shipped scenario "first-enrollment-gated"
    When it is run
    Then every step meets its expectation
    And the oracle finds no violation
    And there is no finding
