//! Snapshots through the real binary: `redwall serve` as a child process
//! (no Node-RED: snapshots are imported from flows files and exports, and
//! rollbacks are refused before anything would be deployed), driven by
//! `redwall snapshot ...`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

mod serve_kit;
use serve_kit::*;

const PASSPHRASE: &str = "quartz-lantern-meadow-river-7";

/// `redwall snapshot <args>` against `s` with `token`, `--team team` and
/// the environment `env`, `input` on its standard input.
fn snapshot(
    s: &Serving,
    token: &str,
    team: &str,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&str>,
) -> Output {
    let words: Vec<&str> = std::iter::once("snapshot")
        .chain(args.iter().copied())
        .collect();
    team_cli(s, token, team, &words, env, input)
}

/// The id in `imported snapshot <id> into ...`.
fn imported_id(out: &str) -> String {
    let rest = out
        .strip_prefix("imported snapshot ")
        .unwrap_or_else(|| panic!("{out}"));
    let id = rest.split(' ').next().unwrap().to_string();
    assert_eq!(id.len(), 32, "{out}");
    id
}

fn write_flows(dir: &Path, name: &str, func: &str, with_debug: bool) -> String {
    let mut flows = vec![
        json!({"id": "t1", "type": "tab", "label": "Line 1"}),
        json!({"id": "n1", "type": "function", "z": "t1", "name": "scale", "func": func,
               "x": 100, "y": 80, "wires": [[]]}),
    ];
    if with_debug {
        flows.push(
            json!({"id": "n2", "type": "debug", "z": "t1", "name": "watch",
                          "x": 300, "y": 80, "wires": []}),
        );
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(&flows).unwrap()).unwrap();
    path.display().to_string()
}

/// A user with `role` in the team and a full token of theirs.
async fn member_token(admin: &Api, s: &Serving, team: &str, user: &str, role: &str) -> String {
    join(admin, s, team, user, role).await.token("full").await.0
}

#[test]
fn the_help_names_every_subcommand() {
    let o = Command::new(BIN)
        .args(["snapshot", "--help"])
        .output()
        .unwrap();
    let out = ok(o);
    for sub in [
        "list",
        "create",
        "show",
        "diff",
        "rollback",
        "deployments",
        "export",
        "import",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "{sub} missing from:\n{out}"
        );
    }
}

