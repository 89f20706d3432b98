//! Node-RED's flow files (`flows.json`, `flows_cred.json`, the userdir's
//! `package.json` and the modules it installed) and its deploy API: what a
//! snapshot takes from an instance, and how it puts flows back.
//!
//! The userdir belongs to the instance's uid, and Redwall may read it as
//! root, so every file in it is treated as hostile: no symlink below the
//! userdir is followed (each path component is opened with `O_NOFOLLOW`
//! relative to its parent, so nothing can be swapped in between a check and
//! the open), only regular files are read (opened with `O_NONBLOCK`, so a
//! FIFO cannot hang us), reads stop one byte past a size limit, and module
//! names are checked against npm's rules before they become path
//! components.
//!
//! `flows_cred.json`, with `credentialSecret` set (our `settings.js` always
//! sets it), is Node-RED's own format: `{"$": "<IV as 32 hex><base64
//! ciphertext>"}`, AES-256-CTR (128-bit big-endian counter) under
//! SHA-256(credentialSecret), over the JSON of the map from node id to that
//! node's credentials. It has no integrity check: a wrong secret shows up
//! only as plaintext that is not JSON.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::{KeyIvInit as _, StreamCipher as _};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use redwall_crypto::Secret;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::http::request;
use crate::token::{mint_editor_token, EditorPermission, EDITOR_TOKEN_HEADER};
use crate::RuntimeError;

const FLOWS_FILE: &str = "flows.json";
const CREDENTIALS_FILE: &str = "flows_cred.json";
const PACKAGE_FILE: &str = "package.json";
const NODE_MODULES: &str = "node_modules";

const FLOWS_LIMIT: u64 = 32 << 20;
const CREDENTIALS_LIMIT: u64 = 8 << 20;
const PACKAGE_LIMIT: u64 = 1 << 20;

/// npm's longest package name.
const MAX_MODULE_NAME: usize = 214;
/// Longest version string taken from an installed module.
const MAX_VERSION: usize = 256;
/// Prefix of the range of a dependency that is not installed.
const UNRESOLVED: &str = "unresolved:";

/// How long the deploy's editor token lives.
const DEPLOY_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How much of an error answer's body a deploy error carries.
const ERROR_BODY_CHARS: usize = 300;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Node-RED accepts base64 with or without padding.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An instance's flows and their credentials, decrypted. `Debug` shows how
/// many there are, never the credentials.
#[derive(Clone)]
pub struct FlowFiles {
    /// The flows array; `[]` when `flows.json` is missing or empty.
    pub flows: Value,
    /// Node id to that node's credentials; empty when `flows_cred.json` is
    /// missing.
    pub credentials: Map<String, Value>,
}

impl std::fmt::Debug for FlowFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = self.flows.as_array().map_or(0, Vec::len);
        write!(
            f,
            "FlowFiles {{ flows: [{nodes} nodes], credentials: [redacted, {} nodes] }}",
            self.credentials.len()
        )
    }
}

/// Reads `flows.json` and `flows_cred.json` from an instance's userdir and
/// decrypts the credentials with the instance's `credentialSecret`.
pub fn read_flow_files(userdir: &Path, credential_secret: &str) -> Result<FlowFiles, RuntimeError> {
    let flows = match read_json(userdir, &[FLOWS_FILE], FLOWS_LIMIT)? {
        None => Value::Array(Vec::new()),
        Some(flows @ Value::Array(_)) => flows,
        Some(_) => {
            return Err(RuntimeError::UserdirFile {
                path: userdir.join(FLOWS_FILE),
                reason: "is not a JSON array of nodes".into(),
            })
        }
    };
    let credentials = match read_json(userdir, &[CREDENTIALS_FILE], CREDENTIALS_LIMIT)? {
        None => Map::new(),
        Some(file) => decrypt_credentials(credential_secret, &file)?,
    };
    Ok(FlowFiles { flows, credentials })
}

/// Decrypts the contents of a `flows_cred.json`. A file without `"$"` holds
/// its credentials in the clear (Node-RED reads it that way too, e.g. one
/// written before a secret was set) and is returned as it is.
pub fn decrypt_credentials(
    credential_secret: &str,
    file: &Value,
) -> Result<Map<String, Value>, RuntimeError> {
    let object = file
        .as_object()
        .ok_or_else(|| credentials_error("flows_cred.json is not a JSON object"))?;
    let Some(sealed) = object.get("$") else {
        return Ok(object.clone());
    };
    let sealed = sealed
        .as_str()
        .ok_or_else(|| credentials_error("the \"$\" member is not a string"))?;
    let (iv, ciphertext) = split_sealed(sealed)?;
    let mut plaintext = Wiped(ciphertext);
    cipher(credential_secret, &iv).apply_keystream(&mut plaintext.0);
    serde_json::from_slice(&plaintext.0).map_err(|_| {
        credentials_error("they do not decrypt: wrong credential secret, or a damaged file")
    })
}

