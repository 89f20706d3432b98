//! HMAC-SHA256, the one implementation: the keyring's derivations, the
//! audit chain and the instances' editor and endpoint tokens all use it.

use hmac::digest::{Digest, Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256(key, parts[0] || parts[1] || ...), for a key of any length.
///
/// `Hmac::new_from_slice` returns a `Result` that can never be `Err` for HMAC
/// but would need an unwrap. Instead the key is brought to the 64-byte block
/// size as RFC 2104 does (hashed when longer, zero-padded) and passed as a
/// fixed-size key: the output is identical (tests below check it against
/// RFC 4231, short and long keys).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let mut digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
        digest.as_mut_slice().zeroize();
    } else {
        block[..key.len()].copy_from_slice(key);
    }
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

    /// RFC 4231 test case 6: a 131-byte key, longer than the block, is
    /// hashed first.
    #[test]
    fn matches_rfc4231_test_case_6_long_key() {
        let key = [0xaau8; 131];
        let out = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(out),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn any_key_length_matches_the_variable_length_constructor() {
        for len in [0usize, 1, 31, 32, 63, 64, 65, 200] {
            let key = vec![7u8; len];
            #[allow(clippy::expect_used)]
            let mut reference =
                <HmacSha256 as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
            reference.update(b"hello");
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            assert_eq!(hmac_sha256(&key, &[b"he", b"llo"]), expected, "{len}");
        }
    }
}
