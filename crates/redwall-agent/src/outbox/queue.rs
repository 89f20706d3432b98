//! One priority's queue: a directory of append-only segment files
//! `{first seq:020}.seg`, read from the head in order.
//!
//! Appends go to the last segment until it would pass the segment size,
//! then a new one starts. The head (the first message not yet taken or
//! dropped) is a byte offset in the first segment; the outbox persists it
//! as a sequence number (`consumed_through`: everything below it is gone),
//! since offsets mean nothing once files are rewritten. A segment whose
//! messages are all consumed is deleted, but only after the outbox has
//! persisted that fact ([`Queue::collect_garbage`]), so a crash in
//! between never loses a message it still counts as queued.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::record::{self, decode_message, Framed, StoredMessage, HEADER_LEN, MAX_BODY_LEN};
use super::{ensure_private_dir, sync_dir};

const SEGMENT_SUFFIX: &str = ".seg";

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Bytes of valid records (the file's length once synced).
    len: u64,
    records: u64,
}

/// What opening a queue found wrong and repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repairs {
    /// Places where a record was cut short or damaged; everything after
    /// each in its segment was cut off.
    pub damaged: u64,
    pub truncated_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Queue {
    dir: PathBuf,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Append handle on the last segment.
    active: Option<File>,
    /// Read handle on the first segment, opened lazily.
    reader: Option<(u64, File)>,
    /// The head: byte offset and records consumed in the first segment.
    head_offset: u64,
    head_consumed: u64,
    /// Every message with a lower seq is taken or dropped.
    consumed_through: u64,
    /// Appended since the last sync.
    dirty: bool,
    /// A segment file was created since the last sync (the directory
    /// entry needs syncing too).
    created: bool,
    /// The last segment had a damaged record: append to a fresh one.
    seal_active: bool,
    /// Consumed segments to delete once the head is persisted.
    garbage: Vec<PathBuf>,
}

impl Queue {
    /// Opens (creating) the queue in `dir`. Every record is checked; a cut
    /// or damaged record truncates its segment there. `seen` is called for
    /// every intact record still queued (seq >= `consumed_through`), and
    /// also for the consumed ones kept on disk (the caller tells them
    /// apart by seq).
    pub fn open(
        dir: &Path,
        consumed_through: u64,
        segment_bytes: u64,
        seen: &mut dyn FnMut(&StoredMessage),
    ) -> std::io::Result<(Self, Repairs)> {
        ensure_private_dir(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(first_seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            names.push((first_seq, entry.path()));
        }
        names.sort();
        let mut queue = Self {
            dir: dir.to_owned(),
            segment_bytes,
            segments: VecDeque::new(),
            active: None,
            reader: None,
            head_offset: 0,
            head_consumed: 0,
            consumed_through,
            dirty: false,
            created: false,
            seal_active: false,
            garbage: Vec::new(),
        };
        let mut repairs = Repairs::default();
        let mut last_seq: Option<u64> = None;
        let count = names.len();
        for (index, (first_seq, path)) in names.into_iter().enumerate() {
            let scanned = scan_segment(&path, last_seq, seen)?;
            if scanned.damaged {
                repairs.damaged += 1;
                repairs.truncated_bytes += scanned.file_len - scanned.valid_len;
                truncate(&path, scanned.valid_len)?;
            }
            if scanned.records == 0 {
                std::fs::remove_file(&path)?;
                continue;
            }
            last_seq = scanned.last_seq.or(last_seq);
            let all_consumed = scanned.last_seq.is_some_and(|s| s < consumed_through);
            if queue.segments.is_empty() && all_consumed && index + 1 < count {
                // Taken or dropped before the crash, not yet deleted.
                std::fs::remove_file(&path)?;
                continue;
            }
            if queue.segments.is_empty() {
                queue.head_offset = scanned.head_offset(consumed_through);
                queue.head_consumed = scanned.consumed_before(consumed_through);
            }
            queue.segments.push_back(Segment {
                first_seq,
                path,
                len: scanned.valid_len,
                records: scanned.records,
            });
        }
        sync_dir(dir);
        Ok((queue, repairs))
    }

    pub fn live_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>() - self.head_offset
    }

