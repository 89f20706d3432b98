//! One journal record on disk:
//! `[data length: u32 LE][CRC-32C of seq and data: u32 LE][seq: u64 LE][data]`.
//!
//! The same framing as the outbox's records (length first, so a reader
//! can step to the next one; a checksum, so a record torn by a crash or
//! damaged later reads as invalid, never as other data), with the
//! sequence number inside the checksum: a record can never be read back
//! under another seq. The outbox's codec is private to it and carries
//! MQTT fields, hence this small one.

use crc::{Crc, CRC_32_ISCSI};

/// CRC-32C (Castagnoli), as the outbox.
const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// Length, checksum and seq in front of every record's data: also the
/// smallest a record can be, which bounds how many records a damaged
/// stretch of bytes may have held.
pub(super) const HEADER_LEN: usize = 16;

/// The largest data one record may carry.
pub const MAX_RECORD_LEN: usize = 64 * 1024;

fn checksum(seq: u64, data: &[u8]) -> u32 {
    let mut digest = CASTAGNOLI.digest();
    digest.update(&seq.to_le_bytes());
    digest.update(data);
    digest.finalize()
}

/// Frames `data` as the record `seq`. `data` is at most [`MAX_RECORD_LEN`]
/// (checked by the caller), so its length fits the u32.
pub(super) fn frame(seq: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(seq, data).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// What the bytes at one position hold.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Framed<'a> {
    /// An intact record, and its whole length on disk.
    Record {
        seq: u64,
        data: &'a [u8],
        len: usize,
    },
    /// No bytes left.
    End,
    /// Cut short, a length out of range, or a checksum that does not
    /// match: nothing from here on can be trusted.
    Invalid,
}

/// Reads the record at the start of `bytes`.
pub(super) fn unframe(bytes: &[u8]) -> Framed<'_> {
    if bytes.is_empty() {
        return Framed::End;
    }
    let (Some(len), Some(crc), Some(seq)) = (
        bytes.get(0..4).and_then(|b| b.try_into().ok()),
        bytes.get(4..8).and_then(|b| b.try_into().ok()),
        bytes.get(8..16).and_then(|b| b.try_into().ok()),
    ) else {
        return Framed::Invalid;
    };
    let len = u32::from_le_bytes(len) as usize;
    let crc = u32::from_le_bytes(crc);
    let seq = u64::from_le_bytes(seq);
    // Checked before slicing: a damaged length never makes us look far.
    if len > MAX_RECORD_LEN {
        return Framed::Invalid;
    }
    let Some(data) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
        return Framed::Invalid;
    };
    if checksum(seq, data) != crc {
        return Framed::Invalid;
    }
    Framed::Record {
        seq,
        data,
        len: HEADER_LEN + len,
    }
}
