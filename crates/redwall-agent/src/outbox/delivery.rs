//! The outbox's delivery state, in `delivery.log`: where each queue's head
//! is, the message in flight to the team broker (whole, with its packet id
//! and how far its QoS 2 exchange got), and the counters.
//!
//! Each change appends the whole state as one record (framed and checked
//! like the queues' records) and syncs it, so the state after a crash is
//! the last record that reached the disk; a torn last record is cut off
//! and the one before it wins. The file is rewritten to its last record
//! (a new file, synced, renamed over the old one) once it grows past
//! [`COMPACT_AT`], so it stays small without ever being edited in place.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::record::{self, decode_message, encode_message, Framed, StoredMessage};
use super::{sync_dir, Message, Priority, PRIORITIES};

pub(crate) const DELIVERY_FILE: &str = "delivery.log";
const FORMAT_VERSION: u8 = 1;
/// Rewrite the log once it is this large (plus twice its last record, so
/// a large in-flight message does not make every write a rewrite).
const COMPACT_AT: u64 = 256 * 1024;

/// How far the QoS 2 exchange of the message in flight got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// PUBLISH sent (or about to be): resend it, same packet id, DUP set.
    Published,
    /// PUBREC received: the team broker holds the message; only PUBREL
    /// may be sent again (a PUBLISH now would be a second message).
    Released,
}

/// The message handed to the team broker and not yet completed (PUBCOMP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub seq: u64,
    pub priority: Priority,
    /// The MQTT packet id it is (and will again be) sent with.
    pub pkid: u16,
    pub phase: Phase,
    pub message: Message,
}

/// Counters that survive restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub delivered: u64,
    /// Removed from the head to make room (drop-oldest), per priority.
    pub dropped: [u64; 3],
    /// Not stored because the outbox was full (refuse-new, or drop-oldest
    /// with nothing of equal or lower priority to drop), per priority.
    pub refused: [u64; 3],
    /// Larger than the whole outbox.
    pub too_large: u64,
    /// Damaged records found (each cuts off the rest of its segment).
    pub damaged: u64,
    /// In-flight messages sent again as new after the team broker lost
    /// the session (possibly a duplicate: see the bridge).
    pub resent_after_session_loss: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeliveryState {
    /// Per priority: every message with a lower seq is taken or dropped.
    pub consumed_through: [u64; 3],
    /// The highest seq ever given (so seqs never repeat, even after every
    /// queue file was deleted).
    pub last_seq: u64,
    pub last_pkid: u16,
    pub counters: Counters,
    pub in_flight: Option<InFlight>,
}

impl DeliveryState {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        for c in self.consumed_through {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&self.last_pkid.to_le_bytes());
        let c = &self.counters;
        let mut numbers = vec![c.delivered];
        numbers.extend(c.dropped);
        numbers.extend(c.refused);
        numbers.extend([c.too_large, c.damaged, c.resent_after_session_loss]);
        for n in numbers {
            out.extend_from_slice(&n.to_le_bytes());
        }
        match &self.in_flight {
            None => out.push(0),
            Some(f) => {
                out.push(1);
                out.push(f.priority.index() as u8);
                out.extend_from_slice(&f.pkid.to_le_bytes());
                out.push(match f.phase {
                    Phase::Published => 0,
                    Phase::Released => 1,
                });
                out.extend_from_slice(&encode_message(f.seq, 0, &f.message));
            }
        }
        out
    }

    fn decode(body: &[u8]) -> Option<Self> {
        let mut r = Reader(body);
        if r.u8()? != FORMAT_VERSION {
            return None;
        }
        let mut state = Self::default();
        for c in &mut state.consumed_through {
            *c = r.u64()?;
        }
        state.last_seq = r.u64()?;
        state.last_pkid = r.u16()?;
        let c = &mut state.counters;
        c.delivered = r.u64()?;
        for d in &mut c.dropped {
            *d = r.u64()?;
        }
        for d in &mut c.refused {
            *d = r.u64()?;
        }
        c.too_large = r.u64()?;
        c.damaged = r.u64()?;
        c.resent_after_session_loss = r.u64()?;
        state.in_flight = match r.u8()? {
            0 => None,
            1 => {
                let priority = *PRIORITIES.get(r.u8()? as usize)?;
                let pkid = r.u16()?;
                let phase = match r.u8()? {
                    0 => Phase::Published,
                    1 => Phase::Released,
                    _ => return None,
                };
                let StoredMessage { seq, message, .. } = decode_message(r.0)?;
                if pkid == 0 {
                    return None;
                }
                Some(InFlight {
                    seq,
                    priority,
                    pkid,
                    phase,
                    message,
                })
            }
            _ => return None,
        };
        Some(state)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take()?))
    }
}

