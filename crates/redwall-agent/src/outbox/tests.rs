#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;

use proptest::prelude::*;

use super::*;

fn message(topic: &str, n: u32) -> Message {
    Message {
        topic: topic.into(),
        payload: n.to_string().into_bytes(),
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

fn number(message: &Message) -> u32 {
    std::str::from_utf8(&message.payload)
        .unwrap()
        .parse()
        .unwrap()
}

fn config() -> OutboxConfig {
    OutboxConfig {
        priorities: vec![
            PriorityRule {
                filter: "alarm/#".into(),
                priority: Priority::High,
            },
            PriorityRule {
                filter: "metrics/+/debug".into(),
                priority: Priority::Low,
            },
            PriorityRule {
                filter: "metrics/#".into(),
                priority: Priority::Normal,
            },
            PriorityRule {
                filter: "bulk/#".into(),
                priority: Priority::Low,
            },
        ],
        ..OutboxConfig::default()
    }
}

/// Takes, releases and completes the next message, as the bridge does
/// on PUBREC and PUBCOMP.
fn deliver(outbox: &mut Outbox) -> Option<Message> {
    let f = outbox.take_next().unwrap()?;
    outbox.mark_released(f.pkid).unwrap();
    outbox.complete(f.pkid, false).unwrap();
    Some(f.message)
}

fn deliver_all(outbox: &mut Outbox) -> Vec<(String, u32)> {
    std::iter::from_fn(|| deliver(outbox))
        .map(|m| (m.topic.clone(), number(&m)))
        .collect()
}

fn segments(dir: &Path, priority: Priority) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(OUTBOX_DIR).join(priority.name()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn messages_leave_by_priority_and_in_order_within_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    let sent = [
        ("metrics/a", 1),
        ("bulk/x", 2),
        ("alarm/fire", 3),
        ("other", 4),
        ("metrics/a/debug", 5),
        ("alarm/smoke", 6),
        ("metrics/b", 7),
    ];
    for (topic, n) in sent {
        outbox.append(message(topic, n), 0).unwrap();
    }
    assert_eq!(outbox.stats().queued, [2, 3, 2]);
    assert_eq!(
        deliver_all(&mut outbox),
        vec![
            ("alarm/fire".into(), 3),
            ("alarm/smoke".into(), 6),
            ("metrics/a".into(), 1),
            ("other".into(), 4),
            ("metrics/b".into(), 7),
            ("bulk/x".into(), 2),
            ("metrics/a/debug".into(), 5),
        ]
    );
    let stats = outbox.stats();
    assert_eq!(stats.delivered, 7);
    assert_eq!(stats.queued, [0, 0, 0]);
    assert_eq!(stats.queued_bytes, 0);
    assert_eq!(stats.lost(), 0);
}

#[test]
fn the_first_matching_rule_decides_the_priority() {
    let config = config();
    assert_eq!(config.priority_of("alarm/x/y"), Priority::High);
    // The debug rule comes before the general metrics rule.
    assert_eq!(config.priority_of("metrics/m1/debug"), Priority::Low);
    assert_eq!(config.priority_of("metrics/m1/value"), Priority::Normal);
    assert_eq!(config.priority_of("unmatched/topic"), Priority::Normal);
    assert_eq!(config.priority_of("$SYS/alarm"), Priority::Normal);
    let bad = OutboxConfig {
        priorities: vec![PriorityRule {
            filter: "a/#/b".into(),
            priority: Priority::Low,
        }],
        ..OutboxConfig::default()
    };
    assert!(matches!(bad.check(), Err(OutboxError::Config(_))));
    assert!(matches!(
        Outbox::open(tempfile::tempdir().unwrap().path(), &bad),
        Err(OutboxError::Config(_))
    ));
}

/// A message on `topic` numbered `n` that costs exactly `cost` bytes.
fn sized(topic: &str, n: u32, cost: u64) -> Message {
    let mut m = message(topic, n);
    let base = record::framed_message_len(&m);
    m.payload
        .resize(m.payload.len() + (cost - base) as usize, b' ');
    m
}

#[test]
fn drop_oldest_drops_the_oldest_of_the_lowest_priority_first() {
    let dir = tempfile::tempdir().unwrap();
    let cost = 256;
    let config = OutboxConfig {
        max_bytes: 4 * cost,
        priorities: vec![
            PriorityRule {
                filter: "h/#".into(),
                priority: Priority::High,
            },
            PriorityRule {
                filter: "l/#".into(),
                priority: Priority::Low,
            },
        ],
        ..OutboxConfig::default()
    };
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    for (topic, n) in [("l/x", 1), ("n/x", 2), ("l/x", 3), ("h/x", 4)] {
        let appended = outbox.append(sized(topic, n, cost), 0).unwrap();
        assert!(matches!(appended, Appended::Stored { .. }), "{topic} {n}");
    }
    assert_eq!(outbox.queued_bytes(), config.max_bytes);
    // Full: a normal message pushes out the oldest low one, then the next.
    for n in [5, 6] {
        assert!(matches!(
            outbox.append(sized("n/x", n, cost), 0).unwrap(),
            Appended::Stored { .. }
        ));
    }
    assert_eq!(outbox.stats().dropped, [0, 0, 2]);
    // No low message left: a new low one is refused, not traded for a
    // normal or high one.
    assert_eq!(
        outbox.append(sized("l/x", 7, cost), 0).unwrap(),
        Appended::Refused
    );
    // A high one drops the oldest normal.
    assert!(matches!(
        outbox.append(sized("h/x", 8, cost), 0).unwrap(),
        Appended::Stored { .. }
    ));
    let stats = outbox.stats();
    assert_eq!(stats.dropped, [0, 1, 2]);
    assert_eq!(stats.refused, [0, 0, 1]);
    assert_eq!(stats.queued_bytes, config.max_bytes);
    let left: Vec<u32> = std::iter::from_fn(|| deliver(&mut outbox))
        .map(|m| number_trimmed(&m))
        .collect();
    assert_eq!(left, vec![4, 8, 5, 6]);

    // The counters survive a restart.
    drop(outbox);
    let outbox = Outbox::open(dir.path(), &config).unwrap();
    let stats = outbox.stats();
    assert_eq!(stats.dropped, [0, 1, 2]);
    assert_eq!(stats.refused, [0, 0, 1]);
    assert_eq!(stats.delivered, 4);
}

#[test]
fn drop_oldest_drops_a_message_queued_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cost = 256;
    let config = OutboxConfig {
        max_bytes: 4 * cost,
        ..OutboxConfig::default()
    };
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    for n in 1..=4 {
        outbox.append(sized("t/x", n, cost), 0).unwrap();
    }
    drop(outbox);
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    outbox.append(sized("t/x", 5, cost), 0).unwrap();
    drop(outbox);
    // The drop is persisted: message 1 does not come back.
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    assert_eq!(outbox.stats().dropped, [0, 1, 0]);
    let left: Vec<u32> = std::iter::from_fn(|| deliver(&mut outbox))
        .map(|m| number_trimmed(&m))
        .collect();
    assert_eq!(left, vec![2, 3, 4, 5]);
}

#[test]
fn refuse_new_keeps_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let one = record::framed_message_len(&message("t/x", 10));
    let config = OutboxConfig {
        max_bytes: one * (2048 / one),
        drop_policy: DropPolicy::RefuseNew,
        ..OutboxConfig::default()
    };
    let room = config.max_bytes / one;
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    for n in 0..room {
        let appended = outbox.append(message("t/x", 10 + n as u32), 0).unwrap();
        assert!(matches!(appended, Appended::Stored { .. }));
    }
    assert_eq!(outbox.queued_bytes(), config.max_bytes);
    for n in 0..3 {
        assert_eq!(
            outbox.append(message("t/x", 90 + n), 0).unwrap(),
            Appended::Refused
        );
    }
    let stats = outbox.stats();
    assert_eq!(stats.refused, [0, 3, 0]);
    assert_eq!(stats.dropped, [0, 0, 0]);
    let delivered: Vec<u32> = deliver_all(&mut outbox)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(delivered, (10..10 + room as u32).collect::<Vec<_>>());
    // Room again once delivered.
    assert!(matches!(
        outbox.append(message("t/x", 99), 0).unwrap(),
        Appended::Stored { .. }
    ));
}

