//! Verification of the audit hash chain.
//!
//! The chain is walked in `seq` order, a page of 10,000 entries at a time.
//! Reading a million rows one by one through sqlx costs several microseconds
//! a row (values are copied and handed between threads row by row), so each
//! page is fetched as ONE value: the database builds a JSON array per entry
//! (`json_array` on SQLite, `json_build_array` on PostgreSQL) and joins them
//! with newlines in `seq` order. JSON escaping round-trips text exactly, so
//! the canonical bytes are rebuilt from the parsed values as they would be
//! from the columns. Should a page not come back in that form (a stored value
//! of the wrong type, invalid UTF-8, a database without these functions), it
//! is read again column by column, and a value that cannot be decoded is
//! reported as an alteration at its entry.
//!
//! A separate task reads pages a step ahead, so reading and hashing overlap.

use std::borrow::Cow;

use redwall_crypto::chain::{ChainHash, ChainKey, GENESIS};
use serde::Deserialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::sync::mpsc;

use crate::audit::{write_canonical, Fields, AUDIT_COLUMNS};
use crate::retention::ChainStart;
use crate::{Backend, ChainProblem, ChainProblemKind, ChainReport, Store, StoreError};

/// Entries per page.
const PAGE: i64 = 10_000;
/// Pages the reader may be ahead of the hashing.
const READ_AHEAD: usize = 2;
/// Entries checked between two yields to the scheduler.
const YIELD_EVERY: usize = 1024;

/// `max(seq)`, `count(*)` and the entries as newline-separated JSON arrays
/// (seq, id, at, actor_id, actor_name, client_ip, user_agent, event, target,
/// outcome, details, team_id, hex prev_hash, hex hash) for the page after $1.
const SQLITE_PAGE_SQL: &str = "SELECT max(seq), count(*), group_concat(json_array(seq, id, at, \
     actor_id, actor_name, client_ip, user_agent, event, target, outcome, details, team_id, \
     hex(prev_hash), hex(hash)), char(10) ORDER BY seq) \
     FROM (SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2) AS page";
const POSTGRES_PAGE_SQL: &str = "SELECT max(seq), count(*), string_agg(json_build_array(seq, \
     id, at, actor_id, actor_name, client_ip, user_agent, event, target, outcome, details, \
     team_id, encode(prev_hash, 'hex'), encode(hash, 'hex'))::text, chr(10) ORDER BY seq) \
     FROM (SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2) AS page";

impl Store {
    /// Walks the whole chain in `seq` order, recomputing every link with
    /// `key`, and reports the first place it breaks. Entries appended while
    /// it runs may or may not be included.
    pub async fn verify_audit_chain(&self, key: &ChainKey) -> Result<ChainReport, StoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => SQLITE_PAGE_SQL,
            Backend::Postgres => POSTGRES_PAGE_SQL,
        };
        // After a prune the walk starts at the oldest stored entry, linked
        // to the hash its checkpoint names; the checkpoint entry itself is
        // verified when the walk reaches it.
        let (expected_seq, prev, pruned_through) = match self.chain_start().await? {
            ChainStart::Genesis => (1, GENESIS, None),
            ChainStart::Checkpoint { first_seq, prev } => (first_seq, prev, Some(first_seq - 1)),
            ChainStart::Uncovered { first_seq } => {
                return Ok(ChainReport {
                    checked: 0,
                    last_seq: None,
                    pruned_through: None,
                    problem: Some(ChainProblem {
                        seq: first_seq,
                        kind: ChainProblemKind::Removed,
                        message: format!(
                            "entries 1 to {} are missing and no prune checkpoint covers them",
                            first_seq - 1
                        ),
                    }),
                });
            }
        };
        let (tx, mut pages) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(read_pages(self.pool().clone(), sql, tx));
        let start = Start {
            expected_seq,
            prev,
            pruned_through,
        };
        let result = verify_pages(self.pool(), key, start, &mut pages).await;
        drop(pages);
        reader.abort();
        result
    }
}

/// One page as read: the cursor it was read after, and what came back.
struct Page {
    after: i64,
    packed: Result<Option<String>, sqlx::Error>,
}