/// What opening the log found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub log: DeliveryLog,
    pub state: Option<DeliveryState>,
    /// A torn or damaged tail was cut off.
    pub repaired: bool,
}

#[derive(Debug)]
pub(crate) struct DeliveryLog {
    dir: PathBuf,
    file: File,
    len: u64,
}

impl DeliveryLog {
    pub fn open(dir: &Path) -> std::io::Result<Opened> {
        let path = dir.join(DELIVERY_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut offset = 0usize;
        let mut state = None;
        let mut repaired = false;
        loop {
            match record::unframe(&bytes[offset..]) {
                Framed::End => break,
                Framed::Invalid => {
                    repaired = true;
                    break;
                }
                Framed::Record { body, len } => match DeliveryState::decode(body) {
                    Some(s) => {
                        state = Some(s);
                        offset += len;
                    }
                    None => {
                        repaired = true;
                        break;
                    }
                },
            }
        }
        if repaired {
            file.set_len(offset as u64)?;
            file.sync_all()?;
        }
        sync_dir(dir);
        Ok(Opened {
            log: Self {
                dir: dir.to_owned(),
                file,
                len: offset as u64,
            },
            state,
            repaired,
        })
    }

    /// Appends `state` and syncs it; rewrites the file first when it grew
    /// too large.
    pub fn write(&mut self, state: &DeliveryState) -> std::io::Result<()> {
        let framed = record::frame(&state.encode());
        if self.len > COMPACT_AT + 2 * framed.len() as u64 {
            return self.rewrite(&framed);
        }
        if let Err(e) = self.file.write_all(&framed) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.file.sync_data()?;
        self.len += framed.len() as u64;
        Ok(())
    }

    fn rewrite(&mut self, framed: &[u8]) -> std::io::Result<()> {
        let path = self.dir.join(DELIVERY_FILE);
        let tmp = self.dir.join(format!(".{DELIVERY_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(framed)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir);
        self.file = file;
        self.len = framed.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::outbox::Qos;

    fn state(n: u64, in_flight: bool) -> DeliveryState {
        DeliveryState {
            consumed_through: [n, n + 1, n + 2],
            last_seq: n + 10,
            last_pkid: 9,
            counters: Counters {
                delivered: n,
                dropped: [1, 2, 3],
                refused: [4, 5, 6],
                too_large: 7,
                damaged: 8,
                resent_after_session_loss: 9,
            },
            in_flight: in_flight.then(|| InFlight {
                seq: n,
                priority: Priority::Low,
                pkid: 9,
                phase: Phase::Released,
                message: Message {
                    topic: "a/b".into(),
                    payload: vec![1, 2, 3],
                    qos: Qos::AtLeastOnce,
                    retain: false,
                },
            }),
        }
    }

    #[test]
    fn the_last_state_written_is_the_one_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap().log;
        log.write(&state(1, true)).unwrap();
        log.write(&state(2, false)).unwrap();
        log.write(&state(3, true)).unwrap();
        drop(log);
        let opened = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(opened.state, Some(state(3, true)));
        assert!(!opened.repaired);
    }

    #[test]
    fn a_torn_last_state_gives_way_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap().log;
        log.write(&state(1, false)).unwrap();
        log.write(&state(2, true)).unwrap();
        drop(log);
        let path = dir.path().join(DELIVERY_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let opened = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(opened.state, Some(state(1, false)));
        assert!(opened.repaired);
        // And the log goes on from the cut.
        let mut log = opened.log;
        log.write(&state(4, false)).unwrap();
        drop(log);
        assert_eq!(
            DeliveryLog::open(dir.path()).unwrap().state,
            Some(state(4, false))
        );
    }

    #[test]
    fn a_large_log_is_rewritten_to_its_last_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap().log;
        for n in 0..5000 {
            log.write(&state(n, n % 2 == 0)).unwrap();
        }
        let len = std::fs::metadata(dir.path().join(DELIVERY_FILE))
            .unwrap()
            .len();
        assert!(len < COMPACT_AT + 4096, "{len}");
        drop(log);
        assert_eq!(
            DeliveryLog::open(dir.path()).unwrap().state,
            Some(state(4999, false))
        );
    }
}