#[test]
fn a_message_larger_than_the_outbox_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig {
        max_bytes: 2048,
        ..OutboxConfig::default()
    };
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    outbox.append(message("t", 1), 0).unwrap();
    let mut big = message("t", 2);
    big.payload = vec![7; 4096];
    assert_eq!(outbox.append(big, 0).unwrap(), Appended::TooLarge);
    assert_eq!(outbox.stats().too_large, 1);
    // What was queued is untouched.
    assert_eq!(deliver_all(&mut outbox), vec![("t".into(), 1)]);
}

#[test]
fn the_message_in_flight_survives_a_restart_with_its_packet_id_and_phase() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    for n in 1..=3 {
        outbox.append(message("t", n), 0).unwrap();
    }
    let first = outbox.take_next().unwrap().unwrap();
    assert_eq!(first.phase, Phase::Published);
    assert!(
        outbox.take_next().is_err(),
        "one message in flight at a time"
    );
    drop(outbox);

    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    assert_eq!(outbox.in_flight(), Some(&first));
    outbox.mark_released(first.pkid).unwrap();
    drop(outbox);

    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    let released = outbox.in_flight().unwrap().clone();
    assert_eq!(released.phase, Phase::Released);
    assert_eq!(released.pkid, first.pkid);
    assert!(outbox.complete(first.pkid.wrapping_add(1), true).is_err());
    let second = outbox.complete(first.pkid, true).unwrap().unwrap();
    assert_eq!(number(&second.message), 2);
    assert_ne!(second.pkid, first.pkid);
    drop(outbox);

    // Delivered stays delivered; the one in flight is still the second.
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    assert_eq!(outbox.in_flight(), Some(&second));
    assert_eq!(outbox.stats().delivered, 1);
    outbox.mark_released(second.pkid).unwrap();
    outbox.complete(second.pkid, false).unwrap();
    drop(outbox);
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    assert_eq!(deliver_all(&mut outbox), vec![("t".into(), 3)]);
    assert_eq!(outbox.stats().delivered, 3);
}

