//! Checking an agent build the hub offers before a byte of it is written
//! or run. Pure: no I/O, no clock; [`verify_build`] either returns the
//! statement and the binary or says why the build is refused.
//!
//! As with snapshots, the agent trusts only its own enrolment record: the
//! signature must verify under the hub key kept in `agent.json` (never a
//! key that came with the message), the statement must name this agent's
//! platform, and the binary counts only because its size and SHA-256 are
//! the signed statement's. So neither the connection nor anyone in the
//! middle of it can make the agent run a binary the hub's key never
//! vouched for. The same checks run again before an installed build is
//! started after a restart ([`verify_statement`] on the kept statement,
//! then the file's digest), so a build file changed on disk is not run.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_crypto::signing::PublicKey;
use redwall_policy::agent_protocol::{BuildStatement, SignedBuild, BUILD_CONTEXT, MAX_BUILD_BYTES};
use sha2::{Digest as _, Sha256};

/// The statement version this agent reads.
pub const BUILD_STATEMENT_VERSION: u32 = 1;
/// Longest build id accepted: ids end up in messages and logs.
const MAX_ID_CHARS: usize = 128;
/// How many hex digits of a digest name a build in messages and logs.
pub const SHA_PREFIX_CHARS: usize = 12;

/// Why a build is not installed. Each says what failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildRefusal {
    #[error("the signature is not the hub's")]
    BadSignature,
    #[error("the statement is not a build statement: {0}")]
    BadStatement(String),
    #[error("the statement has version {0}; this agent reads version {BUILD_STATEMENT_VERSION}")]
    UnknownVersion(u32),
    #[error("the build is for {theirs}, this agent runs on {ours}")]
    OtherPlatform { theirs: String, ours: String },
    #[error("the build is {0} bytes, more than the {MAX_BUILD_BYTES} an agent accepts")]
    TooLarge(u64),
    #[error("the binary is not base64")]
    BadEncoding,
    #[error("the binary is {actual} bytes, the statement says {signed}")]
    WrongSize { signed: u64, actual: u64 },
    #[error("the binary does not match the signed SHA-256")]
    WrongDigest,
}

/// A build whose statement and binary were checked against the hub's
/// signature and this agent's platform.
pub struct CheckedBuild {
    pub statement: BuildStatement,
    pub binary: Vec<u8>,
}

impl std::fmt::Debug for CheckedBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedBuild")
            .field("statement", &self.statement)
            .field("binary_bytes", &self.binary.len())
            .finish()
    }
}

/// Checks `signed` in the order that spends least on a forgery: the
/// signature first (nothing unsigned is parsed), then the statement's
/// claims (a build too large is refused before its binary is decoded),
/// and only then the binary against the signed size and digest.
pub fn verify_build(
    signed: &SignedBuild,
    hub_key: &PublicKey,
    platform: &str,
) -> Result<CheckedBuild, BuildRefusal> {
    let statement = verify_statement(&signed.statement, &signed.signature, hub_key, platform)?;
    // Base64 is 4 characters per 3 bytes: refuse a body that cannot fit
    // the signed size before decoding it into memory.
    let encoded = signed.binary.trim();
    let most_chars = statement.size.div_ceil(3).saturating_mul(4);
    if u64::try_from(encoded.len()).unwrap_or(u64::MAX) > most_chars {
        return Err(BuildRefusal::WrongSize {
            signed: statement.size,
            actual: u64::try_from(encoded.len() / 4 * 3).unwrap_or(u64::MAX),
        });
    }
    let binary = STANDARD
        .decode(encoded)
        .map_err(|_| BuildRefusal::BadEncoding)?;
    check_binary(&statement, &binary)?;
    Ok(CheckedBuild { statement, binary })
}

/// The signature over `statement` under `hub_key`, then its claims: the
/// version, a plain id and version, this agent's `platform`, a digest in
/// the form the agent names files by, and a size it accepts.
pub fn verify_statement(
    statement: &str,
    signature: &str,
    hub_key: &PublicKey,
    platform: &str,
) -> Result<BuildStatement, BuildRefusal> {
    let signature = STANDARD
        .decode(signature.trim())
        .map_err(|_| BuildRefusal::BadSignature)?;
    hub_key
        .verify(BUILD_CONTEXT, statement.as_bytes(), &signature)
        .map_err(|_| BuildRefusal::BadSignature)?;
    let statement: BuildStatement =
        serde_json::from_str(statement).map_err(|e| BuildRefusal::BadStatement(e.to_string()))?;
    if statement.v != BUILD_STATEMENT_VERSION {
        return Err(BuildRefusal::UnknownVersion(statement.v));
    }
    if !plain_id(&statement.id) {
        return Err(BuildRefusal::BadStatement(
            "the build id is not a plain id".into(),
        ));
    }
    if redwall_policy::agent_protocol::check_version(&statement.version).is_err() {
        return Err(BuildRefusal::BadStatement(
            "the version is not 1 to 40 printable characters".into(),
        ));
    }
    if statement.platform != platform {
        return Err(BuildRefusal::OtherPlatform {
            theirs: statement.platform.clone(),
            ours: platform.to_owned(),
        });
    }
    // The digest names the build's file: only 64 lowercase hex digits, so
    // it can never be a path of its own.
    if !is_sha256_hex(&statement.sha256) {
        return Err(BuildRefusal::BadStatement(
            "the SHA-256 is not 64 lowercase hex digits".into(),
        ));
    }
    if statement.size > MAX_BUILD_BYTES {
        return Err(BuildRefusal::TooLarge(statement.size));
    }
    Ok(statement)
}