/// Reads pages in order into `tx` until the last one, an error, or the
/// receiver is gone.
async fn read_pages(pool: AnyPool, sql: &'static str, tx: mpsc::Sender<Page>) {
    let mut after = i64::MIN;
    loop {
        let result: Result<(Option<i64>, i64, Option<String>), sqlx::Error> = sqlx::query_as(sql)
            .bind(after)
            .bind(PAGE)
            .fetch_one(&pool)
            .await;
        let (next, packed) = match result {
            Ok((Some(max), count, packed)) if count == PAGE => (Some(max), Ok(packed)),
            Ok((_, _, packed)) => (None, Ok(packed)),
            // The consumer retries this page column by column, then goes on
            // with pages of its own.
            Err(e) => (None, Err(e)),
        };
        if tx.send(Page { after, packed }).await.is_err() {
            return;
        }
        match next {
            Some(max) => after = max,
            None => return,
        }
    }
}

/// An entry as the chain check sees it.
struct Entry<'a> {
    fields: Fields<'a>,
    prev_hash: Option<ChainHash>,
    hash: Option<ChainHash>,
}

/// An entry of a page: its `seq`, and the entry or why it cannot be read.
type Item<'a> = (i64, Result<Entry<'a>, String>);

/// One JSON array of a packed page.
#[derive(Deserialize)]
struct JsonEntry<'a>(
    i64,
    #[serde(borrow)] Cow<'a, str>,
    i64,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
);

fn parse_packed(text: &str) -> Result<Vec<JsonEntry<'_>>, serde_json::Error> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<JsonEntry<'_>>()
        .collect()
}

/// Decodes 64 hex digits (either case) into a hash; `None` for anything
/// else. Table-driven: this runs twice per entry.
fn hash_from_hex(s: &str) -> Option<ChainHash> {
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = TABLE[usize::from(pair[0])];
        let lo = TABLE[usize::from(pair[1])];
        bad |= (hi | lo) & 0xf0;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (bad == 0).then_some(out)
}

fn item_from_json<'a>(j: &'a JsonEntry<'a>) -> Item<'a> {
    let seq = j.0;
    let entry = Entry {
        fields: Fields {
            seq,
            id: &j.1,
            at: j.2,
            actor_id: j.3.as_deref(),
            actor_name: j.4.as_deref(),
            client_ip: j.5.as_deref(),
            user_agent: j.6.as_deref(),
            event: &j.7,
            target: j.8.as_deref(),
            outcome: &j.9,
            details_json: &j.10,
            team_id: j.11.as_deref(),
        },
        prev_hash: hash_from_hex(&j.12),
        hash: hash_from_hex(&j.13),
    };
    (seq, Ok(entry))
}

fn item_from_row(row: &AnyRow) -> Result<Item<'_>, sqlx::Error> {
    let seq: i64 = row.try_get(0)?;
    let entry = (|| -> Result<Entry<'_>, sqlx::Error> {
        let prev_hash: &[u8] = row.try_get(12)?;
        let hash: &[u8] = row.try_get(13)?;
        Ok(Entry {
            fields: Fields {
                seq,
                id: row.try_get(1)?,
                at: row.try_get(2)?,
                actor_id: row.try_get(3)?,
                actor_name: row.try_get(4)?,
                client_ip: row.try_get(5)?,
                user_agent: row.try_get(6)?,
                event: row.try_get(7)?,
                target: row.try_get(8)?,
                outcome: row.try_get(9)?,
                details_json: row.try_get(10)?,
                team_id: row.try_get(11)?,
            },
            prev_hash: prev_hash.try_into().ok(),
            hash: hash.try_into().ok(),
        })
    })()
    .map_err(|e| format!("entry {seq} holds a value of the wrong type ({e})"));
    Ok((seq, entry))
}

async fn read_rows(pool: &AnyPool, after: i64) -> Result<Vec<AnyRow>, sqlx::Error> {
    let sql =
        format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq ASC LIMIT $2");
    sqlx::query(&sql)
        .bind(after)
        .bind(PAGE)
        .fetch_all(pool)
        .await
}