#[test]
fn after_session_loss_the_message_in_flight_is_published_again_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    outbox.append(message("t", 1), 0).unwrap();
    let f = outbox.take_next().unwrap().unwrap();
    outbox.mark_released(f.pkid).unwrap();
    let again = outbox.restart_in_flight().unwrap().unwrap();
    assert_eq!(again.phase, Phase::Published);
    assert_eq!(again.pkid, f.pkid);
    assert_eq!(outbox.stats().resent_after_session_loss, 1);
}

#[test]
fn the_delivered_position_survives_restarts_and_consumed_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig {
        segment_bytes: 1024,
        ..OutboxConfig::default()
    };
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    for n in 0..200 {
        outbox.append(message("some/topic", n), 0).unwrap();
    }
    let many = segments(dir.path(), Priority::Normal).len();
    assert!(many > 5, "{many} segments");
    let mut next = 0;
    for round in 0..10 {
        for _ in 0..15 {
            let m = deliver(&mut outbox).unwrap();
            assert_eq!(number(&m), next, "round {round}");
            next += 1;
        }
        drop(outbox);
        outbox = Outbox::open(dir.path(), &config).unwrap();
        assert_eq!(outbox.queued(), 200 - u64::from(next));
    }
    let rest: Vec<u32> = deliver_all(&mut outbox)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(rest, (next..200).collect::<Vec<_>>());
    // Only the last segment is kept once everything is delivered.
    assert_eq!(segments(dir.path(), Priority::Normal).len(), 1);
    // Sequence numbers keep growing after a restart with empty queues.
    drop(outbox);
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    let Appended::Stored { seq, .. } = outbox.append(message("t", 1), 0).unwrap() else {
        panic!("not stored");
    };
    assert_eq!(seq, 201);
}

#[test]
fn a_torn_tail_is_cut_off_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    for n in 1..=5 {
        outbox.append(message("t", n), 0).unwrap();
    }
    drop(outbox);
    let segment = segments(dir.path(), Priority::Normal).pop().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    // Every possible tear inside the last record.
    let one = record::framed_message_len(&message("t", 5));
    for cut in 1..one {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), copy.path());
        let torn = copy.path().join(segment.strip_prefix(dir.path()).unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&torn)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        let mut outbox = Outbox::open(copy.path(), &config()).unwrap();
        assert_eq!(outbox.stats().damaged, 1, "cut {cut}");
        outbox.append(message("t", 6), 0).unwrap();
        let got: Vec<u32> = deliver_all(&mut outbox)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4, 6], "cut {cut}");
    }
}

