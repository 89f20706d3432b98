//! The audit log: appends, filters, streaming, verification, tampering and
//! the group-commit writer, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::*;
use futures::TryStreamExt;
use redwall_crypto::chain::{ChainKey, GENESIS};
use redwall_crypto::keyring::Keyring;
use redwall_store::testing::{disable_audit_guards, execute_raw, TestDatabase};
use redwall_store::{
    both_backends, canonical_entry_bytes, AuditFilter, AuditWriter, Backend, ChainProblemKind,
    Store,
};

fn filter() -> AuditFilter {
    AuditFilter {
        limit: 1000,
        ..AuditFilter::default()
    }
}

fn seqs(records: &[redwall_store::AuditRecord]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

both_backends!(append_batches_and_chain_links, |store| async move {
    assert!(store.append_audit(&key(), &[]).await?.is_empty());
    assert_eq!(store.append_audit(&key(), &[entry(1)]).await?, [1]);
    let batch: Vec<_> = (2..=6).map(entry).collect();
    assert_eq!(store.append_audit(&key(), &batch).await?, [2, 3, 4, 5, 6]);
    assert_eq!(
        store.append_audit(&key(), &[entry(7), entry(8)]).await?,
        [7, 8]
    );

    let mut all = store.list_audit(&filter()).await?;
    assert_eq!(seqs(&all), [8, 7, 6, 5, 4, 3, 2, 1]);
    all.reverse();
    // Every record links to the previous one and its hash recomputes.
    let mut prev = GENESIS;
    for (i, r) in all.iter().enumerate() {
        let i = i as i64 + 1;
        let e = entry(i);
        assert_eq!(r.seq, i);
        assert_eq!(r.at, e.at);
        assert_eq!(r.actor_id, e.actor_id);
        assert_eq!(r.actor_name, e.actor_name);
        assert_eq!(r.client_ip, e.client_ip);
        assert_eq!(r.user_agent, e.user_agent);
        assert_eq!(r.event, e.event);
        assert_eq!(r.target, e.target);
        assert_eq!(r.outcome, e.outcome);
        assert_eq!(r.details, e.details);
        assert_eq!(r.team_id, e.team_id);
        assert_eq!(r.id.len(), 32);
        assert_eq!(r.prev_hash, hex::encode(prev));
        let hash = key().link(&prev, &canonical_entry_bytes(r.seq, &r.id, &e));
        assert_eq!(r.hash, hex::encode(hash));
        prev = hash;
    }
    let ids: BTreeSet<_> = all.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), all.len());

    let report = store.verify_audit_chain(&key()).await?;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 8);
    assert_eq!(report.last_seq, Some(8));
    Ok(())
});

both_backends!(verify_empty_log, |store| async move {
    let report = store.verify_audit_chain(&key()).await?;
    assert!(report.is_intact());
    assert_eq!(report.checked, 0);
    assert_eq!(report.last_seq, None);
    Ok(())
});

both_backends!(
    verify_with_wrong_key_fails_at_first_entry,
    |store| async move {
        seed_audit(&store, 3, 3).await;
        let other = ChainKey::from_keyring(&Keyring::from_bytes([8u8; 32]));
        let report = store.verify_audit_chain(&other).await?;
        let problem = report.problem.unwrap();
        assert_eq!(problem.seq, 1);
        assert_eq!(report.checked, 0);
        Ok(())
    }
);

