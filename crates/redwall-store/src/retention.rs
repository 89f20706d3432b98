//! Retention of the audit log: export a prefix, then prune it behind a
//! chain checkpoint.
//!
//! A prune appends one checkpoint entry (event [`PRUNED_EVENT`]) that names
//! the last pruned entry's `seq` and chain hash, chained and MAC'd like any
//! other entry, then deletes the prefix in the same transaction. The
//! migrations' triggers allow that DELETE only through a permit that names a
//! checkpoint at the head of the log (see `0005_audit_retention.sql`).
//! Verification then starts from the checkpoint: the first remaining entry
//! must link to the hash it names, and the checkpoint itself is verified when
//! the walk reaches it, so a checkpoint written without the chain key, or
//! entries removed beyond it, are reported.
//!
//! An export is a file of JSON lines, one [`AuditRecord`] each, oldest
//! first, with its `prev_hash` and `hash`: [`verify_export`] checks it with
//! the chain key alone, without the database.

use std::io::BufRead;

use futures::{Stream, TryStreamExt};
use redwall_crypto::chain::{ChainHash, ChainKey, GENESIS};
use serde::Serialize;
use sqlx::Row;

use crate::audit::{
    audit_record_from_row, canonical_json, insert_statement, to_chain_hash, write_canonical,
    Fields, AUDIT_COLUMNS, PG_AUDIT_LOCK,
};
use crate::{time_ordered_id, AuditRecord, Backend, Micros, NewAuditEntry, Store, StoreError};

/// The event name of a prune's checkpoint entry.
pub const PRUNED_EVENT: &str = "audit.pruned";

/// Entries read per query while exporting.
const EXPORT_PAGE: i64 = 5_000;

/// A prefix of the log: what an export holds and a prune removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditCut {
    /// The oldest entry still in the log.
    pub first_seq: i64,
    /// The last entry of the prefix.
    pub through_seq: i64,
    /// Its chain hash, lowercase hex.
    pub through_hash: String,
}

impl AuditCut {
    pub fn entries(&self) -> i64 {
        self.through_seq - self.first_seq + 1
    }
}

/// Where verification of the stored chain starts.
pub(crate) enum ChainStart {
    /// Nothing was pruned: entry 1, after the genesis hash.
    Genesis,
    /// After a prune: `first_seq`, linked to the hash the checkpoint names.
    Checkpoint { first_seq: i64, prev: ChainHash },
    /// Entries before `first_seq` are gone and no checkpoint covers them.
    Uncovered { first_seq: i64 },
}

/// What [`verify_export`] found in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    /// Entries that verified.
    pub checked: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// The hash the first entry links to (genesis for a file that starts at
    /// entry 1, else the previous export's last hash), lowercase hex.
    pub starts_after: Option<String>,
    /// The last entry's hash, lowercase hex: the next export starts after it.
    pub last_hash: Option<String>,
    /// The first problem, with its line number (1-based).
    pub problem: Option<(usize, String)>,
}

fn hash_hex_of(s: &str) -> Option<ChainHash> {
    hex::decode(s).ok().and_then(|b| to_chain_hash(&b))
}

impl Store {
    /// The prefix of the log written before `before`: from the oldest entry
    /// still stored up to the entry before the first one at or after
    /// `before` (the whole log when there is none). `None` when that prefix
    /// is empty.
    pub async fn audit_cut_before(&self, before: Micros) -> Result<Option<AuditCut>, StoreError> {
        let (first, head): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(seq), max(seq) FROM audit_log")
                .fetch_one(self.pool())
                .await?;
        let (Some(first), Some(head)) = (first, head) else {
            return Ok(None);
        };
        let later: Option<i64> =
            sqlx::query_scalar("SELECT min(seq) FROM audit_log WHERE at >= $1")
                .bind(before)
                .fetch_one(self.pool())
                .await?;
        let through = later.map_or(head, |s| s - 1);
        self.audit_cut_through(first, through).await
    }

    /// The prefix `first..=through`, when `first` is the oldest entry
    /// stored and `through` is stored; `None` when it is empty.
    pub async fn audit_cut_through(
        &self,
        first: i64,
        through: i64,
    ) -> Result<Option<AuditCut>, StoreError> {
        if through < first {
            return Ok(None);
        }
        let hash: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(through)
            .fetch_optional(self.pool())
            .await?;
        Ok(hash.map(|hash| AuditCut {
            first_seq: first,
            through_seq: through,
            through_hash: hex::encode(hash),
        }))
    }