/// `binary` has the statement's size and SHA-256.
pub fn check_binary(statement: &BuildStatement, binary: &[u8]) -> Result<(), BuildRefusal> {
    let actual = u64::try_from(binary.len()).unwrap_or(u64::MAX);
    if actual != statement.size {
        return Err(BuildRefusal::WrongSize {
            signed: statement.size,
            actual,
        });
    }
    if sha256_hex(binary) != statement.sha256 {
        return Err(BuildRefusal::WrongDigest);
    }
    Ok(())
}

/// SHA-256, lowercase hex (how statements, hellos and file names say it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first digits of a digest, to name a build in messages.
pub fn short(sha256: &str) -> &str {
    sha256.get(..SHA_PREFIX_CHARS).unwrap_or(sha256)
}

fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What the hub does when it offers a build, for this crate's unit tests.
#[cfg(test)]
pub(crate) mod test_signing {
    use super::*;
    use redwall_crypto::signing::HubSigningKey;

    /// The statement the hub would sign for `binary` on `platform`.
    pub(crate) fn statement_for(binary: &[u8], platform: &str) -> BuildStatement {
        BuildStatement {
            v: BUILD_STATEMENT_VERSION,
            id: "bld_1".into(),
            version: "0.2.0".into(),
            platform: platform.into(),
            sha256: sha256_hex(binary),
            size: binary.len() as u64,
            created_at: 1_700_000_000,
        }
    }