both_backends!(list_filters, |store| async move {
    seed_audit(&store, 30, 7).await;

    let f = AuditFilter {
        actor: Some("alice".into()),
        ..filter()
    };
    let got = store.list_audit(&f).await?;
    assert_eq!(
        seqs(&got),
        (1..=30).rev().filter(|i| i % 3 == 0).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|r| r.actor_name.as_deref() == Some("alice")));

    // actor matches actor_id too.
    let f = AuditFilter {
        actor: Some("u-bob".into()),
        ..filter()
    };
    assert_eq!(store.list_audit(&f).await?.len(), 20);

    let f = AuditFilter {
        event: Some("auth.*".into()),
        ..filter()
    };
    let got = store.list_audit(&f).await?;
    assert_eq!(
        seqs(&got),
        (1..=30).rev().filter(|i| i % 2 == 0).collect::<Vec<_>>()
    );
    let f = AuditFilter {
        event: Some("auth.login".into()),
        ..filter()
    };
    assert_eq!(store.list_audit(&f).await?.len(), 15);
    // Exact match is exact.
    let f = AuditFilter {
        event: Some("auth.log".into()),
        ..filter()
    };
    assert!(store.list_audit(&f).await?.is_empty());
    // A prefix is a prefix, with LIKE metacharacters taken literally.
    let f = AuditFilter {
        event: Some("flow*".into()),
        ..filter()
    };
    assert_eq!(store.list_audit(&f).await?.len(), 15);
    let f = AuditFilter {
        event: Some("auth%*".into()),
        ..filter()
    };
    assert!(store.list_audit(&f).await?.is_empty());
    let f = AuditFilter {
        event: Some("AUTH.*".into()),
        ..filter()
    };
    assert!(store.list_audit(&f).await?.is_empty(), "case-sensitive");
    let f = AuditFilter {
        event: Some("*".into()),
        ..filter()
    };
    assert_eq!(store.list_audit(&f).await?.len(), 30);

    // Time range, inclusive at both ends (at = 1000 + i).
    let f = AuditFilter {
        since: Some(1_010),
        until: Some(1_019),
        ..filter()
    };
    assert_eq!(
        seqs(&store.list_audit(&f).await?),
        (10..=19).rev().collect::<Vec<_>>()
    );
    let f = AuditFilter {
        since: Some(1_025),
        ..filter()
    };
    assert_eq!(seqs(&store.list_audit(&f).await?), [30, 29, 28, 27, 26, 25]);

    let f = AuditFilter {
        team_id: Some("t1".into()),
        ..filter()
    };
    assert_eq!(seqs(&store.list_audit(&f).await?), [30, 25, 20, 15, 10, 5]);

    // Combined.
    let f = AuditFilter {
        actor: Some("alice".into()),
        event: Some("auth.*".into()),
        since: Some(1_007),
        ..filter()
    };
    assert_eq!(seqs(&store.list_audit(&f).await?), [30, 24, 18, 12]);

    // Default and capped limits.
    let f = AuditFilter {
        limit: 0,
        ..filter()
    };
    assert_eq!(store.list_audit(&f).await?.len(), 30);
    let f = AuditFilter {
        limit: 3,
        ..filter()
    };
    assert_eq!(seqs(&store.list_audit(&f).await?), [30, 29, 28]);
    Ok(())
});

both_backends!(cursor_pages_neither_overlap_nor_skip, |store| async move {
    seed_audit(&store, 53, 10).await;
    for (page_size, f) in [
        (7, AuditFilter::default()),
        (
            4,
            AuditFilter {
                actor: Some("bob".into()),
                ..AuditFilter::default()
            },
        ),
        (
            1,
            AuditFilter {
                team_id: Some("t1".into()),
                ..AuditFilter::default()
            },
        ),
    ] {
        let expected: Vec<i64> = {
            let all = store
                .list_audit(&AuditFilter {
                    limit: 1000,
                    ..f.clone()
                })
                .await?;
            seqs(&all)
        };
        let mut collected = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list_audit(&AuditFilter {
                    before_seq: cursor,
                    limit: page_size,
                    ..f.clone()
                })
                .await?;
            if page.is_empty() {
                break;
            }
            assert!(page.len() as i64 <= page_size);
            cursor = page.last().map(|r| r.seq);
            collected.extend(seqs(&page));
        }
        assert_eq!(collected, expected);
        assert!(!collected.is_empty());
    }
    Ok(())
});

both_backends!(stream_is_oldest_first_across_chunks, |store| async move {
    // More than one 5000-entry chunk.
    seed_audit(&store, 5_003, 2_000).await;
    let all: Vec<_> = store
        .stream_audit(AuditFilter::default())
        .try_collect()
        .await?;
    assert_eq!(seqs(&all), (1..=5_003).collect::<Vec<_>>());
    // Filters apply; limit and before_seq are ignored.
    let f = AuditFilter {
        team_id: Some("t1".into()),
        limit: 2,
        before_seq: Some(3),
        ..AuditFilter::default()
    };
    let teams: Vec<_> = store.stream_audit(f).try_collect().await?;
    assert_eq!(
        seqs(&teams),
        (1..=5_003).filter(|i| i % 5 == 0).collect::<Vec<_>>()
    );
    let report = store.verify_audit_chain(&key()).await?;
    assert!(report.is_intact());
    assert_eq!(report.checked, 5_003);
    Ok(())
});

both_backends!(audit_log_refuses_edits, |store| async move {
    seed_audit(&store, 3, 3).await;
    assert!(execute_raw(
        &store,
        "UPDATE audit_log SET outcome = 'failure' WHERE seq = 2"
    )
    .await
    .is_err());
    assert!(execute_raw(&store, "DELETE FROM audit_log WHERE seq = 2")
        .await
        .is_err());
    assert!(store.verify_audit_chain(&key()).await?.is_intact());
    Ok(())
});

