//! The master key: sub-key derivation, keyed digests and sealing at rest.
//!
//! One 32-byte master key is configured per installation. It is never used
//! directly; every use derives its own sub-key with a distinct `purpose`
//! label, so a digest made for one purpose can never be confused with one
//! made for another, and the AEAD key is independent of the MAC keys.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::mac::hmac_sha256;
use crate::secret::Secret;
use crate::CryptoError;

/// Label prepended to every purpose. The version lets us change derivation
/// later without ambiguity.
const SUBKEY_DOMAIN: &str = "redwall/v1/";

/// First byte of every sealed blob, so the format can evolve.
const SEAL_VERSION: u8 = 1;
/// XChaCha20-Poly1305 nonce length; 192 bits is large enough for random nonces.
const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;
/// Smallest possible sealed blob: version, nonce and the tag of an empty
/// plaintext.
const MIN_SEALED_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

/// Accepts padded or unpadded input, so keys pasted from any tool work.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// The installation's master key. Wiped on drop; `Debug` shows nothing.
#[derive(Clone)]
pub struct Keyring {
    master: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring([redacted])")
    }
}

impl Keyring {
    /// A new random master key from the OS RNG.
    pub fn generate() -> Self {
        let mut master = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(master.as_mut());
        Self { master }
    }

    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            master: Zeroizing::new(bytes),
        }
    }

    /// Decodes a key from standard or URL-safe base64, padded or not.
    /// Surrounding whitespace (e.g. a trailing newline in a key file) is
    /// ignored. It must decode to exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let s = s.trim();
        let decoded = STANDARD_LENIENT
            .decode(s)
            .or_else(|_| URL_SAFE_LENIENT.decode(s))
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::InvalidKey("master key is not valid base64".into()))?;
        let master: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            CryptoError::InvalidKey(format!(
                "master key must be 32 bytes, got {}",
                decoded.len()
            ))
        })?;
        Ok(Self::from_bytes(master))
    }

    /// The key in standard, padded base64 (44 characters).
    pub fn to_base64(&self) -> Secret {
        Secret::new(STANDARD.encode(self.master.as_ref()))
    }

    /// HMAC-SHA256(master, "redwall/v1/" + purpose): a key for one purpose.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(
            self.master.as_slice(),
            &[SUBKEY_DOMAIN.as_bytes(), purpose.as_bytes()],
        )
    }

    /// HMAC-SHA256(subkey(purpose), data): a digest only holders of the
    /// master key can compute, for low-entropy values (e.g. recovery codes)
    /// that an unkeyed hash would expose to brute force.
    pub fn keyed_digest(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let key = Zeroizing::new(self.subkey(purpose));
        hmac_sha256(key.as_slice(), &[data])
    }

    /// An authenticated cipher keyed with `subkey(purpose)`.
    pub fn sealer(&self, purpose: &str) -> Sealer {
        let key = Zeroizing::new(self.subkey(purpose));
        Sealer {
            cipher: XChaCha20Poly1305::new(key.as_ref().into()),
        }
    }
}

