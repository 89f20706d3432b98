//! Rules for snapshots of an instance's flows: the note a person attaches,
//! the passphrase an exported snapshot is sealed with, and which snapshots
//! retention may delete.
//!
//! Retention only ever deletes snapshots Redwall took by itself (before
//! each deploy, before each rollback), keeps the newest few of those, and
//! never deletes one that is in use: a snapshot someone took or imported on
//! purpose, or one that is running or that a pipeline or a scheduled
//! deploy refers to, is never lost to housekeeping.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{password_policy, refused, Micros, RuleError};

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// Automatic snapshots kept per instance unless configured otherwise.
pub const DEFAULT_KEEP_AUTOMATIC: usize = 20;
/// Most automatic snapshots that may be kept per instance.
pub const MAX_KEEP_AUTOMATIC: usize = 1000;
/// Shortest passphrase an export is sealed with, in characters.
pub const MIN_EXPORT_PASSPHRASE_CHARS: usize = 12;
/// Longest passphrase, in bytes: it is stretched by a deliberately
/// expensive key derivation, which must not be fed a huge body.
pub const MAX_EXPORT_PASSPHRASE_BYTES: usize = 1024;

/// A snapshot's note: at most [`MAX_NOTE_CHARS`] characters, no control
/// characters but line feed and tab (`invalid_note`). A browser's textarea
/// sends line breaks as CR LF: callers turn those into LF first.
pub fn check_note(note: &str) -> Result<(), RuleError> {
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(refused(
            "invalid_note",
            format!("a note has at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    if note
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(refused(
            "invalid_note",
            "a note must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

/// How many automatic snapshots to keep: 1 to [`MAX_KEEP_AUTOMATIC`]
/// (`invalid_retention`).
pub fn check_keep_automatic(n: usize) -> Result<(), RuleError> {
    if (1..=MAX_KEEP_AUTOMATIC).contains(&n) {
        Ok(())
    } else {
        Err(refused(
            "invalid_retention",
            format!("keep between 1 and {MAX_KEEP_AUTOMATIC} automatic snapshots"),
        ))
    }
}

/// The passphrase an exported snapshot is sealed with (`weak_passphrase`):
/// an export leaves Redwall and can be attacked offline, so it follows the
/// password rule (at least [`MIN_EXPORT_PASSPHRASE_CHARS`] characters, no
/// control characters, not a well-known password, see
/// [`password_policy::check_password`]) and is at most
/// [`MAX_EXPORT_PASSPHRASE_BYTES`] bytes.
pub fn check_export_passphrase(p: &str) -> Result<(), RuleError> {
    if p.chars().count() < MIN_EXPORT_PASSPHRASE_CHARS {
        return Err(refused(
            "weak_passphrase",
            format!("the passphrase must have at least {MIN_EXPORT_PASSPHRASE_CHARS} characters"),
        ));
    }
    if p.len() > MAX_EXPORT_PASSPHRASE_BYTES {
        return Err(refused(
            "weak_passphrase",
            format!("the passphrase must have at most {MAX_EXPORT_PASSPHRASE_BYTES} bytes"),
        ));
    }
    match password_policy::check_password(p, "") {
        Ok(()) => Ok(()),
        Err(password_policy::PasswordProblem::ControlCharacters) => Err(refused(
            "weak_passphrase",
            "the passphrase must not contain control characters",
        )),
        Err(_) => Err(refused(
            "weak_passphrase",
            "the passphrase is too common; choose a longer, less predictable one",
        )),
    }
}

/// Where a snapshot came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Taken by Redwall before a deploy; pruned by retention.
    Automatic,
    /// Taken by a person on purpose; never pruned.
    Manual,
    /// Imported from an export; never pruned.
    Imported,
    /// Taken by Redwall before a rollback, so the rollback can be undone;
    /// pruned by retention like automatic ones.
    BeforeRollback,
}

impl SnapshotKind {
    pub const ALL: [SnapshotKind; 4] = [
        SnapshotKind::Automatic,
        SnapshotKind::Manual,
        SnapshotKind::Imported,
        SnapshotKind::BeforeRollback,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Automatic => "automatic",
            SnapshotKind::Manual => "manual",
            SnapshotKind::Imported => "imported",
            SnapshotKind::BeforeRollback => "before_rollback",
        }
    }

    pub fn parse(s: &str) -> Option<SnapshotKind> {
        SnapshotKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether retention may delete snapshots of this kind.
    pub fn is_prunable(self) -> bool {
        matches!(self, SnapshotKind::Automatic | SnapshotKind::BeforeRollback)
    }
}

/// One snapshot as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionEntry<'a> {
    pub id: &'a str,
    pub kind: SnapshotKind,
    pub created_at: Micros,
    /// Running on an instance, or referred to by a pipeline or a scheduled
    /// deploy.
    pub in_use: bool,
}

/// The snapshots retention deletes, oldest first.
///
/// Only [`SnapshotKind::is_prunable`] kinds are ever deleted. Of those not
/// in use, the newest `keep_last` (by `created_at`, then by id) are kept and
/// the rest deleted. Snapshots in use are never deleted and do not count
/// against `keep_last`: an old snapshot kept running must not push a newer
/// one out of the history. A `keep_last` of 0 (which
/// [`check_keep_automatic`] refuses) is read as 1, so a slip never empties
/// the history.
///
/// An id listed more than once is judged once, and is kept if any of its
/// entries is in use or not prunable.
pub fn automatic_to_prune<'a>(entries: &[RetentionEntry<'a>], keep_last: usize) -> Vec<&'a str> {
    let protected: HashSet<&str> = entries
        .iter()
        .filter(|e| e.in_use || !e.kind.is_prunable())
        .map(|e| e.id)
        .collect();
    let mut seen = HashSet::new();
    let mut candidates: Vec<(Micros, &'a str)> = entries
        .iter()
        .filter(|e| !protected.contains(e.id) && seen.insert(e.id))
        .map(|e| (e.created_at, e.id))
        .collect();
    // Newest first.
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    let mut pruned: Vec<&'a str> = candidates
        .into_iter()
        .skip(keep_last.max(1))
        .map(|(_, id)| id)
        .collect();
    pruned.reverse();
    pruned
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn notes_are_bounded_printable_text() {
        for ok in [
            "",
            "before the line 3 change",
            "two\nlines",
            "a\ttab",
            "ünïcode ✓",
            &"x".repeat(MAX_NOTE_CHARS),
            &"é".repeat(MAX_NOTE_CHARS),
        ] {
            assert!(check_note(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "a\rb",
            "\u{1b}[31m",
            "nul\0",
            "\u{7f}",
            "\u{85}",
            &"x".repeat(MAX_NOTE_CHARS + 1),
            &"é".repeat(MAX_NOTE_CHARS + 1),
        ] {
            assert_eq!(check_note(bad).unwrap_err().code, "invalid_note", "{bad:?}");
        }
    }

    /// Every character of the first two Unicode blocks, alone in a note.
    #[test]
    fn every_latin1_character_is_judged() {
        for c in '\0'..='\u{ff}' {
            let allowed =
                !(c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c)) || c == '\n' || c == '\t';
            assert_eq!(check_note(&c.to_string()).is_ok(), allowed, "{c:?}");
        }
    }

    #[test]
    fn retention_is_one_to_a_thousand() {
        assert!((1..=MAX_KEEP_AUTOMATIC).all(|n| check_keep_automatic(n).is_ok()));
        for bad in [0, MAX_KEEP_AUTOMATIC + 1, usize::MAX] {
            assert_eq!(
                check_keep_automatic(bad).unwrap_err().code,
                "invalid_retention"
            );
        }
        assert!(check_keep_automatic(DEFAULT_KEEP_AUTOMATIC).is_ok());
    }

    #[test]
    fn export_passphrases_are_long_and_uncommon() {
        assert!(check_export_passphrase("correct horse battery").is_ok());
        assert!(check_export_passphrase(&"ab9!".repeat(256)).is_ok());
        assert!(
            check_export_passphrase("éàüöñçøåßœæ9").is_ok(),
            "12 characters, 23 bytes"
        );
        for bad in [
            "",
            "short pass",
            "ééééééééééé",
            "password1234",
            "123456789012",
            "aaaaaaaaaaaaaaaa",
            "with a\u{1b}escape!",
            &"ab9!".repeat(256).replace('a', "é"),
            &"x9".repeat(513),
        ] {
            assert_eq!(
                check_export_passphrase(bad).unwrap_err().code,
                "weak_passphrase",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn kinds_have_stable_names() {
        for kind in SnapshotKind::ALL {
            assert_eq!(SnapshotKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            assert_eq!(
                serde_json::from_value::<SnapshotKind>(serde_json::json!(kind.as_str())).unwrap(),
                kind
            );
        }
        let names: Vec<_> = SnapshotKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["automatic", "manual", "imported", "before_rollback"]
        );
        assert_eq!(SnapshotKind::parse("Automatic"), None);
        assert_eq!(SnapshotKind::parse("before-rollback"), None);
        let prunable: Vec<_> = SnapshotKind::ALL
            .into_iter()
            .filter(|k| k.is_prunable())
            .collect();
        assert_eq!(
            prunable,
            [SnapshotKind::Automatic, SnapshotKind::BeforeRollback]
        );
    }

    fn entry(id: &str, kind: SnapshotKind, created_at: Micros, in_use: bool) -> RetentionEntry<'_> {
        RetentionEntry {
            id,
            kind,
            created_at,
            in_use,
        }
    }

    #[test]
    fn the_newest_automatic_ones_are_kept() {
        use SnapshotKind::*;
        let entries = [
            entry("a1", Automatic, 1, false),
            entry("m2", Manual, 2, false),
            entry("a3", Automatic, 3, false),
            entry("r4", BeforeRollback, 4, false),
            entry("i5", Imported, 5, false),
            entry("a0", Automatic, 0, true),
            entry("a6", Automatic, 6, false),
        ];
        assert_eq!(automatic_to_prune(&entries, 2), ["a1", "a3"]);
        assert_eq!(automatic_to_prune(&entries, 3), ["a1"]);
        assert!(automatic_to_prune(&entries, 4).is_empty());
        assert_eq!(automatic_to_prune(&entries, 1), ["a1", "a3", "r4"]);
        assert_eq!(
            automatic_to_prune(&entries, 0),
            ["a1", "a3", "r4"],
            "0 is read as 1"
        );
        assert!(automatic_to_prune(&[], 1).is_empty());
    }

    #[test]
    fn equal_times_are_ordered_by_id() {
        let entries = [
            entry("b", SnapshotKind::Automatic, 7, false),
            entry("c", SnapshotKind::Automatic, 7, false),
            entry("a", SnapshotKind::Automatic, 7, false),
        ];
        assert_eq!(automatic_to_prune(&entries, 1), ["a", "b"]);
        assert_eq!(automatic_to_prune(&entries, 2), ["a"]);
    }

    #[test]
    fn an_id_listed_twice_is_kept_if_either_entry_protects_it() {
        let entries = [
            entry("x", SnapshotKind::Automatic, 1, false),
            entry("x", SnapshotKind::Automatic, 1, true),
            entry("y", SnapshotKind::Automatic, 2, false),
            entry("y", SnapshotKind::Manual, 2, false),
            entry("z", SnapshotKind::Automatic, 0, false),
            entry("z", SnapshotKind::Automatic, 0, false),
            entry("new", SnapshotKind::Automatic, 9, false),
        ];
        assert_eq!(automatic_to_prune(&entries, 1), ["z"]);
    }

    fn key<'a>(e: &RetentionEntry<'a>) -> (Micros, &'a str) {
        (e.created_at, e.id)
    }

    fn entries() -> impl Strategy<Value = Vec<(usize, SnapshotKind, Micros, bool)>> {
        prop::collection::vec(
            (
                0..40usize,
                prop::sample::select(SnapshotKind::ALL.to_vec()),
                0..20 as Micros,
                any::<bool>(),
            ),
            0..40,
        )
    }

    proptest! {
        #[test]
        fn retention_keeps_what_it_promises(raw in entries(), keep in 0..12usize) {
            let ids: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
            // One entry per id, as the store lists them.
            let mut seen = HashSet::new();
            let list: Vec<RetentionEntry> = raw
                .iter()
                .filter(|(i, ..)| seen.insert(*i))
                .map(|(i, kind, at, in_use)| entry(&ids[*i], *kind, *at, *in_use))
                .collect();
            let pruned = automatic_to_prune(&list, keep);
            let pruned_set: HashSet<&str> = pruned.iter().copied().collect();
            prop_assert_eq!(pruned_set.len(), pruned.len(), "no id twice");
            let candidates: Vec<&RetentionEntry> = list.iter().filter(|e| e.kind.is_prunable() && !e.in_use).collect();
            let kept: Vec<&RetentionEntry> = candidates.iter().copied().filter(|e| !pruned_set.contains(e.id)).collect();
            for e in &list {
                if pruned_set.contains(e.id) {
                    // Only automatic kinds, never in use.
                    prop_assert!(e.kind.is_prunable());
                    prop_assert!(!e.in_use);
                    // Older than every kept automatic one.
                    for k in &kept {
                        prop_assert!(key(e) < key(k));
                    }
                }
            }
            // Exactly keep_last (at least 1) kept when enough exist.
            prop_assert_eq!(kept.len(), candidates.len().min(keep.max(1)));
            // Oldest first.
            let order: Vec<(Micros, &str)> = pruned.iter().map(|id| key(list.iter().find(|e| e.id == *id).unwrap())).collect();
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn manual_imported_and_in_use_snapshots_are_never_pruned(raw in entries(), keep in 0..3usize) {
            let ids: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
            let list: Vec<RetentionEntry> = raw.iter().map(|(i, kind, at, in_use)| entry(&ids[*i], *kind, *at, *in_use)).collect();
            let pruned = automatic_to_prune(&list, keep);
            for e in &list {
                if matches!(e.kind, SnapshotKind::Manual | SnapshotKind::Imported) || e.in_use {
                    prop_assert!(!pruned.contains(&e.id), "{:?}", e);
                }
            }
        }
    }
}
