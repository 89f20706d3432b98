//! HMAC-SHA256 over 32-byte keys, shared by the keyring and the audit chain.

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256(key, parts[0] || parts[1] || ...).
///
/// `Hmac::new_from_slice` returns a `Result` that can never be `Err` for HMAC
/// but would need an unwrap. Instead the 32-byte key is zero-padded to the
/// 64-byte block size and passed as a fixed-size key: RFC 2104 defines
/// exactly that padding for short keys, so the output is identical (a test
/// below checks it against RFC 4231).
pub(crate) fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = Key::<HmacSha256>::default();
    block[..key.len()].copy_from_slice(key);
    let mut mac = <HmacSha256 as KeyInit>::new(&block);
    block.as_mut_slice().zeroize();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 uses a 4-byte key ("Jefe"); padding it to 32 bytes
    /// with zeros must not change the result, which is what RFC 2104 says.
    #[test]
    fn matches_rfc4231_test_case_2() {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let out = hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(out),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn matches_variable_length_constructor() {
        let key = [7u8; 32];
        #[allow(clippy::expect_used)]
        let mut reference =
            <HmacSha256 as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        reference.update(b"hello");
        let expected: [u8; 32] = reference.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, &[b"he", b"llo"]), expected);
    }
}