/// Encrypts credentials as Node-RED does, under a fresh random IV, giving
/// the contents of a `flows_cred.json`. Fails only if the OS has no
/// randomness to give.
pub fn encrypt_credentials(
    credential_secret: &str,
    creds: &Map<String, Value>,
) -> Result<Value, RuntimeError> {
    let iv = random_iv()?;
    let mut data = Wiped(Value::Object(creds.clone()).to_string().into_bytes());
    cipher(credential_secret, &iv).apply_keystream(&mut data.0);
    let sealed = format!("{}{}", hex(&iv), STANDARD.encode(&data.0));
    Ok(serde_json::json!({ "$": sealed }))
}

/// For each dependency named in the userdir's `package.json`, the exact
/// version installed in `node_modules/<name>/package.json` (scoped names
/// too), or `unresolved:<range from package.json>` when it is not
/// installed. No `package.json`: no modules.
pub fn installed_modules(userdir: &Path) -> Result<BTreeMap<String, String>, RuntimeError> {
    let Some(package) = read_json(userdir, &[PACKAGE_FILE], PACKAGE_LIMIT)? else {
        return Ok(BTreeMap::new());
    };
    let invalid = |reason: String| RuntimeError::UserdirFile {
        path: userdir.join(PACKAGE_FILE),
        reason,
    };
    if !package.is_object() {
        return Err(invalid("is not a JSON object".into()));
    }
    let dependencies = match package.get("dependencies") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(dependencies)) => dependencies,
        Some(_) => return Err(invalid("\"dependencies\" is not an object".into())),
    };
    let mut modules = BTreeMap::new();
    for (name, range) in dependencies {
        let components = module_path(name)
            .ok_or_else(|| invalid(format!("{name:?} is not a valid npm package name")))?;
        let range = range
            .as_str()
            .ok_or_else(|| invalid(format!("the version range of {name} is not a string")))?;
        let version = installed_version(userdir, &components)?
            .unwrap_or_else(|| format!("{UNRESOLVED}{range}"));
        modules.insert(name.clone(), version);
    }
    Ok(modules)
}

