//! The team broker's clients through the real binary: `redwall serve` as a
//! child process (no Node-RED), driven by `redwall broker ...`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use serde_json::{json, Value};
use std::process::{Command, Output};

mod serve_kit;
use serve_kit::*;

/// `redwall broker <args>` against `s` with `token` and `--team team`,
/// `input` on its standard input.
fn broker(s: &Serving, token: &str, team: &str, args: &[&str], input: Option<&str>) -> Output {
    let words: Vec<&str> = std::iter::once("broker")
        .chain(args.iter().copied())
        .collect();
    team_cli(s, token, team, &words, &[], input)
}

/// The API's refusal, with nothing on stdout; returns stderr.
fn refused_quietly(o: Output, code: &str) -> String {
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    refused(o, code)
}

/// `username: ...` and `password: ...` from stdout, and nothing else there.
fn credentials(out: &str) -> (String, String) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let username = lines[0]
        .strip_prefix("username: ")
        .unwrap_or_else(|| panic!("{out}"));
    let password = lines[1]
        .strip_prefix("password: ")
        .unwrap_or_else(|| panic!("{out}"));
    (username.to_string(), password.to_string())
}

/// The `clients` table's row of the client `name`.
fn row<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(&format!("{name} ")))
}

#[tokio::test]
async fn the_cli_manages_broker_clients_end_to_end() {
    let data = DataDir::without_instances();
    let s = data.serve();
    let (_, team, pat) = bootstrap(&s).await;
    let api = Api::bearer(&s.base, &pat);
    let run = |args: &[&str]| broker(&s, &pat, &team, args, None);
    let clients_path = format!("/api/v1/teams/{team}/broker/clients");

    // Without a token the command says how to give one, and does not try.
    let o = Command::new(BIN)
        .args(["broker", "clients", "--team", &team, "--url", &s.base])
        .env_remove("REDWALL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("REDWALL_TOKEN"), "{}", stderr(&o));

    // Create: the username and password on stdout alone, once, and a notice
    // that the password will not be shown again. The rules keep the
    // command line's order across kinds of flag.
    let o = run(&[
        "create",
        "sensor-1",
        "--allow-publish",
        "plant/#",
        "--deny",
        "plant/secret/#",
        "--allow-subscribe",
        "plant/cmd/+",
    ]);
    let notice = stderr(&o);
    let (username, password) = credentials(&ok(o));
    assert!(password.starts_with("rwb_"), "{password}");
    assert!(notice.contains("will not be shown again"), "{notice}");
    assert!(!notice.contains(&password), "{notice}");
    let (status, stored) = api.get(&clients_path).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored[0]["id"], username.as_str(), "{stored}");
    assert_eq!(
        stored[0]["rules"],
        json!([
            {"effect": "allow", "actions": "publish", "filter": "plant/#"},
            {"effect": "deny", "actions": "both", "filter": "plant/secret/#"},
            {"effect": "allow", "actions": "subscribe", "filter": "plant/cmd/+"},
        ])
    );

    // A client without rules may be made; it is told it can do nothing yet.
    let o = run(&["create", "idle gateway"]);
    let notice = stderr(&o);
    let (idle, _) = credentials(&ok(o));
    assert!(notice.contains("no rules"), "{notice}");

    // The list: name, username, no instance, the rules in order; never a
    // password, in the table or in the JSON.
    let out = ok(run(&["clients"]));
    assert!(out.starts_with("NAME "), "{out}");
    let line = row(&out, "sensor-1").unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&username), "{out}");
    assert!(line.contains(" - "), "no instance: {out}");
    assert!(
        line.ends_with(
            "allow publish plant/#; deny both plant/secret/#; allow subscribe plant/cmd/+"
        ),
        "{out}"
    );
    let line = row(&out, "idle gateway").unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&idle) && line.ends_with("(none)"), "{out}");
    assert!(!out.contains("rwb_") && !out.contains(&password), "{out}");
    let json_out = ok(run(&["clients", "--json"]));
    let listed: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(!json_out.contains("rwb_") && !json_out.contains("password"));

    // Rules replaced, deny first as given; the list shows the new ones.
    let out = ok(run(&[
        "rules",
        &username,
        "--deny",
        "plant/secret/#",
        "--allow",
        "plant/#",
    ]));
    assert!(out.contains("2 rule(s) set on sensor-1"), "{out}");
    let out = ok(run(&["clients"]));
    let line = row(&out, "sensor-1").unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.ends_with("deny both plant/secret/#; allow both plant/#"),
        "{out}"
    );
    // ... or from JSON on standard input.
    let o = broker(
        &s,
        &pat,
        &team,
        &["rules", &username, "--rules-json", "-"],
        Some(r#"[{"effect": "allow", "actions": "subscribe", "filter": "plant/+/status"}]"#),
    );
    ok(o);
    let out = ok(run(&["clients"]));
    let line = row(&out, "sensor-1").unwrap_or_else(|| panic!("{out}"));
    assert!(line.ends_with("allow subscribe plant/+/status"), "{out}");
    // Replacing needs rules, or --clear to say none.
    let o = run(&["rules", &username]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--clear"), "{}", stderr(&o));
    ok(run(&["rules", &idle, "--clear"]));

    // A bad filter: the server's message, exit 2, nothing changed or made.
    let err = refused_quietly(
        run(&["rules", &username, "--allow", "a/#/b"]),
        "invalid_filter",
    );
    assert!(err.contains("# may only be the last level"), "{err}");
    let err = refused_quietly(
        run(&["create", "bad", "--allow-publish", "a/#/b"]),
        "invalid_filter",
    );
    assert!(err.contains("# may only be the last level"), "{err}");
    let out = ok(run(&["clients"]));
    assert!(row(&out, "bad").is_none(), "{out}");
    assert!(
        row(&out, "sensor-1")
            .unwrap()
            .ends_with("allow subscribe plant/+/status"),
        "{out}"
    );

    // Rotate: a new, different password, printed once.
    let o = run(&["rotate", &username]);
    let notice = stderr(&o);
    let (again, rotated) = credentials(&ok(o));
    assert_eq!(again, username);
    assert!(rotated.starts_with("rwb_"), "{rotated}");
    assert_ne!(rotated, password);
    assert!(notice.contains("will not be shown again"), "{notice}");
    assert!(!ok(run(&["clients"])).contains("rwb_"));

    // Disable and enable: the list says which.
    let out = ok(run(&["disable", &username]));
    assert!(
        out.contains(&format!("disabled broker client {username}")),
        "{out}"
    );
    let out = ok(run(&["clients"]));
    assert!(
        row(&out, "sensor-1").unwrap().contains(" disabled "),
        "{out}"
    );
    ok(run(&["enable", &username]));
    let out = ok(run(&["clients"]));
    assert!(
        row(&out, "sensor-1").unwrap().contains(" enabled "),
        "{out}"
    );

    // Revoke: gone from the list; then every command on it is a clear
    // not-found, as is an id that never was.
    let out = ok(run(&["revoke", &username]));
    assert!(
        out.contains(&format!("revoked broker client {username}")),
        "{out}"
    );
    let out = ok(run(&["clients"]));
    assert!(
        row(&out, "sensor-1").is_none() && !out.contains(&username),
        "{out}"
    );
    assert!(row(&out, "idle gateway").is_some(), "{out}");
    for args in [
        vec!["rotate", username.as_str()],
        vec!["revoke", username.as_str()],
        vec!["rules", username.as_str(), "--allow", "a/#"],
        vec!["rotate", "0123456789abcdef0123456789abcdef"],
        vec!["revoke", "not-an-id"],
    ] {
        let err = refused_quietly(run(&args), "not_found");
        assert!(
            err.contains(&format!("team {team} has no broker client {}", args[1])),
            "{err}"
        );
    }
}
