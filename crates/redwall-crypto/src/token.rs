//! Prefixed random bearer tokens.
//!
//! A token is a fixed prefix naming its kind (so leaked tokens can be
//! recognised by secret scanners and by people) followed by 32 random bytes
//! in unpadded base64url. Only [`token_digest`] of a token is stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Personal access tokens for the API.
pub const PERSONAL_ACCESS_PREFIX: &str = "rwp_";
/// One-time setup tokens (first admin account).
pub const SETUP_PREFIX: &str = "rws_";
/// Cookie session identifiers.
pub const SESSION_PREFIX: &str = "rwc_";
/// Pending MFA challenges between password and second factor.
pub const MFA_CHALLENGE_PREFIX: &str = "rwm_";
/// Reserved for instance keys.
pub const INSTANCE_KEY_PREFIX: &str = "rwk_";
/// Passwords of the team MQTT broker's clients.
pub const BROKER_CLIENT_PREFIX: &str = "rwb_";
/// One-time tokens that enrol a remote agent.
pub const AGENT_ENROL_PREFIX: &str = "rwe_";

/// Random bytes per token: 256 bits, far beyond guessing range.
const TOKEN_BYTES: usize = 32;
/// Characters after the prefix: 32 random bytes in unpadded base64url.
pub const TOKEN_BODY_LEN: usize = (TOKEN_BYTES * 8).div_ceil(6);

/// Visible characters after the prefix in [`display_prefix`]: 36 bits, enough
/// to tell a user's tokens apart, far too few to help guess one.
const DISPLAY_CHARS: usize = 6;

/// The SHA-256 digest under which a token is stored and looked up.
pub type TokenDigest = [u8; 32];

/// Mints a new token: `prefix` followed by 32 bytes from the OS RNG in
/// unpadded base64url (43 characters).
pub fn new_token(prefix: &str) -> Secret {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    OsRng.fill_bytes(bytes.as_mut());
    let mut token = String::with_capacity(prefix.len() + TOKEN_BODY_LEN);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut token);
    Secret::new(token)
}

/// Returns `Some(candidate)` when it is shaped like a token of kind `prefix`:
/// the prefix, then exactly [`TOKEN_BODY_LEN`] base64url characters.
///
/// This is a cheap, allocation-free syntax check to run on untrusted input
/// before any database lookup; it says nothing about whether the token
/// exists.
pub fn parse_token<'a>(prefix: &str, candidate: &'a str) -> Option<&'a str> {
    if candidate.len() != prefix.len() + TOKEN_BODY_LEN {
        return None;
    }
    let body = candidate.strip_prefix(prefix)?;
    body.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        .then_some(candidate)
}

