//! The append-only, HMAC hash-chained audit log.
//!
//! Every entry gets the next sequence number (`seq`, the primary key, 1 for
//! the first entry) and `hash = key.link(prev_hash, canonical bytes)`, where
//! `prev_hash` is the previous entry's hash ([`GENESIS`] for the first) and
//! the canonical bytes are [`canonical_entry_bytes`]. Editing, deleting or
//! inserting an entry without the chain key breaks the chain, and
//! [`Store::verify_audit_chain`] names the first place it breaks.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{Stream, TryStreamExt};
use redwall_crypto::chain::{ChainHash, ChainKey, GENESIS};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::error::{is_sqlite_busy, is_unique_violation};
use crate::health::{classify, AuditHealth, FaultCause};
use crate::{discard_unless_clean, time_ordered_id, Backend, Micros, Store, StoreError};

/// An audit event to record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub at: Micros,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub event: String,
    pub target: Option<String>,
    pub outcome: String,
    pub details: serde_json::Value,
    pub team_id: Option<String>,
}

/// A recorded audit entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: String,
    pub at: Micros,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub event: String,
    pub target: Option<String>,
    pub outcome: String,
    pub details: serde_json::Value,
    pub team_id: Option<String>,
    /// The previous entry's hash, lowercase hex.
    pub prev_hash: String,
    /// This entry's hash, lowercase hex.
    pub hash: String,
}

/// What [`Store::list_audit`] and [`Store::stream_audit`] select. Every set
/// field must match.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Matches `actor_name` or `actor_id` exactly.
    pub actor: Option<String>,
    /// The event name exactly, or a prefix of it when it ends with `*`
    /// (`"auth.*"`).
    pub event: Option<String>,
    /// `at >= since`.
    pub since: Option<Micros>,
    /// `at <= until`.
    pub until: Option<Micros>,
    pub team_id: Option<String>,
    /// Page cursor for [`Store::list_audit`]: only entries with `seq <
    /// before_seq` (pass the last `seq` of the previous page).
    pub before_seq: Option<i64>,
    /// Page size for [`Store::list_audit`]: at most 1000; zero or negative
    /// means 100.
    pub limit: i64,
}

/// What [`Store::verify_audit_chain`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Entries that verified, in order from the first.
    pub checked: u64,
    /// The last entry that verified (the head of the log when there is no
    /// problem); `None` when none did.
    pub last_seq: Option<i64>,
    /// Entries up to this one were pruned behind a checkpoint; the walk
    /// started after it. `None` when the log starts at entry 1.
    pub pruned_through: Option<i64>,
    /// The first problem, if any. Entries after it were not checked.
    pub problem: Option<ChainProblem>,
}

