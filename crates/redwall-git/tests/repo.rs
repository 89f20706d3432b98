//! Pushes and fetches against a real bare repository over `file://`, with
//! the git command line: exact trees, no empty commits, a branch that moved
//! on is never overwritten, symbolic links and submodules are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use redwall_git::{fetch_files, push_files, Commit, GitError, Remote};

/// git for the test's own work (as a reviewer would run it).
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .args([
            "-c",
            "user.name=Reviewer",
            "-c",
            "user.email=reviewer@example.com",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn bare(dir: &Path) -> String {
    let repo = dir.join("flows.git");
    git(dir, &["init", "--bare", "-q", repo.to_str().unwrap()]);
    format!("file://{}", repo.display())
}

fn commit(message: &str) -> Commit<'_> {
    Commit {
        message,
        author_name: "olivia",
        author_email: "olivia@redwall.invalid",
        time: 1_700_000_000,
    }
}

fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
}

#[tokio::test]
async fn push_then_fetch_gives_exactly_the_files_and_no_empty_commits() {
    redwall_git::allow_file_urls(true);
    let dir = tempfile::tempdir().unwrap();
    let url = bare(dir.path());
    let remote = Remote::new(&url, None).unwrap();
    assert!(redwall_git::git_version()
        .await
        .unwrap()
        .starts_with("git version"));

    let first = files(&[
        ("redwall-snapshot.json", "{}\n"),
        ("tabs/main-t1/flow.json", "{\"a\": 1}\n"),
        ("tabs/main-t1/greet-f1.func.js", "return msg;\n"),
    ]);
    let pushed = push_files(&remote, "redwall/snapshots", &first, &commit("first"), &[])
        .await
        .unwrap();
    assert!(pushed.changed);
    let (head, back) = fetch_files(&remote, "redwall/snapshots").await.unwrap();
    assert_eq!(head, pushed.commit);
    assert_eq!(back, first);

    // The same files again: nothing new.
    let again = push_files(&remote, "redwall/snapshots", &first, &commit("again"), &[])
        .await
        .unwrap();
    assert_eq!(
        again,
        redwall_git::Pushed {
            commit: pushed.commit.clone(),
            changed: false
        }
    );

    // Fewer files: the tree is replaced, not merged; the history grows.
    let second = files(&[("redwall-snapshot.json", "{\"v\": 2}\n")]);
    let next = push_files(
        &remote,
        "redwall/snapshots",
        &second,
        &commit("second"),
        &[],
    )
    .await
    .unwrap();
    assert!(next.changed);
    let (_, back) = fetch_files(&remote, "redwall/snapshots").await.unwrap();
    assert_eq!(back, second);
    let clone = dir.path().join("clone");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "-b",
            "redwall/snapshots",
            &url,
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(git(&clone, &["rev-list", "--count", "HEAD"]), "2");
    assert_eq!(
        git(&clone, &["log", "-1", "--format=%an <%ae>%n%s"]),
        "olivia <olivia@redwall.invalid>\nsecond"
    );

    // No such branch.
    match fetch_files(&remote, "nope").await {
        Err(GitError::NoBranch { branch }) => assert_eq!(branch, "nope"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_branch_that_moved_on_is_never_overwritten() {
    redwall_git::allow_file_urls(true);
    let dir = tempfile::tempdir().unwrap();
    let url = bare(dir.path());
    let remote = Remote::new(&url, None).unwrap();
    let a = files(&[("a.txt", "a\n")]);
    push_files(&remote, "main", &a, &commit("a"), &[])
        .await
        .unwrap();
    // A reviewer pushes meanwhile; the next push builds on their commit.
    let clone = dir.path().join("clone");
    git(dir.path(), &["clone", "-q", &url, clone.to_str().unwrap()]);
    std::fs::write(clone.join("b.txt"), "b\n").unwrap();
    git(&clone, &["add", "b.txt"]);
    git(&clone, &["commit", "-q", "-m", "b"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    let c = files(&[("c.txt", "c\n")]);
    let pushed = push_files(&remote, "main", &c, &commit("c"), &[])
        .await
        .unwrap();
    git(&clone, &["pull", "-q", "--ff-only"]);
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), pushed.commit);
    assert_eq!(git(&clone, &["rev-list", "--count", "HEAD"]), "3");
}

#[tokio::test]
async fn links_and_submodules_in_the_tree_are_refused() {
    redwall_git::allow_file_urls(true);
    let dir = tempfile::tempdir().unwrap();
    let url = bare(dir.path());
    let remote = Remote::new(&url, None).unwrap();
    let work = dir.path().join("work");
    git(dir.path(), &["clone", "-q", &url, work.to_str().unwrap()]);
    std::fs::write(work.join("redwall-snapshot.json"), "{}").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", work.join("link")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "link"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/linked"]);
    match fetch_files(&remote, "linked").await {
        Err(GitError::Tree(why)) => assert!(why.contains("symbolic link"), "{why}"),
        other => panic!("{other:?}"),
    }
    git(&work, &["rm", "-q", "link"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    git(
        &work,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},sub"),
        ],
    );
    git(&work, &["commit", "-q", "-m", "submodule"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/sub"]);
    match fetch_files(&remote, "sub").await {
        Err(GitError::Tree(why)) => assert!(why.contains("submodule"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unreachable_and_hostile_remotes_fail_cleanly() {
    redwall_git::allow_file_urls(true);
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("file://{}/none.git", dir.path().display());
    let remote = Remote::new(&missing, None).unwrap();
    match fetch_files(&remote, "main").await {
        Err(GitError::Unreachable { .. }) => {}
        other => panic!("{other:?}"),
    }
    let bad = files(&[("../escape", "x")]);
    let url = bare(dir.path());
    let remote = Remote::new(&url, None).unwrap();
    assert!(matches!(
        push_files(&remote, "main", &bad, &commit("x"), &[]).await,
        Err(GitError::Invalid(_))
    ));
    assert!(matches!(
        push_files(&remote, "--force", &files(&[("a", "b")]), &commit("x"), &[]).await,
        Err(GitError::Invalid(_))
    ));
    // Nothing escaped into the directory.
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test]
async fn a_file_that_says_the_same_in_other_bytes_is_kept() {
    redwall_git::allow_file_urls(true);
    let dir = tempfile::tempdir().unwrap();
    let url = bare(dir.path());
    let remote = Remote::new(&url, None).unwrap();
    let first = files(&[("a.json", "{}\n"), ("credentials.sealed", "bm9uY2UtMQ==\n")]);
    let pushed = push_files(&remote, "main", &first, &commit("1"), &[])
        .await
        .unwrap();
    // Sealed again under a new nonce: the same credentials.
    let resealed = files(&[("a.json", "{}\n"), ("credentials.sealed", "bm9uY2UtMg==\n")]);
    let same = |old: &[u8]| old == b"bm9uY2UtMQ==\n";
    let keep = [redwall_git::Keep {
        path: "credentials.sealed",
        same: &same,
    }];
    let again = push_files(&remote, "main", &resealed, &commit("2"), &keep)
        .await
        .unwrap();
    assert_eq!(
        again,
        redwall_git::Pushed {
            commit: pushed.commit.clone(),
            changed: false
        }
    );
    // Other credentials: the new file goes in.
    let differ = |_: &[u8]| false;
    let keep = [redwall_git::Keep {
        path: "credentials.sealed",
        same: &differ,
    }];
    let next = push_files(&remote, "main", &resealed, &commit("3"), &keep)
        .await
        .unwrap();
    assert!(next.changed);
    let (_, back) = fetch_files(&remote, "main").await.unwrap();
    assert_eq!(back, resealed);
}
