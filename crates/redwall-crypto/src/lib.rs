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
//! * [`mac`]: HMAC-SHA256, the one implementation (keyring derivations, the
//!   audit chain, the instances' editor and endpoint tokens).
//! * [`versioned_seal`]: AES-256-GCM with versioned keys, for instance
//!   secrets.
//! * [`signing`]: the hub's Ed25519 signing key (sealed at rest with the
//!   keyring) and public keys, for signed snapshots.
//! * [`agent_box`]: X25519 sealed boxes (libsodium's `crypto_box_seal`),
//!   which carry a snapshot's credentials to one agent only.
//! * [`data_key`]: envelope encryption, each object under its own data key.
//! * [`passphrase_box`]: files sealed under a passphrase (Argon2id), for
//!   snapshot exports.
//!
//! # Which AEAD where, and why
//!
//! * **XChaCha20-Poly1305** ([`keyring::Sealer`]): TOTP secrets, the sealed
//!   MFA challenge, device cookies, instance handover codes, the OIDC
//!   login cookie, sealed SSO
//!   client secrets. Its 192-bit nonces are drawn at random for every
//!   message, with no limit worth counting on how many one key may seal,
//!   and it is constant-time without AES instructions.
//! * **XChaCha20-Poly1305 under a per-object data key** ([`data_key`]):
//!   objects too large to reseal when keys change (snapshots); only the
//!   data key is sealed with the keyring's [`keyring::Sealer`].
//! * **XChaCha20-Poly1305 under an Argon2id key** ([`passphrase_box`]):
//!   exported files that must open without the keyring; random nonces for
//!   the same reason as above, and the file's header as additional data.
//! * **AES-256-GCM** ([`versioned_seal`]): instance secrets. Each key
//!   version is its own derived key and `rotate-instance-secrets` moves
//!   every value to a new version, which keeps the number of random 96-bit
//!   nonces per key far below GCM's 2^32 bound. Kept for the values already
//!   stored that way; a future key version may move them to XChaCha20.
//! * **XSalsa20-Poly1305 under an ephemeral X25519 key** ([`agent_box`]):
//!   libsodium's sealed box, for what the hub sends one remote agent (a
//!   snapshot's credentials). Public-key, so the hub holds nothing that
//!   opens it afterwards; no additional data in the format, so the box is
//!   bound to its snapshot by the hub's signed digest over its contents.
//! * Nothing is encrypted without authentication, and every sealed value is
//!   bound to where it belongs by its additional data (user id, instance id
//!   and variable name, purpose), so a value copied elsewhere does not open.

pub mod agent_box;
pub mod chain;
pub mod data_key;
mod error;
pub mod keyring;
pub mod mac;
pub mod passphrase_box;
pub mod password;
pub mod recovery;
pub mod secret;
pub mod signing;
pub mod tls_pin;
pub mod token;
pub mod totp;
pub mod versioned_seal;

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