/// SHA-256 of the token string, which is what gets stored.
///
/// A fast, unkeyed hash is appropriate: tokens carry 256 bits of entropy, so
/// there is nothing to brute-force, and a database leak of digests does not
/// yield usable tokens.
pub fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// A non-secret label for listing a token: its prefix (everything up to and
/// including the first `_`) and the next 6 characters, then `…`.
pub fn display_prefix(token: &str) -> String {
    let head = token.find('_').map_or(0, |i| i + 1);
    let (prefix, body) = token.split_at(head);
    let mut out = String::with_capacity(prefix.len() + DISPLAY_CHARS + '…'.len_utf8());
    out.push_str(prefix);
    out.extend(body.chars().take(DISPLAY_CHARS));
    out.push('…');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PREFIXES: [&str; 7] = [
        BROKER_CLIENT_PREFIX,
        AGENT_ENROL_PREFIX,
        PERSONAL_ACCESS_PREFIX,
        SETUP_PREFIX,
        SESSION_PREFIX,
        MFA_CHALLENGE_PREFIX,
        INSTANCE_KEY_PREFIX,
    ];

    #[test]
    fn new_token_has_prefix_and_256_bits() {
        for prefix in PREFIXES {
            let t = new_token(prefix);
            let s = t.expose();
            assert!(s.starts_with(prefix));
            assert_eq!(s.len(), prefix.len() + 43);
            let raw = URL_SAFE_NO_PAD.decode(&s[prefix.len()..]).unwrap();
            assert_eq!(raw.len(), 32);
            assert_eq!(parse_token(prefix, s), Some(s));
        }
    }

    #[test]
    fn tokens_are_unique() {
        let a = new_token(SESSION_PREFIX);
        let b = new_token(SESSION_PREFIX);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn parse_rejects_wrong_prefix_length_and_alphabet() {
        let t = new_token(PERSONAL_ACCESS_PREFIX);
        let s = t.expose();
        assert_eq!(parse_token(SESSION_PREFIX, s), None);
        assert_eq!(parse_token(PERSONAL_ACCESS_PREFIX, &s[..s.len() - 1]), None);
        assert_eq!(parse_token(PERSONAL_ACCESS_PREFIX, &format!("{s}A")), None);
        assert_eq!(parse_token(PERSONAL_ACCESS_PREFIX, &format!("{s}=")), None);
        assert_eq!(parse_token(PERSONAL_ACCESS_PREFIX, ""), None);
        assert_eq!(
            parse_token(PERSONAL_ACCESS_PREFIX, PERSONAL_ACCESS_PREFIX),
            None
        );
        let plus = format!("{}+{}", &s[..10], &s[11..]);
        assert_eq!(parse_token(PERSONAL_ACCESS_PREFIX, &plus), None);
        // Same byte length, but a multi-byte character in the body.
        let multibyte = format!("{}é{}", &s[..10], &s[12..]);
        assert_eq!(multibyte.len(), s.len());
        assert_eq!(parse_token(PERSONAL_ACCESS_PREFIX, &multibyte), None);
        // A multi-byte character straddling where the prefix would end.
        let straddle = format!("rwpé{}", &s[5..]);
        assert_eq!(parse_token(PERSONAL_ACCESS_PREFIX, &straddle), None);
    }

    #[test]
    fn digest_is_sha256_of_the_string() {
        assert_eq!(
            hex::encode(token_digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = new_token(SESSION_PREFIX);
        assert_eq!(token_digest(t.expose()), token_digest(t.expose()));
        assert_ne!(
            token_digest(t.expose()),
            token_digest(new_token(SESSION_PREFIX).expose())
        );
    }

    #[test]
    fn display_prefix_shows_prefix_and_six_chars() {
        let t = "rwp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcd";
        assert_eq!(display_prefix(t), "rwp_AbCdEf…");
        let t = new_token(SESSION_PREFIX);
        let shown = display_prefix(t.expose());
        assert_eq!(shown.chars().count(), 4 + 6 + 1);
        assert!(t.expose().starts_with(shown.trim_end_matches('…')));
        // Odd input does not panic.
        assert_eq!(display_prefix(""), "…");
        assert_eq!(display_prefix("éééééééé"), "éééééé…");
        assert_eq!(display_prefix("x_é"), "x_é…");
    }

    fn is_b64url(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in any::<String>(), idx in 0usize..5) {
            let prefix = PREFIXES[idx];
            let _ = parse_token(prefix, &s);
            let glued = format!("{prefix}{s}");
            if let Some(t) = parse_token(prefix, &glued) {
                prop_assert_eq!(t, glued.as_str());
                prop_assert_eq!(t.len(), prefix.len() + TOKEN_BODY_LEN);
            }
            let _ = display_prefix(&s);
        }

        #[test]
        fn parse_never_panics_on_huge_strings(c in any::<char>(), n in 0usize..200_000) {
            let s: String = std::iter::repeat_n(c, n).collect();
            prop_assert_eq!(parse_token(SESSION_PREFIX, &s), None);
        }

        #[test]
        fn accepts_minted_tokens_and_rejects_bad_mutations(
            idx in 0usize..5,
            pos in 0usize..TOKEN_BODY_LEN,
            bad in any::<char>().prop_filter("not base64url", |c| !is_b64url(*c)),
        ) {
            let prefix = PREFIXES[idx];
            let token = new_token(prefix);
            let s = token.expose();
            prop_assert_eq!(parse_token(prefix, s), Some(s));

            let mut chars: Vec<char> = s.chars().collect();
            chars[prefix.len() + pos] = bad;
            let mutated: String = chars.into_iter().collect();
            prop_assert_eq!(parse_token(prefix, &mutated), None);
        }
    }
}
