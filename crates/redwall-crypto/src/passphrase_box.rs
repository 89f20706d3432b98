//! Files protected by a passphrase, for snapshot exports that leave the hub
//! (and its keyring) and must open elsewhere with nothing but a passphrase.
//!
//! Format (`v1`), three parts:
//!
//! ```text
//! redwall-sealed-file v1 kind=snapshot\n
//! {"kdf":"argon2id","m_kib":65536,"t":3,"p":1,"salt":"<base64>","nonce":"<base64>"}\n
//! <XChaCha20-Poly1305 ciphertext || 16-byte tag, raw bytes, to the end of the file>
//! ```
//!
//! The first line says what the file is, so a person (or `file`, or `head`)
//! can tell; the second holds the Argon2id cost, the 16-byte salt and the
//! 24-byte nonce (standard base64 with padding); the key is
//! Argon2id(passphrase bytes as given, no Unicode normalisation, salt). The
//! ciphertext stays raw bytes: exports can be tens of megabytes. The whole
//! header (both lines with their newlines) is the AEAD's associated data,
//! so a file whose kind or cost was edited does not open.
//!
//! A file may come from anywhere, so its parameters are checked against
//! fixed bounds *before* Argon2 runs: a crafted header cannot make us
//! allocate gigabytes or spin for minutes.

use std::ops::RangeInclusive;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::CryptoError;

/// First word of the magic line.
const MAGIC: &str = "redwall-sealed-file";
/// The format version this module writes and reads.
const VERSION: &str = "v1";
/// The one key-derivation function of `v1`.
const KDF: &str = "argon2id";

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
/// Longest magic line we look for a newline in (the kind is at most 64).
const MAX_MAGIC_LINE: usize = 128;
/// Longest JSON header line we look for a newline in.
const MAX_HEADER_LINE: usize = 1024;
/// Longest `kind`.
const MAX_KIND_LEN: usize = 64;

/// Memory cost accepted on open, in KiB (8 MiB to 256 MiB).
pub const M_KIB_RANGE: RangeInclusive<u32> = 8192..=262_144;
/// Passes accepted on open.
pub const T_RANGE: RangeInclusive<u32> = 1..=10;
/// Lanes accepted on open.
pub const P_RANGE: RangeInclusive<u32> = 1..=4;

/// Argon2id cost of a passphrase-sealed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassphraseParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes over memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for PassphraseParams {
    /// 64 MiB, 3 passes, 1 lane: well above the cost of a login hash,
    /// because an export is opened rarely and may be attacked offline for
    /// as long as anyone keeps a copy.
    fn default() -> Self {
        Self {
            m_kib: 65_536,
            t: 3,
            p: 1,
        }
    }
}

impl PassphraseParams {
    /// Within the bounds [`open_with_passphrase`] accepts.
    fn is_acceptable(&self) -> bool {
        M_KIB_RANGE.contains(&self.m_kib) && T_RANGE.contains(&self.t) && P_RANGE.contains(&self.p)
    }
}

/// Why a passphrase-sealed file did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassphraseBoxError {
    /// No Redwall sealed-file header, a malformed one, or a file of another
    /// kind than the one asked for.
    #[error("not a Redwall passphrase-sealed file of the expected kind")]
    NotThisFormat,
    /// A Redwall sealed file of a format version or key-derivation function
    /// this build does not know.
    #[error("this sealed file uses a format version this Redwall does not know; open it with a newer Redwall")]
    UnsupportedVersion,
    /// The header asks for Argon2 costs outside the accepted bounds.
    #[error(
        "the sealed file asks for key-derivation costs outside the accepted bounds \
         (memory 8192..=262144 KiB, 1..=10 passes, 1..=4 lanes); refusing to run them"
    )]
    UnsafeParameters,
    /// The passphrase is wrong, or the file was altered or truncated. The
    /// two cannot be told apart, by design.
    #[error("wrong passphrase, or the file is damaged")]
    WrongPassphraseOrDamaged,
}

/// Seals `plaintext` under `passphrase` with the default cost.
pub fn seal_with_passphrase(
    passphrase: &str,
    kind: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_with_passphrase_params(passphrase, kind, plaintext, PassphraseParams::default())
}

