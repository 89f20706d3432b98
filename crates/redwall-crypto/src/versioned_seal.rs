//! Versioned sealing at rest with AES-256-GCM, for the instances' secrets
//! (their editor and endpoint keys, and secret environment variables).
//!
//! Each version's key is derived from the master key
//! (`instance-secrets/v{version}`), so `redwall keys rotate-instance-secrets`
//! can move every value to a fresh key in one transaction. Sealed text:
//! `v{version}.{base64(nonce || ciphertext || tag)}`. The additional data
//! binds a value to its row (instance id and variable name), so a sealed
//! value copied to another row does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::keyring::Keyring;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value does not open with this master key")]
    WrongKey,
}

fn cipher(keyring: &Keyring, version: u32) -> Aes256Gcm {
    let key = Zeroizing::new(keyring.subkey(&format!("instance-secrets/v{version}")));
    Aes256Gcm::new(key.as_slice().into())
}

pub fn seal(keyring: &Keyring, version: u32, plaintext: &[u8], aad: &str) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let payload = Payload {
        msg: plaintext,
        aad: aad.as_bytes(),
    };
    // Encryption with a valid key and nonce cannot fail for these sizes.
    let ct = cipher(keyring, version)
        .encrypt(Nonce::from_slice(&nonce), payload)
        .unwrap_or_default();
    let mut raw = nonce.to_vec();
    raw.extend_from_slice(&ct);
    format!("v{version}.{}", STANDARD_NO_PAD.encode(raw))
}

pub fn version_of(sealed: &str) -> Option<u32> {
    sealed.strip_prefix('v')?.split_once('.')?.0.parse().ok()
}

pub fn open(keyring: &Keyring, sealed: &str, aad: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let version = version_of(sealed).ok_or(SealError::Malformed)?;
    let (_, body) = sealed.split_once('.').ok_or(SealError::Malformed)?;
    let raw = STANDARD_NO_PAD
        .decode(body)
        .map_err(|_| SealError::Malformed)?;
    if raw.len() < NONCE_LEN + 16 {
        return Err(SealError::Malformed);
    }
    let (nonce, ct) = raw.split_at(NONCE_LEN);
    cipher(keyring, version)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::WrongKey)
}

/// Opens with whatever version sealed it and seals again under `to`.
pub fn reseal(keyring: &Keyring, sealed: &str, aad: &str, to: u32) -> Result<String, SealError> {
    let plain = open(keyring, sealed, aad)?;
    Ok(seal(keyring, to, &plain, aad))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let k = Keyring::generate();
        let s = seal(&k, 1, b"hunter2", "inst/DB_PASSWORD");
        assert!(s.starts_with("v1."));
        assert!(!s.contains("hunter2"));
        assert_eq!(
            open(&k, &s, "inst/DB_PASSWORD")
                .ok()
                .as_deref()
                .map(|v| v.as_slice()),
            Some(&b"hunter2"[..])
        );
        assert!(matches!(
            open(&k, &s, "inst/OTHER"),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            open(&Keyring::generate(), &s, "inst/DB_PASSWORD"),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(open(&k, "v1.!!", "x"), Err(SealError::Malformed)));
        let r = reseal(&k, &s, "inst/DB_PASSWORD", 2).unwrap_or_default();
        assert_eq!(version_of(&r), Some(2));
        assert_eq!(
            open(&k, &r, "inst/DB_PASSWORD")
                .ok()
                .as_deref()
                .map(|v| v.as_slice()),
            Some(&b"hunter2"[..])
        );
    }
}
