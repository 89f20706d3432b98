//! The hub's Ed25519 signing key, which signs snapshots (and, later, agent
//! builds), so that anyone holding the public key can check that a snapshot
//! came from this hub and was not altered.
//!
//! The private key never leaves the hub in the clear: it is stored sealed
//! with the keyring ([`HubSigningKey::seal`]). Every signature is made over
//! `context || 0x00 || message`, where the context names what is signed
//! (e.g. `"redwall-snapshot/v1"`), so a signature made for one kind of
//! object can never be passed off as one for another. Verification uses
//! `verify_strict`, which refuses the malleable and small-order cases that
//! plain Ed25519 verification lets through.

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::keyring::Keyring;
use crate::CryptoError;

/// Keyring purpose of the sealer that holds the signing key at rest.
const SEAL_PURPOSE: &str = "hub-signing-key";
/// Associated data of the sealed signing key.
const SEAL_AAD: &[u8] = b"hub-signing-key/v1";

/// Accepts public keys with or without base64 padding.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The hub's private signing key. Wiped on drop; `Debug` shows only the
/// public key's fingerprint.
// ed25519-dalek's SigningKey zeroizes itself on drop (feature "zeroize").
pub struct HubSigningKey(SigningKey);

impl std::fmt::Debug for HubSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HubSigningKey([redacted], public {})",
            self.public_key().fingerprint()
        )
    }
}

impl HubSigningKey {
    /// A new random key from the OS RNG.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut OsRng))
    }

    /// The key sealed with the keyring, for storage.
    pub fn seal(&self, keyring: &Keyring) -> Vec<u8> {
        let seed = Zeroizing::new(self.0.to_bytes());
        keyring.sealer(SEAL_PURPOSE).seal(seed.as_slice(), SEAL_AAD)
    }

    /// Opens a key sealed by [`HubSigningKey::seal`] with the same keyring.
    pub fn open(keyring: &Keyring, sealed: &[u8]) -> Result<Self, CryptoError> {
        let plain = keyring.sealer(SEAL_PURPOSE).open(sealed, SEAL_AAD)?;
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(plain.as_slice().try_into().map_err(|_| CryptoError::Open)?);
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The public half, to publish and to verify with.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `context || 0x00 || message`. `context` names what is signed
    /// and must not contain a NUL byte: [`PublicKey::verify`] refuses such
    /// contexts, which keeps the split between context and message
    /// unambiguous.
    pub fn sign(&self, context: &str, message: &[u8]) -> [u8; 64] {
        self.0.sign(&signed_bytes(context, message)).to_bytes()
    }
}

/// A remote agent's own Ed25519 key: made on the agent, kept in a file
/// only the agent reads (its 32-byte seed), never sent anywhere. The hub
/// stores the public half at enrolment and checks the agent's answers to
/// its challenges with it. Signs like the hub's key (context, NUL,
/// message). Wiped on drop; `Debug` shows only the public fingerprint.
pub struct AgentKey(SigningKey);

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AgentKey([redacted], public {})",
            self.public_key().fingerprint()
        )
    }
}

impl AgentKey {
    /// A new random key from the OS RNG.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut OsRng))
    }

    /// The seed to keep on disk (32 bytes).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The key from a seed read back from disk.
    pub fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.try_into()
                .map_err(|_| CryptoError::InvalidKey("an agent key is 32 bytes".into()))?,
        );
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `context || 0x00 || message`, as [`HubSigningKey::sign`].
    pub fn sign(&self, context: &str, message: &[u8]) -> [u8; 64] {
        self.0.sign(&signed_bytes(context, message)).to_bytes()
    }
}

/// What is actually signed: the context, a NUL separator, the message.
fn signed_bytes(context: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + 1 + message.len());
    out.extend_from_slice(context.as_bytes());
    out.push(0);
    out.extend_from_slice(message);
    out
}

