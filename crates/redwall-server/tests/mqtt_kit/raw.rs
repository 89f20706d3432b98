//! MQTT packets written byte by byte, for what a well-behaved client
//! library will not do on request: resend a PUBLISH with DUP and the same
//! packet id on a new connection, hold a QoS 2 exchange half done, or
//! subscribe and never read again. MQTT 3.1.1 (level 4) and 5.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// MQTT's variable byte integer (section 1.5.5).
pub fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

pub fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend(body);
    out
}

/// One connection speaking raw packets.
pub struct Raw {
    pub stream: TcpStream,
    /// 4 (3.1.1) or 5.
    pub level: u8,
}

/// How long a test waits for any one answer.
const ANSWER: Duration = Duration::from_secs(10);

impl Raw {
    /// CONNECT with a username and password; `clean` is Clean Session
    /// (Clean Start in 5, where a kept session also asks for 300 s of
    /// session expiry). Returns the connection and CONNACK's Session
    /// Present flag; panics unless the broker accepted.
    pub async fn connect(
        addr: SocketAddr,
        level: u8,
        client_id: &str,
        user: &str,
        pass: &str,
        clean: bool,
    ) -> (Raw, bool) {
        let mut body = Vec::new();
        string("MQTT", &mut body);
        body.push(level);
        body.push(0xc0 | if clean { 0x02 } else { 0 });
        body.extend_from_slice(&60u16.to_be_bytes());
        if level == 5 {
            if clean {
                body.push(0);
            } else {
                body.extend_from_slice(&[5, 0x11, 0, 0, 0x01, 0x2c]);
            }
        }
        for field in [client_id, user, pass] {
            string(field, &mut body);
        }
        let mut raw = Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            level,
        };
        raw.stream.write_all(&packet(0x10, body)).await.unwrap();
        let (first, connack) = raw.read().await;
        assert_eq!(first, 0x20, "CONNACK");
        assert_eq!(connack[1], 0, "the broker accepted the CONNECT");
        (raw, connack[0] & 1 == 1)
    }

    /// The next packet: its first byte and its body.
    pub async fn read(&mut self) -> (u8, Vec<u8>) {
        tokio::time::timeout(ANSWER, async {
            let first = self.stream.read_u8().await.unwrap();
            let (mut length, mut shift) = (0usize, 0);
            loop {
                let byte = self.stream.read_u8().await.unwrap();
                length |= ((byte & 0x7f) as usize) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).await.unwrap();
            (first, body)
        })
        .await
        .expect("an answer from the broker")
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends a QoS 2 PUBLISH and returns the PUBREC's reason code (0 is
    /// success; 3.1.1 has none, so always 0 there).
    pub async fn publish_qos2(&mut self, topic: &str, id: u16, payload: &str, dup: bool) -> u8 {
        let mut body = Vec::new();
        string(topic, &mut body);
        body.extend_from_slice(&id.to_be_bytes());
        if self.level == 5 {
            body.push(0);
        }
        body.extend_from_slice(payload.as_bytes());
        self.send(&packet(0x34 | if dup { 0x08 } else { 0 }, body))
            .await;
        let (first, rec) = self.read().await;
        assert_eq!(first, 0x50, "PUBREC");
        assert_eq!(rec[..2], id.to_be_bytes(), "PUBREC for packet {id}");
        rec.get(2).copied().unwrap_or(0)
    }

    /// PUBREL for `id`; returns the PUBCOMP's reason code (0 is success).
    pub async fn release(&mut self, id: u16) -> u8 {
        self.send(&packet(0x62, id.to_be_bytes().to_vec())).await;
        let (first, comp) = self.read().await;
        assert_eq!(first, 0x70, "PUBCOMP");
        assert_eq!(comp[..2], id.to_be_bytes(), "PUBCOMP for packet {id}");
        comp.get(2).copied().unwrap_or(0)
    }

    /// SUBSCRIBE (3.1.1) to `filter` at QoS 0; panics unless granted.
    pub async fn subscribe_qos0(&mut self, filter: &str) {
        let mut body = vec![0, 1];
        string(filter, &mut body);
        body.push(0);
        self.send(&packet(0x82, body)).await;
        let (first, suback) = self.read().await;
        assert_eq!(
            (first, suback),
            (0x90, vec![0, 1, 0]),
            "SUBACK granted QoS 0"
        );
    }
}
