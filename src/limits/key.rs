//! Limiter keys: a fixed-size digest of the `client` value, so a long or hostile header costs
//! the same memory in process (and the same key length in Redis) as a short one.

use sha2::{Digest, Sha256};

/// The first 128 bits of SHA-256 of the client's value: collisions (two clients sharing a
/// limit) need a deliberate 2^64-work attack, far more than sending many clients costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey([u8; 16]);

impl ClientKey {
    pub fn of(client: &str) -> Self {
        let digest = Sha256::digest(client.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        ClientKey(key)
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_and_distinct() {
        let long = "x".repeat(8 * 1024);
        assert_eq!(ClientKey::of(&long).to_hex().len(), 32);
        assert_eq!(ClientKey::of("a"), ClientKey::of("a"));
        assert_ne!(ClientKey::of("a"), ClientKey::of("b"));
    }
}