/// An Ed25519 public key (32 bytes), as published and as stored with what
/// it signed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Standard base64 with padding (44 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Decodes standard base64, padded or not (surrounding whitespace is
    /// ignored). Refuses anything that is not a usable Ed25519 public key:
    /// the wrong length, a point not on the curve, or a weak (small-order)
    /// key.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD_LENIENT
            .decode(s.trim())
            .map_err(|_| CryptoError::InvalidKey("public key is not valid base64".into()))?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            CryptoError::InvalidKey(format!("public key must be 32 bytes, got {}", bytes.len()))
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| CryptoError::InvalidKey("not an Ed25519 public key".into()))?;
        if key.is_weak() {
            return Err(CryptoError::InvalidKey(
                "weak (small-order) Ed25519 public key".into(),
            ));
        }
        Ok(Self(bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `SHA256:` and the unpadded base64 of SHA-256 of the 32 key bytes:
    /// OpenSSH's fingerprint notation, for showing and comparing keys by
    /// eye. (Not the value `ssh-keygen -l` prints for the same key, which
    /// hashes SSH's wire encoding of it.)
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(self.0)))
    }

    /// Checks a signature made by [`HubSigningKey::sign`] with the same
    /// context. Any problem (wrong length, bad key, bad signature, a context
    /// with a NUL byte) yields [`CryptoError::BadSignature`].
    pub fn verify(
        &self,
        context: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        if context.as_bytes().contains(&0) {
            return Err(CryptoError::BadSignature);
        }
        let signature = Signature::from_slice(signature).map_err(|_| CryptoError::BadSignature)?;
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::BadSignature)?;
        key.verify_strict(&signed_bytes(context, message), &signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const CTX: &str = "redwall-snapshot/v1";

    #[test]
    fn an_agent_key_survives_its_seed_and_signs_like_the_hub() {
        let key = AgentKey::generate();
        let again = AgentKey::from_seed(key.seed().as_slice()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let sig = again.sign("redwall-agent-hello/v1", b"nonce");
        let public = PublicKey::from_base64(&key.public_key().to_base64()).unwrap();
        assert!(public
            .verify("redwall-agent-hello/v1", b"nonce", &sig)
            .is_ok());
        assert!(public
            .verify("redwall-snapshot/v1", b"nonce", &sig)
            .is_err());
        assert!(AgentKey::from_seed(&[0u8; 31]).is_err());
        assert!(!format!("{key:?}").contains(&hex::encode(key.seed().as_slice())));
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let key = HubSigningKey::generate();
        let public = key.public_key();
        let sig = key.sign(CTX, b"snapshot bytes");
        assert!(public.verify(CTX, b"snapshot bytes", &sig).is_ok());
        assert!(public.verify(CTX, b"", &key.sign(CTX, b"")).is_ok());
    }

    #[test]
    fn verify_refuses_other_message_context_key_or_signature() {
        let key = HubSigningKey::generate();
        let public = key.public_key();
        let sig = key.sign(CTX, b"message");
        let bad = |r: Result<(), CryptoError>| matches!(r, Err(CryptoError::BadSignature));
        assert!(bad(public.verify(CTX, b"messagE", &sig)));
        assert!(bad(public.verify("redwall-agent/v1", b"message", &sig)));
        assert!(bad(HubSigningKey::generate()
            .public_key()
            .verify(CTX, b"message", &sig)));
        for i in 0..sig.len() {
            let mut t = sig;
            t[i] ^= 0x01;
            assert!(bad(public.verify(CTX, b"message", &t)), "byte {i}");
        }
        assert!(bad(public.verify(CTX, b"message", &sig[..63])));
        assert!(bad(public.verify(
            CTX,
            b"message",
            &[sig.as_slice(), &[0]].concat()
        )));
        assert!(bad(public.verify(CTX, b"message", &[])));
    }

    #[test]
    fn context_and_message_are_separated() {
        // Without the separator, ("ab", "c") and ("a", "bc") would sign the
        // same bytes.
        let key = HubSigningKey::generate();
        let sig = key.sign("ab", b"c");
        assert!(key.public_key().verify("a", b"bc", &sig).is_err());
        // A NUL inside the context would make the split ambiguous again.
        let sig = key.sign("a", b"b\0c");
        assert!(key.public_key().verify("a\0b", b"c", &sig).is_err());
    }

    #[test]
    fn signs_the_documented_bytes() {
        let key = HubSigningKey::generate();
        let sig = key.sign(CTX, b"m");
        let raw = VerifyingKey::from_bytes(key.public_key().as_bytes()).unwrap();
        let expected = [CTX.as_bytes(), b"\0m"].concat();
        assert!(raw
            .verify_strict(&expected, &Signature::from_bytes(&sig))
            .is_ok());
    }

    #[test]
    fn seal_and_open_keep_the_key() {
        let keyring = Keyring::generate();
        let key = HubSigningKey::generate();
        let sealed = key.seal(&keyring);
        assert!(!sealed.windows(32).any(|w| w == key.0.to_bytes().as_slice()));
        let opened = HubSigningKey::open(&keyring, &sealed).unwrap();
        assert_eq!(opened.public_key(), key.public_key());
        let sig = opened.sign(CTX, b"x");
        assert!(key.public_key().verify(CTX, b"x", &sig).is_ok());
    }

    #[test]
    fn open_refuses_other_keyring_purpose_or_damage() {
        let keyring = Keyring::generate();
        let sealed = HubSigningKey::generate().seal(&keyring);
        assert!(matches!(
            HubSigningKey::open(&Keyring::generate(), &sealed),
            Err(CryptoError::Open)
        ));
        let mut damaged = sealed.clone();
        damaged[30] ^= 1;
        assert!(HubSigningKey::open(&keyring, &damaged).is_err());
        // Sealed under the same keyring and purpose but other aad.
        let other_aad = keyring.sealer(SEAL_PURPOSE).seal(&[7u8; 32], b"other");
        assert!(HubSigningKey::open(&keyring, &other_aad).is_err());
        // Right purpose and aad, wrong length.
        let short = keyring.sealer(SEAL_PURPOSE).seal(&[7u8; 31], SEAL_AAD);
        assert!(matches!(
            HubSigningKey::open(&keyring, &short),
            Err(CryptoError::Open)
        ));
    }

    #[test]
    fn public_key_base64_round_trip_and_refusals() {
        let public = HubSigningKey::generate().public_key();
        let text = public.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(PublicKey::from_base64(&text).unwrap(), public);
        let unpadded = text.trim_end_matches('=').to_owned();
        assert_eq!(
            PublicKey::from_base64(&format!(" {unpadded}\n")).unwrap(),
            public
        );
        for bad in [
            "".to_owned(),
            "not base64!".to_owned(),
            STANDARD.encode([1u8; 31]),
            STANDARD.encode([1u8; 33]),
            // The identity point: small order, refused.
            STANDARD.encode({
                let mut b = [0u8; 32];
                b[0] = 1;
                b
            }),
        ] {
            assert!(
                matches!(
                    PublicKey::from_base64(&bad),
                    Err(CryptoError::InvalidKey(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fingerprint_matches_openssh_notation() {
        let public = PublicKey([0u8; 32]);
        // printf '\0%.0s' {1..32} | openssl dgst -sha256 -binary | base64
        assert_eq!(
            public.fingerprint(),
            "SHA256:Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU"
        );
        let other = HubSigningKey::generate().public_key().fingerprint();
        assert!(other.starts_with("SHA256:") && !other.ends_with('='));
        assert_eq!(other.len(), 7 + 43);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = HubSigningKey::generate();
        let dbg = format!("{key:?}");
        assert_eq!(
            dbg,
            format!(
                "HubSigningKey([redacted], public {})",
                key.public_key().fingerprint()
            )
        );
        let secret_b64 = STANDARD_NO_PAD.encode(key.0.to_bytes());
        assert!(!dbg.contains(&secret_b64));
    }
}
