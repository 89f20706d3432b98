//! The agent's builds on disk, and the two records of an update in
//! progress. The agent runs as an unprivileged user and cannot replace
//! the installed binary (`/usr/local/bin/redwall-agent`), so builds the
//! hub sent live in its state directory `DIR`:
//!
//! - `DIR/builds/` (0700): `<sha256>` (the binary, 0700) and
//!   `<sha256>.json` (its signed statement, without the binary, 0600) so
//!   it can be checked again before every start; `current` names the
//!   SHA-256 of the build to run (none: the installed binary).
//! - `DIR/update-pending.json` ([`Pending`]): an update whose new build has
//!   not yet connected to the hub. It outlives the exec into the new build
//!   and any restart, so whichever process runs next knows what to do.
//! - `DIR/update-answer.json` ([`OwedAnswer`]): the answer to the update
//!   command, written by whichever process decided it (the new build that
//!   connected, or the one that rolled back) and sent after the next
//!   welcome, then removed. A file rather than a message in memory: the
//!   answer must survive the exec and a crash before it was sent.
//!
//! Every file is written whole to a scratch file, flushed and renamed, so
//! a crash leaves the old file or the new one. The order of writes in
//! [`confirm`] and [`roll_back`] is chosen so that a crash between any two
//! leaves a state the next start resolves the same way.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use redwall_crypto::signing::PublicKey;
use redwall_policy::agent_protocol::{BuildStatement, SignedBuild};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::state::{write_private_atomically, StateError};
use crate::update::{self, is_sha256_hex, short, CheckedBuild};

/// The builds' directory, in the state directory.
pub const BUILDS_DIR: &str = "builds";
/// Names the build to run, in [`BUILDS_DIR`].
pub const CURRENT_FILE: &str = "current";
/// The update in progress, in the state directory.
pub const PENDING_FILE: &str = "update-pending.json";
/// The answer owed to the hub, in the state directory.
pub const ANSWER_FILE: &str = "update-answer.json";
/// The last answer given, kept after it was sent: the hub hands an update
/// over again on a new connection while it has no answer, and one already
/// given (a rollback's above all) must be given again, not acted on again.
pub const LAST_ANSWER_FILE: &str = "update-last-answer.json";

/// An update whose new build has not yet connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The hub's command id: what the answer names.
    pub command_id: String,
    pub new_sha256: String,
    pub new_version: String,
    pub new_path: PathBuf,
    /// What ran when the update came, to go back to.
    pub old_sha256: String,
    pub old_path: PathBuf,
    /// Unix seconds: the new build must have connected by then.
    pub deadline_unix: i64,
    /// What the hub allowed (for the message if it does not connect).
    pub confirm_within_secs: u64,
}

/// The answer to an update command, owed to the hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwedAnswer {
    pub command_id: String,
    pub ok: bool,
    pub message: String,
}

/// The signed statement of an installed build, kept beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeptStatement {
    statement: String,
    signature: String,
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.display().to_string();
    move |source| StateError::Io { what, path, source }
}

pub fn builds_dir(dir: &Path) -> PathBuf {
    dir.join(BUILDS_DIR)
}