#[tokio::test]
async fn the_cli_imports_compares_exports_and_leaves_rollback_to_owners() {
    let data = DataDir::without_instances();
    let s = data.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    let files = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| snapshot(&s, &pat, &team, args, &[], None);
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": "press", "start": false}),
        )
        .await;
    let instance_id = r["id"].as_str().unwrap().to_string();
    // Made now: the admin's connection would idle while the CLI runs.
    let member = member_token(&admin, &s, &team, "martin", "member").await;
    drop(admin);

    // A fresh team: an empty table, for the team and for the instance; an
    // unknown instance is named.
    for args in [vec!["list"], vec!["list", "--instance", "press"]] {
        let out = ok(run(&args));
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("ID "), "{out}");
        for column in ["INSTANCE", "KIND", "CREATED", "NOTE", "FLOWS"] {
            assert!(out.contains(column), "{out}");
        }
    }
    let err = refused(run(&["list", "--instance", "nowhere"]), "not_found");
    assert!(
        err.contains(&format!("team {team} has no instance nowhere")),
        "{err}"
    );
    let out = ok(run(&["deployments", "press"]));
    assert_eq!(out.lines().count(), 1, "{out}");

    // Import two flows files: unsigned, not deployed.
    let first = write_flows(files.path(), "v1.json", "return msg;\n", false);
    let second = write_flows(
        files.path(),
        "v2.json",
        "msg.payload *= 2;\nreturn msg;\n",
        true,
    );
    let out = ok(run(&["import", "press", &first, "--note", "as shipped"]));
    assert!(out.contains("unsigned flows file"), "{out}");
    assert!(out.contains("not deployed"), "{out}");
    let a = imported_id(&out);
    let b = imported_id(&ok(run(&["import", "press", &second, "--note", "doubled"])));

    // The list: newest first, with the instance's name, kind, note and the
    // flows' short hash.
    let out = ok(run(&["list", "--instance", "press"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with(&b) && lines[2].starts_with(&a),
        "{out}"
    );
    for (line, note) in [(lines[1], "doubled"), (lines[2], "as shipped")] {
        assert!(line.contains(" press "), "{out}");
        assert!(line.contains(" imported "), "{out}");
        assert!(line.contains(note), "{out}");
        let hash = line.split_whitespace().last().unwrap();
        assert_eq!(hash.len(), 12, "{out}");
        assert!(hash.bytes().all(|c| c.is_ascii_hexdigit()), "{out}");
    }
    let listed: Value = serde_json::from_str(&ok(run(&["list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["instance_id"], instance_id.as_str());

    // Show: a summary; --json the whole detail.
    let out = ok(run(&["show", &a]));
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{label}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label} in:\n{out}"))
    };
    assert_eq!(field("id"), a);
    assert_eq!(field("instance"), "press");
    assert_eq!(field("kind"), "imported");
    assert_eq!(field("note"), "as shipped");
    assert!(!field("signed by").is_empty() && field("signed by") != "-");
    assert!(field("credentials").starts_with("0 node(s) hold credentials"));
    assert!(field("flows").starts_with("2 entries"), "{out}");
    field("modules");
    field("env names");
    let detail: Value = serde_json::from_str(&ok(run(&["show", &a, "--json"]))).unwrap();
    assert_eq!(detail["snapshot"]["id"], a.as_str());
    assert_eq!(detail["flows"][1]["func"], "return msg;\n");

    // Diff: the API's text, per tab, the code as lines.
    let out = ok(run(&["diff", &a, &b]));
    assert!(out.contains("Line 1 (t1): changed"), "{out}");
    assert!(out.contains("+ debug"), "{out}");
    assert!(out.contains("+ msg.payload *= 2;"), "{out}");
    let v: Value = serde_json::from_str(&ok(run(&["diff", &a, &b, "--json"]))).unwrap();
    assert_eq!(v["from"], a.as_str());
    assert!(v["text"].as_str().unwrap().contains("func"), "{v}");

    // Unknown snapshots are named with the team.
    let nowhere = "0123456789abcdef0123456789abcdef";
    let never = files.path().join("never.rwsnap").display().to_string();
    for args in [
        vec!["show", nowhere],
        vec!["show", "not-an-id"],
        vec!["diff", &a, nowhere],
        vec!["export", nowhere, "--out", &never],
    ] {
        let o = snapshot(
            &s,
            &pat,
            &team,
            &args,
            &[("REDWALL_SNAPSHOT_PASSPHRASE", PASSPHRASE)],
            None,
        );
        let err = refused(o, "not_found");
        assert!(
            err.contains(&format!("team {team} has no snapshot")),
            "{err}"
        );
        assert!(!files.path().join("never.rwsnap").exists());
    }

    // Export: sealed, mode 0600, never over a file unless --force; the
    // passphrase from the environment or standard input.
    let out_path = files.path().join("press.rwsnap");
    let out_file = out_path.display().to_string();
    let o = run(&["export", &b, "--out", &out_file]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("REDWALL_SNAPSHOT_PASSPHRASE"),
        "no terminal: {}",
        stderr(&o)
    );
    let out = ok(snapshot(
        &s,
        &pat,
        &team,
        &["export", &b, "--out", &out_file],
        &[("REDWALL_SNAPSHOT_PASSPHRASE", PASSPHRASE)],
        None,
    ));
    assert!(out.contains(&format!("wrote snapshot {b}")), "{out}");
    let sealed = std::fs::read(&out_path).unwrap();
    assert!(sealed.starts_with(b"redwall-sealed-file"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = snapshot(
        &s,
        &pat,
        &team,
        &["export", &b, "--out", &out_file, "--passphrase-stdin"],
        &[],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out_path).unwrap(), sealed);
    ok(snapshot(
        &s,
        &pat,
        &team,
        &[
            "export",
            &b,
            "--out",
            &out_file,
            "--passphrase-stdin",
            "--force",
        ],
        &[],
        Some(&format!("{PASSPHRASE}\n")),
    ));
    // A weak passphrase is the server's refusal.
    refused(
        snapshot(
            &s,
            &pat,
            &team,
            &[
                "export",
                &b,
                "--out",
                &files.path().join("weak").display().to_string(),
            ],
            &[("REDWALL_SNAPSHOT_PASSPHRASE", "short")],
            None,
        ),
        "weak_passphrase",
    );

    // Import the export back: signed by this hub; a wrong passphrase is
    // refused and imports nothing.
    let o = snapshot(
        &s,
        &pat,
        &team,
        &["import", "press", &out_file],
        &[("REDWALL_SNAPSHOT_PASSPHRASE", "wrong-passphrase-entirely-9")],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = ok(snapshot(
        &s,
        &pat,
        &team,
        &["import", "press", &out_file, "--note", "round trip"],
        &[("REDWALL_SNAPSHOT_PASSPHRASE", PASSPHRASE)],
        None,
    ));
    assert!(out.contains("signed by this hub"), "{out}");
    let c = imported_id(&out);
    let out = ok(run(&["diff", &b, &c]));
    assert!(out.starts_with("no changes"), "{out}");
    assert_eq!(
        ok(run(&["list"])).lines().count(),
        4,
        "three snapshots and the header"
    );

    // Rollback: a stopped instance is refused before anything changes; an
    // unknown snapshot is named.
    let err = refused(run(&["rollback", "press", &b]), "instance_not_running");
    assert!(err.contains("start it first"), "{err}");
    let err = refused(run(&["rollback", "press", nowhere]), "not_found");
    assert!(
        err.contains(&format!("team {team} has no snapshot {nowhere}")),
        "{err}"
    );
    let err = refused(run(&["rollback", "nowhere", &b]), "not_found");
    assert!(
        err.contains(&format!("team {team} has no instance nowhere")),
        "{err}"
    );
    let out = ok(run(&["deployments", "press"]));
    assert_eq!(out.lines().count(), 1, "no deployment was made: {out}");

    // A Member reads, compares and imports, but may neither roll back nor
    // export: the refusal says who may.
    let as_member =
        |args: &[&str], env: &[(&str, &str)]| snapshot(&s, &member, &team, args, env, None);
    assert_eq!(ok(as_member(&["list"], &[])).lines().count(), 4);
    ok(as_member(&["diff", &a, &b], &[]));
    let err = refused(as_member(&["rollback", "press", &a], &[]), "forbidden");
    assert!(
        err.contains(&format!("only an Owner of team {team} may roll back")),
        "{err}"
    );
    let member_file = files.path().join("member.rwsnap");
    let err = refused(
        as_member(
            &["export", &a, "--out", &member_file.display().to_string()],
            &[("REDWALL_SNAPSHOT_PASSPHRASE", PASSPHRASE)],
        ),
        "forbidden",
    );
    assert!(err.contains("only an Owner"), "{err}");
    assert!(!member_file.exists());
    let out = ok(run(&["deployments", "press"]));
    assert_eq!(out.lines().count(), 1, "{out}");

    // Credentials in the clear are refused unless accepted.
    let creds = files.path().join("creds.json");
    std::fs::write(
        &creds,
        serde_json::to_vec(&json!([
            {"id": "t1", "type": "tab", "label": "Line 1"},
            {"id": "m1", "type": "mqtt-broker", "credentials": {"user": "u", "password": "p4ss"}}
        ]))
        .unwrap(),
    )
    .unwrap();
    let creds = creds.display().to_string();
    refused(
        as_member(&["import", "press", &creds], &[]),
        "plaintext_credentials",
    );
    let out = ok(as_member(
        &["import", "press", &creds, "--accept-plaintext-credentials"],
        &[],
    ));
    let d = imported_id(&out);
    let out = ok(run(&["show", &d]));
    assert!(out.contains("1 node(s) hold credentials"), "{out}");
    assert!(!out.contains("p4ss"), "{out}");
    assert!(!ok(run(&["show", &d, "--json"])).contains("p4ss"));

    // Taken by hand (a stopped instance's files: no flows yet): the
    // instance now runs it.
    let out = ok(as_member(&["create", "press", "--note", "by hand"], &[]));
    let taken = out
        .strip_prefix("took snapshot ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert!(out.contains("of instance press"), "{out}");
    let out = ok(run(&["list", "--instance", "press"]));
    let newest = out.lines().nth(1).unwrap();
    assert!(newest.starts_with(&taken), "{out}");
    assert!(
        newest.contains(" manual ") && newest.contains("by hand"),
        "{out}"
    );
    let (_, shown) = Api::bearer(&s.base, &pat)
        .get(&format!("/api/v1/teams/{team}/instances/press"))
        .await;
    assert_eq!(shown["running_snapshot"], taken.as_str(), "{shown}");
    let err = refused(
        run(&["create", "press", "--note", &"x".repeat(501)]),
        "invalid_note",
    );
    assert!(err.contains("500"), "{err}");
}
