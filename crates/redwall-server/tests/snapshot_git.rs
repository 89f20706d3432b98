//! Snapshots in git, end to end, with a real Node-RED and a real bare
//! repository over `file://`: an Owner pushes a snapshot for review, a
//! reviewer edits the function's `.js` file and pushes to the pull branch,
//! the pull makes a new snapshot, a rollback to it runs the edit. Members
//! may not, credentials never reach the repository in the clear, and
//! repository URLs that git would read as options or helpers are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod snapshot_kit;

use common::*;
use serde_json::{json, Value};
use snapshot_kit::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The git command line, as a reviewer runs it.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .args([
            "-c",
            "user.name=Rita Reviewer",
            "-c",
            "user.email=rita@example.com",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every file under `dir` but `.git`.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_snapshot_goes_to_git_for_review_and_the_merged_edit_runs() {
    redwall_hub::snapshots::git::allow_file_repositories(true);
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "mia").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "mia", "member").await;
    create_running(&owner, &team, "line").await;

    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("flows.git");
    git(
        dir.path(),
        &["init", "--bare", "-q", bare.to_str().unwrap()],
    );
    let url = format!("file://{}", bare.display());
    let settings = format!("/api/v1/teams/{team}/git");

    // Nothing set yet; Members neither read nor set it.
    let r = owner.get(&settings).await;
    assert_eq!((r.status, &r.body["configured"]), (200, &json!(false)));
    assert_eq!(member.get(&settings).await.status, 403);
    let body = json!({
        "repository_url": url,
        "push_branch": "redwall/snapshots",
        "pull_branch": "main",
    });
    assert_eq!(member.put(&settings, body.clone()).await.status, 403);

    // URLs git would read as an option or a helper, hidden credentials, a
    // token for a non-HTTPS URL, one branch for both: refused.
    for (bad, why) in [
        (json!({"repository_url": "-uhack"}), "an option"),
        (
            json!({"repository_url": "--upload-pack=touch /tmp/x"}),
            "an option",
        ),
        (
            json!({"repository_url": "ext::sh -c touch% /tmp/pwned"}),
            "a helper",
        ),
        (
            json!({"repository_url": "https://u:pw@git.example.com/a.git"}),
            "a password",
        ),
        (json!({"token": "t0ken"}), "a token for file://"),
        (json!({"pull_branch": "redwall/snapshots"}), "one branch"),
        (json!({"push_branch": "--force"}), "an option as branch"),
    ] {
        let mut b = body.clone();
        for (k, v) in bad.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = owner.put(&settings, b).await;
        assert_eq!(r.status, 422, "{why}: {}", r.body);
        assert_eq!(r.code(), "invalid_git_settings", "{why}");
    }
    let r = owner.put(&settings, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["configured"], true);
    assert_eq!(r.body["has_token"], false);
    assert_eq!(r.body["push_branch"], "redwall/snapshots");

    // An editor deploy makes a snapshot; the Owner pushes it.
    deploy_from_editor(&s, &owner, "line", flows("hello")).await;
    let first = snapshots(&owner, &team, "line", 1).await[0].clone();
    let v1 = first["id"].as_str().unwrap().to_string();
    let push = format!("/api/v1/teams/{team}/snapshots/{v1}/git/push");
    let r = member.post(&push, json!({})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = owner.post(&push, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["changed"], true);
    let commit = r.body["commit"].as_str().unwrap().to_string();
    // The same snapshot again: nothing new (its credentials were sealed
    // under a new nonce, yet say the same).
    let r = owner.post(&push, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (&r.body["changed"], &r.body["commit"]),
        (&json!(false), &json!(commit))
    );

    // The reviewer's clone: one directory per tab, the function body as
    // plain lines, the credentials nowhere in the clear.
    let clone = dir.path().join("review");
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
    assert_eq!(git(&clone, &["log", "-1", "--format=%an"]), "olivia");
    let tab = clone.join("tabs/main-t1");
    assert!(tab.join("flow.json").is_file());
    let func = tab.join("greet-f1.func.js");
    let code = std::fs::read_to_string(&func).unwrap();
    assert!(
        code.lines().any(|l| l == "msg.payload = 'hello, ' + who;"),
        "{code}"
    );
    let flow: Value =
        serde_json::from_str(&std::fs::read_to_string(tab.join("flow.json")).unwrap()).unwrap();
    assert_eq!(flow["code"]["f1"]["func"], "greet-f1.func.js");
    assert!(flow["nodes"].to_string().contains("\"h1\""));
    assert!(
        !flow.to_string().contains("msg.payload"),
        "code stays out of the JSON"
    );
    assert!(clone.join("global/config.json").is_file());
    assert!(clone.join("credentials.sealed").is_file());
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(clone.join("redwall-snapshot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["source"]["snapshot_id"], v1.as_str());
    for file in tree(&clone) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("pw-hello"),
            "a password in {}",
            file.display()
        );
        assert!(
            !text.contains("\"plc\""),
            "a user name in {}",
            file.display()
        );
    }

    // The review: edit the function, merge into the pull branch.
    std::fs::write(&func, code.replace("'hello, '", "'reviewed hello, '")).unwrap();
    git(&clone, &["commit", "-q", "-am", "Friendlier greeting"]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);

    // Pull: a new snapshot with the edit, not deployed yet. Members may not.
    let pull = format!("/api/v1/teams/{team}/instances/line/git/pull");
    assert_eq!(member.post(&pull, json!({})).await.status, 403);
    let r = owner.post(&pull, json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["credentials"], "sealed");
    assert_eq!(r.body["snapshot"]["kind"], "imported");
    assert_eq!(r.body["branch"], "main");
    let pulled = r.body["snapshot"]["id"].as_str().unwrap().to_string();
    let detail = owner
        .get(&format!("/api/v1/teams/{team}/snapshots/{pulled}"))
        .await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(detail.text.contains("reviewed hello, "), "{}", detail.body);
    assert_eq!(detail.body["nodes_with_credentials"], json!(["b1"]));
    let instance = owner
        .get(&format!("/api/v1/teams/{team}/instances/line"))
        .await;
    assert_eq!(instance.body["running_snapshot"], v1.as_str());

    // Roll it out with the rollback: the instance serves the edit.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/line/rollback"),
            json!({"snapshot": pulled}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "done", "{}", r.body);
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/line/routes"),
            json!([{"path_prefix": "/hello", "methods": ["GET"], "policy": {"type": "public"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A visitor on the instance's own host name.
    let mut visitor = s.anonymous();
    visitor
        .headers
        .push(("host", format!("line.localhost:{}", s.running.addr.port())));
    let mut r = visitor.get("/hello").await;
    for _ in 0..100 {
        if r.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = visitor.get("/hello").await;
    }
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, "reviewed hello, world");
    // The credentials came back too: a snapshot of what runs now holds
    // exactly the pulled one's content.
    let now = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/line/snapshots"),
            json!({"note": "after the pull"}),
        )
        .await;
    assert_eq!(now.status, 201, "{}", now.body);
    let pulled_view = owner
        .get(&format!("/api/v1/teams/{team}/snapshots/{pulled}"))
        .await;
    assert_eq!(
        now.body["content_sha256"],
        pulled_view.body["snapshot"]["content_sha256"]
    );

    // Credentials sealed elsewhere are refused; without the file, the
    // instance's own are kept.
    std::fs::write(
        clone.join("credentials.sealed"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .unwrap();
    git(&clone, &["commit", "-q", "-am", "Foreign credentials"]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
    let r = owner.post(&pull, json!({})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), "git_credentials_foreign");
    git(&clone, &["rm", "-q", "credentials.sealed"]);
    git(&clone, &["commit", "-q", "-m", "No credentials"]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
    let r = owner.post(&pull, json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["credentials"], "kept_from_instance");
    assert_eq!(
        r.body["snapshot"]["content_sha256"], pulled_view.body["snapshot"]["content_sha256"],
        "the same flows with the instance's same credentials"
    );

    // A branch that is not there.
    let mut other = body.clone();
    other["pull_branch"] = json!("nowhere");
    assert_eq!(owner.put(&settings, other).await.status, 200);
    let r = owner.post(&pull, json!({})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "git_branch_missing");

    assert_eq!(audit_events(&admin, "git.settings_changed").await.len(), 2);
    assert_eq!(audit_events(&admin, "git.pushed").await.len(), 2);
    let pulls = audit_events(&admin, "git.pulled").await;
    assert_eq!(pulls.len(), 4, "{pulls:?}");
    assert_eq!(
        pulls.iter().filter(|e| e["outcome"] == "failure").count(),
        2,
        "{pulls:?}"
    );
    s.assert_audit_intact().await;
    s.stop().await;
}
