//! The trace: every decision of a run, as structured events with simulated
//! time, written as JSON Lines, with a digest of the whole.
//!
//! Components record into a [`Recorder`]; the oracle reads the resulting
//! [`Trace`] and nothing else. The trace is the contract between the two, so
//! every field an invariant needs is spelled out in [`EventBody`].
//!
//! Determinism: events carry simulated time only, ids drawn from the seeded
//! RNG, and no secrets or challenges (tokens, codes and keys never appear).

mod event;

pub use event::{
    AllowRule, Direction, EnforcementSpec, Event, EventBody, FactorFacts, FilterSummary, GatewayVerdict, MfaSpec,
    Verdict,
};

use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::net::{SharedClock, UnixMillis};

/// Where recorded events go: kept in memory (simulation), or written out as
/// they happen (real mode, which may run for days).
struct Sink {
    kept: Vec<Event>,
    keep: bool,
    next_seq: u64,
    tee: Option<Box<dyn std::io::Write + Send>>,
}

/// Records events for one host; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    sink: Arc<Mutex<Sink>>,
    host: Arc<str>,
    clock: SharedClock,
    epoch: UnixMillis,
}

impl Recorder {
    /// A recorder for a run that starts at `epoch`; `clock` must be the run's
    /// unskewed clock (trace time is true simulated time, whatever a host's
    /// own clock says).
    pub fn new(epoch: UnixMillis, clock: SharedClock) -> Self {
        Recorder {
            sink: Arc::new(Mutex::new(Sink { kept: Vec::new(), keep: true, next_seq: 0, tee: None })),
            host: Arc::from("lab"),
            clock,
            epoch,
        }
    }

    /// A recorder that writes each event as a JSON line to `out` as it
    /// happens and keeps nothing in memory (real mode, which may run for days).
    pub fn streaming(epoch: UnixMillis, clock: SharedClock, out: Box<dyn std::io::Write + Send>) -> Self {
        Recorder {
            sink: Arc::new(Mutex::new(Sink { kept: Vec::new(), keep: false, next_seq: 0, tee: Some(out) })),
            host: Arc::from("lab"),
            clock,
            epoch,
        }
    }

    /// The same trace, recorded as `host`.
    pub fn for_host(&self, host: &str) -> Recorder {
        Recorder { host: Arc::from(host), ..self.clone() }
    }

    /// The host this recorder records as.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Appends an event stamped with the current simulated time.
    pub fn record(&self, body: EventBody) {
        let t = self.trace_time(self.clock.now());
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = sink.next_seq;
        sink.next_seq += 1;
        let event = Event { seq, t, host: self.host.to_string(), body };
        if let Some(out) = sink.tee.as_mut() {
            // A broken output must not stop the components.
            let _ = serde_json::to_writer(&mut *out, &event);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        if sink.keep {
            sink.kept.push(event);
        }
    }

    /// Converts a wall-clock instant to trace time (ms since the run's epoch).
    pub fn trace_time(&self, at: UnixMillis) -> u64 {
        at.0.saturating_sub(self.epoch.0)
    }

    /// The run's epoch.
    pub fn epoch(&self) -> UnixMillis {
        self.epoch
    }

    /// How many events have been recorded so far (kept or streamed), without
    /// copying them.
    pub fn recorded(&self) -> u64 {
        self.sink.lock().unwrap_or_else(PoisonError::into_inner).next_seq
    }

    /// A snapshot of everything recorded so far.
    pub fn snapshot(&self) -> Trace {
        Trace { events: self.sink.lock().unwrap_or_else(PoisonError::into_inner).kept.clone() }
    }
}

/// A whole run's events, in recording order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// The events; `events[i].seq == i`.
    pub events: Vec<Event>,
}

/// A line of a JSONL trace that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TraceParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl Trace {
    /// The trace as JSON Lines, one event per line.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            // Serializing plain data with string keys cannot fail.
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// Reads a JSONL trace back (for offline checks and replays).
    pub fn from_jsonl(text: &str) -> Result<Trace, TraceParseError> {
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e: Event =
                serde_json::from_str(line).map_err(|err| TraceParseError { line: i + 1, message: err.to_string() })?;
            events.push(e);
        }
        Ok(Trace { events })
    }

    /// SHA-256 of the JSONL rendering, hex: equal digests mean byte-identical traces.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_jsonl().as_bytes()))
    }
}

/// Renders trace time as `+HH:MM:SS.mmm`.
pub fn format_offset(t_ms: u64) -> String {
    let ms = t_ms % 1000;
    let s = t_ms / 1000;
    format!("+{:02}:{:02}:{:02}.{:03}", s / 3600, (s / 60) % 60, s % 60, ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Clock;

    struct Fixed(UnixMillis);
    impl Clock for Fixed {
        fn now(&self) -> UnixMillis {
            self.0
        }
    }

    #[test]
    fn jsonl_round_trips_and_digest_tracks_content() {
        let epoch = UnixMillis(1_000_000);
        let rec = Recorder::new(epoch, Arc::new(Fixed(UnixMillis(1_002_500))));
        let gw = rec.for_host("gateway");
        gw.record(EventBody::SessionRevoked { sid: "s1".into(), reason: "admin".into() });
        let trace = rec.snapshot();
        assert_eq!(trace.events[0].t, 2500);
        assert_eq!(trace.events[0].host, "gateway");
        let text = trace.to_jsonl();
        assert_eq!(Trace::from_jsonl(&text).unwrap(), trace);
        let before = trace.digest();
        gw.record(EventBody::SessionRevoked { sid: "s2".into(), reason: "admin".into() });
        assert_ne!(rec.snapshot().digest(), before);
        assert_eq!((rec.recorded(), gw.recorded()), (2, 2));
    }

    #[test]
    fn bad_jsonl_names_the_line() {
        let err = Trace::from_jsonl("\n{not json}\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn offsets_render_as_clock_time() {
        assert_eq!(format_offset(3_723_004), "+01:02:03.004");
    }
}