#[test]
fn a_damaged_record_cuts_its_segment_there_and_nothing_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    for n in 1..=5 {
        outbox.append(message("t", n), 0).unwrap();
    }
    drop(outbox);
    let segment = segments(dir.path(), Priority::Normal).pop().unwrap();
    let one = record::framed_message_len(&message("t", 1)) as usize;
    let mut bytes = std::fs::read(&segment).unwrap();
    // A payload byte of the third record.
    bytes[2 * one + one - 1] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    assert_eq!(outbox.stats().damaged, 1);
    let got: Vec<u32> = deliver_all(&mut outbox)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(got, vec![1, 2]);

    // Garbage where the delivery state should be: a fresh state, no panic.
    drop(outbox);
    std::fs::write(
        dir.path().join(OUTBOX_DIR).join("delivery.log"),
        b"\xff\xff\xff\xff junk",
    )
    .unwrap();
    let outbox = Outbox::open(dir.path(), &config()).unwrap();
    assert!(outbox.stats().damaged >= 1);
}

#[test]
fn a_segment_damaged_after_open_is_skipped_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig {
        segment_bytes: 1024,
        ..OutboxConfig::default()
    };
    let mut outbox = Outbox::open(dir.path(), &config).unwrap();
    for n in 0..100 {
        outbox.append(message("t", n), 0).unwrap();
    }
    let first = segments(dir.path(), Priority::Normal).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let got: Vec<u32> = deliver_all(&mut outbox)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(outbox.stats().damaged, 1);
    assert!(
        !got.is_empty() && got[0] > 0,
        "the first segment is skipped"
    );
    assert_eq!(got, (got[0]..100).collect::<Vec<_>>());
}

#[test]
fn one_outbox_per_directory_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path(), &config()).unwrap();
    assert!(matches!(
        Outbox::open(dir.path(), &config()),
        Err(OutboxError::Busy(_))
    ));
    drop(outbox);
    Outbox::open(dir.path(), &config()).unwrap();
}

#[test]
fn files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    outbox.append(message("t", 1), 0).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = dir.path().join(OUTBOX_DIR);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("normal")), 0o700);
    assert_eq!(mode(&root.join("delivery.log")), 0o600);
    for segment in segments(dir.path(), Priority::Normal) {
        assert_eq!(mode(&segment), 0o600);
    }
    // A directory left open by someone is closed again.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(outbox);
    Outbox::open(dir.path(), &config()).unwrap();
    assert_eq!(mode(&root), 0o700);
}

