//! Sealed boxes for one agent: what the hub sends an agent that only that
//! agent may read (a snapshot's credentials), encrypted to the X25519 key
//! the agent generated at enrolment.
//!
//! This is libsodium's `crypto_box_seal` (an ephemeral X25519 key, then
//! XSalsa20-Poly1305), from RustCrypto's `crypto_box`. The sender is
//! anonymous by design; what makes the contents trustworthy is the hub's
//! signature over their digest, which the agent checks separately. The
//! agent's encryption key is its own, apart from its Ed25519 signing key,
//! so neither key is used for two purposes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use crypto_box::aead::OsRng;
use zeroize::Zeroizing;

use crate::CryptoError;

/// Bytes a sealed box adds to its contents (ephemeral key and tag).
pub const SEAL_OVERHEAD: usize = 48;

/// An agent's X25519 secret key. Wiped on drop; `Debug` shows nothing of it.
pub struct AgentBoxKey(crypto_box::SecretKey);

impl std::fmt::Debug for AgentBoxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AgentBoxKey([redacted], public {})",
            self.public_base64()
        )
    }
}

impl AgentBoxKey {
    /// A new random key from the OS RNG.
    pub fn generate() -> Self {
        Self(crypto_box::SecretKey::generate(&mut OsRng))
    }

    /// The 32 secret bytes to keep on disk.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The key from bytes read back from disk.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.try_into().map_err(|_| {
            CryptoError::InvalidKey("an agent's encryption key is 32 bytes".into())
        })?);
        Ok(Self(crypto_box::SecretKey::from_bytes(*bytes)))
    }

    /// The public half, standard base64, as the agent registers it.
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.0.public_key().as_bytes())
    }

    /// Opens a box sealed for this key by [`seal_for`]. Any failure (wrong
    /// key, altered or truncated box) is the same [`CryptoError::Open`].
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.0
            .unseal(sealed)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }
}

/// Reads an agent's public encryption key (standard base64, 32 bytes).
pub fn check_public_key(public_base64: &str) -> Result<[u8; 32], CryptoError> {
    let bytes = STANDARD
        .decode(public_base64.trim())
        .map_err(|_| CryptoError::InvalidKey("not base64".into()))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CryptoError::InvalidKey("an X25519 public key is 32 bytes".into()))?;
    // The all-zero key is no agent's key (an unset field, a bug): boxes
    // sealed to it would share a known secret. Refused.
    if key.iter().all(|b| *b == 0) {
        return Err(CryptoError::InvalidKey("the all-zero X25519 key".into()));
    }
    Ok(key)
}

/// Seals `plaintext` so that only the holder of the secret key whose
/// public half is `public_base64` can open it.
pub fn seal_for(public_base64: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = crypto_box::PublicKey::from_bytes(check_public_key(public_base64)?);
    key.seal(&mut OsRng, plaintext)
        .map_err(|_| CryptoError::InvalidKey("sealing failed".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agent_opens_what_was_sealed_for_it() {
        let agent = AgentBoxKey::generate();
        let other = AgentBoxKey::generate();
        let plain = b"{\"n1\":{\"password\":\"x\"}}";
        let sealed = seal_for(&agent.public_base64(), plain).unwrap();
        assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
        assert_eq!(
            agent.open(&sealed).unwrap().as_slice(),
            b"{\"n1\":{\"password\":\"x\"}}"
        );
        assert!(matches!(other.open(&sealed), Err(CryptoError::Open)));
        // Two seals of the same contents differ (fresh ephemeral key).
        assert_ne!(
            sealed,
            seal_for(&agent.public_base64(), b"{\"n1\":{\"password\":\"x\"}}").unwrap()
        );
    }

    #[test]
    fn any_changed_byte_or_truncation_is_refused() {
        let agent = AgentBoxKey::generate();
        let sealed = seal_for(&agent.public_base64(), b"secret").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(agent.open(&bad).is_err(), "byte {i} flipped was accepted");
        }
        for len in 0..sealed.len() {
            assert!(agent.open(&sealed[..len]).is_err());
        }
    }

    #[test]
    fn the_key_reads_back_from_its_bytes_and_bad_public_keys_are_refused() {
        let agent = AgentBoxKey::generate();
        let again = AgentBoxKey::from_bytes(agent.to_bytes().as_slice()).unwrap();
        assert_eq!(agent.public_base64(), again.public_base64());
        assert!(AgentBoxKey::from_bytes(&[1u8; 31]).is_err());
        assert!(seal_for("not base64!", b"x").is_err());
        assert!(seal_for(&STANDARD.encode([7u8; 31]), b"x").is_err());
        assert!(seal_for(&STANDARD.encode([0u8; 32]), b"x").is_err());
        assert!(!format!("{agent:?}").contains(&STANDARD.encode(agent.to_bytes().as_slice())));
    }
}
