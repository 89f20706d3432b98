//! Time-based one-time passwords (RFC 6238) as authenticator apps expect
//! them: HMAC-SHA-1, 6 digits, 30-second steps.
//!
//! The HOTP computation and the otpauth URI come from `totp-rs`; this module
//! adds secret handling, replay protection and input hygiene.

use qrcode::render::svg;
use qrcode::QrCode;
use rand::rngs::OsRng;
use rand::RngCore;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::{constant_time_eq, CryptoError};

/// Code length. Authenticator apps default to 6 and some support nothing else.
const DIGITS: usize = 6;
/// Step length in seconds.
const STEP_SECS: u64 = 30;
/// Accepted clock skew in steps, either way (RFC 6238 section 5.2 suggests 1).
const SKEW_STEPS: u64 = 1;
/// Length of generated secrets: 160 bits, the RFC 4226 recommendation.
const GENERATED_LEN: usize = 20;
/// Shortest secret accepted: 128 bits, the RFC 4226 minimum.
const MIN_LEN: usize = 16;
/// Smallest rendered QR code edge, in pixels, so phones scan it easily.
const QR_MIN_PX: u32 = 200;

/// A TOTP shared secret. Wiped on drop; `Debug` shows nothing.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    /// A new random 20-byte secret from the OS RNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_LEN]);
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps stored secret bytes; at least 16 bytes are required.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_LEN {
            return Err(CryptoError::InvalidTotpSecret(format!(
                "need at least {MIN_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }

    /// The raw secret, for sealing it at rest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32 without padding, for typing into an app by hand.
    pub fn base32(&self) -> Secret {
        Secret::new(self.totp(None, String::new()).get_secret_base32())
    }

    /// Reads the base32 form that [`TotpSecret::base32`] gives (what an
    /// authenticator app is typed or scanned with).
    pub fn from_base32(text: &str) -> Result<Self, CryptoError> {
        let bytes = totp_rs::Secret::Encoded(text.trim().to_uppercase())
            .to_bytes()
            .map_err(|_| CryptoError::InvalidTotpSecret("not base32".into()))?;
        Self::from_bytes(bytes)
    }

    /// `otpauth://totp/Issuer:account?secret=...&issuer=...&algorithm=SHA1&digits=6&period=30`,
    /// percent-encoded by `totp-rs`.
    ///
    /// The Key URI format forbids `:` inside the issuer and account name, even
    /// encoded, because it separates them in the label; any `:` is replaced
    /// with `_`. The default parameters are spelled out because some apps
    /// mis-handle their absence.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let issuer = issuer.replace(':', "_");
        let account = account.replace(':', "_");
        let uri = Zeroizing::new(self.totp(Some(issuer), account).get_url());
        format!(
            "{}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            uri.as_str()
        )
    }

    /// Checks `code` at unix time `now_secs`, allowing one step of clock skew
    /// either way, and returns the time step it matched.
    ///
    /// Steps at or before `last_used_step` are refused, so each code works
    /// once: store the returned step and pass it next time. Spaces in `code`
    /// are ignored; anything but exactly 6 digits is refused.
    pub fn verify(&self, code: &str, now_secs: u64, last_used_step: Option<u64>) -> Option<u64> {
        let code = normalize_code(code)?;
        let totp = self.totp(None, String::new());
        let current = now_secs / STEP_SECS;
        let first = current.saturating_sub(SKEW_STEPS);
        let last = current.saturating_add(SKEW_STEPS);
        // Try every candidate step even after a match, so timing does not
        // reveal which one matched. The earliest acceptable match wins.
        let mut matched = None;
        for step in first..=last {
            let fresh = last_used_step.is_none_or(|used| step > used);
            let expected = Zeroizing::new(totp.generate(step.saturating_mul(STEP_SECS)));
            let equal = constant_time_eq(expected.as_bytes(), code.as_bytes());
            if equal && fresh && matched.is_none() {
                matched = Some(step);
            }
        }
        matched
    }

    /// The code for unix time `unix_secs` (for tests and test clients).
    pub fn code_at(&self, unix_secs: u64) -> String {
        self.totp(None, String::new()).generate(unix_secs)
    }

    /// A `totp-rs` instance over a copy of the secret, wiped when dropped
    /// (the crate's `zeroize` feature is enabled).
    fn totp(&self, issuer: Option<String>, account: String) -> TOTP {
        // `new_unchecked`: our own constructor already enforces the minimum
        // length, and `otpauth_uri` removes the colons `new` would reject.
        TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            // Unused: `verify` implements the window itself.
            0,
            STEP_SECS,
            self.0.to_vec(),
            issuer,
            account,
        )
    }
}

/// Removes spaces and checks for exactly six ASCII digits.
fn normalize_code(code: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(DIGITS));
    for c in code.chars() {
        if c == ' ' {
            continue;
        }
        if !c.is_ascii_digit() || out.len() == DIGITS {
            return None;
        }
        out.push(c);
    }
    (out.len() == DIGITS).then_some(out)
}