    /// Entries `first..=through`, oldest first, read in pages.
    pub fn stream_audit_range(
        &self,
        first: i64,
        through: i64,
    ) -> impl Stream<Item = Result<AuditRecord, StoreError>> + '_ {
        futures::stream::try_unfold(Some(first - 1), move |cursor| async move {
            let Some(after) = cursor else {
                return Ok::<_, StoreError>(None);
            };
            let sql = format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 AND seq <= $2 \
                 ORDER BY seq ASC LIMIT $3"
            );
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(through)
                .bind(EXPORT_PAGE)
                .fetch_all(self.pool())
                .await?;
            let page: Vec<AuditRecord> = rows
                .iter()
                .map(audit_record_from_row)
                .collect::<Result<_, _>>()?;
            if page.is_empty() {
                return Ok(None);
            }
            let next = if page.len() < EXPORT_PAGE as usize {
                None
            } else {
                page.last().map(|r| r.seq)
            };
            Ok(Some((page, next)))
        })
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok::<_, StoreError>)))
        .try_flatten()
    }

    /// Removes the entries of `cut` and appends `checkpoint` (its `event`
    /// must be [`PRUNED_EVENT`]; its `details` object gets `first_seq`,
    /// `through_seq`, `through_hash` and `entries`), in one transaction.
    /// Refused with `Conflict` when the log no longer starts where `cut`
    /// says or the entry at its end has another hash. Returns the
    /// checkpoint's `seq`.
    ///
    /// The caller decides whether the prune is allowed (chain intact, the
    /// prefix exported): this only does it, the one way the triggers permit.
    pub async fn prune_audit(
        &self,
        key: &ChainKey,
        cut: &AuditCut,
        mut checkpoint: NewAuditEntry,
    ) -> Result<i64, StoreError> {
        if checkpoint.event != PRUNED_EVENT {
            return Err(StoreError::Conflict(
                "a prune's checkpoint must be an audit.pruned entry".into(),
            ));
        }
        let mut details = match checkpoint.details {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        details.insert("first_seq".into(), cut.first_seq.into());
        details.insert("through_seq".into(), cut.through_seq.into());
        details.insert("through_hash".into(), cut.through_hash.clone().into());
        details.insert("entries".into(), cut.entries().into());
        checkpoint.details = serde_json::Value::Object(details);
        let details_json = canonical_json(&checkpoint.details);

        let mut tx = self.begin_write_raw().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_AUDIT_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let (first, head): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(seq), max(seq) FROM audit_log")
                .fetch_one(&mut *tx)
                .await?;
        let through_hash: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
                .bind(cut.through_seq)
                .fetch_optional(&mut *tx)
                .await?;
        let (Some(first), Some(head)) = (first, head) else {
            return Err(StoreError::Conflict("the audit log is empty".into()));
        };
        if first != cut.first_seq
            || through_hash.map(hex::encode).as_deref() != Some(cut.through_hash.as_str())
        {
            return Err(StoreError::Conflict(
                "the audit log changed since the prune was planned".into(),
            ));
        }
        let head_hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(head)
            .fetch_one(&mut *tx)
            .await?;
        let prev = to_chain_hash(&head_hash).ok_or_else(|| {
            StoreError::Conflict("the audit chain head has a malformed hash".into())
        })?;
        let seq = head + 1;
        let id = time_ordered_id(checkpoint.at);
        let mut buf = Vec::with_capacity(512);
        write_canonical(
            &mut buf,
            &Fields {
                seq,
                id: &id,
                at: checkpoint.at,
                actor_id: checkpoint.actor_id.as_deref(),
                actor_name: checkpoint.actor_name.as_deref(),
                client_ip: checkpoint.client_ip.as_deref(),
                user_agent: checkpoint.user_agent.as_deref(),
                event: &checkpoint.event,
                target: checkpoint.target.as_deref(),
                outcome: &checkpoint.outcome,
                team_id: checkpoint.team_id.as_deref(),
                details_json: &details_json,
            },
        );
        let hash = key.link(&prev, &buf);
        let (insert, _) = insert_statement(self.backend, 1);
        sqlx::query(insert)
            .bind(seq)
            .bind(id.as_str())
            .bind(checkpoint.at)
            .bind(checkpoint.actor_id.as_deref())
            .bind(checkpoint.actor_name.as_deref())
            .bind(checkpoint.client_ip.as_deref())
            .bind(checkpoint.user_agent.as_deref())
            .bind(checkpoint.event.as_str())
            .bind(checkpoint.target.as_deref())
            .bind(checkpoint.outcome.as_str())
            .bind(details_json.as_str())
            .bind(checkpoint.team_id.as_deref())
            .bind(prev.as_slice())
            .bind(hash.as_slice())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO audit_prune_permit (through_seq, checkpoint_seq) VALUES ($1, $2)")
            .bind(cut.through_seq)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(cut.through_seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM audit_prune_permit")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Where the stored chain starts: at entry 1, or after the checkpoint
    /// of the last prune (the `audit.pruned` entry whose `through_seq` is
    /// the entry just before the oldest one stored).
    pub(crate) async fn chain_start(&self) -> Result<ChainStart, StoreError> {
        let first: Option<i64> = sqlx::query_scalar("SELECT min(seq) FROM audit_log")
            .fetch_one(self.pool())
            .await?;
        let first_seq = match first {
            None | Some(1) => return Ok(ChainStart::Genesis),
            Some(s) if s < 1 => return Ok(ChainStart::Genesis),
            Some(s) => s,
        };
        let rows = sqlx::query(
            "SELECT details FROM audit_log WHERE event = $1 AND seq > $2 ORDER BY seq ASC",
        )
        .bind(PRUNED_EVENT)
        .bind(first_seq)
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let Ok(details) = row.try_get::<String, _>(0) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&details) else {
                continue;
            };
            if v["through_seq"].as_i64() != Some(first_seq - 1) {
                continue;
            }
            if let Some(prev) = v["through_hash"].as_str().and_then(hash_hex_of) {
                return Ok(ChainStart::Checkpoint { first_seq, prev });
            }
        }
        Ok(ChainStart::Uncovered { first_seq })
    }
}

