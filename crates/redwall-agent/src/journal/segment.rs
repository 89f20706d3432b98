//! Segment files: `{first seq:020}.seg`, append-only, each holding the
//! records `first seq`, `first seq + 1`, ... with no gap. Contiguity is
//! what makes a record's seq follow from its place (so the index below is
//! small) and lets a damaged tail be bounded (see [`Scanned::may_reach`]).
//! A seq only ever jumps at a new segment.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::record::{self, Framed, HEADER_LEN};

pub(super) const SEGMENT_SUFFIX: &str = ".seg";

pub(super) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first seq a segment file's name gives, if it is one.
pub(super) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug)]
pub(super) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    /// Bytes of intact records: the file's length.
    pub len: u64,
    /// Per record, in seq order from `first_seq`: its offset in the file
    /// and the length of its data.
    pub records: Vec<(u64, u32)>,
}

impl Segment {
    pub fn new(first_seq: u64, path: PathBuf) -> Self {
        Self {
            first_seq,
            path,
            len: 0,
            records: Vec::new(),
        }
    }

    /// The seq after the last record's (so `first_seq` when empty).
    pub fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(self.records.len() as u64)
    }

    /// The last record's seq, if any.
    pub fn last_seq(&self) -> Option<u64> {
        (!self.records.is_empty()).then(|| self.end_seq() - 1)
    }

    /// Index of the first record whose seq is above `floor`.
    pub fn first_above(&self, floor: u64) -> usize {
        let skipped = floor.saturating_add(1).saturating_sub(self.first_seq);
        usize::try_from(skipped).map_or(self.records.len(), |n| n.min(self.records.len()))
    }

    /// How many records are above `floor`, and their data's bytes.
    pub fn above(&self, floor: u64) -> (u64, u64) {
        let live = &self.records[self.first_above(floor)..];
        let bytes = live.iter().map(|(_, len)| u64::from(*len)).sum();
        (live.len() as u64, bytes)
    }
}

/// What one segment file holds.
#[derive(Debug)]
pub(super) struct Scanned {
    pub segment: Segment,
    /// The file's length before any repair.
    pub file_len: u64,
    /// Bytes after the intact records that are not a record: a torn
    /// write or damage. Cut off by the caller.
    pub damaged: bool,
}

impl Scanned {
    /// The highest seq the file may have held. A torn or damaged stretch
    /// of `n` bytes held at most `ceil(n / HEADER_LEN)` records (every
    /// record has a whole header; the last may be cut short), numbered on
    /// from the last intact one: one of them may have reached the hub, so
    /// none of their seqs is given again. They all came before the next
    /// segment's first seq, if there is a next segment.
    pub fn may_reach(&self, next_first: Option<u64>) -> u64 {
        let intact = self.segment.end_seq().saturating_sub(1);
        if !self.damaged {
            return intact;
        }
        let cut = self.file_len.saturating_sub(self.segment.len);
        let bound = intact.saturating_add(cut.div_ceil(HEADER_LEN as u64));
        next_first.map_or(bound, |next| bound.min(next.saturating_sub(1)).max(intact))
    }
}

/// Reads and checks a whole segment (a segment is at most the configured
/// segment size). Each record must carry the next seq, counting from the
/// name; a segment whose name does not come after `after` (the last seq
/// of the segments before it) is damaged from its start.
pub(super) fn scan(path: &Path, first_seq: u64, after: u64) -> std::io::Result<Scanned> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut segment = Segment::new(first_seq, path.to_owned());
    let mut damaged = first_seq <= after && !bytes.is_empty();
    let mut offset = 0usize;
    while !damaged {
        match record::unframe(&bytes[offset..]) {
            Framed::End => break,
            Framed::Record { seq, data, len } if seq == segment.end_seq() => {
                segment.records.push((offset as u64, data.len() as u32));
                offset += len;
            }
            Framed::Record { .. } | Framed::Invalid => damaged = true,
        }
    }
    segment.len = offset as u64;
    Ok(Scanned {
        segment,
        file_len: bytes.len() as u64,
        damaged,
    })
}