/// The outcome of checking one entry.
enum Verdict {
    Intact,
    Problem(ChainProblem),
    /// The entry links to its predecessor but its own hash does not verify:
    /// what that means depends on the entry after it.
    BadHash {
        seq: i64,
        prev_hash: Option<ChainHash>,
        hash: Option<ChainHash>,
    },
}

struct Checker<'k> {
    key: &'k ChainKey,
    prev: ChainHash,
    expected_seq: i64,
    buf: Vec<u8>,
    report: ChainReport,
}

fn same(a: Option<ChainHash>, b: Option<ChainHash>) -> bool {
    matches!((a, b), (Some(x), Some(y)) if x == y)
}

impl Checker<'_> {
    fn check(&mut self, (seq, entry): &Item<'_>) -> Verdict {
        let seq = *seq;
        if seq != self.expected_seq {
            let expected = self.expected_seq;
            return Verdict::Problem(if seq < expected {
                ChainProblem {
                    seq,
                    kind: ChainProblemKind::Inserted,
                    message: format!("entry {seq} has a sequence number below {expected}"),
                }
            } else {
                let missing = if seq - 1 == expected {
                    format!("entry {expected} is missing")
                } else {
                    format!("entries {expected} to {} are missing", seq - 1)
                };
                ChainProblem {
                    seq,
                    kind: ChainProblemKind::Removed,
                    message: format!("{missing} before entry {seq}"),
                }
            });
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(why) => {
                return Verdict::Problem(ChainProblem {
                    seq,
                    kind: ChainProblemKind::Altered,
                    message: why.clone(),
                })
            }
        };
        write_canonical(&mut self.buf, &entry.fields);
        let recomputed = self.key.link(&self.prev, &self.buf);
        if !same(entry.prev_hash, Some(self.prev)) {
            return Verdict::Problem(if same(entry.hash, Some(recomputed)) {
                ChainProblem {
                    seq,
                    kind: ChainProblemKind::Altered,
                    message: format!("entry {seq}: its stored previous hash was altered"),
                }
            } else {
                ChainProblem {
                    seq,
                    kind: ChainProblemKind::Inserted,
                    message: format!("entry {seq} does not link to entry {}", seq - 1),
                }
            });
        }
        if !same(entry.hash, Some(recomputed)) {
            return Verdict::BadHash {
                seq,
                prev_hash: entry.prev_hash,
                hash: entry.hash,
            };
        }
        self.prev = recomputed;
        self.expected_seq = seq + 1;
        self.report.checked += 1;
        self.report.last_seq = Some(seq);
        Verdict::Intact
    }
}

/// Classifies a [`Verdict::BadHash`] by the stored previous hash of the
/// entry after it (`None`: there is none).
fn classify_bad_hash(
    seq: i64,
    prev_hash: Option<ChainHash>,
    hash: Option<ChainHash>,
    next: Option<Option<ChainHash>>,
) -> ChainProblem {
    match next {
        None => ChainProblem {
            seq,
            kind: ChainProblemKind::Inserted,
            message: format!(
                "entry {seq}, the last, does not verify: it was added or altered without the \
                 chain key"
            ),
        },
        Some(next_prev) if !same(next_prev, hash) && same(next_prev, prev_hash) => ChainProblem {
            seq,
            kind: ChainProblemKind::Inserted,
            message: format!("entry {seq} does not verify and the next entry links past it"),
        },
        Some(_) => ChainProblem {
            seq,
            kind: ChainProblemKind::Altered,
            message: format!("entry {seq} was altered: its hash does not verify"),
        },
    }
}

/// Where the next page comes from.
enum Source {
    /// The reader task.
    Reader,
    /// Reading column by column here, after this cursor (once the packed
    /// form failed: the reader task is no longer used).
    Rows(i64),
}

/// A page as it came back.
enum Fetched {
    Packed { text: String, after: i64 },
    Rows(Vec<AnyRow>),
}

async fn next_page(
    pool: &AnyPool,
    pages: &mut mpsc::Receiver<Page>,
    source: &mut Source,
) -> Result<Option<Fetched>, StoreError> {
    match *source {
        Source::Reader => match pages.recv().await {
            None
            | Some(Page {
                packed: Ok(None), ..
            }) => Ok(None),
            Some(Page {
                packed: Ok(Some(text)),
                after,
            }) => Ok(Some(Fetched::Packed { text, after })),
            Some(Page {
                packed: Err(e),
                after,
            }) => {
                tracing::debug!(after, error = %e, "packed audit page failed; reading rows");
                row_page(pool, after, pages, source).await
            }
        },
        Source::Rows(after) => row_page(pool, after, pages, source).await,
    }
}

