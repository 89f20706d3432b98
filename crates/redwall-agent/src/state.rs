//! The agent's files on disk, in its state directory:
//!
//! - `agent.key`: the 32-byte seed of the agent's Ed25519 key, mode 0600.
//!   Created with `O_CREAT|O_EXCL` and mode 0600 from the first byte, so it
//!   is never readable by anyone else, not even for an instant, and an
//!   existing key is never overwritten.
//! - `agent-box.key`: the 32 secret bytes of the agent's X25519 key, which
//!   opens the credentials the hub seals for this agent. Made, kept and
//!   checked exactly like `agent.key`; a key of its own so that no key
//!   serves two purposes (signing the hello, opening boxes).
//! - `agent.json`: what the agent needs to find and trust the hub and to
//!   name itself ([`AgentConfig`]), mode 0600. Written to a private
//!   temporary file and renamed, so a crash never leaves half a file.
//!
//! The provisioning token is not in either: it is spent by the enrolment
//! and worthless afterwards, and [`AgentConfig`] has no field for it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use redwall_crypto::agent_box::AgentBoxKey;
use redwall_crypto::signing::AgentKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The agent's key seed, in the state directory.
pub const KEY_FILE: &str = "agent.key";
/// The agent's X25519 (sealed box) key, in the state directory.
pub const BOX_KEY_FILE: &str = "agent-box.key";
/// The agent's configuration, in the state directory.
pub const CONFIG_FILE: &str = "agent.json";
/// Where the state lives unless `--dir` or `REDWALL_AGENT_DIR` says otherwise
/// (systemd's `StateDirectory=redwall-agent`).
pub const DEFAULT_DIR: &str = "/var/lib/redwall-agent";

/// Permission bits that must be clear on the key file: nothing for the
/// group, nothing for others.
pub(crate) const NOT_PRIVATE: u32 = 0o077;

/// What `agent.json` holds. Nothing in it is secret (the key is in its own
/// file), but it decides which hub the agent trusts, so it is kept 0600 too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// `https://host:port` of the hub, from the bundle.
    pub hub_url: String,
    /// The pinned SHA-256 of the hub's certificate (lowercase hex), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// The CA (PEM) the hub's certificate must chain to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    pub agent_id: String,
    pub team_id: String,
    pub name: String,
    /// The hub's snapshot-signing public key (standard base64).
    pub hub_signing_key: String,
    /// The Node-RED this agent runs, if any (`enrol --node-red-path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_red: Option<NodeRedConfig>,
}

/// Where the Node-RED the agent runs is installed, and its local port. Set
/// at enrolment from `--node-red-path`, `--node` and `--port`; the paths
/// are stored resolved (absolute, links followed), so `run` under systemd
/// finds the same programs whatever its `PATH`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRedConfig {
    /// The `node-red` package directory (the one holding `red.js`).
    pub package_dir: PathBuf,
    /// The `node` binary.
    pub node: PathBuf,
    /// The port Node-RED listens on, on 127.0.0.1 only.
    #[serde(default = "default_node_red_port")]
    pub port: u16,
}

/// Node-RED's own default port.
pub const DEFAULT_NODE_RED_PORT: u16 = 1880;