/// Encrypts and authenticates small values at rest with XChaCha20-Poly1305.
///
/// Sealed format: `[version = 1][24-byte random nonce][ciphertext || 16-byte tag]`.
/// The associated data (`aad`) is authenticated but not stored: pass
/// something that binds the ciphertext to its place (e.g. table, column and
/// row id) so it cannot be swapped into another row.
// The cipher wipes its key on drop (chacha20poly1305 implements ZeroizeOnDrop).
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// A sealer keyed with raw key bytes rather than a keyring sub-key: for
    /// per-object data keys (see [`crate::data_key`]). Same sealed format.
    pub(crate) fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Encrypts `plaintext` under a fresh random nonce.
    ///
    /// The AEAD refuses plaintexts over about 256 GiB. Rather than panic,
    /// such a call returns a blob that [`Sealer::open`] always rejects (it is
    /// shorter than any valid one); no plaintext is ever emitted.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(MIN_SEALED_LEN + plaintext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        if let Ok(ciphertext) = self.cipher.encrypt(XNonce::from_slice(&nonce), payload) {
            out.extend_from_slice(&ciphertext);
        }
        out
    }

    /// Decrypts a blob made by [`Sealer::seal`] with the same purpose and `aad`.
    ///
    /// Any problem (wrong key or aad, truncation, tampering, unknown version)
    /// yields [`CryptoError::Open`]; the plaintext is wiped when dropped.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < MIN_SEALED_LEN {
            return Err(CryptoError::Open);
        }
        let (version, rest) = sealed.split_at(1);
        if version != [SEAL_VERSION] {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        self.cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    fn fixed() -> Keyring {
        Keyring::from_bytes(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn base64_round_trip_in_every_flavour() {
        // Bytes chosen so the encodings differ between alphabets.
        let bytes: [u8; 32] = std::array::from_fn(|i| 0xfb ^ (i as u8));
        let k = Keyring::from_bytes(bytes);
        let encoded = k.to_base64();
        assert_eq!(encoded.expose().len(), 44);
        assert_eq!(encoded.expose(), STANDARD.encode(bytes));
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            let s = engine.encode(bytes);
            let back = Keyring::from_base64(&s).unwrap();
            assert_eq!(*back.master, bytes, "{s}");
        }
        let with_newline = format!("  {}\n", encoded.expose());
        assert_eq!(*Keyring::from_base64(&with_newline).unwrap().master, bytes);
    }

    #[test]
    fn from_base64_rejects_bad_input() {
        for bad in [
            "",
            "not base64 at all!",
            &STANDARD.encode([1u8; 31]),
            &STANDARD.encode([1u8; 33]),
            &STANDARD.encode([1u8; 64]),
        ] {
            assert!(
                matches!(Keyring::from_base64(bad), Err(CryptoError::InvalidKey(_))),
                "{bad:?}"
            );
        }
        let err = Keyring::from_base64(&STANDARD.encode([1u8; 16]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("got 16"), "{err}");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Keyring::generate().master, Keyring::generate().master);
    }

    #[test]
    fn debug_reveals_nothing() {
        let k = fixed();
        let dbg = format!("{k:?} {:?}", k.sealer("x"));
        assert_eq!(dbg, "Keyring([redacted]) Sealer([redacted])");
    }

    #[test]
    fn subkeys_are_domain_separated_and_deterministic() {
        let k = fixed();
        assert_eq!(k.subkey("a"), k.subkey("a"));
        assert_ne!(k.subkey("a"), k.subkey("b"));
        assert_ne!(k.subkey("a"), *k.master);
        assert_eq!(
            k.subkey("a"),
            hmac_sha256(k.master.as_slice(), &[b"redwall/v1/a".as_slice()])
        );
        assert_ne!(Keyring::generate().subkey("a"), k.subkey("a"));
    }

    #[test]
    fn keyed_digest_depends_on_key_purpose_and_data() {
        let k = fixed();
        let d = k.keyed_digest("recovery-code", b"abc");
        assert_eq!(d, k.keyed_digest("recovery-code", b"abc"));
        assert_eq!(
            d,
            hmac_sha256(k.subkey("recovery-code").as_slice(), &[b"abc"])
        );
        assert_ne!(d, k.keyed_digest("recovery-code", b"abd"));
        assert_ne!(d, k.keyed_digest("other", b"abc"));
        assert_ne!(d, Keyring::generate().keyed_digest("recovery-code", b"abc"));
    }

    #[test]
    fn seal_open_round_trip() {
        let s = fixed().sealer("totp-secret");
        for pt in [b"".as_slice(), b"x", &[0xAB; 1000]] {
            let sealed = s.seal(pt, b"user:42");
            assert_eq!(sealed.len(), 1 + 24 + pt.len() + 16);
            assert_eq!(sealed[0], 1);
            assert_eq!(s.open(&sealed, b"user:42").unwrap().as_slice(), pt);
        }
    }

    #[test]
    fn seal_uses_fresh_nonces() {
        let s = fixed().sealer("p");
        let a = s.seal(b"same", b"");
        let b = s.seal(b"same", b"");
        assert_ne!(a, b);
        assert_ne!(a[1..25], b[1..25]);
    }

    #[test]
    fn open_fails_with_wrong_key_purpose_or_aad() {
        let k = fixed();
        let sealed = k.sealer("p").seal(b"secret", b"aad");
        assert!(k.sealer("p").open(&sealed, b"aad").is_ok());
        assert!(matches!(
            Keyring::generate().sealer("p").open(&sealed, b"aad"),
            Err(CryptoError::Open)
        ));
        assert!(k.sealer("q").open(&sealed, b"aad").is_err());
        assert!(k.sealer("p").open(&sealed, b"aaD").is_err());
        assert!(k.sealer("p").open(&sealed, b"").is_err());
    }

    #[test]
    fn open_fails_on_truncation() {
        let s = fixed().sealer("p");
        let sealed = s.seal(b"secret", b"");
        for len in 0..sealed.len() {
            assert!(s.open(&sealed[..len], b"").is_err(), "len {len}");
        }
        let mut extended = sealed.clone();
        extended.push(0);
        assert!(s.open(&extended, b"").is_err());
    }

    #[test]
    fn open_fails_on_any_bit_flip() {
        let s = fixed().sealer("p");
        let sealed = s.seal(b"secret", b"aad");
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut t = sealed.clone();
                t[i] ^= 1 << bit;
                assert!(s.open(&t, b"aad").is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn open_rejects_unknown_version() {
        let s = fixed().sealer("p");
        let mut sealed = s.seal(b"secret", b"");
        sealed[0] = 2;
        assert!(s.open(&sealed, b"").is_err());
    }

    proptest! {
        #[test]
        fn open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), aad in any::<Vec<u8>>()) {
            let s = fixed().sealer("p");
            prop_assert!(s.open(&data, &aad).is_err());
        }

        #[test]
        fn round_trips_arbitrary_data(pt in any::<Vec<u8>>(), aad in any::<Vec<u8>>()) {
            let s = fixed().sealer("p");
            let sealed = s.seal(&pt, &aad);
            let opened = s.open(&sealed, &aad).unwrap();
            prop_assert_eq!(opened.as_slice(), pt.as_slice());
        }
    }
}
