//! The one error type of this crate.

/// Errors returned by `redwall-crypto`.
///
/// Messages never include secret material (keys, passwords, plaintexts), so
/// they are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Argon2 parameters that the algorithm (or our policy) does not accept.
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(String),

    /// Hashing a password failed (should not happen with valid parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),

    /// A key (e.g. the master key) could not be decoded or has the wrong size.
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// Sealed data could not be opened: wrong key, wrong associated data,
    /// truncated, tampered with, or an unknown format version. Deliberately
    /// not more specific, so it cannot serve as an oracle.
    #[error("sealed data could not be opened")]
    Open,

    /// A signature that does not verify: wrong key, wrong context or
    /// message, malformed, or not a canonical (strict) Ed25519 signature.
    #[error("signature is not valid")]
    BadSignature,

    /// An argument outside what the function accepts (e.g. an empty
    /// passphrase, or a file kind with characters it may not contain).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A TOTP secret that is too short.
    #[error("invalid TOTP secret: {0}")]
    InvalidTotpSecret(String),

    /// The QR code could not be generated (typically: data too long).
    #[error("QR code generation failed: {0}")]
    Qr(String),
}