both_backends!(verify_detects_edited_row, |store| async move {
    seed_audit(&store, 12, 5).await;
    disable_audit_guards(&store).await?;
    execute_raw(
        &store,
        r#"UPDATE audit_log SET details = '{"i":5}' WHERE seq = 5"#,
    )
    .await?;
    let report = store.verify_audit_chain(&key()).await?;
    let problem = report.problem.clone().unwrap();
    assert_eq!(
        (problem.seq, problem.kind),
        (5, ChainProblemKind::Altered),
        "{report:?}"
    );
    assert_eq!(report.checked, 4);
    assert_eq!(report.last_seq, Some(4));
    Ok(())
});

both_backends!(
    verify_detects_edited_column_of_last_page_row,
    |store| async move {
        // The row after the edited one is read by a second query path when the
        // edit is the last row of a page; here it is simply the middle.
        seed_audit(&store, 4, 4).await;
        disable_audit_guards(&store).await?;
        execute_raw(
            &store,
            "UPDATE audit_log SET actor_name = 'mallory' WHERE seq = 3",
        )
        .await?;
        let p = store.verify_audit_chain(&key()).await?.problem.unwrap();
        assert_eq!((p.seq, p.kind), (3, ChainProblemKind::Altered));
        Ok(())
    }
);

both_backends!(verify_detects_edited_prev_hash, |store| async move {
    seed_audit(&store, 6, 6).await;
    disable_audit_guards(&store).await?;
    execute_raw(
        &store,
        "UPDATE audit_log SET prev_hash = (SELECT hash FROM audit_log WHERE seq = 1) WHERE seq = 4",
    )
    .await?;
    let p = store.verify_audit_chain(&key()).await?.problem.unwrap();
    assert_eq!((p.seq, p.kind), (4, ChainProblemKind::Altered));
    Ok(())
});

both_backends!(verify_detects_deleted_middle_row, |store| async move {
    seed_audit(&store, 10, 10).await;
    disable_audit_guards(&store).await?;
    execute_raw(&store, "DELETE FROM audit_log WHERE seq = 5").await?;
    let report = store.verify_audit_chain(&key()).await?;
    let p = report.problem.unwrap();
    assert_eq!(
        (p.seq, p.kind),
        (6, ChainProblemKind::Removed),
        "{}",
        p.message
    );
    assert_eq!(report.checked, 4);
    Ok(())
});

both_backends!(verify_detects_deleted_first_rows, |store| async move {
    seed_audit(&store, 5, 5).await;
    disable_audit_guards(&store).await?;
    execute_raw(&store, "DELETE FROM audit_log WHERE seq <= 2").await?;
    let p = store.verify_audit_chain(&key()).await?.problem.unwrap();
    assert_eq!((p.seq, p.kind), (3, ChainProblemKind::Removed));
    Ok(())
});

both_backends!(
    verify_detects_deleted_and_renumbered_rows,
    |store| async move {
        seed_audit(&store, 8, 8).await;
        disable_audit_guards(&store).await?;
        // Remove entry 4 and close the gap, as a careful attacker would.
        execute_raw(&store, "DELETE FROM audit_log WHERE seq = 4").await?;
        execute_raw(&store, "UPDATE audit_log SET seq = -seq WHERE seq > 4").await?;
        execute_raw(&store, "UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0").await?;
        let p = store.verify_audit_chain(&key()).await?.problem.unwrap();
        assert_eq!(
            (p.seq, p.kind),
            (4, ChainProblemKind::Inserted),
            "{}",
            p.message
        );
        Ok(())
    }
);

const FORGE_COLUMNS: &str =
    "id, at, actor_id, actor_name, client_ip, user_agent, event, target, outcome, details, team_id";

both_backends!(
    verify_detects_row_appended_with_forged_hash,
    |store| async move {
        seed_audit(&store, 9, 4).await;
        disable_audit_guards(&store).await?;
        // Links correctly to entry 9 but its own hash is made up.
        execute_raw(
            &store,
            &format!(
                "INSERT INTO audit_log (seq, {FORGE_COLUMNS}, prev_hash, hash) \
             SELECT 10, 'forged', at, actor_id, 'mallory', client_ip, user_agent, event, target, \
             outcome, details, team_id, hash, prev_hash FROM audit_log WHERE seq = 9"
            ),
        )
        .await?;
        let report = store.verify_audit_chain(&key()).await?;
        let p = report.problem.unwrap();
        assert_eq!(
            (p.seq, p.kind),
            (10, ChainProblemKind::Inserted),
            "{}",
            p.message
        );
        assert_eq!(report.checked, 9);
        assert_eq!(report.last_seq, Some(9));
        Ok(())
    }
);

