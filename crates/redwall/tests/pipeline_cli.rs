//! Instance groups, deploys and pipelines through the real binary:
//! `redwall serve` as a child process (no Node-RED: a snapshot is imported
//! from a flows file, and a deploy to a stopped instance ends failed before
//! anything is loaded), driven by `redwall group`, `redwall deploy` and
//! `redwall pipeline`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use base64::Engine as _;
use serde_json::{json, Value};
use std::process::{Command, Output};

mod serve_kit;
use serve_kit::*;

/// `redwall <command> <args>` against `s` with `token` and `--team team`.
fn cli(s: &Serving, token: &str, team: &str, command: &str, args: &[&str]) -> Output {
    let words: Vec<&str> = std::iter::once(command)
        .chain(args.iter().copied())
        .collect();
    team_cli(s, token, team, &words, &[], None)
}

/// Requires a usage error (exit 2, no API code); returns stderr.
fn usage(o: Output) -> String {
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A user with `role` in the team and a full token of theirs.
async fn member_token(admin: &Api, s: &Serving, team: &str, user: &str, role: &str) -> String {
    join(admin, s, team, user, role).await.token("full").await.0
}

/// The table row that starts with `first` (its first column).
fn row<'a>(out: &'a str, first: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
}

#[test]
fn the_help_names_every_command() {
    let out = ok(Command::new(BIN).arg("--help").output().unwrap());
    for command in ["group", "deploy", "pipeline"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{out}"
        );
    }
    for (command, subs) in [
        ("group", &["list", "set", "delete"][..]),
        (
            "pipeline",
            &[
                "list",
                "create",
                "delete",
                "promote",
                "promotions",
                "approve",
            ][..],
        ),
    ] {
        let out = ok(Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap());
        for sub in subs {
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
                "{command} {sub} missing from:\n{out}"
            );
        }
    }
    let out = ok(Command::new(BIN)
        .args(["deploy", "--help"])
        .output()
        .unwrap());
    for flag in [
        "SNAPSHOT_ID",
        "--instance",
        "--group",
        "--only",
        "--not-before",
        "--window",
        "UTC",
    ] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
    // One target, and only one.
    let o = Command::new(BIN)
        .args(["deploy", "0123456789abcdef0123456789abcdef"])
        .env_remove("REDWALL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[tokio::test]
async fn groups_and_pipelines_are_managed_by_owners_and_refusals_are_explained() {
    let data = DataDir::without_instances();
    let s = data.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    for name in ["dev", "prod"] {
        admin
            .post(
                &format!("/api/v1/teams/{team}/instances"),
                json!({"name": name, "start": false}),
            )
            .await;
    }
    // A snapshot to promote, imported from a flows file (not deployed).
    let flows = json!([
        {"id": "t1", "type": "tab", "label": "Line 1"},
        {"id": "n1", "type": "function", "z": "t1", "name": "scale", "func": "return msg;",
         "wires": [[]]}
    ]);
    let file = base64::engine::general_purpose::STANDARD.encode(flows.to_string());
    let snap = admin
        .post(
            &format!("/api/v1/teams/{team}/instances/dev/snapshots/import"),
            json!({"file": file, "note": "v1"}),
        )
        .await["snapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Made now: the admin's connection would idle while the CLI runs.
    let member = member_token(&admin, &s, &team, "martin", "member").await;
    let oscar = member_token(&admin, &s, &team, "oscar", "owner").await;
    drop(admin);
    let owner = |command: &str, args: &[&str]| cli(&s, &pat, &team, command, args);
    let as_member = |command: &str, args: &[&str]| cli(&s, &member, &team, command, args);

    // Groups: empty, set, listed with the instances' names, replaced.
    let out = ok(owner("group", &["list"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("NAME") && out.contains("INSTANCES"),
        "{out}"
    );
    let out = ok(owner("group", &["set", "fleet", "dev", "prod"]));
    assert!(out.contains("group fleet holds 2 instance(s)"), "{out}");
    let out = ok(owner("group", &["list"]));
    let fleet = row(&out, "fleet").unwrap_or_else(|| panic!("{out}"));
    assert!(fleet.contains("dev") && fleet.contains("prod"), "{out}");
    ok(owner("group", &["set", "solo", "prod"]));
    let listed: Value = serde_json::from_str(&ok(owner("group", &["list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // An unknown instance is named; a Member may read groups but not set them.
    let err = refused(
        owner("group", &["set", "fleet", "nowhere"]),
        "invalid_target",
    );
    assert!(err.contains("nowhere"), "{err}");
    let out = ok(as_member("group", &["list"]));
    assert!(row(&out, "fleet").is_some(), "{out}");
    let err = refused(as_member("group", &["set", "mine", "dev"]), "forbidden");
    assert!(
        err.contains(&format!(
            "only an Owner of team {team} may change instance groups"
        )),
        "{err}"
    );

    // Pipelines: empty, created with stages in command-line order, listed.
    let out = ok(owner("pipeline", &["list"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("NAME") && out.contains("STAGES"), "{out}");
    let out = ok(owner(
        "pipeline",
        &[
            "create",
            "release",
            "--stage",
            "dev=instance:dev",
            "--stage",
            "prod=group:solo:approval",
        ],
    ));
    assert!(
        out.contains("created pipeline release: dev (instance dev) -> prod (group solo, approval)"),
        "{out}"
    );
    let out = ok(as_member("pipeline", &["list"]));
    let release = row(&out, "release").unwrap_or_else(|| panic!("{out}"));
    assert!(
        release.contains("dev (instance dev) -> prod (group solo, approval)"),
        "{out}"
    );
    let listed: Value = serde_json::from_str(&ok(owner("pipeline", &["list", "--json"]))).unwrap();
    assert_eq!(listed[0]["stages"][0]["name"], "dev");
    assert_eq!(listed[0]["stages"][1]["requires_approval"], true);
    assert_eq!(
        listed[0]["stages"][1]["target"],
        json!({"kind": "group", "name": "solo"})
    );
    // A Member's create is refused, saying who may; a bad stage is a usage
    // error before anything is sent; a taken name is the API's refusal.
    let err = refused(
        as_member(
            "pipeline",
            &["create", "mine", "--stage", "dev=instance:dev"],
        ),
        "forbidden",
    );
    assert!(
        err.contains(&format!(
            "only an Owner of team {team} may create pipelines"
        )),
        "{err}"
    );
    let err = usage(owner(
        "pipeline",
        &["create", "other", "--stage", "dev:instance:dev"],
    ));
    assert!(err.contains("NAME=instance:INSTANCE"), "{err}");
    refused(
        owner(
            "pipeline",
            &["create", "release", "--stage", "dev=instance:dev"],
        ),
        "name_taken",
    );
    let err = refused(
        owner(
            "pipeline",
            &["create", "ghost", "--stage", "dev=instance:nowhere"],
        ),
        "not_found",
    );
    assert!(err.contains("does not have"), "{err}");

    // Promote: an unknown snapshot, an unknown stage, and a stage before
    // the previous one runs the snapshot are all explained.
    for unknown in ["0123456789abcdef0123456789abcdef", "nope"] {
        let err = refused(
            owner("pipeline", &["promote", "release", unknown, "--to", "dev"]),
            "not_found",
        );
        assert!(
            err.contains(&format!("team {team} has no snapshot {unknown}")),
            "{err}"
        );
        assert!(err.contains("redwall snapshot list"), "{err}");
    }
    let err = usage(owner(
        "pipeline",
        &["promote", "release", &snap, "--to", "qa"],
    ));
    assert!(
        err.contains("has no stage qa; its stages, in order: dev, prod"),
        "{err}"
    );
    let err = refused(
        owner("pipeline", &["promote", "nowhere", &snap, "--to", "dev"]),
        "not_found",
    );
    assert!(err.contains("has no pipeline nowhere"), "{err}");
    let err = refused(
        owner("pipeline", &["promote", "release", &snap, "--to", "prod"]),
        "previous_stage_not_done",
    );
    assert!(err.contains("stage prod comes after dev"), "{err}");
    let err = usage(owner(
        "pipeline",
        &[
            "promote",
            "release",
            &snap,
            "--to",
            "dev",
            "--window",
            "25:00-26:00",
        ],
    ));
    assert!(err.contains("--window"), "{err}");

    // Into dev at once: dev is stopped, so its deployment fails (exit 1),
    // and the table says why.
    let o = owner("pipeline", &["promote", "release", &snap, "--to", "dev"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("into stage dev: failed"), "{out}");
    let dev = row(&out, "dev").unwrap_or_else(|| panic!("{out}"));
    assert!(
        dev.contains("failed") && dev.contains("start it first"),
        "{out}"
    );
    assert!(stderr(&o).contains("failed on 1 of 1 target(s): dev"));

    // A stage that needs approval: held; the promoter may not approve it,
    // a Member may not, another Owner does (and its deploy fails the same
    // way, prod being stopped too).
    ok(owner(
        "pipeline",
        &["create", "direct", "--stage", "prod=instance:prod:approval"],
    ));
    let out = ok(owner(
        "pipeline",
        &["promote", "direct", &snap, "--to", "prod"],
    ));
    assert!(out.contains("into stage prod: awaiting_approval"), "{out}");
    assert!(out.contains("redwall pipeline approve"), "{out}");
    let promotion = out
        .lines()
        .find_map(|l| l.strip_prefix("promotion "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    let out = ok(as_member("pipeline", &["promotions", "direct"]));
    let held = row(&out, &promotion).unwrap_or_else(|| panic!("{out}"));
    assert!(held.contains(" prod "), "{out}");
    assert!(held.contains(&snap[..8]) && !held.contains(&snap), "{out}");
    assert!(
        held.contains("awaiting_approval") && held.contains("admin"),
        "{out}"
    );
    for column in ["STAGE", "SNAPSHOT", "STATE", "PROMOTED BY", "APPROVED BY"] {
        assert!(out.contains(column), "{out}");
    }
    let err = refused(
        owner("pipeline", &["approve", &promotion]),
        "approval_by_promoter",
    );
    assert!(
        err.contains("you promoted it: another Owner of the team must approve"),
        "{err}"
    );
    let err = refused(as_member("pipeline", &["approve", &promotion]), "forbidden");
    assert!(err.contains("only an Owner"), "{err}");
    let o = cli(&s, &oscar, &team, "pipeline", &["approve", &promotion]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("approved promotion {promotion}")));
    assert!(
        stdout(&o).contains("into stage prod: failed"),
        "{}",
        stdout(&o)
    );
    let err = refused(
        cli(&s, &oscar, &team, "pipeline", &["approve", &promotion]),
        "not_awaiting_approval",
    );
    assert!(err.contains("not waiting for approval"), "{err}");
    let out = ok(owner("pipeline", &["promotions", "direct"]));
    let done = row(&out, &promotion).unwrap();
    assert!(done.contains("oscar") && done.contains("failed"), "{out}");

    // Deploy: held for a window it waits (exit 0); at once to a stopped
    // instance it fails (exit 1); unknown names are explained.
    let out = ok(owner(
        "deploy",
        &[
            &snap,
            "--group",
            "fleet",
            "--only",
            "prod",
            "--not-before",
            "2999-01-01T00:00:00Z",
        ],
    ));
    assert!(
        out.contains("(not before 2999-01-01T00:00:00Z, UTC)"),
        "{out}"
    );
    let prod = row(&out, "prod").unwrap_or_else(|| panic!("{out}"));
    assert!(prod.contains("waiting"), "{out}");
    assert!(row(&out, "dev").is_none(), "only prod: {out}");
    let o = owner("deploy", &[&snap, "--instance", "dev"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(row(&stdout(&o), "dev").unwrap().contains("failed"));
    let err = refused(owner("deploy", &[&snap, "--group", "nowhere"]), "not_found");
    assert!(err.contains("has no group nowhere"), "{err}");
    let err = refused(
        owner(
            "deploy",
            &["0123456789abcdef0123456789abcdef", "--instance", "dev"],
        ),
        "not_found",
    );
    assert!(err.contains("has no snapshot"), "{err}");
    let err = refused(
        as_member("deploy", &[&snap, "--instance", "dev"]),
        "forbidden",
    );
    assert!(err.contains("only an Owner"), "{err}");

    // Deleting: a Member may not; unknown names are explained.
    refused(as_member("pipeline", &["delete", "release"]), "forbidden");
    let out = ok(owner("pipeline", &["delete", "release"]));
    assert!(out.contains("deleted pipeline release"), "{out}");
    let out = ok(owner("pipeline", &["list"]));
    assert!(row(&out, "release").is_none(), "{out}");
    let err = refused(owner("pipeline", &["delete", "release"]), "not_found");
    assert!(err.contains("has no pipeline release"), "{err}");
    let err = refused(owner("pipeline", &["promotions", "release"]), "not_found");
    assert!(err.contains("has no pipeline release"), "{err}");
    ok(owner("group", &["delete", "fleet"]));
    let out = ok(owner("group", &["list"]));
    assert!(
        row(&out, "fleet").is_none() && row(&out, "solo").is_some(),
        "{out}"
    );
    let err = refused(owner("group", &["delete", "fleet"]), "not_found");
    assert!(err.contains("has no group fleet"), "{err}");
}