/// Seals `plaintext` under `passphrase` with the given cost, which must lie
/// within the bounds open accepts. `kind` (1 to 64 of `a-z 0-9 . _ -`)
/// names what the file holds, e.g. `"snapshot"`.
pub fn seal_with_passphrase_params(
    passphrase: &str,
    kind: &str,
    plaintext: &[u8],
    params: PassphraseParams,
) -> Result<Vec<u8>, CryptoError> {
    check_kind(kind)?;
    if passphrase.is_empty() {
        return Err(CryptoError::InvalidInput("the passphrase is empty".into()));
    }
    if !params.is_acceptable() {
        return Err(CryptoError::InvalidParams(format!(
            "m_kib={}, t={}, p={} (files must stay within m_kib {M_KIB_RANGE:?}, t {T_RANGE:?}, p {P_RANGE:?} to open)",
            params.m_kib, params.t, params.p
        )));
    }
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let header = Header {
        params,
        salt,
        nonce,
    }
    .render(kind);
    let key = derive_key(passphrase, &salt, params)
        .map_err(|e| CryptoError::Hash(format!("argon2id: {e}")))?;
    let ciphertext = XChaCha20Poly1305::new(key.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: header.as_bytes(),
            },
        )
        .map_err(|_| CryptoError::InvalidInput("the plaintext is too large to seal".into()))?;
    let mut out = header.into_bytes();
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a file made by [`seal_with_passphrase`] for the same `kind`.
/// The header is checked first, then the Argon2 costs, and only then is the
/// key derived. The plaintext is wiped when dropped.
pub fn open_with_passphrase(
    passphrase: &str,
    kind: &str,
    file: &[u8],
) -> Result<Zeroizing<Vec<u8>>, PassphraseBoxError> {
    let (magic, rest) = split_line(file, MAX_MAGIC_LINE)?;
    check_magic(magic, kind)?;
    let (json, ciphertext) = split_line(rest, MAX_HEADER_LINE)?;
    let header = Header::parse(json)?;
    if !header.params.is_acceptable() {
        return Err(PassphraseBoxError::UnsafeParameters);
    }
    let aad = &file[..magic.len() + 1 + json.len() + 1];
    let key = derive_key(passphrase, &header.salt, header.params)
        .map_err(|_| PassphraseBoxError::UnsafeParameters)?;
    XChaCha20Poly1305::new(key.as_ref().into())
        .decrypt(
            XNonce::from_slice(&header.nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| PassphraseBoxError::WrongPassphraseOrDamaged)
}

fn check_kind(kind: &str) -> Result<(), CryptoError> {
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    if kind.is_empty() || kind.len() > MAX_KIND_LEN || !kind.chars().all(allowed) {
        return Err(CryptoError::InvalidInput(format!(
            "file kind {kind:?} must be 1 to {MAX_KIND_LEN} of a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn derive_key(
    passphrase: &str,
    salt: &[u8; SALT_LEN],
    params: PassphraseParams,
) -> Result<Zeroizing<[u8; 32]>, argon2::Error> {
    let params = Params::new(params.m_kib, params.t, params.p, Some(32))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password_into(
        passphrase.as_bytes(),
        salt,
        key.as_mut(),
    )?;
    Ok(key)
}

/// Splits off the first line (without its newline), which must end within
/// `max` bytes.
fn split_line(data: &[u8], max: usize) -> Result<(&[u8], &[u8]), PassphraseBoxError> {
    let end = data
        .iter()
        .take(max)
        .position(|&b| b == b'\n')
        .ok_or(PassphraseBoxError::NotThisFormat)?;
    Ok((&data[..end], &data[end + 1..]))
}

/// `redwall-sealed-file v1 kind=<kind>`: the format, then its version, then
/// the kind asked for.
fn check_magic(line: &[u8], kind: &str) -> Result<(), PassphraseBoxError> {
    let line = std::str::from_utf8(line).map_err(|_| PassphraseBoxError::NotThisFormat)?;
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(PassphraseBoxError::NotThisFormat);
    }
    match words.next() {
        Some(VERSION) => {}
        Some(v) if is_version_word(v) => return Err(PassphraseBoxError::UnsupportedVersion),
        _ => return Err(PassphraseBoxError::NotThisFormat),
    }
    let found = words.next().and_then(|w| w.strip_prefix("kind="));
    if found != Some(kind) || words.next().is_some() {
        return Err(PassphraseBoxError::NotThisFormat);
    }
    Ok(())
}

/// `v` and a number, as later versions will be named.
fn is_version_word(word: &str) -> bool {
    word.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The JSON header line.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    params: PassphraseParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    /// Both header lines, each with its newline.
    fn render(&self, kind: &str) -> String {
        format!(
            "{MAGIC} {VERSION} kind={kind}\n\
             {{\"kdf\":\"{KDF}\",\"m_kib\":{},\"t\":{},\"p\":{},\"salt\":\"{}\",\"nonce\":\"{}\"}}\n",
            self.params.m_kib,
            self.params.t,
            self.params.p,
            STANDARD.encode(self.salt),
            STANDARD.encode(self.nonce),
        )
    }

    /// Parses the JSON line: exactly the six known members, no others.
    fn parse(line: &[u8]) -> Result<Self, PassphraseBoxError> {
        let line = std::str::from_utf8(line).map_err(|_| PassphraseBoxError::NotThisFormat)?;
        let members = json::parse_flat_object(line).ok_or(PassphraseBoxError::NotThisFormat)?;
        let get = |name: &str| members.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
        let known = ["kdf", "m_kib", "t", "p", "salt", "nonce"];
        if members.len() != known.len() || known.iter().any(|k| get(k).is_none()) {
            return Err(PassphraseBoxError::NotThisFormat);
        }
        if get("kdf").and_then(json::Scalar::as_str) != Some(KDF) {
            return Err(PassphraseBoxError::UnsupportedVersion);
        }
        let number = |name| {
            get(name)
                .and_then(json::Scalar::as_u32)
                .ok_or(PassphraseBoxError::NotThisFormat)
        };
        let params = PassphraseParams {
            m_kib: number("m_kib")?,
            t: number("t")?,
            p: number("p")?,
        };
        Ok(Self {
            params,
            salt: decode_fixed(get("salt"))?,
            nonce: decode_fixed(get("nonce"))?,
        })
    }
}

fn decode_fixed<const N: usize>(
    value: Option<&json::Scalar<'_>>,
) -> Result<[u8; N], PassphraseBoxError> {
    let text = value
        .and_then(json::Scalar::as_str)
        .ok_or(PassphraseBoxError::NotThisFormat)?;
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| PassphraseBoxError::NotThisFormat)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| PassphraseBoxError::NotThisFormat)
}

/// Just enough JSON for the header: one flat object whose values are
/// strings without escapes or unsigned integers. This crate has no JSON
/// dependency, and the header never needs more; anything else is refused.
mod json {
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Scalar<'a> {
        Str(&'a str),
        Num(u64),
    }

    impl<'a> Scalar<'a> {
        pub(super) fn as_str(&self) -> Option<&'a str> {
            match self {
                Scalar::Str(s) => Some(s),
                Scalar::Num(_) => None,
            }
        }

        pub(super) fn as_u32(&self) -> Option<u32> {
            match self {
                Scalar::Num(n) => u32::try_from(*n).ok(),
                Scalar::Str(_) => None,
            }
        }
    }

    /// The members in order; `None` for anything else than such an object,
    /// including a repeated name.
    pub(super) fn parse_flat_object(text: &str) -> Option<Vec<(&str, Scalar<'_>)>> {
        let mut rest = skip_ws(text).strip_prefix('{')?;
        let mut members: Vec<(&str, Scalar<'_>)> = Vec::new();
        rest = skip_ws(rest);
        if let Some(after) = rest.strip_prefix('}') {
            return skip_ws(after).is_empty().then_some(members);
        }
        loop {
            let (name, after) = string(skip_ws(rest))?;
            let after = skip_ws(after).strip_prefix(':')?;
            let (value, after) = scalar(skip_ws(after))?;
            if members.iter().any(|(n, _)| *n == name) {
                return None;
            }
            members.push((name, value));
            let after = skip_ws(after);
            if let Some(next) = after.strip_prefix(',') {
                rest = next;
            } else {
                let end = after.strip_prefix('}')?;
                return skip_ws(end).is_empty().then_some(members);
            }
        }
    }

    fn skip_ws(s: &str) -> &str {
        s.trim_start_matches([' ', '\t', '\r', '\n'])
    }

    /// A string with no escapes and no control characters.
    fn string(s: &str) -> Option<(&str, &str)> {
        let body = s.strip_prefix('"')?;
        let end = body.find('"')?;
        let value = &body[..end];
        if value.chars().any(|c| c == '\\' || c.is_control()) {
            return None;
        }
        Some((value, &body[end + 1..]))
    }

    fn scalar(s: &str) -> Option<(Scalar<'_>, &str)> {
        if s.starts_with('"') {
            let (value, rest) = string(s)?;
            return Some((Scalar::Str(value), rest));
        }
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (number, rest) = s.split_at(digits);
        // JSON has no leading zeros; u64 overflow is refused by parse.
        if number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
            return None;
        }
        Some((Scalar::Num(number.parse().ok()?), rest))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The cheapest cost open accepts, so the tests stay fast.
    const FAST: PassphraseParams = PassphraseParams {
        m_kib: 8192,
        t: 1,
        p: 1,
    };

    fn seal_fast(passphrase: &str, kind: &str, plaintext: &[u8]) -> Vec<u8> {
        seal_with_passphrase_params(passphrase, kind, plaintext, FAST).unwrap()
    }

    /// Where the ciphertext starts: after the second newline.
    fn body_start(file: &[u8]) -> usize {
        let first = file.iter().position(|&b| b == b'\n').unwrap();
        first + 1 + file[first + 1..].iter().position(|&b| b == b'\n').unwrap() + 1
    }

    fn header_text(file: &[u8]) -> String {
        String::from_utf8(file[..body_start(file)].to_vec()).unwrap()
    }

    /// Replaces text in the header, keeping the body.
    fn edit_header(file: &[u8], from: &str, to: &str) -> Vec<u8> {
        let header = header_text(file);
        assert!(header.contains(from), "{header}");
        let mut out = header.replacen(from, to, 1).into_bytes();
        out.extend_from_slice(&file[body_start(file)..]);
        out
    }

    #[test]
    fn default_cost_round_trip() {
        let file = seal_with_passphrase("correct horse", "snapshot", b"flows").unwrap();
        let header = header_text(&file);
        assert!(header.starts_with("redwall-sealed-file v1 kind=snapshot\n{\"kdf\":\"argon2id\",\"m_kib\":65536,\"t\":3,\"p\":1,"), "{header}");
        let back = open_with_passphrase("correct horse", "snapshot", &file).unwrap();
        assert_eq!(back.as_slice(), b"flows");
    }

    #[test]
    fn round_trip_with_small_cost() {
        for pt in [b"".as_slice(), b"{}", &[0u8; 70_000]] {
            let file = seal_fast("pw", "snapshot", pt);
            assert_eq!(file.len(), body_start(&file) + pt.len() + 16);
            assert_eq!(
                open_with_passphrase("pw", "snapshot", &file)
                    .unwrap()
                    .as_slice(),
                pt
            );
        }
    }

    #[test]
    fn header_is_what_the_documentation_says() {
        let file = seal_fast("pw", "snapshot", b"x");
        let header = header_text(&file);
        let (magic, json) = header.split_once('\n').unwrap();
        assert_eq!(magic, "redwall-sealed-file v1 kind=snapshot");
        let members = json::parse_flat_object(json.trim_end()).unwrap();
        let names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["kdf", "m_kib", "t", "p", "salt", "nonce"]);
        let parsed = Header::parse(json.trim_end().as_bytes()).unwrap();
        assert_eq!(parsed.params, FAST);
        // Salt and nonce are fresh for every file.
        let other = Header::parse(
            header_text(&seal_fast("pw", "snapshot", b"x"))
                .lines()
                .nth(1)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        assert_ne!(parsed.salt, other.salt);
        assert_ne!(parsed.nonce, other.nonce);
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let file = seal_fast("pw", "snapshot", b"secret flows");
        for wrong in ["", "pW", "pw ", "p"] {
            assert_eq!(
                open_with_passphrase(wrong, "snapshot", &file).err(),
                Some(PassphraseBoxError::WrongPassphraseOrDamaged),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn any_flipped_ciphertext_byte_is_refused() {
        let file = seal_fast("pw", "snapshot", b"0123456789");
        for i in body_start(&file)..file.len() {
            let mut t = file.clone();
            t[i] ^= 0x04;
            assert_eq!(
                open_with_passphrase("pw", "snapshot", &t).err(),
                Some(PassphraseBoxError::WrongPassphraseOrDamaged),
                "byte {i}"
            );
        }
        let truncated = &file[..file.len() - 1];
        assert_eq!(
            open_with_passphrase("pw", "snapshot", truncated).err(),
            Some(PassphraseBoxError::WrongPassphraseOrDamaged)
        );
        let header_only = &file[..body_start(&file)];
        assert_eq!(
            open_with_passphrase("pw", "snapshot", header_only).err(),
            Some(PassphraseBoxError::WrongPassphraseOrDamaged)
        );
    }

    #[test]
    fn edited_header_parameters_are_refused() {
        let file = seal_fast("pw", "snapshot", b"x");
        // Still within bounds: only the associated data catches it.
        for (from, to) in [("\"t\":1", "\"t\":2"), ("\"m_kib\":8192", "\"m_kib\":8193")] {
            let edited = edit_header(&file, from, to);
            assert_eq!(
                open_with_passphrase("pw", "snapshot", &edited).err(),
                Some(PassphraseBoxError::WrongPassphraseOrDamaged),
                "{to}"
            );
        }
        // Harmless whitespace changes the associated data too.
        let spaced = edit_header(&file, "\"t\":1", "\"t\": 1");
        assert_eq!(
            open_with_passphrase("pw", "snapshot", &spaced).err(),
            Some(PassphraseBoxError::WrongPassphraseOrDamaged)
        );
        let salt_changed = {
            let header = header_text(&file);
            let salt = header
                .split("\"salt\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            edit_header(&file, salt, &STANDARD.encode([9u8; 16]))
        };
        assert_eq!(
            open_with_passphrase("pw", "snapshot", &salt_changed).err(),
            Some(PassphraseBoxError::WrongPassphraseOrDamaged)
        );
    }

    #[test]
    fn costs_out_of_bounds_are_refused_before_argon2_runs() {
        let file = seal_fast("pw", "snapshot", b"x");
        for (from, to) in [
            ("\"m_kib\":8192", "\"m_kib\":8191"),
            ("\"m_kib\":8192", "\"m_kib\":262145"),
            // 4 TiB: would not return (or not allocate) if it ran.
            ("\"m_kib\":8192", "\"m_kib\":4294967295"),
            ("\"t\":1", "\"t\":0"),
            ("\"t\":1", "\"t\":11"),
            ("\"t\":1", "\"t\":4000000000"),
            ("\"p\":1", "\"p\":0"),
            ("\"p\":1", "\"p\":5"),
        ] {
            let edited = edit_header(&file, from, to);
            assert_eq!(
                open_with_passphrase("pw", "snapshot", &edited).err(),
                Some(PassphraseBoxError::UnsafeParameters),
                "{to}"
            );
        }
        // Beyond u32: malformed.
        let edited = edit_header(&file, "\"t\":1", "\"t\":4294967296");
        assert_eq!(
            open_with_passphrase("pw", "snapshot", &edited).err(),
            Some(PassphraseBoxError::NotThisFormat)
        );
    }

    #[test]
    fn sealing_refuses_costs_open_would_refuse() {
        for params in [
            PassphraseParams {
                m_kib: 4096,
                ..FAST
            },
            PassphraseParams { t: 11, ..FAST },
            PassphraseParams { p: 5, ..FAST },
        ] {
            assert!(matches!(
                seal_with_passphrase_params("pw", "snapshot", b"x", params),
                Err(CryptoError::InvalidParams(_))
            ));
        }
        let upper = PassphraseParams {
            m_kib: 8192,
            t: 10,
            p: 4,
        };
        let file = seal_with_passphrase_params("pw", "k", b"x", upper).unwrap();
        assert!(open_with_passphrase("pw", "k", &file).is_ok());
    }

    #[test]
    fn another_kind_is_refused() {
        let file = seal_fast("pw", "snapshot", b"x");
        for kind in ["snapshots", "snap", "audit-export", ""] {
            assert_eq!(
                open_with_passphrase("pw", kind, &file).err(),
                Some(PassphraseBoxError::NotThisFormat),
                "{kind:?}"
            );
        }
        // Relabelled file: the kind is in the associated data.
        let relabelled = edit_header(&file, "kind=snapshot", "kind=backup");
        assert_eq!(
            open_with_passphrase("pw", "backup", &relabelled).err(),
            Some(PassphraseBoxError::WrongPassphraseOrDamaged)
        );
    }

    #[test]
    fn other_versions_and_kdfs_are_unsupported() {
        let file = seal_fast("pw", "snapshot", b"x");
        let v2 = edit_header(&file, " v1 ", " v2 ");
        assert_eq!(
            open_with_passphrase("pw", "snapshot", &v2).err(),
            Some(PassphraseBoxError::UnsupportedVersion)
        );
        let scrypt = edit_header(&file, "argon2id", "scrypt");
        assert_eq!(
            open_with_passphrase("pw", "snapshot", &scrypt).err(),
            Some(PassphraseBoxError::UnsupportedVersion)
        );
    }

    #[test]
    fn garbage_is_not_this_format() {
        let file = seal_fast("pw", "snapshot", b"x");
        let long_line = vec![b'a'; 5000];
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n".to_vec(),
            b"PK\x03\x04 some zip".to_vec(),
            b"[{\"id\":\"flow\"}]\n".to_vec(),
            long_line,
            // Magic line alone, or followed by something not a header.
            b"redwall-sealed-file v1 kind=snapshot\n".to_vec(),
            b"redwall-sealed-file v1 kind=snapshot\n{\"kdf\":\"argon2id\"}\n".to_vec(),
            b"redwall-sealed-file v1 kind=snapshot extra\n{}\n".to_vec(),
            b"redwall-sealed-file vx kind=snapshot\n{}\n".to_vec(),
            b"redwall-sealed-file  v1 kind=snapshot\n{}\n".to_vec(),
            edit_header(&file, "{", "["),
            edit_header(&file, "\"t\":1", "\"t\":1,\"t\":1"),
            edit_header(&file, "\"t\":1", "\"t\":1,\"x\":1"),
            edit_header(&file, "\"t\":1", "\"t\":\"1\""),
            edit_header(&file, "\"t\":1", "\"t\":01"),
            edit_header(&file, "\"t\":1", "\"t\":-1"),
            edit_header(&file, "\"salt\":\"", "\"salt\":\"AAAA"),
            edit_header(&file, "\"nonce\":\"", "\"nonce\":\"!"),
            file[..20].to_vec(),
        ];
        for garbage in cases {
            assert_eq!(
                open_with_passphrase("pw", "snapshot", &garbage).err(),
                Some(PassphraseBoxError::NotThisFormat),
                "{:?}",
                String::from_utf8_lossy(&garbage)
            );
        }
    }

    #[test]
    fn bad_kinds_and_empty_passphrases_are_refused_on_seal() {
        for kind in ["", "Snapshot", "a b", "a\nb", "kind=x", &"k".repeat(65)] {
            assert!(
                matches!(
                    seal_with_passphrase_params("pw", kind, b"x", FAST),
                    Err(CryptoError::InvalidInput(_))
                ),
                "{kind:?}"
            );
        }
        assert!(matches!(
            seal_with_passphrase_params("", "snapshot", b"x", FAST),
            Err(CryptoError::InvalidInput(_))
        ));
    }

    #[test]
    fn errors_read_clearly_and_hold_no_secrets() {
        let file = seal_fast("hunter2", "snapshot", b"x");
        let err = open_with_passphrase("hunter3", "snapshot", &file)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "wrong passphrase, or the file is damaged");
        assert!(PassphraseBoxError::UnsafeParameters
            .to_string()
            .contains("8192..=262144 KiB"));
    }

    #[test]
    fn json_subset_parser() {
        use json::{parse_flat_object, Scalar};
        assert_eq!(parse_flat_object("{}"), Some(vec![]));
        assert_eq!(
            parse_flat_object(" { \"a\" : 1 , \"b\":\"x\" } "),
            Some(vec![("a", Scalar::Num(1)), ("b", Scalar::Str("x"))])
        );
        for bad in [
            "",
            "{",
            "}",
            "{,}",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1}x",
            "{\"a\":1.5}",
            "{\"a\":true}",
            "{\"a\":\"\\u0041\"}",
            "{\"a\":{}}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":99999999999999999999}",
        ] {
            assert_eq!(parse_flat_object(bad), None, "{bad}");
        }
    }
}