/// Where the build with this digest lives.
pub fn build_path(dir: &Path, sha256: &str) -> PathBuf {
    builds_dir(dir).join(sha256)
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// SHA-256 of a file, lowercase hex, read in pieces (a build is megabytes).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes a checked build to `DIR/builds/<sha256>` (0700: the agent's own
/// user may run it, nobody else may even read it) and its statement
/// beside it; returns the binary's path. The binary goes to a scratch
/// file, is flushed and only then renamed into place, so a half-written
/// build never carries a build's name. An existing file of that name is
/// replaced: the name is the digest of what is written.
pub fn install(
    dir: &Path,
    signed: &SignedBuild,
    checked: &CheckedBuild,
) -> Result<PathBuf, StateError> {
    let builds = builds_dir(dir);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&builds)
        .map_err(io_error("cannot create", &builds))?;
    let sha = &checked.statement.sha256;
    let kept = KeptStatement {
        statement: signed.statement.clone(),
        signature: signed.signature.clone(),
    };
    let json = serde_json::to_vec(&kept).map_err(|e| StateError::BadConfig {
        path: builds.display().to_string(),
        why: e.to_string(),
    })?;
    write_private_atomically(&builds, &format!("{sha}.json"), &json)?;

    let path = builds.join(sha);
    let tmp = builds.join(format!(".{sha}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&checked.binary)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("cannot write the build", &path)(e));
    }
    sync_dir(&builds);
    Ok(path)
}

/// Checks an installed build again as if the hub had just sent it: its
/// kept statement under the enrolled key and this platform, naming this
/// digest, and the file's size and digest. Returns its statement.
pub fn verify_installed(
    dir: &Path,
    sha256: &str,
    hub_key: &PublicKey,
    platform: &str,
) -> Result<BuildStatement, String> {
    if !is_sha256_hex(sha256) {
        return Err(format!("{sha256:?} is not a build's SHA-256"));
    }
    let json_path = builds_dir(dir).join(format!("{sha256}.json"));
    let kept: KeptStatement = std::fs::read(&json_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read {}: {e}", json_path.display()))?;
    let statement = update::verify_statement(&kept.statement, &kept.signature, hub_key, platform)
        .map_err(|e| format!("its statement: {e}"))?;
    if statement.sha256 != sha256 {
        return Err("its statement names another build".into());
    }
    let path = build_path(dir, sha256);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() != statement.size {
        return Err(format!(
            "{} is not the {} bytes its statement says",
            path.display(),
            statement.size
        ));
    }
    let actual = file_sha256(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if actual != sha256 {
        return Err(format!("{} was changed on disk", path.display()));
    }
    Ok(statement)
}

/// The digest `builds/current` names, if any (one that is not a digest
/// counts as none, with a warning: it cannot name a build).
pub fn read_current(dir: &Path) -> Option<String> {
    let path = builds_dir(dir).join(CURRENT_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let sha = text.trim();
    if is_sha256_hex(sha) {
        Some(sha.to_owned())
    } else {
        tracing::warn!("{} names no build; ignored", path.display());
        None
    }
}

/// Points `builds/current` at `sha256`, or removes it (`None`: the
/// installed binary runs).
pub fn set_current(dir: &Path, sha256: Option<&str>) -> Result<(), StateError> {
    let builds = builds_dir(dir);
    match sha256 {
        Some(sha) => write_private_atomically(&builds, CURRENT_FILE, format!("{sha}\n").as_bytes()),
        None => remove(&builds.join(CURRENT_FILE)),
    }
}

pub fn read_pending(dir: &Path) -> Result<Option<Pending>, String> {
    read_json(&dir.join(PENDING_FILE))
}

pub fn write_pending(dir: &Path, pending: &Pending) -> Result<(), StateError> {
    write_json(dir, PENDING_FILE, pending)
}

pub fn remove_pending(dir: &Path) -> Result<(), StateError> {
    remove(&dir.join(PENDING_FILE))
}

pub fn read_answer(dir: &Path) -> Result<Option<OwedAnswer>, String> {
    read_json(&dir.join(ANSWER_FILE))
}

pub fn write_answer(dir: &Path, answer: &OwedAnswer) -> Result<(), StateError> {
    write_json(dir, ANSWER_FILE, answer)
}

pub fn remove_answer(dir: &Path) -> Result<(), StateError> {
    remove(&dir.join(ANSWER_FILE))
}

/// The owed answer was sent: it becomes the last answer given.
pub fn answer_sent(dir: &Path) -> Result<(), StateError> {
    let (from, to) = (dir.join(ANSWER_FILE), dir.join(LAST_ANSWER_FILE));
    std::fs::rename(&from, &to).map_err(io_error("cannot keep", &from))?;
    sync_dir(dir);
    Ok(())
}

/// The answer this agent owes or gave for `command_id`, if any.
pub fn answer_for(dir: &Path, command_id: &str) -> Option<OwedAnswer> {
    [ANSWER_FILE, LAST_ANSWER_FILE]
        .into_iter()
        .filter_map(|name| read_json::<OwedAnswer>(&dir.join(name)).ok().flatten())
        .find(|a| a.command_id == command_id)
}

/// The new build connected: the answer is owed (ok), `current` names it,
/// and only then is the pending update gone. A crash before the last step
/// leaves `pending` with `current` already naming the new build, which
/// the next start reads as this confirmation, interrupted
/// (see [`crate::launcher`]). Older builds are removed afterwards.
pub fn confirm(dir: &Path, pending: &Pending) -> Result<OwedAnswer, StateError> {
    let answer = OwedAnswer {
        command_id: pending.command_id.clone(),
        ok: true,
        message: format!(
            "runs build {} ({})",
            pending.new_version,
            short(&pending.new_sha256)
        ),
    };
    write_answer(dir, &answer)?;
    set_current(dir, Some(&pending.new_sha256))?;
    remove_pending(dir)?;
    prune(dir, &[&pending.new_sha256]);
    Ok(answer)
}

/// The new build did not connect in time (or cannot run): `current`
/// names the old build again (none when that was the installed binary),
/// the failure is owed to the hub, and only then is the pending update
/// gone; the new build's files are removed. Returns what to run.
pub fn roll_back(dir: &Path, pending: &Pending, why: &str) -> Result<PathBuf, StateError> {
    let old_in_builds = pending.old_path == build_path(dir, &pending.old_sha256);
    set_current(dir, old_in_builds.then_some(pending.old_sha256.as_str()))?;
    write_answer(
        dir,
        &OwedAnswer {
            command_id: pending.command_id.clone(),
            ok: false,
            message: format!("rolled back to build {}: {why}", short(&pending.old_sha256)),
        },
    )?;
    remove_pending(dir)?;
    let keep: Vec<&str> = if old_in_builds {
        vec![pending.old_sha256.as_str()]
    } else {
        Vec::new()
    };
    prune(dir, &keep);
    Ok(pending.old_path.clone())
}

/// Removes every build (and scratch file) in `DIR/builds` but those in
/// `keep`; best effort, a leftover only costs disk space. Builds are tens
/// of megabytes, so each update would otherwise leave one behind.
pub fn prune(dir: &Path, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(builds_dir(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let sha = name.strip_suffix(".json").unwrap_or(name);
        let scratch = name.starts_with('.') && name.ends_with(".tmp");
        if (is_sha256_hex(sha) && !keep.contains(&sha)) || scratch {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is unreadable: {e}", path.display())),
    }
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| StateError::BadConfig {
        path: dir.join(name).display().to_string(),
        why: e.to_string(),
    })?;
    write_private_atomically(dir, name, &json)
}

fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("cannot remove", path)(e))
        }
        _ => {
            if let Some(parent) = path.parent() {
                sync_dir(parent);
            }
            Ok(())
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::update::test_signing::{sign, statement_for};
    use crate::update::verify_build;
    use redwall_crypto::signing::HubSigningKey;
    use std::os::unix::fs::PermissionsExt as _;

    const PLATFORM: &str = "linux-x86_64";

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn installed(dir: &Path, hub: &HubSigningKey, binary: &[u8]) -> String {
        let signed = sign(hub, &statement_for(binary, PLATFORM), binary);
        let checked = verify_build(&signed, &hub.public_key(), PLATFORM).unwrap();
        let path = install(dir, &signed, &checked).unwrap();
        assert_eq!(path, build_path(dir, &checked.statement.sha256));
        checked.statement.sha256
    }

    fn pending(dir: &Path, new: &str, old: &str, old_path: PathBuf) -> Pending {
        Pending {
            command_id: "cmd_1".into(),
            new_sha256: new.into(),
            new_version: "0.2.0".into(),
            new_path: build_path(dir, new),
            old_sha256: old.into(),
            old_path,
            deadline_unix: now_unix() + 60,
            confirm_within_secs: 60,
        }
    }

    #[test]
    fn an_answer_sent_is_kept_as_the_last_and_found_by_its_command() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let hub = HubSigningKey::generate();
        let old = installed(dir, &hub, b"old build");
        let new = installed(dir, &hub, b"new build");
        assert_eq!(answer_for(dir, "cmd_1"), None);
        let p = pending(dir, &new, &old, build_path(dir, &old));
        write_pending(dir, &p).unwrap();
        roll_back(dir, &p, "it did not connect").unwrap();
        let owed = answer_for(dir, "cmd_1").expect("the rollback's answer is owed");
        assert!(!owed.ok);
        assert!(owed.message.contains("did not connect"), "{}", owed.message);
        assert_eq!(answer_for(dir, "cmd_2"), None);
        // Sent: no longer owed, but still known for that command.
        answer_sent(dir).unwrap();
        assert_eq!(read_answer(dir).unwrap(), None);
        assert_eq!(answer_for(dir, "cmd_1"), Some(owed));
        assert_eq!(mode(&dir.join(LAST_ANSWER_FILE)), 0o600);
        // A later update's answer replaces it once sent.
        let mut later = pending(dir, &new, &old, build_path(dir, &old));
        later.command_id = "cmd_2".into();
        let ok = confirm(dir, &later).unwrap();
        assert_eq!(answer_for(dir, "cmd_2"), Some(ok.clone()));
        answer_sent(dir).unwrap();
        assert_eq!(answer_for(dir, "cmd_1"), None);
        assert_eq!(answer_for(dir, "cmd_2"), Some(ok));
    }

    #[test]
    fn an_installed_build_is_private_and_checked_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let hub = HubSigningKey::generate();
        let sha = installed(dir, &hub, b"build one");
        assert_eq!(mode(&builds_dir(dir)), 0o700);
        assert_eq!(mode(&build_path(dir, &sha)), 0o700);
        assert_eq!(mode(&builds_dir(dir).join(format!("{sha}.json"))), 0o600);
        assert_eq!(std::fs::read(build_path(dir, &sha)).unwrap(), b"build one");
        assert_eq!(file_sha256(&build_path(dir, &sha)).unwrap(), sha);
        let statement = verify_installed(dir, &sha, &hub.public_key(), PLATFORM).unwrap();
        assert_eq!(statement.sha256, sha);

        // Another hub key, another platform, a changed file: refused.
        let other = HubSigningKey::generate().public_key();
        assert!(verify_installed(dir, &sha, &other, PLATFORM).is_err());
        assert!(verify_installed(dir, &sha, &hub.public_key(), "linux-aarch64").is_err());
        std::fs::write(build_path(dir, &sha), b"build 0ne").unwrap();
        let why = verify_installed(dir, &sha, &hub.public_key(), PLATFORM).unwrap_err();
        assert!(why.contains("changed"), "{why}");
        std::fs::write(build_path(dir, &sha), b"build one!").unwrap();
        assert!(verify_installed(dir, &sha, &hub.public_key(), PLATFORM).is_err());
        // A statement kept under another build's name.
        let second = installed(dir, &hub, b"build two");
        std::fs::copy(
            builds_dir(dir).join(format!("{second}.json")),
            builds_dir(dir).join(format!("{sha}.json")),
        )
        .unwrap();
        std::fs::write(build_path(dir, &sha), b"build one").unwrap();
        let why = verify_installed(dir, &sha, &hub.public_key(), PLATFORM).unwrap_err();
        assert!(why.contains("another build"), "{why}");
        assert!(verify_installed(dir, "../../etc/passwd", &hub.public_key(), PLATFORM).is_err());
    }

    #[test]
    fn confirming_points_current_at_the_new_build_and_owes_ok() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let hub = HubSigningKey::generate();
        let old = installed(dir, &hub, b"old build");
        let new = installed(dir, &hub, b"new build");
        let stale = installed(dir, &hub, b"stale build");
        let p = pending(dir, &new, &old, build_path(dir, &old));
        write_pending(dir, &p).unwrap();
        assert_eq!(mode(&dir.join(PENDING_FILE)), 0o600);
        assert_eq!(read_pending(dir).unwrap(), Some(p.clone()));

        let answer = confirm(dir, &p).unwrap();
        assert!(answer.ok);
        assert_eq!(
            answer.message,
            format!("runs build 0.2.0 ({})", short(&new))
        );
        assert_eq!(read_answer(dir).unwrap(), Some(answer));
        assert_eq!(read_current(dir), Some(new.clone()));
        assert_eq!(read_pending(dir).unwrap(), None);
        assert!(build_path(dir, &new).exists());
        assert!(!build_path(dir, &old).exists());
        assert!(!build_path(dir, &stale).exists());
        assert!(!builds_dir(dir).join(format!("{stale}.json")).exists());
        remove_answer(dir).unwrap();
        remove_answer(dir).unwrap();
        assert_eq!(read_answer(dir).unwrap(), None);
    }

    #[test]
    fn rolling_back_restores_what_ran_and_owes_the_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let hub = HubSigningKey::generate();
        let old = installed(dir, &hub, b"old build");
        let new = installed(dir, &hub, b"new build");

        // The old build was one of ours: current names it again.
        set_current(dir, Some(&old)).unwrap();
        let p = pending(dir, &new, &old, build_path(dir, &old));
        write_pending(dir, &p).unwrap();
        let back = roll_back(dir, &p, "it did not connect").unwrap();
        assert_eq!(back, build_path(dir, &old));
        assert_eq!(read_current(dir), Some(old.clone()));
        let answer = read_answer(dir).unwrap().unwrap();
        assert!(!answer.ok);
        assert_eq!(
            answer.message,
            format!("rolled back to build {}: it did not connect", short(&old))
        );
        assert_eq!(read_pending(dir).unwrap(), None);
        assert!(!build_path(dir, &new).exists());
        assert!(build_path(dir, &old).exists());

        // The old build was the installed binary: no current at all.
        let p = pending(
            dir,
            &new,
            &"a".repeat(64),
            PathBuf::from("/usr/local/bin/x"),
        );
        set_current(dir, Some(&new)).unwrap();
        let back = roll_back(dir, &p, "why").unwrap();
        assert_eq!(back, PathBuf::from("/usr/local/bin/x"));
        assert_eq!(read_current(dir), None);
        assert!(!build_path(dir, &old).exists());
    }

    #[test]
    fn unreadable_records_are_named_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join(PENDING_FILE), b"{").unwrap();
        assert!(read_pending(dir).unwrap_err().contains(PENDING_FILE));
        std::fs::create_dir_all(builds_dir(dir)).unwrap();
        std::fs::write(builds_dir(dir).join(CURRENT_FILE), b"../../bin/sh\n").unwrap();
        assert_eq!(read_current(dir), None);
    }
}
