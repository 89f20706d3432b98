//! Reading an instance's stdout and stderr: log lines into the ring buffer
//! and broadcast, audit lines to the reporter.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;

use super::types::{now_unix_ms, LogLine, LogStream, NodeRedAuditEvent};
use super::{lock, Shared, Slot};

/// Written by the generated settings.js before each audit event's JSON.
const AUDIT_PREFIX: &str = "\u{1e}redwall-audit ";
/// Longer lines are cut, so a flow printing without newlines cannot grow
/// Redwall's memory.
const MAX_LINE: usize = 16 * 1024;

/// The last line seen on each stream, for crash reasons.
#[derive(Default)]
pub(crate) struct LastLines {
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

pub(crate) fn pump(
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    stream: LogStream,
    reader: impl AsyncRead + Unpin + Send + 'static,
    last: Arc<Mutex<LastLines>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_end_matches(['\n', '\r']);
            if stream == LogStream::Stdout {
                if let Some(json) = text.strip_prefix(AUDIT_PREFIX) {
                    report_audit(&shared, &slot.id, json);
                    continue;
                }
            }
            let line = LogLine {
                at_unix_ms: now_unix_ms(),
                stream,
                text: text.to_owned(),
            };
            {
                let mut last = lock(&last);
                match stream {
                    LogStream::Stdout => last.stdout = Some(line.text.clone()),
                    LogStream::Stderr => last.stderr = Some(line.text.clone()),
                }
            }
            {
                let mut logs = lock(&slot.logs);
                while logs.len() >= shared.options.log_lines.max(1) {
                    logs.pop_front();
                }
                logs.push_back(line.clone());
            }
            let _ = slot.log_tx.send(line);
        }
    })
}

fn report_audit(shared: &Shared, id: &str, json: &str) {
    let Ok(raw) = serde_json::from_str::<serde_json::Value>(json) else {
        tracing::warn!(instance = %id, "unparsable audit line from Node-RED");
        return;
    };
    let event = NodeRedAuditEvent {
        event: raw["event"].as_str().unwrap_or("unknown").to_owned(),
        user: raw["user"]["username"].as_str().map(str::to_owned),
        raw,
    };
    shared.reporter.audit(id, event);
}
