#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;

use proptest::prelude::*;

use super::*;

fn small() -> JournalConfig {
    JournalConfig {
        max_bytes: 16 * 1024,
        segment_bytes: 4096,
    }
}

fn line(n: u64) -> Vec<u8> {
    format!("site log line {n:06}").into_bytes()
}

fn all(journal: &Journal) -> Vec<(u64, Vec<u8>)> {
    journal.pending(usize::MAX, usize::MAX).unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn disk_bytes(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn a_new_journal_has_a_fresh_epoch_private_files_and_starts_at_one() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("journal");
    let mut journal = Journal::open(&dir, &JournalConfig::default()).unwrap();
    assert!(state::is_epoch(journal.epoch()), "{}", journal.epoch());
    assert_eq!(journal.stats(), JournalStats::default());
    assert_eq!(journal.append(&[line(1), line(2)], true).unwrap(), 2);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let other = Journal::open(&root.path().join("other"), &JournalConfig::default()).unwrap();
    assert_ne!(journal.epoch(), other.epoch());
}

#[test]
fn records_acks_and_seqs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    let epoch = journal.epoch().to_owned();
    assert_eq!(
        journal.append(&[line(1), line(2), line(3)], true).unwrap(),
        3
    );
    let before = all(&journal);
    assert_eq!(before, vec![(1, line(1)), (2, line(2)), (3, line(3))]);
    drop(journal);

    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    assert_eq!(journal.epoch(), epoch);
    assert_eq!(all(&journal), before);
    journal.ack(2).unwrap();
    drop(journal);

    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    assert_eq!(all(&journal), vec![(3, line(3))]);
    assert_eq!(journal.stats().acked_seq, 2);
    journal.ack(3).unwrap();
    assert!(all(&journal).is_empty());
    // Wholly acknowledged segments are gone; the seq goes on.
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(journal.append(&[line(4)], true).unwrap(), 4);
    drop(journal);

    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    assert_eq!(all(&journal), vec![(4, line(4))]);
    assert_eq!(journal.append(&[line(5)], false).unwrap(), 5);
    // A clean restart goes on in the same segment.
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(journal.epoch(), epoch);
    assert_eq!(
        journal.stats(),
        JournalStats {
            pending: 2,
            pending_bytes: (line(4).len() + line(5).len()) as u64,
            last_seq: 5,
            acked_seq: 3,
            dropped: 0,
            damaged: 0,
        }
    );
}

#[test]
fn acks_out_of_range_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    journal.ack(5).unwrap();
    assert_eq!(journal.stats().acked_seq, 0);
    journal.append(&[line(1), line(2), line(3)], true).unwrap();
    journal.ack(4).unwrap();
    assert_eq!(journal.stats().acked_seq, 0);
    journal.ack(2).unwrap();
    journal.ack(1).unwrap();
    journal.ack(2).unwrap();
    assert_eq!(journal.stats().acked_seq, 2);
    assert_eq!(all(&journal), vec![(3, line(3))]);
}

#[test]
fn pending_is_bounded_by_count_and_bytes_but_gives_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    let records: Vec<Vec<u8>> = (1..=10).map(line).collect();
    journal.append(&records, true).unwrap();
    let len = line(1).len();
    assert_eq!(journal.pending(3, usize::MAX).unwrap().len(), 3);
    assert_eq!(journal.pending(usize::MAX, 2 * len).unwrap().len(), 2);
    assert_eq!(journal.pending(usize::MAX, 2 * len + 1).unwrap().len(), 2);
    assert_eq!(journal.pending(usize::MAX, 1).unwrap(), vec![(1, line(1))]);
    assert_eq!(journal.pending(0, 0).unwrap(), vec![(1, line(1))]);
    journal.ack(10).unwrap();
    assert!(journal.pending(0, 0).unwrap().is_empty());
}

#[test]
fn a_record_too_large_refuses_the_whole_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &JournalConfig::default()).unwrap();
    let biggest = vec![7u8; MAX_RECORD_LEN];
    let err = journal
        .append(&[line(1), vec![0; MAX_RECORD_LEN + 1]], true)
        .unwrap_err();
    assert!(
        matches!(err, JournalError::TooLarge { len, max } if len == MAX_RECORD_LEN + 1 && max == MAX_RECORD_LEN),
        "{err}"
    );
    assert_eq!(journal.stats(), JournalStats::default());
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(
        journal
            .append(std::slice::from_ref(&biggest), true)
            .unwrap(),
        1
    );
    assert_eq!(all(&journal), vec![(1, biggest)]);

    // A segment smaller than 64 KiB bounds records to what fits in one.
    let small_dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(small_dir.path(), &small()).unwrap();
    let max = small().max_record_len();
    assert_eq!(max, 4096 - 16);
    assert!(matches!(
        journal.append(&[vec![0; max + 1]], true),
        Err(JournalError::TooLarge { .. })
    ));
    assert_eq!(journal.append(&[vec![0; max]], true).unwrap(), 1);
}

