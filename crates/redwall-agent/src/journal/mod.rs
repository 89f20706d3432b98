//! The journal: a small, crash-safe, bounded disk journal in which the
//! agent keeps its site's log lines and audit events while the link to the
//! hub is down, until the hub confirms it stored them.
//!
//! Records are opaque bytes (at most [`MAX_RECORD_LEN`]), numbered by a
//! sequence (`seq`) that starts at 1 and only grows. The hub acknowledges
//! by seq: [`Journal::ack`]`(n)` says it stored every record through `n`,
//! which are then forgotten. A journal made anew (first start, or its
//! directory lost) gets a new random epoch, sent with the records, so the
//! hub can tell "seq 1 again" from a replay: seqs are only unique within
//! an epoch. A record is never given a seq the hub could already hold
//! under the same epoch.
//!
//! # Layout
//!
//! In its directory (mode 0700; files 0600):
//!
//! - `state.json`: the epoch, the highest seq given, the acknowledgement,
//!   how far records were dropped, and the counters (see `state.rs`),
//!   replaced atomically.
//! - `{first seq:020}.seg`: segment files of CRC-checked records (see
//!   `record.rs` and `segment.rs`), appended to in order. After an open,
//!   appends go on in the last segment only if it ends intact at the last
//!   seq given (else a seq jumped, and a jump starts a new segment).
//! - `lock`: an `flock` held while open, so two processes never write one
//!   journal.
//!
//! # Guarantees
//!
//! - [`Journal::append`] with `sync` returns once the records (and the
//!   directory entry of a new segment) are on disk.
//! - [`Journal::pending`] first syncs whatever was appended without
//!   `sync`: a record is handed out (so may reach the hub) only once it is
//!   on disk, so a power cut can only lose records nobody has seen.
//! - At open, a torn or damaged record ends its segment: it and everything
//!   after it in that segment are cut off, counted once per segment in
//!   [`JournalStats::damaged`]. Records lost to a power cut before their
//!   sync leave either a clean end (their seqs are given again: they were
//!   never handed out) or such damage. Damaged bytes may be a record that
//!   was synced and handed out, so their seqs are never given again: a
//!   stretch of `n` bytes held at most `ceil(n / 16)` records (16 bytes is
//!   the smallest record), and the next seq comes after all of those. The
//!   highest seq given is also kept in `state.json` whenever it is
//!   written, and segment names keep it for the rest, so seqs never go
//!   back even once every segment is deleted. The price is a gap in the
//!   seqs after a repair, which the hub must accept anyway (drops make
//!   gaps too).
//! - The segment files never hold more than [`JournalConfig::max_bytes`]:
//!   before a record would pass it, whole oldest segments are deleted,
//!   acknowledged or not; their unacknowledged records are counted in
//!   [`JournalStats::dropped`] (persisted in the same write that records
//!   how far records were dropped, before the files go). Acknowledged
//!   records take room until their whole segment is acknowledged.
//! - A state file that is garbage is an error ([`JournalError::State`]),
//!   never guessed at; see `state.rs` for why.

mod record;
mod segment;
mod state;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

pub use record::MAX_RECORD_LEN;

use record::{Framed, HEADER_LEN};
use segment::Segment;
use state::State;

/// The journal's sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The most bytes the segment files hold together.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Size of one segment: the unit in which space is given back, by an
    /// acknowledgement or a drop. A record must fit in one.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

fn default_max_bytes() -> u64 {
    4 * 1024 * 1024
}

fn default_segment_bytes() -> u64 {
    256 * 1024
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
        }
    }
}

impl JournalConfig {
    /// At least two segments fit in `max_bytes`, so making room for a new
    /// segment never has to delete the one being written.
    pub fn check(&self) -> Result<(), JournalError> {
        if self.segment_bytes < 4096 {
            return Err(JournalError::Config(
                "segment_bytes must be at least 4096".into(),
            ));
        }
        if self.segment_bytes > self.max_bytes / 2 {
            return Err(JournalError::Config(format!(
                "segment_bytes ({}) must be at most half of max_bytes ({})",
                self.segment_bytes, self.max_bytes
            )));
        }
        Ok(())
    }