/// Reads the page after `after` column by column, and switches `source` to
/// doing so from here on.
async fn row_page(
    pool: &AnyPool,
    after: i64,
    pages: &mut mpsc::Receiver<Page>,
    source: &mut Source,
) -> Result<Option<Fetched>, StoreError> {
    pages.close();
    let rows = read_rows(pool, after).await?;
    let last = match rows.last() {
        None => return Ok(None),
        Some(row) => row.try_get::<i64, _>(0)?,
    };
    *source = Source::Rows(last);
    Ok(Some(Fetched::Rows(rows)))
}

/// Where the walk begins.
struct Start {
    expected_seq: i64,
    prev: ChainHash,
    pruned_through: Option<i64>,
}

async fn verify_pages(
    pool: &AnyPool,
    key: &ChainKey,
    start: Start,
    pages: &mut mpsc::Receiver<Page>,
) -> Result<ChainReport, StoreError> {
    let mut checker = Checker {
        key,
        prev: start.prev,
        expected_seq: start.expected_seq,
        buf: Vec::with_capacity(1024),
        report: ChainReport {
            checked: 0,
            last_seq: None,
            pruned_through: start.pruned_through,
            problem: None,
        },
    };
    let mut source = Source::Reader;
    while let Some(page) = next_page(pool, pages, &mut source).await? {
        let json_entries;
        let fallback_rows;
        let items: Vec<Item<'_>> = match &page {
            Fetched::Packed { text, after } => match parse_packed(text) {
                Ok(entries) => {
                    json_entries = entries;
                    json_entries.iter().map(item_from_json).collect()
                }
                Err(e) => {
                    tracing::debug!(after, error = %e, "audit page is not as packed; reading rows");
                    match row_page(pool, *after, pages, &mut source).await? {
                        Some(Fetched::Rows(rows)) => {
                            fallback_rows = rows;
                            fallback_rows
                                .iter()
                                .map(item_from_row)
                                .collect::<Result<_, _>>()?
                        }
                        _ => Vec::new(),
                    }
                }
            },
            Fetched::Rows(rows) => rows.iter().map(item_from_row).collect::<Result<_, _>>()?,
        };
        for (i, item) in items.iter().enumerate() {
            if i % YIELD_EVERY == YIELD_EVERY - 1 {
                // Hashing is CPU work: let other tasks on this thread run.
                tokio::task::yield_now().await;
            }
            match checker.check(item) {
                Verdict::Intact => {}
                Verdict::Problem(problem) => {
                    checker.report.problem = Some(problem);
                    return Ok(checker.report);
                }
                Verdict::BadHash {
                    seq,
                    prev_hash,
                    hash,
                } => {
                    let next_prev = match items.get(i + 1) {
                        Some((_, entry)) => Some(entry.as_ref().ok().and_then(|e| e.prev_hash)),
                        None => first_prev_hash(pool, seq).await?,
                    };
                    checker.report.problem =
                        Some(classify_bad_hash(seq, prev_hash, hash, next_prev));
                    return Ok(checker.report);
                }
            }
        }
    }
    Ok(checker.report)
}