/// Appends records 1..=3 (synced), then lets `damage` spoil the segment.
fn damaged_journal(damage: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    journal.append(&[line(1), line(2), line(3)], true).unwrap();
    drop(journal);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    damage(&files[0]);
    dir
}

fn check_repaired(dir: &Path) {
    let mut journal = Journal::open(dir, &small()).unwrap();
    let stats = journal.stats();
    assert_eq!(stats.damaged, 1);
    assert_eq!(stats.pending, 2);
    assert_eq!(all(&journal), vec![(1, line(1)), (2, line(2))]);
    // Seq 3 may have reached the hub: it is never given again.
    assert!(stats.last_seq >= 3, "{stats:?}");
    let next = journal.append(&[line(4)], true).unwrap();
    assert!(next > 3, "{next}");
    // After the jump, a segment of its own.
    assert_eq!(segment_files(dir).len(), 2);
    drop(journal);

    // The repair holds: no new damage, the counter is kept, and the seqs
    // still grow.
    let mut journal = Journal::open(dir, &small()).unwrap();
    assert_eq!(journal.stats().damaged, 1);
    assert_eq!(
        all(&journal),
        vec![(1, line(1)), (2, line(2)), (next, line(4))]
    );
    assert_eq!(journal.append(&[line(5)], true).unwrap(), next + 1);
}

#[test]
fn a_torn_last_record_is_cut_off_and_its_seq_never_reused() {
    let dir = damaged_journal(|path| {
        let len = std::fs::metadata(path).unwrap().len();
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(len - 5).unwrap();
    });
    check_repaired(dir.path());
}

#[test]
fn a_flipped_byte_in_the_last_record_is_cut_off_and_its_seq_never_reused() {
    let dir = damaged_journal(|path| {
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        std::fs::write(path, bytes).unwrap();
    });
    check_repaired(dir.path());
}

#[test]
fn garbage_after_the_last_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    journal.append(&[line(1)], true).unwrap();
    drop(journal);
    let path = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(path).unwrap();
    let good = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 40]);
    std::fs::write(path, bytes).unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), good);
    assert_eq!(journal.stats().damaged, 1);
    // 40 bytes held at most 3 records: seqs 2, 3 and 4 are skipped.
    assert_eq!(journal.append(&[line(5)], true).unwrap(), 5);
}

#[test]
fn a_record_lost_whole_before_its_sync_leaves_a_clean_end() {
    // A power cut before the sync may drop whole records at the end: they
    // were never handed out (pending syncs first), so their seqs are free.
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    journal.append(&[line(1), line(2)], true).unwrap();
    drop(journal);
    let path = &segment_files(dir.path())[0];
    let len = std::fs::metadata(path).unwrap().len();
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len - (HEADER_LEN + line(2).len()) as u64)
        .unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    assert_eq!(journal.stats().damaged, 0);
    assert_eq!(journal.append(&[line(9)], true).unwrap(), 2);
}

#[test]
fn damage_inside_an_older_segment_keeps_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    let records: Vec<Vec<u8>> = (1..=12).map(|n| vec![n as u8; 1000]).collect();
    // Four records per segment: 1..=4, 5..=8, 9..=12.
    journal.append(&records, true).unwrap();
    drop(journal);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[1016 + 20] ^= 1; // inside record 2
    std::fs::write(&files[0], bytes).unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    assert_eq!(journal.stats().damaged, 1);
    let seqs: Vec<u64> = all(&journal).into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, [1, 5, 6, 7, 8, 9, 10, 11, 12]);
    // What was cut came before segment 5..=8: no seq needs skipping.
    assert_eq!(journal.append(&[line(13)], true).unwrap(), 13);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 1016);
}

#[test]
fn a_record_changed_after_open_is_an_error_not_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    journal.append(&[line(1), line(2)], true).unwrap();
    let path = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(path, bytes).unwrap();
    assert_eq!(journal.pending(1, usize::MAX).unwrap(), vec![(1, line(1))]);
    assert!(matches!(
        journal.pending(2, usize::MAX),
        Err(JournalError::Changed { seq: 2, .. })
    ));
}