/// Renders `data` (the otpauth URI) as a standalone SVG document with a
/// quiet zone, at least 200x200 pixels.
pub fn qr_svg(data: &str) -> Result<String, CryptoError> {
    let code = QrCode::new(data.as_bytes()).map_err(|e| CryptoError::Qr(e.to_string()))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(QR_MIN_PX, QR_MIN_PX)
        .build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap()
    }

    /// RFC 6238 appendix B, SHA-1 column (8 digits there; the 6-digit code
    /// is the same truncated value mod 10^6, i.e. the last 6 digits).
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn base32_round_trips() {
        let s = TotpSecret::generate();
        let back = TotpSecret::from_base32(s.base32().expose()).unwrap();
        assert_eq!(back.as_bytes(), s.as_bytes());
        assert!(TotpSecret::from_base32("not base32 !!").is_err());
    }

    #[test]
    fn code_at_matches_rfc6238_vectors() {
        let s = rfc_secret();
        for (t, full) in RFC_VECTORS {
            assert_eq!(s.code_at(t), full[2..], "T={t}");
        }
    }

    #[test]
    fn verify_accepts_rfc_vectors_and_returns_the_step() {
        let s = rfc_secret();
        for (t, full) in RFC_VECTORS {
            assert_eq!(s.verify(&full[2..], t, None), Some(t / 30), "T={t}");
        }
    }

    #[test]
    fn verify_allows_one_step_of_skew_but_not_two() {
        let s = TotpSecret::generate();
        let now: u64 = 1_700_000_015;
        let step = now / 30;
        for delta in [-1i64, 0, 1] {
            let code_step = step.checked_add_signed(delta).unwrap();
            let code = s.code_at(code_step * 30);
            assert_eq!(s.verify(&code, now, None), Some(code_step), "delta {delta}");
        }
        for delta in [-2i64, 2, -3, 3] {
            let code = s.code_at(step.checked_add_signed(delta).unwrap() * 30);
            // A 6-digit code can collide by chance (1 in a million per step);
            // make sure we are not asserting on such a collision.
            let collides = (step - 1..=step + 1).any(|st| s.code_at(st * 30) == code);
            if !collides {
                assert_eq!(s.verify(&code, now, None), None, "delta {delta}");
            }
        }
    }

    #[test]
    fn verify_refuses_replay() {
        let s = rfc_secret();
        let code = s.code_at(59);
        let step = s.verify(&code, 59, None).unwrap();
        assert_eq!(step, 1);
        assert_eq!(s.verify(&code, 59, Some(step)), None);
        // Still refused 30 seconds later, when it is within the skew window.
        assert_eq!(s.verify(&code, 89, Some(step)), None);
        // A later step's code is still accepted.
        let next = s.code_at(89);
        assert_eq!(s.verify(&next, 89, Some(step)), Some(2));
        // And an older step than the last used one is refused.
        assert_eq!(s.verify(&code, 59, Some(5)), None);
    }

    #[test]
    fn verify_near_time_zero_does_not_underflow() {
        let s = rfc_secret();
        assert_eq!(s.verify(&s.code_at(0), 0, None), Some(0));
        assert_eq!(s.verify(&s.code_at(30), 0, None), Some(1));
        let far = s.code_at(u64::MAX);
        let _ = s.verify(&far, u64::MAX, None);
    }

    #[test]
    fn verify_accepts_spaces_and_rejects_malformed_codes() {
        let s = rfc_secret();
        assert_eq!(s.verify("287 082", 59, None), Some(1));
        assert_eq!(s.verify(" 2 8 7 0 8 2 ", 59, None), Some(1));
        for bad in [
            "",
            "28708",
            "2870820",
            "94287082",
            "287O82",
            "287-082",
            "287\t082",
            "２８７０８２",
            "-87082",
            "+87082",
        ] {
            assert_eq!(s.verify(bad, 59, None), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_have_the_right_length() {
        assert_eq!(TotpSecret::generate().as_bytes().len(), 20);
        assert_ne!(
            TotpSecret::generate().as_bytes(),
            TotpSecret::generate().as_bytes()
        );
        assert!(TotpSecret::from_bytes(vec![1; 16]).is_ok());
        assert!(matches!(
            TotpSecret::from_bytes(vec![1; 15]),
            Err(CryptoError::InvalidTotpSecret(_))
        ));
        assert_eq!(rfc_secret().as_bytes(), b"12345678901234567890");
    }

    #[test]
    fn base32_and_debug() {
        let s = rfc_secret();
        assert_eq!(s.base32().expose(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(format!("{s:?}"), "TotpSecret([redacted])");
    }

    #[test]
    fn otpauth_uri_is_complete_and_encoded() {
        let s = rfc_secret();
        let uri = s.otpauth_uri("Red Wall", "alice@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Red%20Wall:alice%40example.com?\
             secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Red%20Wall\
             &algorithm=SHA1&digits=6&period=30"
        );
        let odd = s.otpauth_uri("a:b&c", "x:y?z");
        assert!(
            odd.starts_with("otpauth://totp/a_b%26c:x_y%3Fz?secret="),
            "{odd}"
        );
        assert!(odd.contains("&issuer=a_b%26c&"), "{odd}");
    }

    #[test]
    fn qr_svg_renders_a_document() {
        let svg = qr_svg(&rfc_secret().otpauth_uri("Redwall", "alice")).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..40]);
        assert!(svg.contains("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        let width: u32 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(width >= 200, "width {width}");
    }

    #[test]
    fn qr_svg_reports_oversized_data() {
        assert!(matches!(
            qr_svg(&"x".repeat(10_000)),
            Err(CryptoError::Qr(_))
        ));
    }

    proptest! {
        #[test]
        fn verify_never_panics(code in any::<String>(), now in any::<u64>(), last in any::<Option<u64>>()) {
            let s = rfc_secret();
            if let Some(step) = s.verify(&code, now, last) {
                prop_assert!(last.is_none_or(|l| step > l));
                prop_assert!(step.abs_diff(now / 30) <= 1);
            }
        }

        #[test]
        fn current_code_always_verifies(now in 30u64..(1u64 << 40)) {
            let s = rfc_secret();
            prop_assert_eq!(s.verify(&s.code_at(now), now, None), Some(now / 30));
        }
    }
}