    /// The largest record accepted: [`MAX_RECORD_LEN`], or less when a
    /// segment is smaller than that.
    pub fn max_record_len(&self) -> usize {
        let fits = usize::try_from(self.segment_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(HEADER_LEN);
        MAX_RECORD_LEN.min(fits)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal configuration: {0}")]
    Config(String),
    #[error("journal record of {len} bytes is larger than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error(
        "journal state {path}: {reason}; move the journal's directory away to start a new journal"
    )]
    State { path: String, reason: String },
    #[error("journal {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {0} is in use by another process")]
    Busy(String),
    #[error("journal {path}: record {seq} changed on disk since the journal was opened (reopen it to cut the damage off)")]
    Changed { path: String, seq: u64 },
    #[error("journal: sequence numbers exhausted")]
    Exhausted,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct JournalStats {
    /// Records not yet acknowledged (nor dropped).
    pub pending: u64,
    /// Their data's bytes (without the 16 bytes of framing each).
    pub pending_bytes: u64,
    /// The highest seq given (or skipped after a repair).
    pub last_seq: u64,
    pub acked_seq: u64,
    /// Unacknowledged records deleted to stay within `max_bytes`.
    pub dropped: u64,
    /// Segments found with a torn or damaged tail at open.
    pub damaged: u64,
}

pub struct Journal {
    dir: PathBuf,
    config: JournalConfig,
    state: State,
    /// Oldest first; none of them empty but possibly the last.
    segments: VecDeque<Segment>,
    /// Append handle on the last segment. `None` when there is none, or
    /// it may not be appended to (see the layout), or it was deleted: the
    /// next append starts a new segment.
    active: Option<File>,
    /// Appended since the last data sync. Atomic only so that
    /// [`Journal::pending`] can sync through `&self`.
    data_unsynced: AtomicBool,
    /// A segment was made since the last directory sync.
    dir_unsynced: AtomicBool,
    _lock: File,
}

impl Journal {
    /// Opens or creates the journal in `dir` (0700; files 0600). A journal
    /// made anew gets a random epoch; seqs start at 1. Torn or damaged
    /// tails are cut off (see the module documentation); a garbage state
    /// file is [`JournalError::State`].
    pub fn open(dir: &Path, config: &JournalConfig) -> Result<Self, JournalError> {
        config.check()?;
        crate::private_dir::ensure(dir).map_err(io_at(dir))?;
        let lock = lock_dir(dir)?;
        let names = list_segments(dir)?;
        let loaded = state::load(dir)?;
        let mut state = match &loaded {
            Some(state) => state.clone(),
            None if names.is_empty() => {
                let fresh = State::new(hex::encode(rand::random::<[u8; 8]>()));
                state::store(dir, &fresh)?;
                fresh
            }
            // Segments without a state: their epoch is unknown, and a new
            // one over them would resend or lose records silently.
            None => {
                return Err(JournalError::State {
                    path: dir.join(state::STATE_FILE).display().to_string(),
                    reason: format!("missing, while {} segment files are present", names.len()),
                })
            }
        };
        let floor = state.floor();
        let mut segments = VecDeque::new();
        let mut to_cut = Vec::new();
        let mut to_delete = Vec::new();
        let mut last_intact = 0;
        let next_firsts: Vec<Option<u64>> = names
            .iter()
            .skip(1)
            .map(|(s, _)| Some(*s))
            .chain([None])
            .collect();
        for ((first_seq, path), next_first) in names.into_iter().zip(next_firsts) {
            let scanned = segment::scan(&path, first_seq, last_intact).map_err(io_at(&path))?;
            state.last_seq = state.last_seq.max(scanned.may_reach(next_first));
            if scanned.damaged {
                state.damaged += 1;
            }
            let segment = scanned.segment;
            match segment.last_seq() {
                // Acknowledged or dropped before a crash, not yet deleted,
                // or nothing intact in it.
                None => to_delete.push(path),
                Some(last) if last <= floor => {
                    last_intact = last;
                    to_delete.push(path);
                }
                Some(last) => {
                    last_intact = last;
                    if scanned.damaged {
                        to_cut.push((path, segment.len));
                    }
                    segments.push_back(segment);
                }
            }
        }
        // The skipped seqs and the counters first: a crash before the
        // cut finds the damage again (counted twice, never a seq reused).
        if loaded.as_ref() != Some(&state) {
            state::store(dir, &state)?;
        }
        for (path, len) in &to_cut {
            let cut = || -> std::io::Result<()> {
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(*len)?;
                file.sync_all()
            };
            cut().map_err(io_at(path))?;
        }
        for path in &to_delete {
            std::fs::remove_file(path).map_err(io_at(path))?;
        }
        if !to_delete.is_empty() {
            sync_dir(dir).map_err(io_at(dir))?;
        }
        // Go on in the last segment when the next seq follows its last
        // record (so not after a repair), rather than leave a small file
        // behind at every restart.
        let active = match segments.back() {
            Some(last) if last.end_seq() == state.last_seq.saturating_add(1) => Some(
                OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .map_err(io_at(&last.path))?,
            ),
            _ => None,
        };
        Ok(Self {
            dir: dir.to_owned(),
            config: config.clone(),
            state,
            segments,
            active,
            data_unsynced: AtomicBool::new(false),
            dir_unsynced: AtomicBool::new(false),
            _lock: lock,
        })
    }