fn default_node_red_port() -> u16 {
    DEFAULT_NODE_RED_PORT
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{dir} already holds an enrolment ({file} exists); this agent is enrolled already. To enrol it again, stop it and remove {dir}/{KEY_FILE}, {dir}/{BOX_KEY_FILE} and {dir}/{CONFIG_FILE} first")]
    AlreadyEnrolled { dir: String, file: &'static str },
    #[error("{dir} holds no enrolment ({file} is missing); run `redwall-agent enrol` first")]
    NotEnrolled { dir: String, file: &'static str },
    #[error("{path} can be read by other users (mode {mode:04o}); the agent refuses to use an exposed key. Fix it with `chmod 600 {path}`, or, if others may have copied it, revoke the agent on the hub and enrol it again")]
    KeyExposed { path: String, mode: u32 },
    #[error("{path} is not an agent key: {why}")]
    BadKey { path: String, why: String },
    #[error("{path} is not a valid agent configuration: {why}")]
    BadConfig { path: String, why: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.display().to_string();
    move |source| StateError::Io { what, path, source }
}

/// Makes `dir` (mode 0700, parents too) if it is missing, and refuses if
/// it already holds an enrolment or the leftover key of one.
pub fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("cannot create the state directory", dir))?;
    for file in [CONFIG_FILE, KEY_FILE, BOX_KEY_FILE] {
        let path = dir.join(file);
        // symlink_metadata: a dangling link counts as "there" too.
        if path.symlink_metadata().is_ok() {
            return Err(StateError::AlreadyEnrolled {
                dir: dir.display().to_string(),
                file,
            });
        }
    }
    Ok(())
}

/// The key file just written by [`write_new_key`]. Dropping it removes the
/// file again, so an enrolment that fails leaves nothing behind; call
/// [`NewKeyFile::keep`] once the hub has accepted the key.
#[derive(Debug)]
pub struct NewKeyFile {
    path: PathBuf,
    keep: bool,
}

impl NewKeyFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The enrolment went through: leave the file in place.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for NewKeyFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes the key's seed to `dir/agent.key`, created exclusively with mode
/// 0600 (never over an existing file, never briefly readable by others).
pub fn write_new_key(dir: &Path, key: &AgentKey) -> Result<NewKeyFile, StateError> {
    write_new_secret(dir, KEY_FILE, key.seed().as_slice())
}

/// Writes the box key's secret bytes to `dir/agent-box.key`, exactly as
/// [`write_new_key`] writes `agent.key`.
pub fn write_new_box_key(dir: &Path, key: &AgentBoxKey) -> Result<NewKeyFile, StateError> {
    write_new_secret(dir, BOX_KEY_FILE, key.to_bytes().as_slice())
}

fn write_new_secret(dir: &Path, file: &str, bytes: &[u8]) -> Result<NewKeyFile, StateError> {
    let path = dir.join(file);
    let mut out = create_private(&path)?;
    // From here on a failure must not leave a partial key behind.
    let guard = NewKeyFile { path, keep: false };
    out.write_all(bytes)
        .and_then(|()| out.sync_all())
        .map_err(io_error("cannot write the agent key", &guard.path))?;
    sync_dir(dir);
    Ok(guard)
}

/// Writes `dir/agent.json` (mode 0600) through a temporary file and a
/// rename, so readers see the old file or the whole new one.
pub fn write_config(dir: &Path, config: &AgentConfig) -> Result<(), StateError> {
    let path = dir.join(CONFIG_FILE);
    let mut json = serde_json::to_vec_pretty(config).map_err(|e| StateError::BadConfig {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    json.push(b'\n');
    write_private_atomically(dir, CONFIG_FILE, &json)
}

/// Replaces `dir/name` with `bytes`, mode 0600: written whole to a private
/// scratch file, flushed to disk, then renamed over the old one, so a
/// reader (or the next start after a power cut) sees the old file or the
/// whole new one, never half of either.
pub(crate) fn write_private_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover from a crash would make the exclusive create fail.
    let _ = std::fs::remove_file(&tmp);
    let written = create_private(&tmp).and_then(|mut file| {
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error("cannot write", &tmp))
    });
    let renamed = written
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(io_error("cannot write", &path)));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed?;
    sync_dir(dir);
    Ok(())
}

/// `O_CREAT|O_EXCL` with mode 0600: fails rather than reuse or follow
/// anything already at `path`.
pub(crate) fn create_private(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("cannot create", path))
}

/// Makes a new or renamed entry survive a power cut; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Reads `dir/agent.key`, refusing a key that the group or others can read
/// (checked on the opened file, so it is the file actually read).
pub fn load_key(dir: &Path) -> Result<AgentKey, StateError> {
    let path = dir.join(KEY_FILE);
    let seed = read_private_key(dir, KEY_FILE)?.ok_or_else(|| StateError::NotEnrolled {
        dir: dir.display().to_string(),
        file: KEY_FILE,
    })?;
    AgentKey::from_seed(&seed).map_err(|_| StateError::BadKey {
        path: path.display().to_string(),
        why: format!("it holds {} bytes, a key seed is 32", seed.len()),
    })
}

