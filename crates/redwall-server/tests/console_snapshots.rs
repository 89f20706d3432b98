//! The console's snapshots page of an instance, over HTTP, without
//! Node-RED: snapshots come from imported flows files, and rollbacks are
//! refused before anything is deployed. What the page shows follows the
//! team role; a forced post is refused by the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{create_team, form, join_team, location, Client, TestServer};
use serde_json::json;

async fn new_instance(owner: &Client, team: &str, name: &str) -> String {
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": name, "start": false}),
        )
        .await;
    assert_eq!(r.status, 201, "create instance: {}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Imports a small flows file as a snapshot of the instance; its id.
async fn import(c: &Client, team: &str, instance: &str, func: &str, note: &str) -> String {
    let flows = json!([
        {"id": "t1", "type": "tab", "label": "Line 1"},
        {"id": "n1", "type": "function", "z": "t1", "name": note, "func": func, "wires": [[]]}
    ]);
    let file = base64::engine::general_purpose::STANDARD.encode(flows.to_string());
    let r = c
        .post(
            &format!("/api/v1/teams/{team}/instances/{instance}/snapshots/import"),
            json!({"file": file, "note": note}),
        )
        .await;
    assert_eq!(r.status, 201, "import: {}", r.body);
    r.body["snapshot"]["id"].as_str().unwrap().to_string()
}

async fn deployments(c: &Client, team: &str, instance: &str) -> usize {
    let r = c
        .get(&format!(
            "/api/v1/teams/{team}/instances/{instance}/deployments"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.as_array().unwrap().len()
}

async fn the_snapshots_page_follows_the_team_role(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Mill").await;
    let instance = new_instance(&admin, &team, "mill-flows").await;
    let member = s.user(&admin, "mona").await;
    join_team(&admin, &member, &team, "mona", "member").await;
    let viewer = s.user(&admin, "vic").await;
    join_team(&admin, &viewer, &team, "vic", "viewer").await;
    let stranger = s.user(&admin, "stu").await;
    let page = format!("/teams/{team}/instances/{instance}/snapshots");

    // A Member, no snapshots yet: the page, empty, with "Take snapshot" and
    // no rollback anywhere; the instance page links to it.
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains(r#"data-testid="no-snapshots""#),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"data-testid="no-deployments""#));
    assert!(r.text.contains("runs no recorded snapshot yet"));
    assert!(
        r.text.contains(&format!(r#"action="{page}""#)),
        "take snapshot"
    );
    assert!(
        r.text.contains("redwall snapshot export"),
        "export is for the CLI"
    );
    assert!(!r.text.contains("Roll back"));
    let r = member
        .get(&format!("/teams/{team}/instances/{instance}"))
        .await;
    assert!(r.text.contains(&format!(r#"href="{page}""#)), "{}", r.text);
    assert!(r.text.contains("no snapshot yet"), "{}", r.text);

    // Two snapshots, one with a hostile note.
    let hostile = r#"<script>alert("x")</script>"#;
    let a = import(&admin, &team, &instance, "return msg;\n", "as shipped").await;
    // Newest first needs two times (the test clock stands still).
    s.clock.advance_secs(1);
    let b = import(
        &member,
        &team,
        &instance,
        "msg.payload *= 2;\nreturn msg;\n",
        hostile,
    )
    .await;

    // The Member sees both, newest first, escaped, with who took them; no
    // rollback link or form.
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (at_a, at_b) = (
        r.text.find(&format!(r#"data-snapshot="{a}""#)).unwrap(),
        r.text.find(&format!(r#"data-snapshot="{b}""#)).unwrap(),
    );
    assert!(at_b < at_a, "newest first");
    assert!(!r.text.contains(hostile), "the note is escaped");
    assert!(r.text.contains("&#60;script&#62;"), "{}", r.text);
    assert!(r.text.contains("as shipped") && r.text.contains("mona"));
    assert!(!r.text.contains("/rollback"));
    assert!(!r.text.contains("Roll back to this"));
    // Asking for the confirmation step changes nothing for a Member.
    let r = member.get(&format!("{page}?rollback={a}")).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(r#"data-testid="rollback-confirm""#));
    // Compared with nothing running: said so.
    let r = member.get(&format!("{page}?compare={a}")).await;
    assert!(
        r.text.contains(r#"data-testid="compare-error""#),
        "{}",
        r.text
    );

    // The Owner has "Roll back to this", behind a confirmation step.
    let r = admin.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(&format!("{page}?rollback={a}#confirm")));
    assert!(!r.text.contains(r#"data-testid="rollback-submit""#));
    let r = admin.get(&format!("{page}?rollback={a}")).await;
    assert!(
        r.text.contains(r#"data-testid="rollback-confirm""#),
        "{}",
        r.text
    );
    assert!(r.text.contains(&format!(r#"action="{page}/{a}/rollback""#)));
    // An id that is not one of the instance's snapshots confirms nothing.
    let r = admin
        .get(&format!("{page}?rollback=0123456789abcdef0123456789abcdef"))
        .await;
    assert!(!r.text.contains(r#"data-testid="rollback-confirm""#));

    // A Member's forced rollback is refused, says who may, deploys nothing.
    let r = form(&member, &format!("{page}/{a}/rollback"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text.contains("Owners may roll an instance back"),
        "{}",
        r.text
    );
    assert_eq!(deployments(&admin, &team, &instance).await, 0);

    // "Take snapshot" (of what the instance holds now: no flows yet), with
    // a note; the instance now runs it, and the others compare with it,
    // escaped.
    s.clock.advance_secs(1);
    let r = form(
        &member,
        &page,
        &[("note", "before the change\r\nsecond line")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        location(&r),
        format!("{page}?done=snapshot_taken#snapshots")
    );
    let listed = member
        .get(&format!(
            "/api/v1/teams/{team}/snapshots?instance={instance}"
        ))
        .await;
    let taken = listed.body[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed.body[0]["kind"], "manual");
    assert_eq!(listed.body[0]["note"], "before the change\nsecond line");
    let r = member.get(&location(&r)).await;
    assert!(r.text.contains("The snapshot was taken."), "{}", r.text);
    let short = &taken[..8];
    assert!(r
        .text
        .contains(&format!("runs snapshot <code>{short}</code>")));
    let row = r
        .text
        .split(&format!(r#"data-snapshot="{taken}""#))
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    assert!(row.contains(r#"data-testid="running""#), "{row}");
    assert!(r.text.contains(&format!("{page}?compare={b}#compare")));
    let r = member
        .get(&format!("/teams/{team}/instances/{instance}"))
        .await;
    assert!(r.text.contains("runs snapshot <code"), "{}", r.text);
    assert!(r.text.contains(&format!(">{short}</code>")), "{}", r.text);
    let r = member.get(&format!("{page}?compare={b}")).await;
    let compared = r
        .text
        .split(r#"data-testid="compare""#)
        .nth(1)
        .unwrap()
        .split("</section>")
        .next()
        .unwrap();
    assert!(compared.contains("+ added function"), "{compared}");
    assert!(compared.contains("&#60;script&#62;"), "{compared}");
    assert!(!compared.contains(hostile), "{compared}");
    // The Owner's confirmation step shows the same changes.
    let r = admin.get(&format!("{page}?rollback={b}")).await;
    let confirm = r
        .text
        .split(r#"data-testid="rollback-confirm""#)
        .nth(1)
        .unwrap()
        .split("</section>")
        .next()
        .unwrap();
    assert!(confirm.contains("+ added function"), "{confirm}");
    assert!(confirm.contains(&format!(r#"action="{page}/{b}/rollback""#)));

    // The Owner's rollback of a stopped instance: the API's reason, on the
    // page, and still no deployment.
    let r = form(&admin, &format!("{page}/{a}/rollback"), &[]).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("start it first"), "{}", r.text);
    assert_eq!(deployments(&admin, &team, &instance).await, 0);
    // Not an id: no such page.
    let r = form(&admin, &format!("{page}/not-an-id/rollback"), &[]).await;
    assert_eq!(r.status, 404);

    // A note too long is refused next to its field, as typed.
    let long = "n".repeat(501);
    let r = form(&member, &page, &[("note", &long)]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("field-error"), "{}", r.text);
    assert!(r.text.contains(&long));

    // A Viewer may not read snapshots; someone outside the team learns
    // nothing, not even that the instance exists.
    let r = viewer.get(&page).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = viewer
        .get(&format!("/teams/{team}/instances/{instance}"))
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(&format!(r#"href="{page}""#)));
    let r = form(&viewer, &page, &[("note", "mine")]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = stranger.get(&page).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = form(&stranger, &format!("{page}/{a}/rollback"), &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(deployments(&admin, &team, &instance).await, 0);

    // Without a session: to the login page.
    let r = s.anonymous().get(&page).await;
    assert_eq!(r.status, 303);
    assert!(location(&r).starts_with("/login?next="), "{}", location(&r));
}

on_both_backends!(the_snapshots_page_follows_the_team_role);

async fn git_and_import_forms_on_the_snapshots_page(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Forge").await;
    // Stopped: an import does not need Node-RED.
    let instance = new_instance(&admin, &team, "forge-flows").await;
    let member = s.user(&admin, "maya").await;
    join_team(&admin, &member, &team, "maya", "member").await;
    let viewer = s.user(&admin, "val").await;
    join_team(&admin, &viewer, &team, "val", "viewer").await;
    let page = format!("/teams/{team}/instances/{instance}/snapshots");
    let listed = format!("/api/v1/teams/{team}/snapshots?instance={instance}");
    let a = import(&admin, &team, &instance, "return msg;\n", "first").await;

    // The Owner has "Pull from git", "Push to git" per snapshot and the
    // import form; the Member only the import form. Export stays CLI/API.
    let r = admin.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="git-pull""#), "{}", r.text);
    assert!(r.text.contains(&format!(r#"action="{page}/git-pull""#)));
    assert!(r.text.contains(&format!(r#"action="{page}/{a}/push""#)));
    assert!(r.text.contains(r#"data-testid="import-form""#));
    assert!(r.text.contains("redwall snapshot import"));
    assert!(r.text.contains(r#"data-testid="export-form""#));
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains(r#"data-testid="import-form""#),
        "{}",
        r.text
    );
    assert!(!r.text.contains(r#"data-testid="git-pull""#));
    assert!(!r.text.contains(r#"data-testid="git-push""#));
    assert!(!r.text.contains("/push\""));
    assert!(!r.text.contains(r#"data-testid="export-form""#));

    // Export: the Owner downloads the sealed file; a weak passphrase is
    // refused on the page; a Member's forced export is refused.
    let r = form(
        &admin,
        &format!("{page}/export"),
        &[
            ("snapshot", &a),
            ("passphrase", "correct horse battery staple"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;"),
        "{:?}",
        r.headers
    );
    assert!(r.text.starts_with("redwall-sealed-file"), "{}", r.text);
    assert!(!r.text.contains("return msg;"), "sealed");
    let r = form(
        &admin,
        &format!("{page}/export"),
        &[("snapshot", &a), ("passphrase", "short")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = form(
        &member,
        &format!("{page}/export"),
        &[
            ("snapshot", &a),
            ("passphrase", "correct horse battery staple"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // No repository set: the Owner's pull and push show the API's reason.
    let api_pull = admin
        .post(
            &format!("/api/v1/teams/{team}/instances/{instance}/git/pull"),
            json!({}),
        )
        .await;
    assert_eq!(api_pull.status, 409, "{}", api_pull.body);
    assert_eq!(api_pull.body["error"]["code"], "git_not_configured");
    let why = api_pull.body["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let said: String = why.chars().skip(1).take(20).collect();
    let r = form(&admin, &format!("{page}/git-pull"), &[]).await;
    assert_eq!(r.status, api_pull.status, "{}", r.text);
    assert!(r.text.contains(&said), "{said} in {}", r.text);
    let r = form(&admin, &format!("{page}/{a}/push"), &[]).await;
    assert!(r.status >= 400, "{}", r.text);
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text.contains("The team has no git repository"),
        "{}",
        r.text
    );

    // A Member's forced pull or push is refused by the API.
    let r = form(&member, &format!("{page}/git-pull"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text.contains("Owners may pull snapshots from git"),
        "{}",
        r.text
    );
    let r = form(&member, &format!("{page}/{a}/push"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("Owners may push snapshots to git"));
    let r = form(&member, &format!("{page}/not-an-id/push"), &[]).await;
    assert_eq!(r.status, 404);

    // A pasted flows file with credentials in the clear: refused with the
    // API's reason, as typed (escaped), unless the box is ticked.
    let flows = json!([
        {"id": "t1", "type": "tab", "label": "</textarea><script>alert(1)</script>"},
        {"id": "n1", "type": "mqtt-broker", "z": "t1", "broker": "localhost",
         "credentials": {"user": "u", "password": "hunter2"}}
    ])
    .to_string();
    s.clock.advance_secs(1);
    let before = member.get(&listed).await.body.as_array().unwrap().len();
    let r = form(
        &member,
        &format!("{page}/import"),
        &[("flows", &flows), ("import_note", "from the bench")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("The file holds credentials in the clear"),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"data-testid="import-error""#));
    assert!(!r.text.contains("</textarea><script>"), "{}", r.text);
    assert!(r.text.contains("from the bench"));
    assert_eq!(
        member.get(&listed).await.body.as_array().unwrap().len(),
        before
    );
    let r = form(
        &member,
        &format!("{page}/import"),
        &[
            ("flows", &flows),
            ("accept_plaintext_credentials", "yes"),
            ("import_note", "from the bench"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let got = member.get(&listed).await;
    assert_eq!(got.body.as_array().unwrap().len(), before + 1);
    let imported = got.body[0]["id"].as_str().unwrap().to_string();
    assert_eq!(got.body[0]["kind"], "imported");
    assert_eq!(got.body[0]["note"], "from the bench");
    assert_eq!(
        location(&r),
        format!("{page}?done=snapshot_imported#snapshot-{imported}")
    );
    let r = member.get(&location(&r)).await;
    assert!(r.text.contains("imported as a new snapshot"), "{}", r.text);

    // Not JSON, hostile: refused next to the field, escaped; an empty
    // paste is refused before the API.
    let hostile = "</textarea><img src=x onerror=alert(1)>";
    let r = form(&member, &format!("{page}/import"), &[("flows", hostile)]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(!r.text.contains(hostile), "{}", r.text);
    assert!(r.text.contains("&#60;img src=x"), "{}", r.text);
    let r = form(&member, &format!("{page}/import"), &[("flows", "  ")]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("Paste a Node-RED flows file"));

    // A Viewer's forced import is refused and imports nothing.
    let count = admin.get(&listed).await.body.as_array().unwrap().len();
    let r = form(
        &viewer,
        &format!("{page}/import"),
        &[("flows", &flows), ("accept_plaintext_credentials", "yes")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        admin.get(&listed).await.body.as_array().unwrap().len(),
        count
    );
}

on_both_backends!(git_and_import_forms_on_the_snapshots_page);
