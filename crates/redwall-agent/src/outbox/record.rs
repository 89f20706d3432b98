//! One record on disk: `[body length: u32 LE][CRC-32C of body: u32 LE][body]`.
//!
//! The length comes first so a reader can skip to the next record; the
//! checksum covers the whole body, so a record half written by a crash (a
//! torn tail) or damaged later reads as invalid instead of as a different
//! message. CRC-32C (Castagnoli) is the storage checksum of ext4, iSCSI and
//! Kafka; it detects corruption, it is not a defence against an attacker
//! who can write the state directory (who could as well replace the agent).
//!
//! A message body is `seq u64 | qos u8 | retain u8 | origin u16 |
//! topic length u16 | topic | payload`, all little-endian.

use crc::{Crc, CRC_32_ISCSI};

use super::{Message, Qos};

/// CRC-32C.
const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// Length and checksum in front of every body.
pub(crate) const HEADER_LEN: usize = 8;

/// The largest body accepted when reading: anything bigger is a damaged
/// length field, not a message (MQTT allows 256 MB, but the outbox refuses
/// any message above its configured bound long before that).
pub(crate) const MAX_BODY_LEN: usize = 64 * 1024 * 1024;

/// The fixed part of a message body before the topic.
const MESSAGE_FIXED_LEN: usize = 8 + 1 + 1 + 2 + 2;

pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    CASTAGNOLI.checksum(bytes)
}

/// A digest of what a message says (topic, payload, QoS, retain), used to
/// recognise a redelivery from the local broker.
pub(crate) fn content_digest(message: &Message) -> u32 {
    let mut digest = CASTAGNOLI.digest();
    digest.update(message.topic.as_bytes());
    digest.update(&[0, message.qos as u8, u8::from(message.retain)]);
    digest.update(&message.payload);
    digest.finalize()
}

/// Frames `body` as a record.
pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// What the framing says about the bytes at one position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Framed<'a> {
    /// A whole, intact record: its body and its total length on disk.
    Record { body: &'a [u8], len: usize },
    /// Nothing left.
    End,
    /// A header or body cut short, a length out of range, or a checksum
    /// that does not match: everything from here on is unusable.
    Invalid,
}

/// Reads the record at the start of `bytes`.
pub(crate) fn unframe(bytes: &[u8]) -> Framed<'_> {
    if bytes.is_empty() {
        return Framed::End;
    }
    let Some((len, crc)) = header(bytes) else {
        return Framed::Invalid;
    };
    if len > MAX_BODY_LEN || bytes.len() - HEADER_LEN < len {
        return Framed::Invalid;
    }
    let body = &bytes[HEADER_LEN..HEADER_LEN + len];
    if checksum(body) != crc {
        return Framed::Invalid;
    }
    Framed::Record {
        body,
        len: HEADER_LEN + len,
    }
}

/// Body length and checksum, if `bytes` holds a whole header.
pub(crate) fn header(bytes: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    Some((len, crc))
}

/// A message as stored in a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its place in the outbox: strictly increasing in the order of
    /// appends, across all priorities.
    pub seq: u64,
    /// The packet id the local broker delivered it with (0: none), kept to
    /// recognise that broker's redelivery after a crash.
    pub origin: u16,
    pub message: Message,
}

/// The body of a stored message.
pub(crate) fn encode_message(seq: u64, origin: u16, message: &Message) -> Vec<u8> {
    let topic = message.topic.as_bytes();
    let mut out = Vec::with_capacity(MESSAGE_FIXED_LEN + topic.len() + message.payload.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(message.qos as u8);
    out.push(u8::from(message.retain));
    out.extend_from_slice(&origin.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(&message.payload);
    out
}

/// The length [`encode_message`] gives, framed: what the message costs on disk.
pub(crate) fn framed_message_len(message: &Message) -> u64 {
    (HEADER_LEN + MESSAGE_FIXED_LEN + message.topic.len() + message.payload.len()) as u64
}

/// Reads a body written by [`encode_message`]; `None` if it is not one
/// (which an intact checksum makes a bug or a foreign file, never a crash).
pub(crate) fn decode_message(body: &[u8]) -> Option<StoredMessage> {
    let fixed = body.get(..MESSAGE_FIXED_LEN)?;
    let seq = u64::from_le_bytes(fixed[0..8].try_into().ok()?);
    let qos = Qos::from_u8(fixed[8])?;
    let retain = match fixed[9] {
        0 => false,
        1 => true,
        _ => return None,
    };
    let origin = u16::from_le_bytes(fixed[10..12].try_into().ok()?);
    let topic_len = u16::from_le_bytes(fixed[12..14].try_into().ok()?) as usize;
    let rest = &body[MESSAGE_FIXED_LEN..];
    let topic = std::str::from_utf8(rest.get(..topic_len)?).ok()?.to_owned();
    let payload = rest[topic_len..].to_vec();
    Some(StoredMessage {
        seq,
        origin,
        message: Message {
            topic,
            payload,
            qos,
            retain,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            topic: "site/line-1/temp".into(),
            payload: b"21.5".to_vec(),
            qos: Qos::ExactlyOnce,
            retain: true,
        }
    }

    #[test]
    fn a_message_round_trips_through_a_record() {
        let body = encode_message(42, 7, &sample());
        let framed = frame(&body);
        assert_eq!(framed.len() as u64, framed_message_len(&sample()));
        let Framed::Record { body, len } = unframe(&framed) else {
            panic!("not a record");
        };
        assert_eq!(len, framed.len());
        let stored = decode_message(body).unwrap();
        assert_eq!(
            stored,
            StoredMessage {
                seq: 42,
                origin: 7,
                message: sample()
            }
        );
    }

    #[test]
    fn every_cut_and_every_flipped_bit_is_invalid_never_a_message() {
        let framed = frame(&encode_message(1, 0, &sample()));
        for cut in 1..framed.len() {
            assert_eq!(unframe(&framed[..cut]), Framed::Invalid, "cut at {cut}");
        }
        for byte in 0..framed.len() {
            for bit in 0..8 {
                let mut damaged = framed.clone();
                damaged[byte] ^= 1 << bit;
                // A flipped length bit may still frame a shorter record only
                // if the checksum happens to match: it never does here.
                assert_eq!(unframe(&damaged), Framed::Invalid, "byte {byte} bit {bit}");
            }
        }
        assert_eq!(unframe(&[]), Framed::End);
    }

    #[test]
    fn a_huge_length_is_invalid_without_allocating() {
        let mut bytes = vec![0xff; 16];
        bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(unframe(&bytes), Framed::Invalid);
    }

    #[test]
    fn bodies_that_are_not_messages_are_refused() {
        assert!(decode_message(&[0; 5]).is_none());
        let mut body = encode_message(1, 0, &sample());
        body[8] = 3; // no such QoS
        assert!(decode_message(&body).is_none());
        let mut body = encode_message(1, 0, &sample());
        body[12] = 0xff; // topic longer than the body
        assert!(decode_message(&body).is_none());
    }

    #[test]
    fn the_content_digest_tells_messages_apart() {
        let a = sample();
        let mut b = sample();
        b.payload.push(b'0');
        let mut c = sample();
        c.retain = false;
        assert_ne!(content_digest(&a), content_digest(&b));
        assert_ne!(content_digest(&a), content_digest(&c));
        assert_eq!(content_digest(&a), content_digest(&sample()));
    }
}
