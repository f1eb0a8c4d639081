//! The lab's randomness: one seed, handed down.
//!
//! A run has one root seed (the scenario's, or `--seed`). Every component
//! gets its own stream derived from the root seed and a stable label, so a
//! component drawing one more number never shifts another's draws.

use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A shared, seeded random stream.
#[derive(Clone, Debug)]
pub struct SeededRng {
    root: [u8; 32],
    stream: Arc<Mutex<ChaCha8Rng>>,
}

impl SeededRng {
    /// The root stream of a run.
    pub fn from_seed(seed: u64) -> Self {
        let root: [u8; 32] = Sha256::digest(seed.to_be_bytes()).into();
        SeededRng { root, stream: Arc::new(Mutex::new(ChaCha8Rng::from_seed(root))) }
    }

    /// A stream seeded from the operating system: real mode only, never in a
    /// simulation.
    pub fn from_os_entropy() -> Self {
        let mut root = [0u8; 32];
        ChaCha8Rng::from_os_rng().fill_bytes(&mut root);
        SeededRng { root, stream: Arc::new(Mutex::new(ChaCha8Rng::from_seed(root))) }
    }

    /// The stream of a named component, derived from the root seed and `label`.
    pub fn child(&self, label: &str) -> SeededRng {
        let mut h = Sha256::new();
        h.update(self.root);
        h.update(label.as_bytes());
        let root: [u8; 32] = h.finalize().into();
        SeededRng { root, stream: Arc::new(Mutex::new(ChaCha8Rng::from_seed(root))) }
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&self, buf: &mut [u8]) {
        self.stream.lock().unwrap_or_else(PoisonError::into_inner).fill_bytes(buf);
    }

    /// A random `u64`.
    pub fn next_u64(&self) -> u64 {
        self.stream.lock().unwrap_or_else(PoisonError::into_inner).next_u64()
    }

    /// `n` random bytes.
    pub fn bytes(&self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// A URL-safe token of `n` random bytes (base64url, no padding).
    pub fn token(&self, n: usize) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.bytes(n))
    }

    /// A short lowercase hex identifier of `n` random bytes.
    pub fn hex_id(&self, n: usize) -> String {
        hex::encode(self.bytes(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_children_are_independent() {
        let a = SeededRng::from_seed(7);
        let b = SeededRng::from_seed(7);
        assert_eq!(a.bytes(16), b.bytes(16));
        // Drawing from one child does not shift a sibling.
        let a1 = a.child("idp");
        let b1 = b.child("idp");
        let _ = a.child("gateway").bytes(100);
        assert_eq!(a1.bytes(8), b1.bytes(8));
        assert_ne!(a.child("idp").bytes(8), a.child("gateway").bytes(8));
        assert_ne!(SeededRng::from_seed(8).bytes(8), SeededRng::from_seed(7).bytes(8));
    }
}
