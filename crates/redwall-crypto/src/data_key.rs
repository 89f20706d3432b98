//! Envelope encryption: each object (e.g. a snapshot) is sealed under its
//! own random data key, and only that small key is sealed with the keyring.
//!
//! Why: a large object is encrypted once and never again. Rotating the
//! master key, or handing an object to another keyring, means resealing a
//! 32-byte key rather than the object; and no keyring sub-key ever touches
//! bulk data. Both layers use the [`Sealer`] format
//! (`[version][24-byte nonce][ciphertext || tag]`, XChaCha20-Poly1305) and
//! the same associated data, so neither half opens in another place.

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::keyring::{Keyring, Sealer};
use crate::CryptoError;

/// An object sealed under its own data key, and that key sealed with the
/// keyring. Both halves are ciphertext: safe to store and to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enveloped {
    /// The 32-byte data key, sealed with `keyring.sealer(purpose)`.
    pub sealed_key: Vec<u8>,
    /// The plaintext, sealed with the data key.
    pub ciphertext: Vec<u8>,
}

/// Seals `plaintext` under a fresh random data key, and the data key with
/// `keyring.sealer(purpose)`; `aad` is bound to both.
pub fn seal_enveloped(keyring: &Keyring, purpose: &str, plaintext: &[u8], aad: &[u8]) -> Enveloped {
    let mut data_key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(data_key.as_mut());
    Enveloped {
        sealed_key: keyring.sealer(purpose).seal(data_key.as_slice(), aad),
        ciphertext: Sealer::from_key(&data_key).seal(plaintext, aad),
    }
}

/// Opens what [`seal_enveloped`] made with the same keyring, purpose and
/// `aad`. Any problem yields [`CryptoError::Open`]; the plaintext is wiped
/// when dropped.
pub fn open_enveloped(
    keyring: &Keyring,
    purpose: &str,
    env: &Enveloped,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let opened = keyring.sealer(purpose).open(&env.sealed_key, aad)?;
    let data_key: Zeroizing<[u8; 32]> = Zeroizing::new(
        opened
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Open)?,
    );
    Sealer::from_key(&data_key).open(&env.ciphertext, aad)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const PURPOSE: &str = "snapshot-data-key";

    #[test]
    fn round_trip() {
        let k = Keyring::generate();
        for pt in [b"".as_slice(), b"x", &[0x5a; 100_000]] {
            let env = seal_enveloped(&k, PURPOSE, pt, b"snapshot:1");
            assert_eq!(env.sealed_key.len(), 1 + 24 + 32 + 16);
            assert_eq!(env.ciphertext.len(), 1 + 24 + pt.len() + 16);
            let back = open_enveloped(&k, PURPOSE, &env, b"snapshot:1").unwrap();
            assert_eq!(back.as_slice(), pt);
        }
    }

    #[test]
    fn every_object_gets_its_own_key() {
        let k = Keyring::generate();
        let a = seal_enveloped(&k, PURPOSE, b"same", b"");
        let b = seal_enveloped(&k, PURPOSE, b"same", b"");
        let key_a = k.sealer(PURPOSE).open(&a.sealed_key, b"").unwrap();
        let key_b = k.sealer(PURPOSE).open(&b.sealed_key, b"").unwrap();
        assert_ne!(key_a, key_b);
        assert_ne!(a.ciphertext, b.ciphertext);
        // The data key alone opens the ciphertext: it is the real key.
        let key: [u8; 32] = key_a.as_slice().try_into().unwrap();
        assert_eq!(
            Sealer::from_key(&key)
                .open(&a.ciphertext, b"")
                .unwrap()
                .as_slice(),
            b"same"
        );
    }

    #[test]
    fn open_refuses_other_keyring_purpose_or_aad() {
        let k = Keyring::generate();
        let env = seal_enveloped(&k, PURPOSE, b"flows", b"aad");
        let refused =
            |r: Result<Zeroizing<Vec<u8>>, CryptoError>| matches!(r, Err(CryptoError::Open));
        assert!(refused(open_enveloped(
            &Keyring::generate(),
            PURPOSE,
            &env,
            b"aad"
        )));
        assert!(refused(open_enveloped(&k, "other", &env, b"aad")));
        assert!(refused(open_enveloped(&k, PURPOSE, &env, b"aaD")));
    }

    #[test]
    fn open_refuses_swapped_or_damaged_halves() {
        let k = Keyring::generate();
        let a = seal_enveloped(&k, PURPOSE, b"first", b"");
        let b = seal_enveloped(&k, PURPOSE, b"second", b"");
        let mixed = Enveloped {
            sealed_key: a.sealed_key.clone(),
            ciphertext: b.ciphertext.clone(),
        };
        assert!(open_enveloped(&k, PURPOSE, &mixed, b"").is_err());
        for i in 0..a.sealed_key.len() {
            let mut t = a.clone();
            t.sealed_key[i] ^= 0x80;
            assert!(
                open_enveloped(&k, PURPOSE, &t, b"").is_err(),
                "key byte {i}"
            );
        }
        for i in 0..a.ciphertext.len() {
            let mut t = a.clone();
            t.ciphertext[i] ^= 0x01;
            assert!(open_enveloped(&k, PURPOSE, &t, b"").is_err(), "ct byte {i}");
        }
    }

    #[test]
    fn a_sealed_key_of_the_wrong_length_is_refused() {
        let k = Keyring::generate();
        let env = Enveloped {
            sealed_key: k.sealer(PURPOSE).seal(&[1u8; 16], b""),
            ciphertext: Sealer::from_key(&[1u8; 32]).seal(b"x", b""),
        };
        assert!(matches!(
            open_enveloped(&k, PURPOSE, &env, b""),
            Err(CryptoError::Open)
        ));
    }
}