#[test]
fn a_redelivery_is_recognised_by_packet_id_and_content_also_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), &config()).unwrap();
    outbox.append(message("t", 1), 17).unwrap();
    assert!(outbox.recently_stored(17, &message("t", 1)));
    assert!(!outbox.recently_stored(18, &message("t", 1)));
    assert!(!outbox.recently_stored(17, &message("t", 2)));
    drop(outbox);
    let outbox = Outbox::open(dir.path(), &config()).unwrap();
    assert!(outbox.recently_stored(17, &message("t", 1)));
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What a test run does to the outbox.
#[derive(Clone, Debug)]
enum Op {
    Append(Vec<(u8, bool)>),
    Take,
    Release,
    Complete { take_next: bool },
    Restart,
    SessionLost,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec((0u8..3, any::<bool>()), 1..6).prop_map(Op::Append),
        3 => Just(Op::Take),
        2 => Just(Op::Release),
        2 => any::<bool>().prop_map(|take_next| Op::Complete { take_next }),
        1 => Just(Op::Restart),
        1 => Just(Op::SessionLost),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Random appends, deliveries and restarts (each a crash between two
    /// calls): the outbox hands out exactly the model's messages, highest
    /// priority first and FIFO within one, never losing, repeating or
    /// reordering one that was not completed.
    #[test]
    fn nothing_unacknowledged_is_lost_repeated_or_reordered(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            segment_bytes: 1024,
            priorities: vec![
                PriorityRule { filter: "p0".into(), priority: Priority::High },
                PriorityRule { filter: "p2".into(), priority: Priority::Low },
            ],
            ..OutboxConfig::default()
        };
        let mut outbox = Outbox::open(dir.path(), &config).unwrap();
        let mut model: [VecDeque<u32>; 3] = Default::default();
        let mut in_flight: Option<(u32, u16, Phase)> = None;
        let mut delivered: Vec<u32> = Vec::new();
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Append(batch) => {
                    let mut messages = Vec::new();
                    for (p, big) in batch {
                        counter += 1;
                        let mut m = message(&format!("p{p}"), counter);
                        if big {
                            m.payload.extend(std::iter::repeat_n(b' ', 300));
                        }
                        messages.push((m, 0));
                        model[p as usize].push_back(counter);
                    }
                    for a in outbox.append_batch(messages).unwrap() {
                        prop_assert!(matches!(a, Appended::Stored { .. }), "not stored: {:?}", a);
                    }
                }
                Op::Take => {
                    let got = outbox.take_next();
                    if in_flight.is_some() {
                        prop_assert!(got.is_err());
                    } else {
                        let expected = model.iter_mut().find_map(VecDeque::pop_front);
                        let got = got.unwrap();
                        prop_assert_eq!(got.as_ref().map(|f| number_trimmed(&f.message)), expected);
                        in_flight = got.map(|f| (number_trimmed(&f.message), f.pkid, f.phase));
                    }
                }
                Op::Release => {
                    if let Some((_, pkid, phase)) = in_flight.as_mut() {
                        outbox.mark_released(*pkid).unwrap();
                        *phase = Phase::Released;
                    }
                }
                Op::Complete { take_next } => {
                    if let Some((n, pkid, Phase::Released)) = in_flight {
                        let next = outbox.complete(pkid, take_next).unwrap();
                        delivered.push(n);
                        in_flight = None;
                        if take_next {
                            let expected = model.iter_mut().find_map(VecDeque::pop_front);
                            prop_assert_eq!(next.as_ref().map(|f| number_trimmed(&f.message)), expected);
                            in_flight = next.map(|f| (number_trimmed(&f.message), f.pkid, f.phase));
                        } else {
                            prop_assert!(next.is_none());
                        }
                    }
                }
                Op::Restart => {
                    drop(outbox);
                    outbox = Outbox::open(dir.path(), &config).unwrap();
                    let restored = outbox.in_flight().map(|f| (number_trimmed(&f.message), f.pkid, f.phase));
                    prop_assert_eq!(restored, in_flight);
                }
                Op::SessionLost => {
                    if let Some((_, _, phase)) = in_flight.as_mut() {
                        outbox.restart_in_flight().unwrap();
                        *phase = Phase::Published;
                    }
                }
            }
            let queued: Vec<u64> = model.iter().map(|q| q.len() as u64).collect();
            prop_assert_eq!(outbox.stats().queued.to_vec(), queued);
        }
        // Drain: exactly the model's remaining order.
        if let Some((n, pkid, phase)) = in_flight {
            if phase == Phase::Published {
                outbox.mark_released(pkid).unwrap();
            }
            outbox.complete(pkid, false).unwrap();
            delivered.push(n);
        }
        let expected_rest: Vec<u32> = model.iter().flatten().copied().collect();
        let rest: Vec<u32> = std::iter::from_fn(|| deliver(&mut outbox)).map(|m| number_trimmed(&m)).collect();
        prop_assert_eq!(&rest, &expected_rest);
        prop_assert_eq!(delivered.len() + rest.len(), counter as usize);
        prop_assert_eq!(outbox.stats().delivered as usize, counter as usize);
        prop_assert_eq!(outbox.stats().lost(), 0);
    }
}

fn number_trimmed(message: &Message) -> u32 {
    std::str::from_utf8(&message.payload)
        .unwrap()
        .trim_end()
        .parse()
        .unwrap()
}

/// The outbox as a plain model, for the bounded property: queues of
/// (number, cost), the one in flight, and the drop policy applied the way
/// the documentation says.
struct BoundedModel {
    queues: [VecDeque<(u32, u64)>; 3],
    in_flight: Option<(u32, u64)>,
    max: u64,
    policy: DropPolicy,
}

impl BoundedModel {
    fn used(&self) -> u64 {
        self.queues.iter().flatten().map(|(_, c)| c).sum::<u64>()
            + self.in_flight.map_or(0, |(_, c)| c)
    }

    fn append(&mut self, n: u32, priority: usize, cost: u64) -> Appended {
        if cost > self.max {
            return Appended::TooLarge;
        }
        while self.used() + cost > self.max {
            if self.policy == DropPolicy::RefuseNew {
                return Appended::Refused;
            }
            let Some(lowest) = (0..3).rev().find(|p| !self.queues[*p].is_empty()) else {
                return Appended::Refused;
            };
            if lowest < priority {
                return Appended::Refused;
            }
            self.queues[lowest].pop_front();
        }
        self.queues[priority].push_back((n, cost));
        Appended::Stored {
            seq: 0,
            priority: PRIORITIES[priority],
        }
    }