    /// Signs `statement` as given and attaches `binary` (tests alter
    /// either to make bad builds).
    pub(crate) fn sign(
        hub: &HubSigningKey,
        statement: &BuildStatement,
        binary: &[u8],
    ) -> SignedBuild {
        let statement = serde_json::to_string(statement).unwrap_or_default();
        let signature = hub.sign(BUILD_CONTEXT, statement.as_bytes());
        SignedBuild {
            statement,
            signature: STANDARD.encode(signature),
            binary: STANDARD.encode(binary),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::test_signing::{sign, statement_for};
    use super::*;
    use redwall_crypto::signing::HubSigningKey;

    const PLATFORM: &str = "linux-x86_64";
    const BINARY: &[u8] = b"\x7fELF pretend agent build";

    fn check(hub: &HubSigningKey, signed: &SignedBuild) -> Result<CheckedBuild, BuildRefusal> {
        verify_build(signed, &hub.public_key(), PLATFORM)
    }

    #[test]
    fn a_good_build_is_returned_with_its_binary() {
        let hub = HubSigningKey::generate();
        let signed = sign(&hub, &statement_for(BINARY, PLATFORM), BINARY);
        let checked = check(&hub, &signed).unwrap();
        assert_eq!(checked.binary, BINARY);
        assert_eq!(checked.statement.sha256, sha256_hex(BINARY));
        assert_eq!(checked.statement.version, "0.2.0");
    }

    #[test]
    fn any_changed_byte_of_the_statement_is_refused() {
        let hub = HubSigningKey::generate();
        let signed = sign(&hub, &statement_for(BINARY, PLATFORM), BINARY);
        for i in 0..signed.statement.len() {
            let mut bytes = signed.statement.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(statement) = String::from_utf8(bytes) else {
                continue;
            };
            let tampered = SignedBuild {
                statement,
                ..signed.clone()
            };
            assert_eq!(
                check(&hub, &tampered).unwrap_err(),
                BuildRefusal::BadSignature,
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_changed_signature_or_another_key_is_refused() {
        let hub = HubSigningKey::generate();
        let signed = sign(&hub, &statement_for(BINARY, PLATFORM), BINARY);
        let mut signature = STANDARD.decode(&signed.signature).unwrap();
        signature[10] ^= 0x80;
        let tampered = SignedBuild {
            signature: STANDARD.encode(&signature),
            ..signed.clone()
        };
        assert_eq!(
            check(&hub, &tampered).unwrap_err(),
            BuildRefusal::BadSignature
        );
        let not_base64 = SignedBuild {
            signature: "***".into(),
            ..signed.clone()
        };
        assert_eq!(
            check(&hub, &not_base64).unwrap_err(),
            BuildRefusal::BadSignature
        );
        // Well signed, but by a key this agent was not enrolled with.
        let other = HubSigningKey::generate();
        let by_other = sign(&other, &statement_for(BINARY, PLATFORM), BINARY);
        assert_eq!(
            check(&hub, &by_other).unwrap_err(),
            BuildRefusal::BadSignature
        );
        // A signature made for another purpose (a snapshot statement) with
        // the right key does not count either: the context differs.
        let statement = serde_json::to_string(&statement_for(BINARY, PLATFORM)).unwrap();
        let wrong_context = SignedBuild {
            signature: STANDARD.encode(hub.sign(
                redwall_policy::snapshot_format::STATEMENT_CONTEXT,
                statement.as_bytes(),
            )),
            statement,
            binary: STANDARD.encode(BINARY),
        };
        assert_eq!(
            check(&hub, &wrong_context).unwrap_err(),
            BuildRefusal::BadSignature
        );
    }

    #[test]
    fn any_changed_byte_of_the_binary_is_refused() {
        let hub = HubSigningKey::generate();
        let statement = statement_for(BINARY, PLATFORM);
        for i in 0..BINARY.len() {
            let mut binary = BINARY.to_vec();
            binary[i] ^= 0x01;
            let tampered = sign(&hub, &statement, &binary);
            assert_eq!(
                check(&hub, &tampered).unwrap_err(),
                BuildRefusal::WrongDigest,
                "byte {i}"
            );
        }
        // A byte more or less is a size the hub did not sign.
        let longer = sign(&hub, &statement, &[BINARY, b"!"].concat());
        assert!(matches!(
            check(&hub, &longer).unwrap_err(),
            BuildRefusal::WrongSize { .. }
        ));
        let shorter = sign(&hub, &statement, &BINARY[1..]);
        assert!(matches!(
            check(&hub, &shorter).unwrap_err(),
            BuildRefusal::WrongSize { .. }
        ));
        let far_longer = sign(&hub, &statement, &[0u8; 4096]);
        assert!(matches!(
            check(&hub, &far_longer).unwrap_err(),
            BuildRefusal::WrongSize { .. }
        ));
        let mut not_base64 = sign(&hub, &statement, BINARY);
        not_base64.binary = "%%%%".into();
        assert_eq!(
            check(&hub, &not_base64).unwrap_err(),
            BuildRefusal::BadEncoding
        );
    }

    #[test]
    fn a_build_for_another_platform_is_refused() {
        let hub = HubSigningKey::generate();
        let signed = sign(&hub, &statement_for(BINARY, "linux-aarch64"), BINARY);
        assert_eq!(
            check(&hub, &signed).unwrap_err(),
            BuildRefusal::OtherPlatform {
                theirs: "linux-aarch64".into(),
                ours: PLATFORM.into()
            }
        );
    }

    #[test]
    fn a_wrong_size_or_a_too_large_build_is_refused() {
        let hub = HubSigningKey::generate();
        let mut statement = statement_for(BINARY, PLATFORM);
        statement.size += 1;
        assert!(matches!(
            check(&hub, &sign(&hub, &statement, BINARY)).unwrap_err(),
            BuildRefusal::WrongSize { .. }
        ));
        statement.size = MAX_BUILD_BYTES + 1;
        assert_eq!(
            check(&hub, &sign(&hub, &statement, BINARY)).unwrap_err(),
            BuildRefusal::TooLarge(MAX_BUILD_BYTES + 1)
        );
    }

    #[test]
    fn statements_of_another_version_or_shape_are_refused() {
        let hub = HubSigningKey::generate();
        let good = statement_for(BINARY, PLATFORM);
        let mut v2 = good.clone();
        v2.v = 2;
        assert_eq!(
            check(&hub, &sign(&hub, &v2, BINARY)).unwrap_err(),
            BuildRefusal::UnknownVersion(2)
        );
        for bad_sha in [
            good.sha256.to_uppercase(),
            format!("../{}", &good.sha256[3..]),
            good.sha256[1..].to_owned(),
        ] {
            let mut s = good.clone();
            s.sha256 = bad_sha;
            assert!(matches!(
                check(&hub, &sign(&hub, &s, BINARY)).unwrap_err(),
                BuildRefusal::BadStatement(_)
            ));
        }
        let mut bad_id = good.clone();
        bad_id.id = "../x".into();
        assert!(matches!(
            check(&hub, &sign(&hub, &bad_id, BINARY)).unwrap_err(),
            BuildRefusal::BadStatement(_)
        ));
        let mut bad_version = good.clone();
        bad_version.version = "1.0 beta".into();
        assert!(matches!(
            check(&hub, &sign(&hub, &bad_version, BINARY)).unwrap_err(),
            BuildRefusal::BadStatement(_)
        ));
        // Signed, but not a build statement (unknown field).
        let mut value = serde_json::to_value(&good).unwrap();
        value["extra"] = 1.into();
        let statement = value.to_string();
        let signed = SignedBuild {
            signature: STANDARD.encode(hub.sign(BUILD_CONTEXT, statement.as_bytes())),
            statement,
            binary: STANDARD.encode(BINARY),
        };
        assert!(matches!(
            check(&hub, &signed).unwrap_err(),
            BuildRefusal::BadStatement(_)
        ));
    }

    #[test]
    fn digests_are_named_by_their_first_digits() {
        let sha = sha256_hex(b"x");
        assert!(is_sha256_hex(&sha));
        assert_eq!(short(&sha).len(), SHA_PREFIX_CHARS);
        assert!(sha.starts_with(short(&sha)));
        assert_eq!(short("abc"), "abc");
    }
}