/// The stored previous hash of the entry after `seq`; `None` when there is
/// none.
async fn first_prev_hash(
    pool: &AnyPool,
    seq: i64,
) -> Result<Option<Option<ChainHash>>, StoreError> {
    let next =
        sqlx::query("SELECT prev_hash FROM audit_log WHERE seq > $1 ORDER BY seq ASC LIMIT 1")
            .bind(seq)
            .fetch_optional(pool)
            .await?;
    Ok(next.map(|row| {
        row.try_get::<&[u8], _>(0)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::testing::execute_raw;
    use crate::{Backend, NewAuditEntry};
    use redwall_crypto::keyring::Keyring;
    use serde_json::json;

    #[test]
    fn hex_decoding() {
        let h: [u8; 32] = core::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(hash_from_hex(&hex::encode(h)), Some(h));
        assert_eq!(hash_from_hex(&hex::encode_upper(h)), Some(h));
        assert_eq!(hash_from_hex(&hex::encode(&h[..31])), None);
        let mut bad = hex::encode(h);
        bad.replace_range(10..11, "g");
        assert_eq!(hash_from_hex(&bad), None);
        assert_eq!(hash_from_hex(""), None);
    }

    fn key() -> ChainKey {
        ChainKey::from_keyring(&Keyring::from_bytes([5u8; 32]))
    }

    fn awkward_entries() -> Vec<NewAuditEntry> {
        let texts = [
            "",
            "plain",
            "quote \" backslash \\ slash / tab \t nl \n cr \r",
            "ctrl \u{1}\u{1f} del \u{7f} nbsp \u{a0} ls \u{2028}",
            "unicode é ✓ 🚀 中文",
        ];
        let mut out = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            for at in [0, -5, i64::MAX, 1_700_000_000_000_000] {
                out.push(NewAuditEntry {
                    at,
                    actor_id: (i % 2 == 0).then(|| t.to_string()),
                    actor_name: Some(t.to_string()),
                    client_ip: None,
                    user_agent: Some(format!("{t}/{at}")),
                    event: t.to_string(),
                    target: (i % 3 == 0).then(String::new),
                    outcome: t.to_string(),
                    details: json!({
                        t.to_string(): [t, 1.5e300, -0.25, u64::MAX, i64::MIN, null, true],
                        "z": {"é": t, "": {}},
                    }),
                    team_id: (i % 2 == 1).then(|| t.to_string()),
                });
            }
        }
        out
    }

    /// The packed (JSON) page reads exactly what the columns hold.
    async fn packed_matches_rows(store: Store) -> crate::testing::TestResult {
        store.append_audit(&key(), &awkward_entries()).await?;
        let sql = match store.backend() {
            Backend::Sqlite => SQLITE_PAGE_SQL,
            Backend::Postgres => POSTGRES_PAGE_SQL,
        };
        let (max, count, packed): (Option<i64>, i64, Option<String>) = sqlx::query_as(sql)
            .bind(i64::MIN)
            .bind(PAGE)
            .fetch_one(store.pool())
            .await?;
        assert_eq!(max, Some(20));
        assert_eq!(count, 20);
        let packed = packed.expect("packed page");
        let parsed = parse_packed(&packed)?;
        let rows = read_rows(store.pool(), i64::MIN).await?;
        assert_eq!(parsed.len(), rows.len());
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (j, row) in parsed.iter().zip(&rows) {
            let (seq_a, ea) = item_from_json(j);
            let (seq_b, eb) = item_from_row(row)?;
            let (ea, eb) = (ea.unwrap(), eb.unwrap());
            assert_eq!(seq_a, seq_b);
            write_canonical(&mut a, &ea.fields);
            write_canonical(&mut b, &eb.fields);
            assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
            assert_eq!((ea.prev_hash, ea.hash), (eb.prev_hash, eb.hash));
            assert!(ea.hash.is_some());
        }
        let report = store.verify_audit_chain(&key()).await?;
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.checked, 20);
        Ok(())
    }

    crate::both_backends!(packed_page_matches_columns, packed_matches_rows);

    /// A value of the wrong type makes the packed form unusable: the page is
    /// read column by column and the entry reported as altered.
    async fn wrong_type_is_altered(store: Store) -> crate::testing::TestResult {
        store.append_audit(&key(), &awkward_entries()).await?;
        crate::testing::disable_audit_guards(&store).await?;
        execute_raw(&store, "UPDATE audit_log SET at = 'soon' WHERE seq = 7").await?;
        let report = store.verify_audit_chain(&key()).await?;
        let problem = report.problem.unwrap();
        assert_eq!((problem.seq, problem.kind), (7, ChainProblemKind::Altered));
        assert_eq!(report.checked, 6);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_type_is_altered_sqlite() -> crate::testing::TestResult {
        // PostgreSQL's typed columns cannot hold this.
        crate::testing::with_backend(Backend::Sqlite, wrong_type_is_altered).await
    }
}