    fn take(&mut self) -> Option<u32> {
        let next = self.queues.iter_mut().find_map(VecDeque::pop_front);
        self.in_flight = next;
        next.map(|(n, _)| n)
    }
}

#[derive(Clone, Debug)]
enum BoundedOp {
    Append { priority: u8, extra: u16 },
    Deliver,
    Restart,
}

fn bounded_op() -> impl Strategy<Value = BoundedOp> {
    prop_oneof![
        5 => (0u8..3, 0u16..600).prop_map(|(priority, extra)| BoundedOp::Append { priority, extra }),
        2 => Just(BoundedOp::Deliver),
        1 => Just(BoundedOp::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// With a small bound, both drop policies drop or refuse exactly what
    /// the model says, the bound always holds, the counters add up, and
    /// what is delivered is what the model kept, in order; restarts
    /// included.
    #[test]
    fn the_bound_and_the_drop_policy_behave_as_documented(
        refuse in any::<bool>(),
        ops in proptest::collection::vec(bounded_op(), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let policy = if refuse { DropPolicy::RefuseNew } else { DropPolicy::DropOldest };
        let config = OutboxConfig {
            max_bytes: 2048,
            drop_policy: policy,
            segment_bytes: 1024,
            priorities: vec![
                PriorityRule { filter: "p0".into(), priority: Priority::High },
                PriorityRule { filter: "p2".into(), priority: Priority::Low },
            ],
        };
        let mut outbox = Outbox::open(dir.path(), &config).unwrap();
        let mut model = BoundedModel {
            queues: Default::default(),
            in_flight: None,
            max: config.max_bytes,
            policy,
        };
        let mut counter = 0u32;
        let mut lost = 0u64;
        for op in ops {
            match op {
                BoundedOp::Append { priority, extra } => {
                    counter += 1;
                    let mut m = message(&format!("p{priority}"), counter);
                    m.payload.extend(std::iter::repeat_n(b' ', usize::from(extra)));
                    let cost = record::framed_message_len(&m);
                    let before = model.queues.iter().map(VecDeque::len).sum::<usize>();
                    let expected = model.append(counter, usize::from(priority), cost);
                    let after = model.queues.iter().map(VecDeque::len).sum::<usize>();
                    let got = outbox.append(m, 0).unwrap();
                    match (got, expected) {
                        (Appended::Stored { priority: a, .. }, Appended::Stored { priority: b, .. }) => {
                            prop_assert_eq!(a, b);
                            lost += (before + 1 - after) as u64;
                        }
                        (a, b) => {
                            // Refused, maybe after dropping what could go.
                            prop_assert_eq!(a, b);
                            lost += 1 + (before - after) as u64;
                        }
                    }
                }
                BoundedOp::Deliver => {
                    if let Some((n, _)) = model.in_flight.take() {
                        let f = outbox.in_flight().unwrap().clone();
                        prop_assert_eq!(number_trimmed(&f.message), n);
                        outbox.mark_released(f.pkid).unwrap();
                        outbox.complete(f.pkid, false).unwrap();
                    } else {
                        let expected = model.take();
                        let got = outbox.take_next().unwrap().map(|f| number_trimmed(&f.message));
                        prop_assert_eq!(got, expected);
                    }
                }
                BoundedOp::Restart => {
                    drop(outbox);
                    outbox = Outbox::open(dir.path(), &config).unwrap();
                }
            }
            let stats = outbox.stats();
            prop_assert!(stats.queued_bytes <= config.max_bytes);
            prop_assert_eq!(stats.queued_bytes, model.used());
            prop_assert_eq!(stats.lost(), lost);
            if refuse {
                prop_assert_eq!(stats.dropped, [0, 0, 0]);
            }
        }
        let kept: Vec<u32> = model
            .in_flight
            .iter()
            .map(|(n, _)| *n)
            .chain(model.queues.iter().flatten().map(|(n, _)| *n))
            .collect();
        let mut delivered = Vec::new();
        if let Some(f) = outbox.in_flight().cloned() {
            outbox.mark_released(f.pkid).unwrap();
            outbox.complete(f.pkid, false).unwrap();
            delivered.push(number_trimmed(&f.message));
        }
        delivered.extend(std::iter::from_fn(|| deliver(&mut outbox)).map(|m| number_trimmed(&m)));
        prop_assert_eq!(delivered, kept);
    }
}