impl ChainReport {
    /// True when the whole chain verified.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// Where and how the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainProblem {
    /// The entry at which the chain first breaks.
    pub seq: i64,
    pub kind: ChainProblemKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainProblemKind {
    /// The entry's content (or stored link) was changed after it was written:
    /// its hash does not recompute, yet the chain carries on from it.
    Altered,
    /// Entries are missing before this one (a gap in `seq`).
    Removed,
    /// The entry does not belong to the chain: it does not link to its
    /// predecessor, or the entry after it links past it, or it is the last
    /// entry and its hash does not verify.
    Inserted,
}

/// Entries read per query while streaming.
const STREAM_PAGE: i64 = 5_000;
/// Page size cap for `list_audit`.
const MAX_LIST: i64 = 1_000;
const DEFAULT_LIST: i64 = 100;
/// Entries one `AuditWriter` transaction takes at most.
const WRITER_BATCH: usize = 512;
/// Queue length of the writer before `append` waits for room.
const WRITER_QUEUE: usize = 8_192;
/// Tries of one append on SQLite when the database is busy.
const SQLITE_APPEND_ATTEMPTS: u32 = 5;
/// `pg_advisory_xact_lock` key that serialises appends across processes
/// ("RWAUDIT\0").
pub(crate) const PG_AUDIT_LOCK: i64 = 0x5257_4155_4449_5400;

pub(crate) const AUDIT_COLUMNS: &str =
    "seq, id, at, actor_id, actor_name, client_ip, user_agent, event, \
     target, outcome, details, team_id, prev_hash, hash";

/// Rows per multi-row INSERT, largest first. A few fixed sizes keep the
/// prepared-statement cache small; 64 rows use 896 parameters, well within
/// both databases' limits.
const INSERT_SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The INSERT statement for the largest fixed size not above `remaining`
/// (at least 1), and that size.
///
/// SQLite gets anonymous `?` placeholders (bound in order): sqlx looks up
/// the name of every `$N` parameter, and SQLite finds a name by a linear
/// scan, which makes large statements quadratic.
pub(crate) fn insert_statement(backend: Backend, remaining: usize) -> (&'static str, usize) {
    static SQLITE: OnceLock<Vec<String>> = OnceLock::new();
    static POSTGRES: OnceLock<Vec<String>> = OnceLock::new();
    let build = |numbered: bool| -> Vec<String> {
        INSERT_SIZES
            .iter()
            .map(|&n| {
                let rows: Vec<String> = (0..n)
                    .map(|r| {
                        let params: Vec<String> = (1..=14)
                            .map(|c| {
                                if numbered {
                                    format!("${}", r * 14 + c)
                                } else {
                                    "?".to_owned()
                                }
                            })
                            .collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO audit_log (seq, id, at, actor_id, actor_name, client_ip, \
                     user_agent, event, target, outcome, details, team_id, prev_hash, hash) \
                     VALUES {}",
                    rows.join(", ")
                )
            })
            .collect()
    };
    let statements = match backend {
        Backend::Sqlite => SQLITE.get_or_init(|| build(false)),
        Backend::Postgres => POSTGRES.get_or_init(|| build(true)),
    };
    let i = INSERT_SIZES
        .iter()
        .position(|&n| n <= remaining)
        .unwrap_or(INSERT_SIZES.len() - 1);
    let sql = statements.get(i).map(String::as_str).unwrap_or_default();
    (sql, INSERT_SIZES.get(i).copied().unwrap_or(1))
}

/// The bytes an entry's hash covers: a JSON object with a fixed field order
/// (`v`, `seq`, `id`, `at`, `actor_id`, `actor_name`, `client_ip`,
/// `user_agent`, `event`, `target`, `outcome`, `team_id`, `details`), no
/// whitespace, and `details` in canonical JSON (object keys sorted by their
/// UTF-8 bytes, whatever order the `Value` holds them in).
pub fn canonical_entry_bytes(seq: i64, id: &str, e: &NewAuditEntry) -> Vec<u8> {
    let details = canonical_json(&e.details);
    let mut buf = Vec::with_capacity(256 + details.len());
    write_canonical(
        &mut buf,
        &Fields {
            seq,
            id,
            at: e.at,
            actor_id: e.actor_id.as_deref(),
            actor_name: e.actor_name.as_deref(),
            client_ip: e.client_ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
            event: &e.event,
            target: e.target.as_deref(),
            outcome: &e.outcome,
            team_id: e.team_id.as_deref(),
            details_json: &details,
        },
    );
    buf
}

/// The hashed fields, borrowed, with `details` already in canonical JSON
/// (as it is stored).
pub(crate) struct Fields<'a> {
    pub(crate) seq: i64,
    pub(crate) id: &'a str,
    pub(crate) at: Micros,
    pub(crate) actor_id: Option<&'a str>,
    pub(crate) actor_name: Option<&'a str>,
    pub(crate) client_ip: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
    pub(crate) event: &'a str,
    pub(crate) target: Option<&'a str>,
    pub(crate) outcome: &'a str,
    pub(crate) team_id: Option<&'a str>,
    pub(crate) details_json: &'a str,
}

pub(crate) fn write_canonical(buf: &mut Vec<u8>, f: &Fields<'_>) {
    buf.clear();
    buf.extend_from_slice(b"{\"v\":1,\"seq\":");
    buf.extend_from_slice(f.seq.to_string().as_bytes());
    buf.extend_from_slice(b",\"id\":");
    write_json_str(buf, f.id);
    buf.extend_from_slice(b",\"at\":");
    buf.extend_from_slice(f.at.to_string().as_bytes());
    for (name, value) in [
        (&b",\"actor_id\":"[..], f.actor_id),
        (b",\"actor_name\":", f.actor_name),
        (b",\"client_ip\":", f.client_ip),
        (b",\"user_agent\":", f.user_agent),
        (b",\"event\":", Some(f.event)),
        (b",\"target\":", f.target),
        (b",\"outcome\":", Some(f.outcome)),
        (b",\"team_id\":", f.team_id),
    ] {
        buf.extend_from_slice(name);
        match value {
            Some(s) => write_json_str(buf, s),
            None => buf.extend_from_slice(b"null"),
        }
    }
    buf.extend_from_slice(b",\"details\":");
    buf.extend_from_slice(f.details_json.as_bytes());
    buf.push(b'}');
}

/// Canonical JSON text of `v`: no whitespace, object keys sorted.
pub(crate) fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(64);
    write_canonical_value(&mut out, v);
    // Only whole UTF-8 strings and ASCII are ever written.
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical_value(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(out, k);
                out.push(b':');
                write_canonical_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string literal: `"` and `\` escaped, control characters as
/// `\u00XX` (the short forms for `\n`, `\r`, `\t`), everything else as is.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A stored hash as a chain link. A stored value of the wrong length (only
/// possible through tampering) becomes a value no real link equals.
pub(crate) fn to_chain_hash(bytes: &[u8]) -> Option<ChainHash> {
    bytes.try_into().ok()
}

pub(crate) fn audit_record_from_row(row: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
    let details: String = row.try_get(10)?;
    let prev_hash: &[u8] = row.try_get(12)?;
    let hash: &[u8] = row.try_get(13)?;
    Ok(AuditRecord {
        seq: row.try_get(0)?,
        id: row.try_get(1)?,
        at: row.try_get(2)?,
        actor_id: row.try_get(3)?,
        actor_name: row.try_get(4)?,
        client_ip: row.try_get(5)?,
        user_agent: row.try_get(6)?,
        event: row.try_get(7)?,
        target: row.try_get(8)?,
        outcome: row.try_get(9)?,
        // A stored value that is not JSON (only possible through tampering,
        // which verification reports) is shown as the string it is.
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
        team_id: row.try_get(11)?,
        prev_hash: hex::encode(prev_hash),
        hash: hex::encode(hash),
    })
}

/// A bind value for dynamically built queries.
enum Arg {
    Text(String),
    Int(i64),
}

/// The WHERE conditions of `f` (without the cursor and limit), appended to
/// `conds`, their values to `args`.
fn filter_conditions(f: &AuditFilter, conds: &mut Vec<String>, args: &mut Vec<Arg>) {
    let mut push = |cond: &dyn Fn(usize) -> String, arg: Arg| {
        args.push(arg);
        conds.push(cond(args.len()));
    };
    if let Some(actor) = &f.actor {
        push(
            &|n| format!("(actor_name = ${n} OR actor_id = ${n})"),
            Arg::Text(actor.clone()),
        );
    }
    if let Some(event) = &f.event {
        match event.strip_suffix('*') {
            Some("") => {}
            Some(prefix) => push(
                &|n| format!("substr(event, 1, length(${n})) = ${n}"),
                Arg::Text(prefix.to_owned()),
            ),
            None => push(&|n| format!("event = ${n}"), Arg::Text(event.clone())),
        }
    }
    if let Some(since) = f.since {
        push(&|n| format!("at >= ${n}"), Arg::Int(since));
    }
    if let Some(until) = f.until {
        push(&|n| format!("at <= ${n}"), Arg::Int(until));
    }
    if let Some(team) = &f.team_id {
        push(&|n| format!("team_id = ${n}"), Arg::Text(team.clone()));
    }
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

async fn fetch_with_args(
    store: &Store,
    sql: &str,
    args: Vec<Arg>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut q = sqlx::query(sql);
    for arg in args {
        q = match arg {
            Arg::Text(s) => q.bind(s),
            Arg::Int(i) => q.bind(i),
        };
    }
    let rows = q.fetch_all(store.pool()).await?;
    Ok(rows
        .iter()
        .map(audit_record_from_row)
        .collect::<Result<_, _>>()?)
}

impl Store {
    /// Appends `entries` in one transaction and returns their sequence
    /// numbers, in order. The chain head is read inside the transaction,
    /// after taking the append lock (a PostgreSQL advisory lock, or SQLite's
    /// write lock), so concurrent writers, in this process or another, never
    /// fork the chain. Entries that changes committed as pending
    /// ([`crate::Change`]) are chained first, in the same transaction; with
    /// no `entries`, only those. Prefer [`AuditWriter`] for per-request
    /// events.
    pub async fn append_audit(
        &self,
        key: &ChainKey,
        entries: &[NewAuditEntry],
    ) -> Result<Vec<i64>, StoreError> {
        let details: Vec<String> = entries.iter().map(|e| canonical_json(&e.details)).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_append_audit(key, entries, &details).await {
                Ok(seqs) => return Ok(seqs),
                Err(e)
                    if self.backend == Backend::Sqlite
                        && attempt < SQLITE_APPEND_ATTEMPTS
                        && (is_sqlite_busy(&e) || is_unique_violation(&e)) =>
                {
                    tracing::debug!(attempt, "audit append hit a busy database; retrying");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn try_append_audit(
        &self,
        key: &ChainKey,
        entries: &[NewAuditEntry],
        details: &[String],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let result = self.append_on(&mut conn, key, entries, details).await;
        if let Err(e) = &result {
            discard_unless_clean(&mut conn, e);
        }
        result
    }

    async fn append_on(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
        key: &ChainKey,
        entries: &[NewAuditEntry],
        details: &[String],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut tx = self.begin_write_on(conn).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_AUDIT_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let head: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (mut seq, mut prev) = match head {
            None => (0, GENESIS),
            Some((seq, hash)) => {
                let prev = to_chain_hash(&hash).unwrap_or_else(|| {
                    tracing::error!(seq, "the audit chain head has a malformed hash");
                    GENESIS
                });
                (seq, prev)
            }
        };
        // Entries that changes committed with themselves come first: they
        // happened before anything this group was asked to append.
        let pending = crate::change::take_pending(&mut tx).await?;
        let all: Vec<(&NewAuditEntry, &String)> = pending
            .iter()
            .map(|(_, e, d)| (e, d))
            .chain(entries.iter().zip(details))
            .collect();
        if all.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // Chain every entry first, then insert them several rows per
        // statement: one round trip per row is what makes inserts slow.
        struct Linked {
            seq: i64,
            id: String,
            prev: ChainHash,
            hash: ChainHash,
        }
        let mut linked = Vec::with_capacity(all.len());
        let mut buf = Vec::with_capacity(1024);
        for &(e, details) in &all {
            seq += 1;
            let id = time_ordered_id(e.at);
            write_canonical(
                &mut buf,
                &Fields {
                    seq,
                    id: &id,
                    at: e.at,
                    actor_id: e.actor_id.as_deref(),
                    actor_name: e.actor_name.as_deref(),
                    client_ip: e.client_ip.as_deref(),
                    user_agent: e.user_agent.as_deref(),
                    event: &e.event,
                    target: e.target.as_deref(),
                    outcome: &e.outcome,
                    team_id: e.team_id.as_deref(),
                    details_json: details,
                },
            );
            let hash = key.link(&prev, &buf);
            linked.push(Linked {
                seq,
                id,
                prev,
                hash,
            });
            prev = hash;
        }
        let rows: Vec<_> = all.iter().copied().zip(&linked).collect();
        let mut rest = rows.as_slice();
        while !rest.is_empty() {
            let (sql, n) = insert_statement(self.backend, rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut q = sqlx::query(sql);
            for ((e, details), l) in chunk {
                q = q
                    .bind(l.seq)
                    .bind(l.id.as_str())
                    .bind(e.at)
                    .bind(e.actor_id.as_deref())
                    .bind(e.actor_name.as_deref())
                    .bind(e.client_ip.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.event.as_str())
                    .bind(e.target.as_deref())
                    .bind(e.outcome.as_str())
                    .bind(details.as_str())
                    .bind(e.team_id.as_deref())
                    .bind(l.prev.as_slice())
                    .bind(l.hash.as_slice());
            }
            q.execute(&mut *tx).await?;
        }
        // The callers' entries are the last ones.
        let seqs = linked.iter().skip(pending.len()).map(|l| l.seq).collect();
        tx.commit().await?;
        Ok(seqs)
    }

    /// One page of entries matching `f`, newest first. Pass the last `seq`
    /// of a page as `before_seq` to get the next one.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = if f.limit <= 0 {
            DEFAULT_LIST
        } else {
            f.limit.min(MAX_LIST)
        };
        let mut conds = Vec::new();
        let mut args = Vec::new();
        filter_conditions(f, &mut conds, &mut args);
        if let Some(before) = f.before_seq {
            args.push(Arg::Int(before));
            conds.push(format!("seq < ${}", args.len()));
        }
        args.push(Arg::Int(limit));
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log{} ORDER BY seq DESC LIMIT ${}",
            where_clause(&conds),
            args.len()
        );
        fetch_with_args(self, &sql, args).await
    }

    /// Every entry matching `f` (ignoring `limit` and `before_seq`), oldest
    /// first, read in pages so memory stays flat however long the log is.
    pub fn stream_audit(
        &self,
        f: AuditFilter,
    ) -> impl Stream<Item = Result<AuditRecord, StoreError>> + Send + 'static {
        let store = self.clone();
        futures::stream::try_unfold(Some(i64::MIN), move |cursor| {
            let f = f.clone();
            let store = store.clone();
            async move {
                let Some(after) = cursor else {
                    return Ok::<_, StoreError>(None);
                };
                let mut conds = Vec::new();
                let mut args = Vec::new();
                filter_conditions(&f, &mut conds, &mut args);
                args.push(Arg::Int(after));
                conds.push(format!("seq > ${}", args.len()));
                args.push(Arg::Int(STREAM_PAGE));
                let sql = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log{} ORDER BY seq ASC LIMIT ${}",
                    where_clause(&conds),
                    args.len()
                );
                let page = fetch_with_args(&store, &sql, args).await?;
                if page.is_empty() {
                    return Ok(None);
                }
                let next = if page.len() < STREAM_PAGE as usize {
                    None
                } else {
                    page.last().map(|r| r.seq)
                };
                Ok(Some((page, next)))
            }
        })
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok::<_, StoreError>)))
        .try_flatten()
    }
}

/// Group-commit writer: many concurrent callers share one transaction.
///
/// A Tokio task owns the chain key and drains up to 512 queued entries per
/// transaction. [`AuditWriter::append`] returns once its entry is committed.
/// The task ends when every clone of the writer is dropped, after writing
/// what is queued.
///
/// When the database fails (disk full, read-only, unreachable, too slow),
/// the group is tried again with backoff for [`RETRY_FOR`] while its
/// callers wait, then each caller gets [`StoreError::Unavailable`] and the
/// next group starts afresh: one fault never wedges the writer. While
/// appends fail the task checks the path once a second on its own, so its
/// [`AuditHealth`] turns healthy again without traffic.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    health: Arc<AuditHealth>,
    last_check: Arc<tokio::sync::Mutex<Option<LastCheck>>>,
}

/// When the last [`AuditWriter::check`] probed, and what it found.
type LastCheck = (Instant, Result<(), FaultCause>);

/// How long a failing group is tried again while its callers wait.
pub const RETRY_FOR: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(800);
/// While failing and idle, the writer checks the path this often.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// [`AuditWriter::check`] answers from its last probe for this long, so a
/// flood of health checks costs one probe a second.
const CHECK_CACHE: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Job {
    Append {
        entry: Box<NewAuditEntry>,
        done: oneshot::Sender<Result<i64, StoreError>>,
    },
    Probe {
        done: oneshot::Sender<Result<(), FaultCause>>,
    },
    /// Chain what changes committed as pending.
    Flush {
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl AuditWriter {
    /// Starts the writer task. Must be called within a Tokio runtime.
    pub fn spawn(store: Store, key: ChainKey) -> AuditWriter {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let health = Arc::new(AuditHealth::default());
        tokio::spawn(run_writer(store, key, rx, health.clone()));
        AuditWriter {
            tx,
            health,
            last_check: Arc::default(),
        }
    }

    /// Appends `e` and waits until it is committed; returns its `seq`. The
    /// entry is written even if this future is dropped after it was queued.
    pub async fn append(&self, e: NewAuditEntry) -> Result<i64, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Append {
                entry: Box::new(e),
                done,
            })
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?;
        wait.await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// Waits until every entry that changes committed before this call
    /// ([`crate::Change::commit`]) is chained into the log. The entries are
    /// safe either way; this makes them visible (and verified) now.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Flush { done })
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?;
        wait.await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// What the writer last saw: failing since when and why, and counters.
    pub fn health(&self) -> &AuditHealth {
        &self.health
    }

    /// Whether an append would be written now: a write transaction on the
    /// writer's own path (its queue, the append lock, a one-row write),
    /// waiting at most `timeout`. Answers from the last check for a second.
    pub async fn check(&self, timeout: Duration) -> Result<(), FaultCause> {
        let mut last = self.last_check.lock().await;
        if let Some((at, result)) = *last {
            if at.elapsed() < CHECK_CACHE {
                return result;
            }
        }
        let (done, wait) = oneshot::channel();
        let result = match self.tx.try_send(Job::Probe { done }) {
            Err(_) => Err(FaultCause::Timeout),
            Ok(()) => match tokio::time::timeout(timeout, wait).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(FaultCause::Other),
                // Still waiting (a slow commit, a pool waiting to connect):
                // security actions are stalled, which is a fault too; the
                // cause already known says more than "timeout".
                Err(_) => match self.health.fault() {
                    Some(f) => Err(f.cause),
                    None => {
                        self.health.attempt_failed(
                            FaultCause::Timeout,
                            &"no answer within the check's timeout",
                        );
                        Err(FaultCause::Timeout)
                    }
                },
            },
        };
        *last = Some((Instant::now(), result));
        result
    }
}

async fn run_writer(
    store: Store,
    key: ChainKey,
    mut rx: mpsc::Receiver<Job>,
    health: Arc<AuditHealth>,
) {
    let mut jobs = Vec::with_capacity(WRITER_BATCH);
    // Entries a killed process committed but did not chain.
    let _ = append_retrying(&store, &key, &health, &[], Instant::now() + RETRY_FOR).await;
    loop {
        let received = if health.fault().is_some() {
            match tokio::time::timeout(PROBE_EVERY, rx.recv_many(&mut jobs, WRITER_BATCH)).await {
                Ok(n) => n,
                Err(_) => {
                    // Idle while failing: find out whether it is over.
                    let _ = probe(&store, &health).await;
                    continue;
                }
            }
        } else {
            rx.recv_many(&mut jobs, WRITER_BATCH).await
        };
        if received == 0 {
            break;
        }
        let mut entries = Vec::with_capacity(jobs.len());
        let mut dones = Vec::with_capacity(jobs.len());
        let mut probes = Vec::new();
        let mut flushes = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Append { entry, done } => {
                    entries.push(*entry);
                    dones.push(done);
                }
                Job::Probe { done } => probes.push(done),
                Job::Flush { done } => flushes.push(done),
            }
        }
        // Every group chains what is pending, so flushes ride along with
        // appends; alone, they make an empty group.
        let result = if !entries.is_empty() {
            write_group(&store, &key, &health, entries, dones).await
        } else if !flushes.is_empty() {
            let deadline = Instant::now() + RETRY_FOR;
            match append_retrying(&store, &key, &health, &[], deadline).await {
                Ok(_) => {
                    health.succeeded();
                    Ok(())
                }
                Err((_, cause)) => Err(cause),
            }
        } else {
            probe(&store, &health).await
        };
        for done in flushes {
            let _ = done.send(result.map_err(StoreError::Unavailable));
        }
        for done in probes {
            let _ = done.send(result);
        }
    }
}

/// Writes one group, answers its callers, and tells whether the path works.
async fn write_group(
    store: &Store,
    key: &ChainKey,
    health: &AuditHealth,
    entries: Vec<NewAuditEntry>,
    dones: Vec<oneshot::Sender<Result<i64, StoreError>>>,
) -> Result<(), FaultCause> {
    let deadline = Instant::now() + RETRY_FOR;
    match append_retrying(store, key, health, &entries, deadline).await {
        Ok(seqs) => {
            health.succeeded();
            for (done, seq) in dones.into_iter().zip(seqs) {
                let _ = done.send(Ok(seq));
            }
            Ok(())
        }
        Err((_, cause)) if entries.len() > 1 && !cause.is_transient() => {
            // Maybe one entry the database will never take: one by one, so
            // each caller gets its own outcome.
            tracing::warn!(
                entries = entries.len(),
                "audit batch failed; retrying entries singly"
            );
            let mut outcome = Ok(());
            for (entry, done) in entries.into_iter().zip(dones) {
                let result =
                    append_retrying(store, key, health, std::slice::from_ref(&entry), deadline)
                        .await;
                let answer = match result {
                    Ok(seqs) => {
                        health.succeeded();
                        seqs.first().copied().ok_or(StoreError::NotFound)
                    }
                    Err((e, cause)) => {
                        health.refused(1);
                        outcome = Err(cause);
                        Err(e)
                    }
                };
                let _ = done.send(answer);
            }
            outcome
        }
        Err((_, cause)) => {
            health.refused(dones.len());
            for done in dones {
                let _ = done.send(Err(StoreError::Unavailable(cause)));
            }
            Err(cause)
        }
    }
}

/// [`Store::append_audit`], tried again with backoff while the failure is
/// one that may pass and `deadline` allows.
async fn append_retrying(
    store: &Store,
    key: &ChainKey,
    health: &AuditHealth,
    entries: &[NewAuditEntry],
    deadline: Instant,
) -> Result<Vec<i64>, (StoreError, FaultCause)> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let e = match store.append_audit(key, entries).await {
            Ok(seqs) => return Ok(seqs),
            Err(e) => e,
        };
        let cause = match &e {
            StoreError::Database(db) => classify(store.backend, db),
            _ => FaultCause::Other,
        };
        health.attempt_failed(cause, &e);
        if !cause.is_transient() || Instant::now() + backoff > deadline {
            return Err((e, cause));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One write transaction on the append path, recorded in `health`.
async fn probe(store: &Store, health: &AuditHealth) -> Result<(), FaultCause> {
    match store.probe_audit_path().await {
        Ok(()) => {
            health.succeeded();
            Ok(())
        }
        Err(e) => {
            let cause = classify(store.backend, &e);
            health.attempt_failed(cause, &e);
            Err(cause)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_matches_serde() {
        let v = json!({"b": [1, 2.5, {"z": null, "a": true}], "a": "x\"\\\n\u{1}é", "c": {}});
        let c = canonical_json(&v);
        assert_eq!(
            c,
            r#"{"a":"x\"\\\n\u0001é","b":[1,2.5,{"a":true,"z":null}],"c":{}}"#
        );
        let back: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn canonical_entry_is_fixed_order_json() {
        let e = NewAuditEntry {
            at: 42,
            actor_id: Some("u1".into()),
            actor_name: None,
            client_ip: Some("127.0.0.1".into()),
            user_agent: None,
            event: "auth.login".into(),
            target: None,
            outcome: "success".into(),
            details: json!({"k": 1, "a": [true]}),
            team_id: None,
        };
        let bytes = canonical_entry_bytes(7, "abc", &e);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"seq":7,"id":"abc","at":42,"actor_id":"u1","actor_name":null,"client_ip":"127.0.0.1","user_agent":null,"event":"auth.login","target":null,"outcome":"success","team_id":null,"details":{"a":[true],"k":1}}"#
        );
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["details"]["k"], 1);
    }
}
