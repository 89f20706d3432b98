//! Cryptographic building blocks for Redwall.
//!
//! Everything here is a thin, opinionated layer over audited RustCrypto (and
//! friends) crates: no primitive is implemented by hand. The crate performs no
//! I/O; callers decide where keys and hashes are stored.
//!
//! * [`secret`]: a string wrapper that is wiped on drop and never printed.
//! * [`password`]: argon2id hashing, with bcrypt accepted for migration.
//! * [`token`]: prefixed 256-bit bearer tokens and their storage digest.
//! * [`keyring`]: the master key, sub-key derivation and sealing at rest.
//! * [`totp`]: RFC 6238 one-time codes and the enrolment QR code.
//! * [`recovery`]: MFA recovery codes.
//! * [`chain`]: the keyed hash chain over audit log entries.

pub mod chain;
mod error;
pub mod keyring;
mod mac;
pub mod password;
pub mod recovery;
pub mod secret;
pub mod token;
pub mod totp;

pub use error::CryptoError;
pub use secret::Secret;

use subtle::ConstantTimeEq;

/// Compares two byte strings without leaking, through timing, where they
/// first differ.
///
/// Use this for every comparison of a secret (or a digest of one) against
/// attacker-supplied input. The length is not hidden: slices of different
/// lengths compare unequal immediately, which is fine because lengths of our
/// secrets are public.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_contents_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