#[test]
fn the_journal_stays_bounded_drops_oldest_first_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = small();
    let mut journal = Journal::open(dir.path(), &config).unwrap();
    let mut appended = BTreeMap::new();
    for n in 1..=2000u64 {
        let data = format!("{n}:{}", "x".repeat((n % 97) as usize)).into_bytes();
        let seq = journal
            .append(std::slice::from_ref(&data), n % 10 == 0)
            .unwrap();
        assert_eq!(seq, n);
        appended.insert(seq, data);
        assert!(disk_bytes(dir.path()) <= config.max_bytes + config.segment_bytes);
        assert!(disk_bytes(dir.path()) <= config.max_bytes);
        if n == 100 {
            // Before any drop: these are acknowledged, not dropped, when
            // their segments go.
            assert_eq!(journal.stats().dropped, 0);
            journal.ack(100).unwrap();
        }
    }
    let pending = all(&journal);
    let stats = journal.stats();
    let first = pending[0].0;
    assert!(first > 1500, "the oldest went first: {first}");
    // Strictly increasing, exact bytes, and nothing lost uncounted.
    assert!(pending.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(pending.last().unwrap().0, 2000);
    for (seq, data) in &pending {
        assert_eq!(&appended[seq], data);
    }
    assert_eq!(stats.pending, pending.len() as u64);
    assert_eq!(stats.dropped, first - 1 - 100);
    assert_eq!(stats.dropped + stats.pending + 100, 2000);
    drop(journal);

    let journal = Journal::open(dir.path(), &config).unwrap();
    assert_eq!(journal.stats(), stats);
    assert_eq!(all(&journal), pending);
}

#[test]
fn dropped_records_that_were_acknowledged_are_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    let record = vec![1u8; 1000];
    // Four 1016-byte records per 4 KiB segment, 16 in 16 KiB.
    journal.append(&vec![record.clone(); 16], true).unwrap();
    journal.ack(2).unwrap();
    // The first segment (1..=4) goes: two of its records were pending.
    assert_eq!(journal.append(&[record], true).unwrap(), 17);
    assert_eq!(journal.stats().dropped, 2);
    assert_eq!(all(&journal)[0].0, 5);
}

#[test]
fn a_garbage_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), &small()).unwrap();
    journal.append(&[line(1)], true).unwrap();
    drop(journal);
    let path = dir.path().join(state::STATE_FILE);
    let good = std::fs::read(&path).unwrap();
    for garbage in [
        b"".to_vec(),
        b"\x00\xff garbage".to_vec(),
        b"{\"version\":1}".to_vec(),
        String::from_utf8(good.clone())
            .unwrap()
            .replace("\"version\":1", "\"version\":9")
            .into_bytes(),
        String::from_utf8(good.clone())
            .unwrap()
            .replace("\"acked_seq\":0", "\"acked_seq\":99")
            .into_bytes(),
        String::from_utf8(good.clone())
            .unwrap()
            .replace("\"damaged\":0", "\"damaged\":0,\"extra\":1")
            .into_bytes(),
    ] {
        std::fs::write(&path, &garbage).unwrap();
        match Journal::open(dir.path(), &small()) {
            Err(e @ JournalError::State { .. }) => {
                let text = e.to_string();
                assert!(text.contains("state.json"), "{text}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened with {:?}", String::from_utf8_lossy(&garbage)),
        }
    }
    // Without a state file, segments are not taken over by a new epoch.
    std::fs::remove_file(&path).unwrap();
    let err = Journal::open(dir.path(), &small()).err().unwrap();
    assert!(err.to_string().contains("missing"), "{err}");
    // The good state back, and a leftover temporary file, open fine.
    std::fs::write(&path, &good).unwrap();
    std::fs::write(dir.path().join(".state.json.tmp"), b"half").unwrap();
    let journal = Journal::open(dir.path(), &small()).unwrap();
    assert_eq!(all(&journal), vec![(1, line(1))]);
    assert!(!dir.path().join(".state.json.tmp").exists());
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), &small()).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), &small()),
        Err(JournalError::Busy(_))
    ));
    drop(journal);
    Journal::open(dir.path(), &small()).unwrap();
}