both_backends!(
    verify_detects_row_inserted_by_shifting,
    |store| async move {
        seed_audit(&store, 8, 8).await;
        disable_audit_guards(&store).await?;
        // Make room at 5 by moving 5..=8 to 6..=9, then insert a forged 5.
        execute_raw(&store, "UPDATE audit_log SET seq = -seq WHERE seq >= 5").await?;
        execute_raw(&store, "UPDATE audit_log SET seq = -seq + 1 WHERE seq < 0").await?;
        execute_raw(
            &store,
            &format!(
                "INSERT INTO audit_log (seq, {FORGE_COLUMNS}, prev_hash, hash) \
             SELECT 5, 'forged', at, actor_id, actor_name, client_ip, user_agent, 'auth.login', \
             target, outcome, details, team_id, hash, prev_hash FROM audit_log WHERE seq = 4"
            ),
        )
        .await?;
        let p = store.verify_audit_chain(&key()).await?.problem.unwrap();
        assert_eq!(
            (p.seq, p.kind),
            (5, ChainProblemKind::Inserted),
            "{}",
            p.message
        );
        Ok(())
    }
);

both_backends!(verify_pages_over_many_entries, |store| async move {
    // Over one 10,000-entry verification page, with an edit in the second.
    seed_audit(&store, 10_050, 5_000).await;
    let report = store.verify_audit_chain(&key()).await?;
    assert!(report.is_intact());
    assert_eq!(report.checked, 10_050);
    disable_audit_guards(&store).await?;
    // Edit the last entry of the first page: the look-ahead crosses pages.
    execute_raw(
        &store,
        "UPDATE audit_log SET outcome = 'failure' WHERE seq = 10000",
    )
    .await?;
    let p = store.verify_audit_chain(&key()).await?.problem.unwrap();
    assert_eq!(
        (p.seq, p.kind),
        (10_000, ChainProblemKind::Altered),
        "{}",
        p.message
    );
    Ok(())
});

both_backends!(writer_concurrent_appends_are_gapless, |store| async move {
    let writer = AuditWriter::spawn(store.clone(), key());
    let mut tasks = Vec::new();
    for t in 0..50 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..10 {
                let mut e = entry(t * 10 + i);
                e.actor_name = Some(format!("task-{t}"));
                got.push(writer.append(e).await?);
            }
            Ok::<_, redwall_store::StoreError>(got)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await??;
        // One task's appends are in order.
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=500).collect::<Vec<_>>());
    let report = store.verify_audit_chain(&key()).await?;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 500);
    let f = AuditFilter {
        actor: Some("task-7".into()),
        ..filter()
    };
    assert_eq!(store.list_audit(&f).await?.len(), 10);
    Ok(())
});

/// Two stores with their own pools (as the server and the CLI would be) and
/// their own writers append to one database at once: one gapless chain.
async fn two_processes_share_the_chain(backend: Backend) -> anyhow::Result<()> {
    let Some(db) = TestDatabase::new(backend).await? else {
        return Ok(());
    };
    let a = db.connect().await?;
    let b = db.connect().await?;
    let result = async {
        let mut tasks = Vec::new();
        for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
            let writer = AuditWriter::spawn(store.clone(), key());
            for t in 0..10 {
                let writer = writer.clone();
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    for i in 0..10 {
                        got.push(writer.append(entry(i)).await?);
                        // Direct (non-writer) appends interleave too.
                        if t == 0 && n == 0 {
                            got.extend(store.append_audit(&key(), &[entry(i), entry(i)]).await?);
                        }
                    }
                    Ok::<_, redwall_store::StoreError>(got)
                }));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=220).collect::<Vec<_>>());
        let report = a.verify_audit_chain(&key()).await?;
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.checked, 220);
        anyhow::Ok(())
    }
    .await;
    a.close().await;
    b.close().await;
    db.cleanup().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_chain_sqlite() -> anyhow::Result<()> {
    two_processes_share_the_chain(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_chain_postgres() -> anyhow::Result<()> {
    two_processes_share_the_chain(Backend::Postgres).await
}

/// Verification speed: run with
/// `cargo test --release -p redwall-store --test audit -- --ignored --nocapture verify_speed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: fills a million entries; run in release"]
async fn verify_speed_one_million_sqlite() -> anyhow::Result<()> {
    let db = TestDatabase::sqlite().await?;
    let store = Store::connect(&db.url).await?;
    let started = std::time::Instant::now();
    let batch: Vec<_> = (1..=10_000).map(entry).collect();
    for _ in 0..100 {
        store.append_audit(&key(), &batch).await?;
    }
    eprintln!("appended 1,000,000 entries in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let report = store.verify_audit_chain(&key()).await?;
    let took = started.elapsed();
    eprintln!("verified {} entries in {took:?}", report.checked);
    assert!(report.is_intact());
    assert_eq!(report.checked, 1_000_000);
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    store.close().await;
    db.cleanup().await;
    Ok(())
}
