//! What came of a step, and what a scenario expects of it.

use std::fmt;

/// What came of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The agent is in this state (`locked`, `authenticating`, `connected`).
    Agent(String),
    /// An HTTP response with this status.
    Http(u16),
    /// The application was handed a URL of another scheme (e.g. `lockstep://`).
    Handoff,
    /// The local firewall refused the connection.
    Blocked,
    /// An established connection was torn down.
    Cut,
    /// Nothing listened at the destination.
    Refused,
    /// The step's operation succeeded (a stream opened or echoed, time passed).
    Ok,
    /// This many sessions were revoked.
    Revoked(usize),
    /// The gateway accepted this many of the tokens presented.
    Accepted(usize),
    /// This many events were counted.
    Count(usize),
    /// Anything else that went wrong, with a description.
    Failed(String),
    /// No outcome within the step timeout.
    Timeout,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Agent(s) => write!(f, "agent {s}"),
            Outcome::Http(code) => write!(f, "http {code}"),
            Outcome::Handoff => f.write_str("handoff"),
            Outcome::Blocked => f.write_str("blocked"),
            Outcome::Cut => f.write_str("cut"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Ok => f.write_str("ok"),
            Outcome::Revoked(n) => write!(f, "revoked {n}"),
            Outcome::Accepted(n) => write!(f, "accepted {n}"),
            Outcome::Count(n) => write!(f, "count {n}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            Outcome::Timeout => f.write_str("timeout"),
        }
    }
}

/// An expected outcome, written as the outcome's text: `http 200`,
/// `blocked`, `cut`, `agent connected`, `revoked 1`, ... `failed` matches
/// any failure whatever its description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation(String);

impl Expectation {
    /// Parses an expectation, naming what is accepted if it is not one.
    pub fn parse(text: &str) -> Result<Expectation, String> {
        let t = text.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        let ok = match words.as_slice() {
            ["blocked" | "cut" | "refused" | "ok" | "timeout" | "handoff" | "failed"] => true,
            ["agent", "locked" | "authenticating" | "connected"] => true,
            ["http", code] => code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c)),
            ["revoked" | "accepted" | "count", n] => n.parse::<usize>().is_ok(),
            _ => false,
        };
        if ok {
            Ok(Expectation(words.join(" ")))
        } else {
            Err(format!(
                "unknown expectation `{text}`: expected one of `http <status>`, `blocked`, `cut`, `refused`, \
                 `ok`, `handoff`, `timeout`, `failed`, `agent locked|authenticating|connected`, `revoked <n>`, \
                 `accepted <n>`, `count <n>`"
            ))
        }
    }

    /// Whether `outcome` meets this expectation.
    pub fn matches(&self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Failed(_) => self.0 == "failed",
            other => other.to_string() == self.0,
        }
    }

    /// The expectation as written (normalized).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_match_outcomes_by_their_text() {
        let e = Expectation::parse("http  200").unwrap();
        assert!(e.matches(&Outcome::Http(200)));
        assert!(!e.matches(&Outcome::Http(302)));
        let f = Expectation::parse("failed").unwrap();
        assert!(f.matches(&Outcome::Failed("anything".into())));
        assert!(!f.matches(&Outcome::Blocked));
        assert!(Expectation::parse("agent connected").unwrap().matches(&Outcome::Agent("connected".into())));
        assert!(Expectation::parse("count 1").unwrap().matches(&Outcome::Count(1)));
        assert!(!Expectation::parse("count 1").unwrap().matches(&Outcome::Count(2)));
        assert!(Expectation::parse("accepted 0").unwrap().matches(&Outcome::Accepted(0)));
        assert!(!Expectation::parse("accepted 0").unwrap().matches(&Outcome::Count(0)));
    }

    #[test]
    fn unknown_expectations_are_refused() {
        for bad in ["", "http", "http abc", "http 99", "agent sleepy", "revoked x", "allowed", "count", "accepted -1"] {
            assert!(Expectation::parse(bad).is_err(), "{bad}");
        }
    }
}
