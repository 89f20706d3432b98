//! MFA recovery codes.
//!
//! Codes are 10 characters from Crockford's base32 alphabet (lowercase),
//! shown as `xxxxx-xxxxx`: 50 bits each. That alphabet leaves out `i`, `l`,
//! `o` and `u`, so a code copied by hand from paper is hard to misread, and
//! [`normalize_recovery_code`] maps the usual misreadings (`o` for `0`, `i` or
//! `l` for `1`) back, as Crockford's decoding rules prescribe.
//!
//! Store `keyring.keyed_digest("recovery-code", normalized)`: 50 bits is too
//! little for an unkeyed hash, but fine behind a secret HMAC key.

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Crockford's base32 alphabet, lowercase.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters per code (5 bits each).
const CODE_LEN: usize = 10;
/// Where the dash goes in the displayed form.
const GROUP_LEN: usize = 5;

/// Generates `count` fresh codes, formatted `xxxxx-xxxxx`.
pub fn new_recovery_codes(count: usize) -> Vec<Secret> {
    (0..count).map(|_| new_code()).collect()
}

fn new_code() -> Secret {
    let mut random = Zeroizing::new([0u8; CODE_LEN]);
    OsRng.fill_bytes(random.as_mut());
    let mut code = String::with_capacity(CODE_LEN + 1);
    for (i, byte) in random.iter().enumerate() {
        if i == GROUP_LEN {
            code.push('-');
        }
        // 32 divides 256, so taking the low 5 bits is unbiased.
        code.push(char::from(ALPHABET[usize::from(byte & 0x1f)]));
    }
    Secret::new(code)
}

/// Turns user input into the canonical 10-character form, or `None` when it
/// cannot be a recovery code.
///
/// Surrounding whitespace, dashes and spaces are ignored and case does not
/// matter; `o` reads as `0` and `i`/`l` as `1`. The result is what should be
/// digested and compared.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in input.trim().chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        // Stop early on long input instead of collecting all of it.
        if out.len() == CODE_LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_have_the_documented_shape() {
        let codes = new_recovery_codes(10);
        assert_eq!(codes.len(), 10);
        for code in &codes {
            let s = code.expose();
            assert_eq!(s.len(), 11);
            assert_eq!(&s[5..6], "-");
            assert!(s
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 5 || ALPHABET.contains(&b)));
            assert_eq!(normalize_recovery_code(s).unwrap(), s.replace('-', ""));
        }
        assert!(new_recovery_codes(0).is_empty());
    }

    #[test]
    fn codes_are_distinct() {
        let codes = new_recovery_codes(50);
        let mut set: Vec<&str> = codes.iter().map(|c| c.expose()).collect();
        set.sort_unstable();
        set.dedup();
        assert_eq!(set.len(), 50);
    }

    #[test]
    fn normalization_accepts_sloppy_input() {
        let want = Some("abcde01234".to_string());
        for input in [
            "abcde-01234",
            "abcde01234",
            "  ABCDE-01234\n",
            "ab cde - 012 34",
            "abcde-o1234",
            "abcde-0i234",
            "abcde-0L234",
            "a-b-c-d-e-0-1-2-3-4",
        ] {
            assert_eq!(normalize_recovery_code(input), want, "{input:?}");
        }
    }

    #[test]
    fn normalization_rejects_non_codes() {
        for input in [
            "",
            "-----",
            "abcde-0123",
            "abcde-012345",
            "abcde_01234",
            "abcde-0123u",
            "abcdé-01234",
            "abcde\t01234",
            "abcde-01234-abcde-01234",
        ] {
            assert_eq!(normalize_recovery_code(input), None, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn normalize_never_panics_and_output_is_canonical(s in any::<String>()) {
            if let Some(n) = normalize_recovery_code(&s) {
                prop_assert_eq!(n.len(), CODE_LEN);
                prop_assert!(n.bytes().all(|b| ALPHABET.contains(&b)));
                prop_assert_eq!(normalize_recovery_code(&n), Some(n.clone()));
            }
        }
    }
}