    pub fn epoch(&self) -> &str {
        &self.state.epoch
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends the records in order under the next seqs and returns the
    /// last one given (the current last seq if `records` is empty). A
    /// record above [`JournalConfig::max_record_len`] refuses the whole
    /// call before anything is written. With `sync`, returns once the
    /// records are on disk. Oldest segments are dropped first when the
    /// journal would pass `max_bytes`. On an I/O error, the records before
    /// the failing one may be stored.
    pub fn append(&mut self, records: &[Vec<u8>], sync: bool) -> Result<u64, JournalError> {
        let max = self.config.max_record_len();
        if let Some(large) = records.iter().find(|r| r.len() > max) {
            return Err(JournalError::TooLarge {
                len: large.len(),
                max,
            });
        }
        for data in records {
            let seq = self
                .state
                .last_seq
                .checked_add(1)
                .ok_or(JournalError::Exhausted)?;
            let framed = record::frame(seq, data);
            let size = framed.len() as u64;
            self.make_room(size)?;
            let roll = match (&self.active, self.segments.back()) {
                (Some(_), Some(last)) => last.len + size > self.config.segment_bytes,
                _ => true,
            };
            if roll {
                self.start_segment(seq)?;
            }
            let (Some(active), Some(last)) = (self.active.as_mut(), self.segments.back_mut())
            else {
                return Err(io_at(&self.dir)(std::io::Error::other(
                    "no segment to append to",
                )));
            };
            if let Err(e) = active.write_all(&framed) {
                // A partial write must not stay in front of the next one.
                let _ = active.set_len(last.len);
                return Err(io_at(&last.path)(e));
            }
            last.records.push((last.len, data.len() as u32));
            last.len += size;
            self.data_unsynced.store(true, Ordering::Relaxed);
            self.state.last_seq = seq;
        }
        if sync {
            self.sync()?;
        }
        Ok(self.state.last_seq)
    }

    /// Deletes whole oldest segments until `size` more bytes fit in
    /// `max_bytes`, counting their unacknowledged records as dropped.
    fn make_room(&mut self, size: u64) -> Result<(), JournalError> {
        let mut total: u64 = self.segments.iter().map(|s| s.len).sum();
        let mut doomed = Vec::new();
        while total + size > self.config.max_bytes {
            // check() keeps two segments within max_bytes, so this only
            // ends the loop on an impossible state.
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            total -= oldest.len;
            self.state.dropped += oldest.above(self.state.floor()).0;
            if let Some(last) = oldest.last_seq() {
                self.state.dropped_through = self.state.dropped_through.max(last);
            }
            doomed.push(oldest.path);
        }
        if doomed.is_empty() {
            return Ok(());
        }
        if self.segments.is_empty() {
            self.forget_active();
        }
        state::store(&self.dir, &self.state)?;
        self.delete(&doomed)
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), JournalError> {
        // The previous segment's records reach the disk before any of the
        // new one's, so a crash never keeps a later record and loses an
        // earlier one.
        self.sync_data()?;
        let path = self.dir.join(segment::file_name(first_seq));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        self.active = Some(file);
        self.dir_unsynced.store(true, Ordering::Relaxed);
        self.segments.push_back(Segment::new(first_seq, path));
        Ok(())
    }

    /// Records not yet acknowledged, oldest first: at most `max_records`,
    /// and no more than `max_bytes` of data unless the first alone is
    /// larger (at least one record if any waits). Syncs unsynced appends
    /// first (see the module documentation).
    pub fn pending(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        self.sync()?;
        let floor = self.state.floor();
        let max_records = max_records.max(1);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for segment in &self.segments {
            let first = segment.first_above(floor);
            if first == segment.records.len() {
                continue;
            }
            let file = File::open(&segment.path).map_err(io_at(&segment.path))?;
            for (index, &(offset, len)) in segment.records.iter().enumerate().skip(first) {
                let len = len as usize;
                if out.len() == max_records || (!out.is_empty() && bytes + len > max_bytes) {
                    return Ok(out);
                }
                let seq = segment.first_seq + index as u64;
                let mut framed = vec![0u8; HEADER_LEN + len];
                file.read_exact_at(&mut framed, offset)
                    .map_err(io_at(&segment.path))?;
                match record::unframe(&framed) {
                    Framed::Record { seq: s, data, .. } if s == seq => {
                        out.push((seq, data.to_vec()))
                    }
                    _ => {
                        return Err(JournalError::Changed {
                            path: segment.path.display().to_string(),
                            seq,
                        })
                    }
                }
                bytes += len;
            }
        }
        Ok(out)
    }

    /// The hub stored every record through `seq`. A seq at or below the
    /// current acknowledgement, or beyond the last seq given, is ignored.
    /// Persisted before returning; segments then wholly acknowledged are
    /// deleted.
    pub fn ack(&mut self, seq: u64) -> Result<(), JournalError> {
        if seq <= self.state.acked_seq || seq > self.state.last_seq {
            return Ok(());
        }
        let before = self.state.acked_seq;
        self.state.acked_seq = seq;
        if let Err(e) = state::store(&self.dir, &self.state) {
            self.state.acked_seq = before;
            return Err(e);
        }
        let mut done = Vec::new();
        while let Some(front) = self.segments.front() {
            if front.last_seq().is_some_and(|last| last > seq) {
                break;
            }
            if let Some(front) = self.segments.pop_front() {
                done.push(front.path);
            }
        }
        if self.segments.is_empty() {
            self.forget_active();
        }
        self.delete(&done)
    }

    pub fn stats(&self) -> JournalStats {
        let floor = self.state.floor();
        let (pending, pending_bytes) = self
            .segments
            .iter()
            .map(|s| s.above(floor))
            .fold((0, 0), |(n, b), (sn, sb)| (n + sn, b + sb));
        JournalStats {
            pending,
            pending_bytes,
            last_seq: self.state.last_seq,
            acked_seq: self.state.acked_seq,
            dropped: self.state.dropped,
            damaged: self.state.damaged,
        }
    }

    /// Makes every append so far durable, with a new segment's name.
    fn sync(&self) -> Result<(), JournalError> {
        self.sync_data()?;
        if self.dir_unsynced.load(Ordering::Relaxed) {
            sync_dir(&self.dir).map_err(io_at(&self.dir))?;
            self.dir_unsynced.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), JournalError> {
        if self.data_unsynced.load(Ordering::Relaxed) {
            if let Some(active) = &self.active {
                active.sync_data().map_err(io_at(&self.dir))?;
            }
            self.data_unsynced.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The segment being appended to is gone: its unsynced data no longer
    /// matters, and the next append starts a new one.
    fn forget_active(&mut self) {
        self.active = None;
        self.data_unsynced.store(false, Ordering::Relaxed);
    }

    fn delete(&self, paths: &[PathBuf]) -> Result<(), JournalError> {
        if paths.is_empty() {
            return Ok(());
        }
        for path in paths {
            std::fs::remove_file(path).map_err(io_at(path))?;
        }
        sync_dir(&self.dir).map_err(io_at(&self.dir))
    }
}

/// The segment files in `dir`, by first seq.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        if let Some(first_seq) = entry.file_name().to_str().and_then(segment::parse_name) {
            names.push((first_seq, entry.path()));
        }
    }
    names.sort();
    Ok(names)
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> JournalError {
    let path = path.display().to_string();
    move |source| JournalError::Io {
        path: path.clone(),
        source,
    }
}

/// Makes created, renamed and deleted entries survive a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One writer per directory (`flock`, released when the journal drops).
fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    match crate::private_dir::lock(dir) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(JournalError::Busy(dir.display().to_string())),
        Err((path, e)) => Err(io_at(&path)(e)),
    }
}

#[cfg(test)]
mod tests;