/// A copy of `flows` in which every node that has credentials carries them
/// in a `credentials` member, as the deploy API takes them (Node-RED moves
/// them into its credential store). Anything but an array is copied as it is.
pub fn with_credentials(flows: &Value, creds: &Map<String, Value>) -> Value {
    match flows {
        Value::Array(nodes) => Value::Array(
            nodes
                .iter()
                .map(|node| node_with_credentials(node, creds).unwrap_or_else(|| node.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Replaces the instance's flows with a full deploy through its editor API,
/// as `as_user`, with a five-minute editor token. Returns the revision
/// Node-RED reports, or `""` (API v1 answers 204 without one).
pub async fn deploy_flows(
    addr: SocketAddr,
    editor_secret: &Secret,
    instance_id: &str,
    as_user: &str,
    flows_with_credentials: &Value,
    timeout: Duration,
) -> Result<String, RuntimeError> {
    let expires = unix_now().saturating_add(DEPLOY_TOKEN_LIFETIME.as_secs() as i64);
    let token = mint_editor_token(
        editor_secret,
        instance_id,
        as_user,
        EditorPermission::Full,
        expires,
    );
    // The body holds the credentials in the clear.
    let body = Wiped(flows_with_credentials.to_string().into_bytes());
    let response = request(
        addr,
        "POST",
        "/editor/flows",
        &[
            (EDITOR_TOKEN_HEADER, &token),
            ("Content-Type", "application/json"),
            ("Node-RED-API-Version", "v1"),
            ("Node-RED-Deployment-Type", "full"),
        ],
        Some(&body.0),
        timeout,
    )
    .await
    .map_err(RuntimeError::io(format!(
        "deploying flows to instance {instance_id}"
    )))?;
    if !(200..300).contains(&response.status) {
        return Err(RuntimeError::DeployRefused {
            status: response.status,
            body: error_excerpt(&response.text()),
        });
    }
    Ok(response
        .json()
        .and_then(|answer| answer.get("rev")?.as_str().map(str::to_owned))
        .unwrap_or_default())
}

/// Installs `module` at exactly `version` through Node-RED's own palette
/// API (`POST /editor/nodes`), which runs npm inside the instance's sandbox
/// and loads the new node types without a restart. Node-RED refuses it
/// unless the instance may install from the palette.
pub async fn install_module(
    addr: SocketAddr,
    editor_secret: &Secret,
    instance_id: &str,
    as_user: &str,
    module: &str,
    version: &str,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let expires = unix_now().saturating_add(DEPLOY_TOKEN_LIFETIME.as_secs() as i64);
    let token = mint_editor_token(
        editor_secret,
        instance_id,
        as_user,
        EditorPermission::Full,
        expires,
    );
    let body = serde_json::json!({ "module": module, "version": version }).to_string();
    let response = request(
        addr,
        "POST",
        "/editor/nodes",
        &[
            (EDITOR_TOKEN_HEADER, &token),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
        timeout,
    )
    .await
    .map_err(RuntimeError::io(format!(
        "installing {module}@{version} into instance {instance_id}"
    )))?;
    if !(200..300).contains(&response.status) {
        return Err(RuntimeError::DeployRefused {
            status: response.status,
            body: error_excerpt(&response.text()),
        });
    }
    Ok(())
}

fn node_with_credentials(node: &Value, creds: &Map<String, Value>) -> Option<Value> {
    let id = node.get("id")?.as_str()?;
    let node_creds = creds.get(id)?;
    let mut node = node.as_object()?.clone();
    node.insert("credentials".into(), node_creds.clone());
    Some(Value::Object(node))
}

/// The version in an installed module's `package.json`; `None` when the
/// module (or its version) is not there.
fn installed_version(userdir: &Path, module: &[&str]) -> Result<Option<String>, RuntimeError> {
    let components: Vec<&str> = [NODE_MODULES]
        .into_iter()
        .chain(module.iter().copied())
        .chain([PACKAGE_FILE])
        .collect();
    let Some(package) = read_json(userdir, &components, PACKAGE_LIMIT)? else {
        return Ok(None);
    };
    let Some(version) = package.get("version").and_then(Value::as_str) else {
        return Ok(None);
    };
    if !valid_version(version) {
        return Err(RuntimeError::UserdirFile {
            path: join(userdir, &components),
            reason: format!("{version:?} is not a valid version"),
        });
    }
    Ok(Some(version.to_owned()))
}

/// The path components of a module under `node_modules`, if `name` follows
/// npm's rules: `name` or `@scope/name`, each part URL-safe, not starting
/// with `.` or `_`, at most 214 characters in all. Such parts can be
/// neither `.`, `..` nor contain a `/`.
fn module_path(name: &str) -> Option<Vec<&str>> {
    if name.len() > MAX_MODULE_NAME {
        return None;
    }
    match name.strip_prefix('@') {
        Some(scoped) => {
            let (scope, bare) = scoped.split_once('/')?;
            // The scope directory keeps its `@`.
            (valid_name_part(scope) && valid_name_part(bare))
                .then(|| vec![&name[..=scope.len()], bare])
        }
        None => valid_name_part(name).then(|| vec![name]),
    }
}

fn valid_name_part(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with(['.', '_'])
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A semver-shaped string: letters, digits, `.`, `-`, `+`.
fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= MAX_VERSION
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

/// Reads a JSON file (see [`read_beneath`]); `None` when it is missing or
/// holds only whitespace.
fn read_json(
    userdir: &Path,
    components: &[&str],
    limit: u64,
) -> Result<Option<Value>, RuntimeError> {
    let Some(data) = read_beneath(userdir, components, limit)? else {
        return Ok(None);
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| RuntimeError::UserdirFile {
            path: join(userdir, components),
            reason: format!("is not valid JSON: {e}"),
        })
}

/// Reads `userdir/<components...>` if it is a regular file of at most
/// `limit` bytes, following no symlink below `userdir`. `None` when it (or
/// a directory on the way, or the userdir itself) does not exist.
fn read_beneath(
    userdir: &Path,
    components: &[&str],
    limit: u64,
) -> Result<Option<Vec<u8>>, RuntimeError> {
    let path = join(userdir, components);
    let Some((file_name, dirs)) = components.split_last() else {
        return Ok(None);
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(userdir);
    let mut dir = match opened {
        Ok(dir) => dir,
        Err(e) => return missing_or_refused(&path, e),
    };
    for name in dirs {
        dir = match open_at(&dir, name, libc::O_DIRECTORY) {
            Ok(next) => next,
            Err(e) => return missing_or_refused(&path, e),
        };
    }
    let file = match open_at(&dir, file_name, libc::O_NONBLOCK | libc::O_NOCTTY) {
        Ok(file) => file,
        Err(e) => return missing_or_refused(&path, e),
    };
    read_regular(&path, file, limit).map(Some)
}

/// Opens `name` in `dir`, never following a symlink.
fn open_at(dir: &File, name: &str, flags: libc::c_int) -> std::io::Result<File> {
    let name =
        CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = flags | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated
    // string, both alive for the whole call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us and has no other owner.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What a failed open means: missing is fine, a symlink or a file where a
/// directory belongs is refused, anything else is an I/O error. (With
/// `O_NOFOLLOW`, Linux answers `ELOOP` for a symlink as the last component,
/// and `ENOTDIR` for one where `O_DIRECTORY` asks for a directory.)
fn missing_or_refused(path: &Path, e: std::io::Error) -> Result<Option<Vec<u8>>, RuntimeError> {
    let refuse = |reason: &str| RuntimeError::UserdirFile {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(None),
        Some(libc::ELOOP) => Err(refuse("is a symbolic link; refused")),
        Some(libc::ENOTDIR) => Err(refuse(
            "goes through a symbolic link, or a file, where a directory belongs; refused",
        )),
        _ => Err(RuntimeError::io(format!("opening {}", path.display()))(e)),
    }
}

/// Reads an opened file if it is regular and at most `limit` bytes long,
/// reading no more than `limit + 1` bytes in case it grows meanwhile.
fn read_regular(path: &Path, file: File, limit: u64) -> Result<Vec<u8>, RuntimeError> {
    let refuse = |reason: String| RuntimeError::UserdirFile {
        path: path.to_path_buf(),
        reason,
    };
    let too_large = || refuse(format!("is larger than {} MiB; refused", limit >> 20));
    let meta = file
        .metadata()
        .map_err(RuntimeError::io(format!("reading {}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(refuse("is not a regular file; refused".into()));
    }
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(RuntimeError::io(format!("reading {}", path.display())))?;
    if data.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(data)
}

fn join(userdir: &Path, components: &[&str]) -> PathBuf {
    components
        .iter()
        .fold(userdir.to_path_buf(), |p, c| p.join(c))
}

fn credentials_error(reason: &str) -> RuntimeError {
    RuntimeError::Credentials(reason.to_owned())
}

/// AES-256-CTR keyed with SHA-256 of the secret, as Node-RED keys it.
fn cipher(credential_secret: &str, iv: &[u8; 16]) -> Aes256Ctr {
    let key = Wiped(Sha256::digest(credential_secret.as_bytes()).to_vec());
    Aes256Ctr::new(key.0.as_slice().into(), iv.into())
}

/// Splits `"$"` into the IV (32 hex characters) and the decoded ciphertext.
fn split_sealed(sealed: &str) -> Result<([u8; 16], Vec<u8>), RuntimeError> {
    let malformed = || credentials_error("the \"$\" member is not an IV and ciphertext");
    let (iv_hex, body) = match (sealed.get(..32), sealed.get(32..)) {
        (Some(iv), Some(body)) => (iv, body),
        _ => return Err(malformed()),
    };
    let digit = |b: u8| char::from(b).to_digit(16);
    let mut iv = [0u8; 16];
    for (byte, pair) in iv.iter_mut().zip(iv_hex.as_bytes().chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => *byte = (high * 16 + low) as u8,
            _ => return Err(malformed()),
        }
    }
    let ciphertext = STANDARD_LENIENT.decode(body).map_err(|_| malformed())?;
    Ok((iv, ciphertext))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 bytes from the kernel's CSPRNG.
fn random_iv() -> Result<[u8; 16], RuntimeError> {
    let mut iv = [0u8; 16];
    let mut filled = 0;
    while filled < iv.len() {
        let rest = &mut iv[filled..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RuntimeError::io("drawing a random IV for the credentials")(
                e,
            ));
        }
        filled += n as usize;
    }
    Ok(iv)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// At most [`ERROR_BODY_CHARS`] characters of an error answer, on one line.
fn error_excerpt(body: &str) -> String {
    body.chars()
        .take(ERROR_BODY_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Bytes wiped when dropped: decrypted credentials and keys. (This crate
/// has no `zeroize` dependency; this is the same volatile-write idea.)
struct Wiped(Vec<u8>);

impl Drop for Wiped {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: `byte` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::symlink;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn write(dir: &Path, rel: &str, contents: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn refused(result: Result<impl std::fmt::Debug, RuntimeError>, needle: &str) {
        match result {
            Err(RuntimeError::UserdirFile { reason, .. }) => {
                assert!(reason.contains(needle), "{reason}")
            }
            other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
        }
    }

    // ---- credentials ----

    #[test]
    fn decrypts_what_node_red_wrote() {
        // Made with Node 20 exactly as Node-RED's credentials.js does, with
        // a fixed IV instead of a random one.
        let file = json!({"$": "000102030405060708090a0b0c0d0e0f2og298O49tUOHt3tC5SDrA5F8azyeI/Eg/doWeK+THlzR4oi0kThCAo3wNT/iCY="});
        let creds = decrypt_credentials("sécret-ключ", &file).unwrap();
        assert_eq!(
            Value::Object(creds),
            json!({"a1b2": {"user": "bob", "password": "pässwörd"}})
        );
        // The counter is all 128 bits: this IV wraps to zero in block three.
        let file = json!({"$": "fffffffffffffffffffffffffffffffe7SsQHpremp+EO5W4pn6Xg7cdndH57DfSYehESV5aL+Rnet30AbmtZ33YLmMV0WbBBx3luQLS9u6oTqpAdgz5BEHuNQ=="});
        let creds = decrypt_credentials("k", &file).unwrap();
        assert_eq!(
            Value::Object(creds),
            json!({"n1": {"token": "0123456789abcdef0123456789abcdef0123456789abcdef"}})
        );
    }

    #[test]
    fn encrypt_then_decrypt_round_trips_with_fresh_ivs() {
        let creds = map(json!({"n1": {"password": "p"}, "n2": {"user": "ü", "x": 1}}));
        let a = encrypt_credentials("secret", &creds).unwrap();
        let b = encrypt_credentials("secret", &creds).unwrap();
        let sealed = a["$"].as_str().unwrap();
        assert!(sealed[..32].bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!sealed.contains("password"));
        assert_ne!(a, b);
        assert_eq!(decrypt_credentials("secret", &a).unwrap(), creds);
        assert_eq!(decrypt_credentials("secret", &b).unwrap(), creds);
        let empty = encrypt_credentials("secret", &Map::new()).unwrap();
        assert!(decrypt_credentials("secret", &empty).unwrap().is_empty());
    }

    #[test]
    fn wrong_secret_and_malformed_files_are_errors() {
        let creds = map(json!({"n1": {"password": "hunter2"}}));
        let file = encrypt_credentials("right", &creds).unwrap();
        let err = decrypt_credentials("wrong", &file).unwrap_err();
        assert!(matches!(err, RuntimeError::Credentials(_)));
        assert!(!err.to_string().contains("hunter2"));
        for bad in [
            json!([]),
            json!("x"),
            json!({"$": 5}),
            json!({"$": "0011"}),
            json!({"$": "zz0102030405060708090a0b0c0d0e0fAAAA"}),
            json!({"$": "000102030405060708090a0b0c0d0e0f!!!"}),
            json!({"$": "é00102030405060708090a0b0c0d0e0fAAAA"}),
        ] {
            assert!(
                matches!(
                    decrypt_credentials("k", &bad),
                    Err(RuntimeError::Credentials(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_file_without_dollar_is_plaintext() {
        let plain = json!({"n1": {"user": "u"}});
        assert_eq!(
            Value::Object(decrypt_credentials("k", &plain).unwrap()),
            plain
        );
        assert!(decrypt_credentials("k", &json!({})).unwrap().is_empty());
    }

    /// Runs `script` with Node, or says why not and returns `None`.
    fn node(script: &str, env: &[(&str, &str)]) -> Option<String> {
        let mut command = std::process::Command::new("node");
        command.arg("-e").arg(script).envs(env.iter().copied());
        match command.output() {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "node failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Some(String::from_utf8(out.stdout).unwrap())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("note: `node` is not installed; skipping the Node.js interop check");
                None
            }
            Err(e) => panic!("running node: {e}"),
        }
    }

    // Node-RED's encryptCredentials and decryptCredentials
    // (@node-red/runtime/lib/nodes/credentials.js), keyed the same way.
    const NODE_RED_CRYPTO: &str = r#"
        const crypto = require("crypto");
        const key = crypto.createHash("sha256").update(process.env.SECRET).digest();
        function encryptCredentials(key, credentials) {
            var initVector = crypto.randomBytes(16);
            var cipher = crypto.createCipheriv("aes-256-ctr", key, initVector);
            return {"$": initVector.toString("hex") + cipher.update(JSON.stringify(credentials), "utf8", "base64") + cipher.final("base64")};
        }
        function decryptCredentials(key, credentials) {
            var creds = credentials["$"];
            var initVector = Buffer.from(creds.substring(0, 32), "hex");
            creds = creds.substring(32);
            var decipher = crypto.createDecipheriv("aes-256-ctr", key, initVector);
            var decrypted = decipher.update(creds, "base64", "utf8") + decipher.final("utf8");
            return JSON.parse(decrypted);
        }
    "#;

    fn interop_creds() -> Map<String, Value> {
        // Long enough for many counter blocks; non-ASCII on purpose.
        map(json!({
            "a1": {"user": "bob", "password": "pässwörd ключ 🔑"},
            "b2": {"token": "x".repeat(1000)},
        }))
    }

    #[test]
    fn node_red_can_decrypt_what_we_encrypt() {
        let secret = "sécret-ключ";
        let file = encrypt_credentials(secret, &interop_creds()).unwrap();
        let script = format!(
            "{NODE_RED_CRYPTO}\nprocess.stdout.write(JSON.stringify(decryptCredentials(key, JSON.parse(process.env.FILE))));"
        );
        let Some(out) = node(&script, &[("SECRET", secret), ("FILE", &file.to_string())]) else {
            return;
        };
        let decrypted: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(decrypted, Value::Object(interop_creds()));
    }

    #[test]
    fn we_can_decrypt_what_node_red_encrypts() {
        let secret = "sécret-ключ";
        let script = format!(
            "{NODE_RED_CRYPTO}\nprocess.stdout.write(JSON.stringify(encryptCredentials(key, JSON.parse(process.env.CREDS))));"
        );
        let creds = Value::Object(interop_creds()).to_string();
        for _ in 0..3 {
            let Some(out) = node(&script, &[("SECRET", secret), ("CREDS", &creds)]) else {
                return;
            };
            let file: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(decrypt_credentials(secret, &file).unwrap(), interop_creds());
            assert!(decrypt_credentials("other", &file).is_err());
        }
    }

    // ---- reading the userdir ----

    #[test]
    fn missing_files_give_empty_results() {
        let dir = tempfile::tempdir().unwrap();
        let files = read_flow_files(dir.path(), "k").unwrap();
        assert_eq!(files.flows, json!([]));
        assert!(files.credentials.is_empty());
        assert!(installed_modules(dir.path()).unwrap().is_empty());
        // Nor does a missing userdir fail.
        let gone = dir.path().join("nope");
        assert_eq!(read_flow_files(&gone, "k").unwrap().flows, json!([]));
        // Empty files are empty too.
        write(dir.path(), "flows.json", "");
        write(dir.path(), "flows_cred.json", " \n");
        let files = read_flow_files(dir.path(), "k").unwrap();
        assert_eq!(files.flows, json!([]));
        assert!(files.credentials.is_empty());
    }

    #[test]
    fn reads_flows_and_decrypts_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let flows = json!([{"id": "n1", "type": "mqtt-broker"}, {"id": "t1", "type": "tab"}]);
        write(dir.path(), "flows.json", &flows.to_string());
        let creds = map(json!({"n1": {"user": "u", "password": "p"}}));
        let file = encrypt_credentials("s3cret", &creds).unwrap();
        write(dir.path(), "flows_cred.json", &file.to_string());
        let files = read_flow_files(dir.path(), "s3cret").unwrap();
        assert_eq!(files.flows, flows);
        assert_eq!(files.credentials, creds);
        let shown = format!("{files:?}");
        assert_eq!(
            shown,
            "FlowFiles { flows: [2 nodes], credentials: [redacted, 1 nodes] }"
        );
        assert!(matches!(
            read_flow_files(dir.path(), "other"),
            Err(RuntimeError::Credentials(_))
        ));
    }

    #[test]
    fn invalid_flows_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "flows.json", "{\"not\": \"an array\"}");
        refused(read_flow_files(dir.path(), "k"), "not a JSON array");
        write(dir.path(), "flows.json", "[{");
        refused(read_flow_files(dir.path(), "k"), "not valid JSON");
    }

    #[test]
    fn symlinked_files_are_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.json", "[{\"id\":\"outside\"}]");
        symlink(
            outside.path().join("secret.json"),
            dir.path().join("flows.json"),
        )
        .unwrap();
        refused(read_flow_files(dir.path(), "k"), "symbolic link");
        // A dangling link is not "missing".
        std::fs::remove_file(dir.path().join("flows.json")).unwrap();
        symlink(
            dir.path().join("nowhere"),
            dir.path().join("flows_cred.json"),
        )
        .unwrap();
        refused(read_flow_files(dir.path(), "k"), "symbolic link");
        // Nor through a symlinked directory on the way.
        write(
            dir.path(),
            "package.json",
            r#"{"dependencies": {"@s/m": "^1"}}"#,
        );
        write(outside.path(), "m/package.json", r#"{"version": "6.6.6"}"#);
        std::fs::create_dir_all(dir.path().join("node_modules")).unwrap();
        symlink(outside.path(), dir.path().join("node_modules/@s")).unwrap();
        refused(installed_modules(dir.path()), "symbolic link");
        // A file where a directory belongs is refused too.
        std::fs::remove_dir_all(dir.path().join("node_modules")).unwrap();
        write(dir.path(), "node_modules", "");
        refused(installed_modules(dir.path()), "where a directory belongs");
    }

    #[test]
    fn fifos_are_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::ffi::OsStrExt as _;
        let fifo = CString::new(dir.path().join("flows.json").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // Run it on a thread so a regression fails instead of hanging.
        let path = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_flow_files(&path, "k"));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("reading a FIFO hung");
        refused(result, "not a regular file");
        // A directory where a file belongs.
        std::fs::remove_file(dir.path().join("flows.json")).unwrap();
        std::fs::create_dir(dir.path().join("flows.json")).unwrap();
        refused(read_flow_files(dir.path(), "k"), "not a regular file");
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = |name: &str, len: u64| {
            let f = File::create(dir.path().join(name)).unwrap();
            f.set_len(len).unwrap();
        };
        sparse("flows.json", FLOWS_LIMIT + 1);
        refused(read_flow_files(dir.path(), "k"), "larger than 32 MiB");
        std::fs::remove_file(dir.path().join("flows.json")).unwrap();
        sparse("flows_cred.json", CREDENTIALS_LIMIT + 1);
        refused(read_flow_files(dir.path(), "k"), "larger than 8 MiB");
        sparse("package.json", PACKAGE_LIMIT + 1);
        refused(installed_modules(dir.path()), "larger than 1 MiB");
        // At the limit is fine (as far as size goes: zeros are not JSON).
        sparse("package.json", PACKAGE_LIMIT);
        refused(installed_modules(dir.path()), "not valid JSON");
    }

    #[test]
    fn files_at_the_limit_are_read_and_past_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "f", "0123456789");
        let read = |limit| read_beneath(dir.path(), &["f"], limit);
        assert_eq!(read(10).unwrap().unwrap(), b"0123456789");
        assert!(read(9).is_err());
    }

    #[test]
    fn installed_modules_with_scopes_and_unresolved_ones() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "package.json",
            r#"{"name": "node-red-project", "dependencies": {
                "node-red-contrib-foo": "~1.2.0",
                "@flowfuse/node-red-dashboard": "^1.0.0",
                "node-red-node-missing": "^3.0.0",
                "@scope/missing": "2.x",
                "no-version": "*"
            }}"#,
        );
        write(
            dir.path(),
            "node_modules/node-red-contrib-foo/package.json",
            r#"{"version": "1.2.7"}"#,
        );
        write(
            dir.path(),
            "node_modules/@flowfuse/node-red-dashboard/package.json",
            r#"{"name": "@flowfuse/node-red-dashboard", "version": "1.22.1-beta.0+build.5"}"#,
        );
        write(dir.path(), "node_modules/no-version/package.json", "{}");
        let modules = installed_modules(dir.path()).unwrap();
        let expected: BTreeMap<String, String> = [
            ("node-red-contrib-foo", "1.2.7"),
            ("@flowfuse/node-red-dashboard", "1.22.1-beta.0+build.5"),
            ("node-red-node-missing", "unresolved:^3.0.0"),
            ("@scope/missing", "unresolved:2.x"),
            ("no-version", "unresolved:*"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(modules, expected);
        // No "dependencies" at all.
        write(dir.path(), "package.json", r#"{"name": "x"}"#);
        assert!(installed_modules(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn bad_module_names_and_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "..",
            ".",
            "../etc",
            "a/b",
            "@a/b/c",
            "@a/../b",
            "@../b",
            "@a/",
            "@/b",
            "@a",
            ".hidden",
            "_private",
            "a b",
            "a\\b",
            "a\u{0}b",
            "é",
            "a".repeat(215).as_str(),
        ] {
            let package = json!({"dependencies": {name: "1.0.0"}});
            write(dir.path(), "package.json", &package.to_string());
            refused(
                installed_modules(dir.path()),
                "not a valid npm package name",
            );
        }
        write(dir.path(), "package.json", r#"{"dependencies": {"ok": 1}}"#);
        refused(installed_modules(dir.path()), "not a string");
        write(dir.path(), "package.json", r#"{"dependencies": []}"#);
        refused(installed_modules(dir.path()), "not an object");
        write(
            dir.path(),
            "package.json",
            r#"{"dependencies": {"ok": "1"}}"#,
        );
        for version in ["1.0.0 && rm -rf /", "", "1.0.0\n", "../1"] {
            write(
                dir.path(),
                "node_modules/ok/package.json",
                &json!({ "version": version }).to_string(),
            );
            refused(installed_modules(dir.path()), "not a valid version");
        }
    }

    #[test]
    fn module_names_follow_npm_rules() {
        assert_eq!(
            module_path("node-red-contrib-x"),
            Some(vec!["node-red-contrib-x"])
        );
        assert_eq!(
            module_path("@flowfuse/x.y_z~1"),
            Some(vec!["@flowfuse", "x.y_z~1"])
        );
        assert_eq!(module_path("JSONStream"), Some(vec!["JSONStream"]));
        assert_eq!(module_path(&"a".repeat(214)).map(|p| p.len()), Some(1));
        assert_eq!(module_path("@a/.b"), None);
        assert_eq!(module_path("@_a/b"), None);
    }

    // ---- deploy ----

    #[test]
    fn credentials_are_attached_to_their_nodes() {
        let flows = json!([
            {"id": "n1", "type": "mqtt-broker", "name": "b"},
            {"id": "n2", "type": "inject"},
            {"type": "no-id"},
            "not a node",
        ]);
        let creds = map(json!({"n1": {"user": "u"}, "gone": {"x": 1}}));
        let out = with_credentials(&flows, &creds);
        assert_eq!(
            out,
            json!([
                {"id": "n1", "type": "mqtt-broker", "name": "b", "credentials": {"user": "u"}},
                {"id": "n2", "type": "inject"},
                {"type": "no-id"},
                "not a node",
            ])
        );
        // The original is untouched.
        assert!(flows[0].get("credentials").is_none());
        assert_eq!(with_credentials(&json!({"x": 1}), &creds), json!({"x": 1}));
    }

    /// A one-shot HTTP server: captures the request, answers `response`.
    async fn fake_node_red(
        response: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending its request");
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if body.len() >= length {
                        break;
                    }
                }
            }
            stream.write_all(response.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            String::from_utf8(raw).unwrap()
        });
        (addr, task)
    }

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef".into())
    }

    #[tokio::test]
    async fn deploy_posts_the_flows_with_a_full_editor_token() {
        let (addr, request) = fake_node_red("HTTP/1.1 204 No Content\r\n\r\n").await;
        let flows = with_credentials(&json!([{"id": "n1"}]), &map(json!({"n1": {"p": "q"}})));
        let rev = deploy_flows(
            addr,
            &secret(),
            "inst-1",
            "alice",
            &flows,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(rev, "");
        let raw = request.await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /editor/flows HTTP/1.1\r\n"),
            "{head}"
        );
        for header in [
            "Content-Type: application/json",
            "Node-RED-API-Version: v1",
            "Node-RED-Deployment-Type: full",
        ] {
            assert!(
                head.contains(&format!("\r\n{header}\r\n")),
                "{header} in {head}"
            );
        }
        assert_eq!(serde_json::from_str::<Value>(body).unwrap(), flows);
        let token = head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{EDITOR_TOKEN_HEADER}: ")))
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["aud"], "inst-1");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["perm"], "*");
        let exp = claims["exp"].as_i64().unwrap();
        let expected = unix_now() + 300;
        assert!(
            (expected - 5..=expected).contains(&exp),
            "{exp} vs {expected}"
        );
        // The token is the one settings.js checks.
        assert_eq!(
            token,
            mint_editor_token(&secret(), "inst-1", "alice", EditorPermission::Full, exp)
        );
    }

    #[tokio::test]
    async fn deploy_returns_a_reported_revision() {
        let (addr, _request) = fake_node_red(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"rev\":\"abc\"}",
        )
        .await;
        let rev = deploy_flows(
            addr,
            &secret(),
            "i",
            "u",
            &json!([]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(rev, "abc");
    }

    #[tokio::test]
    async fn deploy_errors_carry_status_and_a_short_body() {
        const LONG: &str = concat!(
            "HTTP/1.1 400 Bad Request\r\n\r\n{\"code\":\"invalid_request\",\"message\":\"",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"
        );
        let (addr, _request) = fake_node_red(LONG).await;
        let err = deploy_flows(
            addr,
            &secret(),
            "i",
            "u",
            &json!([]),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        match err {
            RuntimeError::DeployRefused { status, body } => {
                assert_eq!(status, 400);
                assert_eq!(body.chars().count(), 300);
                assert!(body.starts_with("{\"code\":\"invalid_request\""));
            }
            other => panic!("{other:?}"),
        }
        let (addr, _request) =
            fake_node_red("HTTP/1.1 401 Unauthorized\r\n\r\n{\"error\":\"unauthorized\"}").await;
        let err = deploy_flows(
            addr,
            &secret(),
            "i",
            "u",
            &json!([]),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Node-RED refused the deploy (HTTP 401): {\"error\":\"unauthorized\"}"
        );
    }

    #[tokio::test]
    async fn deploy_to_nothing_is_an_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = deploy_flows(
            addr,
            &secret(),
            "inst-9",
            "u",
            &json!([]),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RuntimeError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("inst-9"), "{err}");
    }
}
