//! Retention: export a prefix of the audit log to a file, then prune it
//! behind a chain checkpoint, so `audit verify` still proves what remains.
//!
//! Both are commands of the platform operator on the server machine (`redwall
//! audit export|prune`): they need the master key, which derives the chain
//! key, and write access to the database. A prune is refused unless
//! - the whole stored chain verifies (a broken chain is evidence: keep it);
//! - an export of every entry it removes was recorded in the log (an
//!   `audit.exported` entry of kind "retention", itself chained, written only
//!   after the file was written and verified).
//!
//! It writes its checkpoint (`audit.pruned`, naming the last removed entry's
//! seq and hash) in the same transaction as the delete, the only delete the
//! database triggers let through (see the store's `retention`).

use crate::audit::{Event, Who};
use crate::clock::rfc3339;
use crate::Hub;
use anyhow::{anyhow, bail, Context};
use futures::TryStreamExt;
use redwall_crypto::chain::ChainKey;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::Micros;
use redwall_store::{AuditCut, AuditFilter};
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

/// The `kind` of an `audit.exported` entry written by [`export_before`].
const EXPORT_KIND: &str = "retention";

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    pub cut: AuditCut,
    /// The `audit.exported` entry that records it.
    pub recorded_seq: i64,
}

/// What a prune removed.
#[derive(Debug)]
pub struct Pruned {
    pub cut: AuditCut,
    pub checkpoint_seq: i64,
    /// The `audit.exported` entry that covers the removed entries.
    pub export_seq: i64,
    /// Entries before the date that stay because no export holds them yet
    /// (typically the export's own record, when the date is not past).
    pub kept_unexported: i64,
}

/// `2026-01-31` (midnight UTC) or an RFC 3339 time, as microseconds.
pub fn parse_date(s: &str) -> Option<Micros> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    let t = match time::OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(s, &fmt).ok()?.midnight().assume_utc()
        }
    };
    i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()
}

/// Writes every entry before `before` (the longest prefix of the stored log
/// older than it) to `out` as JSON lines, checks the file with the chain
/// key, then records the export. `out` must not exist. `None` when there is
/// nothing before `before`.
pub async fn export_before(
    hub: &Hub,
    who: Who<'_>,
    before: Micros,
    out: &Path,
) -> anyhow::Result<Option<Exported>> {
    let Some(cut) = hub.store.audit_cut_before(before).await? else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("creating {} (it must not exist)", out.display()))?;
    let written = write_entries(hub, &cut, file).await;
    let checked = written.and_then(|()| {
        let f = std::fs::File::open(out).with_context(|| format!("reading {}", out.display()))?;
        let report =
            redwall_store::verify_export(&ChainKey::from_keyring(&hub.keyring), BufReader::new(f))?;
        if let Some((line, why)) = report.problem {
            bail!(
                "the exported entries do not verify (line {line}: {why}); run `redwall audit \
                 verify`: the stored log was changed"
            );
        }
        if report.first_seq != Some(cut.first_seq)
            || report.last_seq != Some(cut.through_seq)
            || report.last_hash.as_deref() != Some(cut.through_hash.as_str())
        {
            bail!("the export file does not hold the entries it should");
        }
        Ok(())
    });
    if let Err(e) = checked {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    let details = serde_json::json!({
        "kind": EXPORT_KIND,
        "first_seq": cut.first_seq,
        "through_seq": cut.through_seq,
        "through_hash": cut.through_hash,
        "entries": cut.entries(),
        "before": rfc3339(before),
        "file": out.display().to_string(),
    });
    let entry = hub.entry(
        who,
        Event::on_platform(AuditEvent::AuditExported, "audit_log".into(), details),
    );
    let recorded_seq = hub.record(entry).await?;
    Ok(Some(Exported { cut, recorded_seq }))
}

async fn write_entries(hub: &Hub, cut: &AuditCut, file: std::fs::File) -> anyhow::Result<()> {
    let mut w = BufWriter::new(file);
    let mut entries = std::pin::pin!(hub.store.stream_audit_range(cut.first_seq, cut.through_seq));
    while let Some(r) = entries.try_next().await? {
        serde_json::to_writer(&mut w, &r)?;
        w.write_all(b"\n")?;
    }
    let file = w
        .into_inner()
        .map_err(|e| anyhow!("writing the export: {e}"))?;
    file.sync_all().context("flushing the export to disk")?;
    Ok(())
}

/// Removes every entry before `before` that an export recorded in the log
/// covers, behind a checkpoint entry. `None` when there is nothing before
/// `before`.
pub async fn prune_before(
    hub: &Hub,
    who: Who<'_>,
    before: Micros,
) -> anyhow::Result<Option<Pruned>> {
    let Some(cut) = hub.store.audit_cut_before(before).await? else {
        return Ok(None);
    };
    let report = hub
        .store
        .verify_audit_chain(&ChainKey::from_keyring(&hub.keyring))
        .await?;
    if let Some(p) = report.problem {
        bail!(
            "prune refused: the audit chain is broken at entry {} ({}); nothing was removed",
            p.seq,
            p.message
        );
    }
    let not_exported = || {
        anyhow!(
            "prune refused: entries {} to {} were not exported; run `redwall audit export \
             --before {} --out FILE` first",
            cut.first_seq,
            cut.through_seq,
            rfc3339(before)
        )
    };
    let (export_seq, exported_through) =
        covering_export(hub, &cut).await?.ok_or_else(not_exported)?;
    // Only what an export holds goes: an export recorded before the date
    // is itself after the entries it holds.
    let wanted = cut.through_seq;
    let cut = if exported_through < cut.through_seq {
        hub.store
            .audit_cut_through(cut.first_seq, exported_through)
            .await?
            .ok_or_else(not_exported)?
    } else {
        cut
    };
    let checkpoint = hub.entry(
        who,
        Event::on_platform(
            AuditEvent::AuditPruned,
            "audit_log".into(),
            serde_json::json!({ "export_seq": export_seq, "before": rfc3339(before) }),
        ),
    );
    let checkpoint_seq = hub
        .store
        .prune_audit(&ChainKey::from_keyring(&hub.keyring), &cut, checkpoint)
        .await?;
    Ok(Some(Pruned {
        kept_unexported: wanted - cut.through_seq,
        cut,
        checkpoint_seq,
        export_seq,
    }))
}

/// The recorded export that holds the oldest stored entries and reaches
/// furthest: its `seq` and the last entry it holds.
async fn covering_export(hub: &Hub, cut: &AuditCut) -> anyhow::Result<Option<(i64, i64)>> {
    let filter = AuditFilter {
        event: Some(AuditEvent::AuditExported.name().into()),
        ..AuditFilter::default()
    };
    let mut exports = std::pin::pin!(hub.store.stream_audit(filter));
    let mut best: Option<(i64, i64)> = None;
    while let Some(e) = exports.try_next().await? {
        let d = &e.details;
        if d["kind"] != EXPORT_KIND || d["first_seq"].as_i64().is_none_or(|s| s > cut.first_seq) {
            continue;
        }
        let Some(through) = d["through_seq"].as_i64() else {
            continue;
        };
        if through >= cut.first_seq && best.is_none_or(|(_, t)| through >= t) {
            best = Some((e.seq, through));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use redwall_store::PRUNED_EVENT;

    #[test]
    fn the_store_and_the_policy_name_the_checkpoint_alike() {
        assert_eq!(AuditEvent::AuditPruned.name(), PRUNED_EVENT);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_date("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_date("yesterday"), None);
    }
}
