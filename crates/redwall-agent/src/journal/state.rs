//! The journal's state file, `state.json`: the epoch, the highest seq
//! ever given, the hub's acknowledgement, how far records were dropped,
//! and the counters.
//!
//! Small and rarely written (at creation, on ack, when segments are
//! dropped, after a repair at open), so it is plain JSON, replaced
//! atomically: a temporary file, synced, renamed over the old one, then
//! the directory synced. A crash leaves the old state or the new one,
//! never a mixture; a leftover temporary file is never read, only removed.
//!
//! A state file that does not parse, or says something impossible, is an
//! error naming the file and what is wrong, never repaired: it holds the
//! epoch and the acknowledgement, and guessing either could hand the hub
//! records it already has under seqs it would take for new ones, or
//! drop records it never had. Moving the directory away starts a new
//! journal (a new epoch, which the hub recognises as such).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{io_at, sync_dir, JournalError};

pub(super) const STATE_FILE: &str = "state.json";
const TMP_FILE: &str = ".state.json.tmp";
const FORMAT_VERSION: u32 = 1;
/// A state file is a few hundred bytes: anything much larger is not one.
const MAX_STATE_LEN: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct State {
    pub version: u32,
    /// 16 lowercase hex characters, chosen when the journal was made.
    pub epoch: String,
    /// The highest seq ever given, or that a damaged record may have had
    /// (see the module documentation of `mod.rs` on repairs).
    pub last_seq: u64,
    /// The hub stored every record through this seq.
    pub acked_seq: u64,
    /// Every record through this seq was dropped or acknowledged: its
    /// segment is deleted, or about to be (a crash between this file and
    /// the deletion is finished at the next open).
    pub dropped_through: u64,
    pub dropped: u64,
    pub damaged: u64,
}

impl State {
    pub fn new(epoch: String) -> Self {
        Self {
            version: FORMAT_VERSION,
            epoch,
            last_seq: 0,
            acked_seq: 0,
            dropped_through: 0,
            dropped: 0,
            damaged: 0,
        }
    }

    /// Records through this seq are gone from the journal's point of view.
    pub fn floor(&self) -> u64 {
        self.acked_seq.max(self.dropped_through)
    }

    fn check(&self) -> Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this agent reads {FORMAT_VERSION}; written by a newer agent?)",
                self.version
            ));
        }
        if !is_epoch(&self.epoch) {
            return Err(format!(
                "epoch {:?} is not 16 lowercase hex characters",
                self.epoch
            ));
        }
        if self.acked_seq > self.last_seq || self.dropped_through > self.last_seq {
            return Err(format!(
                "acked_seq {} or dropped_through {} is beyond last_seq {}",
                self.acked_seq, self.dropped_through, self.last_seq
            ));
        }
        Ok(())
    }
}

pub(super) fn is_epoch(epoch: &str) -> bool {
    epoch.len() == 16
        && epoch
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn state_error(dir: &Path, reason: String) -> JournalError {
    JournalError::State {
        path: dir.join(STATE_FILE).display().to_string(),
        reason,
    }
}

/// Reads the state, `None` if there is no state file. Removes a
/// temporary file left by a crash during [`store`].
pub(super) fn load(dir: &Path) -> Result<Option<State>, JournalError> {
    let tmp = dir.join(TMP_FILE);
    match std::fs::remove_file(&tmp) {
        Ok(()) => sync_dir(dir).map_err(io_at(dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&tmp)(e)),
    }
    let path = dir.join(STATE_FILE);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path)(e)),
    };
    if !meta.is_file() {
        return Err(state_error(dir, "not a regular file".into()));
    }
    if meta.len() > MAX_STATE_LEN {
        return Err(state_error(
            dir,
            format!("{} bytes, not a journal state file", meta.len()),
        ));
    }
    let bytes = std::fs::read(&path).map_err(io_at(&path))?;
    let state: State = serde_json::from_slice(&bytes)
        .map_err(|e| state_error(dir, format!("not a journal state file: {e}")))?;
    state.check().map_err(|reason| state_error(dir, reason))?;
    Ok(Some(state))
}

/// Replaces the state file atomically and durably.
pub(super) fn store(dir: &Path, state: &State) -> Result<(), JournalError> {
    let tmp = dir.join(TMP_FILE);
    let path = dir.join(STATE_FILE);
    let json =
        serde_json::to_vec(state).map_err(|e| state_error(dir, format!("cannot encode: {e}")))?;
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)
    };
    write().map_err(io_at(&path))
}
