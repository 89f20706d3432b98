//! The keyed hash chain that makes the audit log tamper-evident.
//!
//! Each entry's hash covers the previous hash and the entry, so deleting,
//! reordering or editing any entry changes every later hash. The chain is
//! keyed (HMAC with a sub-key of the master key) so that someone with write
//! access to the database alone cannot recompute a forged chain.

use zeroize::Zeroizing;

use crate::keyring::Keyring;
use crate::mac::hmac_sha256;

/// A link of the chain.
pub type ChainHash = [u8; 32];

/// The "previous hash" of the first entry.
pub const GENESIS: ChainHash = [0u8; 32];

/// Sub-key purpose for the audit chain.
const PURPOSE: &str = "audit-chain";

/// The HMAC key of the audit chain. Wiped on drop; `Debug` shows nothing.
#[derive(Clone)]
pub struct ChainKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey([redacted])")
    }
}

impl ChainKey {
    /// `keyring.subkey("audit-chain")`.
    pub fn from_keyring(keyring: &Keyring) -> Self {
        Self(Zeroizing::new(keyring.subkey(PURPOSE)))
    }

    /// HMAC-SHA256(key, prev || len(entry) as u64 big-endian || entry).
    ///
    /// The length prefix makes the encoding unambiguous, should the format
    /// ever append anything after the entry.
    pub fn link(&self, prev: &ChainHash, canonical_entry: &[u8]) -> ChainHash {
        let len = (canonical_entry.len() as u64).to_be_bytes();
        hmac_sha256(self.0.as_slice(), &[prev, &len, canonical_entry])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChainKey {
        ChainKey::from_keyring(&Keyring::from_bytes([3u8; 32]))
    }

    #[test]
    fn key_is_the_audit_chain_subkey() {
        let k = Keyring::from_bytes([3u8; 32]);
        assert_eq!(*ChainKey::from_keyring(&k).0, k.subkey("audit-chain"));
        assert_eq!(format!("{:?}", key()), "ChainKey([redacted])");
    }

    #[test]
    fn link_matches_its_definition() {
        let k = key();
        let prev = [9u8; 32];
        let mut msg = prev.to_vec();
        msg.extend_from_slice(&5u64.to_be_bytes());
        msg.extend_from_slice(b"entry");
        assert_eq!(
            k.link(&prev, b"entry"),
            hmac_sha256(k.0.as_slice(), &[&msg])
        );
    }

    #[test]
    fn chain_detects_edits_reordering_and_deletion() {
        let k = key();
        let entries: [&[u8]; 3] = [b"login alice", b"create flow", b"logout alice"];
        let chain = |es: &[&[u8]]| {
            es.iter()
                .scan(GENESIS, |prev, e| {
                    *prev = k.link(prev, e);
                    Some(*prev)
                })
                .collect::<Vec<_>>()
        };
        let original = chain(&entries);
        assert_eq!(original, chain(&entries));
        assert_ne!(original[0], original[1]);

        let edited = chain(&[entries[0], b"create flow!", entries[2]]);
        assert_eq!(edited[0], original[0]);
        assert_ne!(edited[1], original[1]);
        assert_ne!(edited[2], original[2]);

        let reordered = chain(&[entries[1], entries[0], entries[2]]);
        assert_ne!(reordered[2], original[2]);

        let deleted = chain(&[entries[0], entries[2]]);
        assert_ne!(deleted[1], original[2]);
    }

    #[test]
    fn depends_on_key_and_prev() {
        let other = ChainKey::from_keyring(&Keyring::from_bytes([4u8; 32]));
        assert_ne!(key().link(&GENESIS, b"e"), other.link(&GENESIS, b"e"));
        assert_ne!(key().link(&GENESIS, b"e"), key().link(&[1u8; 32], b"e"));
    }
}