#[test]
fn the_config_has_defaults_and_is_checked() {
    let config: JournalConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, JournalConfig::default());
    assert_eq!(config.max_bytes, 4 * 1024 * 1024);
    assert_eq!(config.segment_bytes, 256 * 1024);
    config.check().unwrap();
    assert_eq!(config.max_record_len(), MAX_RECORD_LEN);
    assert!(serde_json::from_str::<JournalConfig>("{\"max_byte\":1}").is_err());
    for (max_bytes, segment_bytes) in [(1 << 20, 4095), (8191, 4096), (0, 0)] {
        let config = JournalConfig {
            max_bytes,
            segment_bytes,
        };
        assert!(matches!(config.check(), Err(JournalError::Config(_))));
        assert!(Journal::open(tempfile::tempdir().unwrap().path(), &config).is_err());
    }
    JournalConfig {
        max_bytes: 8192,
        segment_bytes: 4096,
    }
    .check()
    .unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Vec<u8>>, bool),
    /// Acknowledge this far past the last seq given, minus 4 (so also
    /// old and future seqs).
    Ack(u64),
    Pending(usize, usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 0..8),
            any::<bool>()
        )
            .prop_map(|(records, sync)| Op::Append(records, sync)),
        2 => (0u64..40).prop_map(Op::Ack),
        1 => (0usize..6, 0usize..4000).prop_map(|(n, b)| Op::Pending(n, b)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_record_is_pending_acknowledged_or_counted_as_dropped(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig { max_bytes: 12 * 1024, segment_bytes: 4096 };
        let mut journal = Journal::open(dir.path(), &config).unwrap();
        let epoch = journal.epoch().to_owned();
        let mut appended: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut pending_before: Vec<u64> = Vec::new();
        let mut dropped = std::collections::BTreeSet::new();
        for op in ops {
            let is_append = matches!(op, Op::Append(..));
            let acked_before = journal.stats().acked_seq;
            let mut new_seqs = Vec::new();
            match op {
                Op::Append(records, sync) => {
                    let last = journal.stats().last_seq;
                    let seq = journal.append(&records, sync).unwrap();
                    prop_assert_eq!(seq, last + records.len() as u64);
                    for (i, data) in records.into_iter().enumerate() {
                        let seq = last + 1 + i as u64;
                        new_seqs.push(seq);
                        appended.insert(seq, data);
                    }
                }
                Op::Ack(n) => {
                    let seq = (journal.stats().last_seq + n).saturating_sub(4);
                    journal.ack(seq).unwrap();
                    let stats = journal.stats();
                    if seq > acked_before && seq <= stats.last_seq {
                        prop_assert_eq!(stats.acked_seq, seq);
                    } else {
                        prop_assert_eq!(stats.acked_seq, acked_before);
                    }
                }
                Op::Pending(n, bytes) => {
                    let some = journal.pending(n, bytes).unwrap();
                    let full = all(&journal);
                    prop_assert!(some.len() <= n.max(1));
                    prop_assert!(some.len() >= full.len().min(1), "at least one if any");
                    prop_assert_eq!(&full[..some.len()], &some[..]);
                    let size: usize = some.iter().map(|(_, d)| d.len()).sum();
                    prop_assert!(some.len() <= 1 || size <= bytes);
                }
                Op::Reopen => {
                    drop(journal);
                    journal = Journal::open(dir.path(), &config).unwrap();
                    prop_assert_eq!(journal.epoch(), epoch.as_str());
                }
            }
            let stats = journal.stats();
            let pending = all(&journal);
            prop_assert!(pending.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(pending.iter().all(|(seq, _)| *seq > stats.acked_seq));
            for (seq, data) in &pending {
                prop_assert_eq!(appended.get(seq), Some(data));
            }
            let now: Vec<u64> = pending.iter().map(|(s, _)| *s).collect();
            // What left the pending records since the last step was
            // acknowledged (by an ack) or dropped (by an append).
            let gone: Vec<u64> = pending_before
                .iter()
                .chain(&new_seqs)
                .filter(|s| !now.contains(s))
                .copied()
                .collect();
            let newly_dropped: Vec<u64> =
                gone.into_iter().filter(|s| *s > stats.acked_seq).collect();
            prop_assert!(
                newly_dropped.is_empty() || is_append,
                "only an append drops: {:?}", newly_dropped
            );
            dropped.extend(newly_dropped);
            prop_assert_eq!(stats.dropped, dropped.len() as u64);
            for seq in appended.keys() {
                prop_assert!(
                    now.contains(seq) || *seq <= stats.acked_seq || dropped.contains(seq),
                    "record {} is lost", seq
                );
            }
            prop_assert!(stats.last_seq >= appended.keys().last().copied().unwrap_or(0));
            prop_assert_eq!(stats.damaged, 0);
            prop_assert_eq!(stats.pending, pending.len() as u64);
            prop_assert_eq!(
                stats.pending_bytes,
                pending.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
            );
            prop_assert!(disk_bytes(dir.path()) <= config.max_bytes);
            pending_before = now;
        }
    }
}