/// Reads `dir/agent-box.key` with the same checks as [`load_key`].
/// `None` when the file is missing: an agent enrolled by a version that
/// made no such key still runs, but cannot open (so refuses) snapshots.
pub fn load_box_key(dir: &Path) -> Result<Option<AgentBoxKey>, StateError> {
    let path = dir.join(BOX_KEY_FILE);
    let Some(bytes) = read_private_key(dir, BOX_KEY_FILE)? else {
        return Ok(None);
    };
    AgentBoxKey::from_bytes(&bytes)
        .map(Some)
        .map_err(|_| StateError::BadKey {
            path: path.display().to_string(),
            why: format!("it holds {} bytes, an X25519 key is 32", bytes.len()),
        })
}

/// The bytes of a 32-byte key file (at most 33 are read, to notice a file
/// that is too long), wiped when dropped; `None` if it does not exist.
/// Refuses a file the group or others can read, checked on the opened file.
fn read_private_key(dir: &Path, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StateError> {
    let path = dir.join(name);
    let shown = || path.display().to_string();
    let mut file = match File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(io_error("cannot open", &path))?,
    };
    let meta = file.metadata().map_err(io_error("cannot inspect", &path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & NOT_PRIVATE != 0 {
        return Err(StateError::KeyExposed {
            path: shown(),
            mode,
        });
    }
    if !meta.is_file() {
        return Err(StateError::BadKey {
            path: shown(),
            why: "not a regular file".into(),
        });
    }
    let mut buf = Zeroizing::new([0u8; 33]);
    let mut len = 0;
    loop {
        let n = file
            .read(&mut buf[len..])
            .map_err(io_error("cannot read", &path))?;
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            break;
        }
    }
    Ok(Some(Zeroizing::new(buf[..len].to_vec())))
}

/// Reads `dir/agent.json`.
pub fn load_config(dir: &Path) -> Result<AgentConfig, StateError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::NotEnrolled {
                dir: dir.display().to_string(),
                file: CONFIG_FILE,
            })
        }
        other => other.map_err(io_error("cannot read", &path))?,
    };
    serde_json::from_slice(&text).map_err(|e| StateError::BadConfig {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// An enrolled agent, as `run` needs it: its configuration, its keys and
/// its state directory (where Node-RED's files live too).
#[derive(Debug)]
pub struct Agent {
    pub config: AgentConfig,
    pub key: AgentKey,
    /// `None` for an agent enrolled before agents had one (see
    /// [`load_box_key`]).
    pub box_key: Option<AgentBoxKey>,
    pub dir: PathBuf,
}

impl Agent {
    /// Reads the files from `dir` (see [`load_key`] for the keys' checks).
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let key = load_key(dir)?;
        let box_key = load_box_key(dir)?;
        let config = load_config(dir)?;
        Ok(Self {
            config,
            key,
            box_key,
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig {
            hub_url: "https://hub.example:8443".into(),
            cert_sha256: Some("ab".repeat(32)),
            ca_pem: None,
            agent_id: "agt_1".into(),
            team_id: "team_1".into(),
            name: "plant-7".into(),
            hub_signing_key: "k".into(),
            node_red: None,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn files_are_written_private_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        prepare_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let key = AgentKey::generate();
        write_new_key(&dir, &key).unwrap().keep();
        write_config(&dir, &config()).unwrap();
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
        assert_eq!(std::fs::read(dir.join(KEY_FILE)).unwrap().len(), 32);
        assert!(!dir.join(format!(".{CONFIG_FILE}.tmp")).exists());
        let agent = Agent::load(&dir).unwrap();
        assert_eq!(agent.config, config());
        assert_eq!(agent.key.public_key(), key.public_key());

        // Node-RED's settings round-trip; without a port the default holds.
        let mut with_node_red = config();
        with_node_red.node_red = Some(NodeRedConfig {
            package_dir: "/opt/node-red".into(),
            node: "/usr/bin/node".into(),
            port: 18_000,
        });
        write_config(&dir, &with_node_red).unwrap();
        assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
        assert_eq!(Agent::load(&dir).unwrap().config, with_node_red);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap();
        json["node_red"].as_object_mut().unwrap().remove("port");
        std::fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), json.to_string()).unwrap();
        let loaded = load_config(&dir).unwrap().node_red.unwrap();
        assert_eq!(loaded.port, DEFAULT_NODE_RED_PORT);
    }

    #[test]
    fn an_enrolled_directory_is_refused_and_a_key_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        prepare_dir(dir).unwrap();
        let first = AgentKey::generate();
        write_new_key(dir, &first).unwrap().keep();
        assert!(matches!(
            prepare_dir(dir),
            Err(StateError::AlreadyEnrolled { file: KEY_FILE, .. })
        ));
        assert!(write_new_key(dir, &AgentKey::generate()).is_err());
        assert_eq!(load_key(dir).unwrap().public_key(), first.public_key());
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        write_config(dir, &config()).unwrap();
        let err = prepare_dir(dir).unwrap_err();
        assert!(matches!(
            err,
            StateError::AlreadyEnrolled {
                file: CONFIG_FILE,
                ..
            }
        ));
        assert!(err.to_string().contains("already holds an enrolment"));
    }

    #[test]
    fn a_key_file_not_kept_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let guard = write_new_key(tmp.path(), &AgentKey::generate()).unwrap();
        let path = guard.path().to_owned();
        assert!(path.exists());
        drop(guard);
        assert!(!path.exists());
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_new_key(dir, &AgentKey::generate()).unwrap().keep();
        write_config(dir, &config()).unwrap();
        let key_path = dir.join(KEY_FILE);
        for bad in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(bad)).unwrap();
            let err = Agent::load(dir).unwrap_err();
            assert!(
                matches!(err, StateError::KeyExposed { mode, .. } if mode == bad),
                "{bad:o}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        for good in [0o600, 0o400] {
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(good)).unwrap();
            assert!(Agent::load(dir).is_ok(), "{good:o}");
        }
    }

    #[test]
    fn keys_of_the_wrong_size_and_missing_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(matches!(
            Agent::load(dir),
            Err(StateError::NotEnrolled { file: KEY_FILE, .. })
        ));
        for len in [0usize, 31, 33, 64] {
            let path = dir.join(KEY_FILE);
            let _ = std::fs::remove_file(&path);
            let mut f = create_private(&path).unwrap();
            f.write_all(&vec![7u8; len]).unwrap();
            assert!(
                matches!(load_key(dir), Err(StateError::BadKey { .. })),
                "{len}"
            );
        }
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        write_new_key(dir, &AgentKey::generate()).unwrap().keep();
        assert!(matches!(
            Agent::load(dir),
            Err(StateError::NotEnrolled {
                file: CONFIG_FILE,
                ..
            })
        ));
    }

    #[test]
    fn the_box_key_is_kept_like_the_agent_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Missing: an agent enrolled before box keys still loads.
        assert!(load_box_key(dir).unwrap().is_none());
        let key = AgentBoxKey::generate();
        let guard = write_new_box_key(dir, &key).unwrap();
        let path = guard.path().to_owned();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        assert!(write_new_box_key(dir, &AgentBoxKey::generate()).is_err());
        assert_eq!(
            load_box_key(dir).unwrap().unwrap().public_base64(),
            key.public_base64()
        );
        assert!(matches!(
            prepare_dir(dir),
            Err(StateError::AlreadyEnrolled {
                file: BOX_KEY_FILE,
                ..
            })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_box_key(dir),
            Err(StateError::KeyExposed { mode: 0o640, .. })
        ));
        // Not kept: removed, as a failed enrolment leaves nothing.
        drop(guard);
        assert!(!path.exists());
        let mut f = create_private(&path).unwrap();
        f.write_all(&[1u8; 31]).unwrap();
        assert!(matches!(load_box_key(dir), Err(StateError::BadKey { .. })));
    }
}