    pub fn live_records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum::<u64>() - self.head_consumed
    }

    pub fn is_empty(&self) -> bool {
        self.live_records() == 0
    }

    pub fn consumed_through(&self) -> u64 {
        self.consumed_through
    }

    /// Appends one framed record (not yet durable: see [`Queue::sync`]).
    pub fn append(&mut self, framed: &[u8], seq: u64) -> std::io::Result<()> {
        let len = framed.len() as u64;
        let start_new = match self.segments.back() {
            None => true,
            Some(last) => {
                self.seal_active || (last.records > 0 && last.len + len > self.segment_bytes)
            }
        };
        if start_new || self.active.is_none() {
            if start_new {
                self.start_segment(seq)?;
            } else if let Some(last) = self.segments.back() {
                self.active = Some(open_append(&last.path)?);
            }
        }
        let (Some(active), Some(last)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(std::io::Error::other("no segment to append to"));
        };
        if let Err(e) = active.write_all(framed) {
            // A partial write stays in the file: cut it off so the next
            // append does not land behind garbage (open would truncate it
            // anyway, and everything after it with it).
            let _ = active.set_len(last.len);
            return Err(e);
        }
        last.len += len;
        last.records += 1;
        self.dirty = true;
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> std::io::Result<()> {
        let path = self.dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        // The previous segment's appends must reach the disk before the
        // new one's, or a crash could keep a later record and lose an
        // earlier one.
        if let Some(previous) = self.active.as_ref() {
            if self.dirty {
                previous.sync_data()?;
            }
        }
        self.active = Some(file);
        self.created = true;
        self.seal_active = false;
        self.segments.push_back(Segment {
            first_seq,
            path,
            len: 0,
            records: 0,
        });
        Ok(())
    }

    /// Makes every append so far durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            if let Some(active) = self.active.as_ref() {
                active.sync_data()?;
            }
            self.dirty = false;
        }
        if self.created {
            sync_dir(&self.dir);
            self.created = false;
        }
        Ok(())
    }

    /// The message at the head and its length on disk, if any.
    pub fn peek(&mut self) -> Result<Option<(StoredMessage, u64)>, HeadError> {
        self.skip_exhausted();
        let Some(front) = self.segments.front() else {
            return Ok(None);
        };
        if self.head_offset >= front.len {
            return Ok(None);
        }
        let first_seq = front.first_seq;
        let path = front.path.clone();
        let reader = match &self.reader {
            Some((seq, file)) if *seq == first_seq => file,
            _ => {
                let file = File::open(&path).map_err(HeadError::Io)?;
                &self.reader.insert((first_seq, file)).1
            }
        };
        let mut header = [0u8; HEADER_LEN];
        reader
            .read_exact_at(&mut header, self.head_offset)
            .map_err(HeadError::Io)?;
        let Some((len, _)) = record::header(&header) else {
            return Err(HeadError::Damaged);
        };
        if len > MAX_BODY_LEN || self.head_offset + (HEADER_LEN + len) as u64 > front.len {
            return Err(HeadError::Damaged);
        }
        let mut bytes = vec![0u8; HEADER_LEN + len];
        reader
            .read_exact_at(&mut bytes, self.head_offset)
            .map_err(HeadError::Io)?;
        match record::unframe(&bytes) {
            Framed::Record { body, len } => match decode_message(body) {
                Some(stored) => Ok(Some((stored, len as u64))),
                None => Err(HeadError::Damaged),
            },
            Framed::End | Framed::Invalid => Err(HeadError::Damaged),
        }
    }

    /// Moves the head past the record [`Queue::peek`] returned.
    pub fn pop(&mut self, seq: u64, len: u64) {
        self.head_offset += len;
        self.head_consumed += 1;
        self.consumed_through = seq + 1;
        self.skip_exhausted();
    }

    /// The head's segment went bad after it was checked at open (the disk
    /// changed under us): give up the rest of it, and append elsewhere.
    pub fn skip_damaged_segment(&mut self) {
        if let Some(front) = self.segments.front() {
            self.head_offset = front.len;
            self.head_consumed = front.records;
            if self.segments.len() == 1 {
                self.seal_active = true;
            }
        }
        self.skip_exhausted();
    }

    /// A fully consumed first segment that is not the last goes to the
    /// garbage list (deleted once the head is persisted).
    fn skip_exhausted(&mut self) {
        while self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            if self.head_offset < front.len {
                break;
            }
            if let Some(done) = self.segments.pop_front() {
                self.garbage.push(done.path);
            }
            self.head_offset = 0;
            self.head_consumed = 0;
            self.reader = None;
        }
    }

    /// Whether consumed segments wait for [`Queue::collect_garbage`].
    pub fn has_garbage(&self) -> bool {
        !self.garbage.is_empty()
    }

    /// Deletes consumed segments. Call only once `consumed_through` is
    /// persisted.
    pub fn collect_garbage(&mut self) {
        if self.garbage.is_empty() {
            return;
        }
        for path in self.garbage.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        sync_dir(&self.dir);
    }
}

#[derive(Debug)]
pub(crate) enum HeadError {
    Io(std::io::Error),
    Damaged,
}

/// What one segment holds.
struct Scanned {
    file_len: u64,
    valid_len: u64,
    records: u64,
    last_seq: Option<u64>,
    damaged: bool,
    /// (seq, offset) of every intact record, to place the head.
    positions: Vec<(u64, u64)>,
}

impl Scanned {
    fn head_offset(&self, consumed_through: u64) -> u64 {
        self.positions
            .iter()
            .find(|(seq, _)| *seq >= consumed_through)
            .map_or(self.valid_len, |(_, offset)| *offset)
    }

    fn consumed_before(&self, consumed_through: u64) -> u64 {
        self.positions
            .iter()
            .filter(|(seq, _)| *seq < consumed_through)
            .count() as u64
    }
}

/// Reads a whole segment (bounded by the segment size, or one message
/// larger than it) and checks every record. Sequence numbers must grow:
/// a record out of order is damage too.
fn scan_segment(
    path: &Path,
    mut last_seq: Option<u64>,
    seen: &mut dyn FnMut(&StoredMessage),
) -> std::io::Result<Scanned> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut scanned = Scanned {
        file_len: bytes.len() as u64,
        valid_len: 0,
        records: 0,
        last_seq: None,
        damaged: false,
        positions: Vec::new(),
    };
    let mut offset = 0usize;
    loop {
        match record::unframe(&bytes[offset..]) {
            Framed::End => break,
            Framed::Invalid => {
                scanned.damaged = true;
                break;
            }
            Framed::Record { body, len } => {
                let Some(stored) = decode_message(body) else {
                    scanned.damaged = true;
                    break;
                };
                if last_seq.is_some_and(|last| stored.seq <= last) {
                    scanned.damaged = true;
                    break;
                }
                seen(&stored);
                last_seq = Some(stored.seq);
                scanned.last_seq = Some(stored.seq);
                scanned.positions.push((stored.seq, offset as u64));
                scanned.records += 1;
                offset += len;
                scanned.valid_len = offset as u64;
            }
        }
    }
    Ok(scanned)
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).mode(0o600).open(path)
}