/// Checks an export file (JSON lines of [`AuditRecord`], oldest first) with
/// the chain key alone: sequence numbers follow each other, each entry
/// links to the one before (the first to the genesis hash when it is entry
/// 1), and every hash recomputes. Stops at the first problem.
pub fn verify_export(key: &ChainKey, reader: impl BufRead) -> std::io::Result<ExportReport> {
    let mut report = ExportReport {
        checked: 0,
        first_seq: None,
        last_seq: None,
        starts_after: None,
        last_hash: None,
        problem: None,
    };
    let mut prev: Option<ChainHash> = None;
    let mut buf = Vec::with_capacity(1024);
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let r: AuditRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                report.problem = Some((n, format!("not an audit entry: {e}")));
                return Ok(report);
            }
        };
        let stored_prev = hash_hex_of(&r.prev_hash);
        let stored_hash = hash_hex_of(&r.hash);
        let expected_prev = match (prev, report.last_seq) {
            (Some(p), Some(last)) => {
                if r.seq != last + 1 {
                    report.problem = Some((
                        n,
                        format!("entry {} follows entry {last}: entries are missing", r.seq),
                    ));
                    return Ok(report);
                }
                p
            }
            _ if r.seq == 1 => GENESIS,
            _ => match stored_prev {
                // The first line of a later export links to the previous
                // export's last hash (or the checkpoint's): taken as given
                // here, and reported so it can be matched.
                Some(p) => p,
                None => {
                    report.problem = Some((n, format!("entry {}: malformed prev_hash", r.seq)));
                    return Ok(report);
                }
            },
        };
        if stored_prev != Some(expected_prev) {
            report.problem = Some((
                n,
                format!("entry {} does not link to the entry before it", r.seq),
            ));
            return Ok(report);
        }
        let e = NewAuditEntry {
            at: r.at,
            actor_id: r.actor_id.clone(),
            actor_name: r.actor_name.clone(),
            client_ip: r.client_ip.clone(),
            user_agent: r.user_agent.clone(),
            event: r.event.clone(),
            target: r.target.clone(),
            outcome: r.outcome.clone(),
            details: r.details.clone(),
            team_id: r.team_id.clone(),
        };
        let details = canonical_json(&e.details);
        write_canonical(
            &mut buf,
            &Fields {
                seq: r.seq,
                id: &r.id,
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
        let recomputed = key.link(&expected_prev, &buf);
        if stored_hash != Some(recomputed) {
            report.problem = Some((
                n,
                format!("entry {} was altered: its hash does not verify", r.seq),
            ));
            return Ok(report);
        }
        if report.first_seq.is_none() {
            report.first_seq = Some(r.seq);
            report.starts_after = Some(hex::encode(expected_prev));
        }
        report.checked += 1;
        report.last_seq = Some(r.seq);
        report.last_hash = Some(hex::encode(recomputed));
        prev = Some(recomputed);
    }
    Ok(report)
}
