//! The console's remote agents page of a team, over HTTP, with a
//! protocol-speaking agent in the test (as `agents_api.rs`): Owners
//! provision through the form and see the bundle once, list and withdraw
//! unused tokens, ping, revoke and delete agents; a Member sees the agents
//! and pings them, with no Owner's form, and a forced post is refused by
//! the API; what an agent reports is escaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;

use agent_kit::*;
use common::{audit_events, create_team, form, form_raw, join_team, location, Client, TestServer};
use redwall_crypto::signing::AgentKey;
use redwall_policy::agent_protocol::ProvisioningBundle;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The part of a page from `marker` to the end of its element `end`.
fn part<'a>(text: &'a str, marker: &str, end: &str) -> &'a str {
    text.split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker} in:\n{text}"))
        .split(end)
        .next()
        .unwrap()
}

/// The table row of the agent named `name`.
fn row<'a>(page: &'a str, name: &str) -> &'a str {
    part(page, &format!(r#"data-agent="{name}""#), "</tr>")
}

/// Enrols an agent with a fresh token of the Owner's; its id.
async fn enrolled(
    s: &TestServer,
    owner: &Client,
    team: &str,
    name: &str,
    key: &AgentKey,
) -> String {
    let r = enrol_as(s, &token(owner, team).await, name, key, "<b>x</b>").await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["agent_id"].as_str().unwrap().to_string()
}

async fn tokens(owner: &Client, team: &str) -> Vec<Value> {
    let r = owner
        .get(&format!("/api/v1/teams/{team}/agent-tokens"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.as_array().unwrap().clone()
}

/// Waits (bounded) until the API says `done` of what `read` returns.
async fn until<F, Fut>(what: &str, mut read: F, done: impl Fn(&Value) -> bool) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let start = Instant::now();
    loop {
        let v = read().await;
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Owners provision on the page: the bundle is shown once (decodable, never
/// again on reload or a second submit), the unused token is listed and
/// withdrawn; refusals keep what was typed.
async fn owners_provision_and_withdraw_on_the_page(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let page = format!("/teams/{team}/agents");

    // The team page links to it; empty at first, with the form.
    let r = admin.get(&format!("/teams/{team}")).await;
    assert!(r.text.contains(&format!(r#"href="{page}""#)), "{}", r.text);
    assert!(r.text.contains("Remote agents"));
    let r = admin.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="no-agents""#), "{}", r.text);
    assert!(r.text.contains(r#"data-testid="provision-form""#));
    assert!(r.text.contains(&format!(r#"action="{page}""#)));
    assert!(r.text.contains(r#"data-testid="no-tokens""#));
    assert!(r.text.contains(r#"value="24""#), "hours default to a day");
    assert!(!r.text.contains(r#"data-testid="agent-bundle""#));

    // Refused: next to its field, what was typed kept and escaped.
    let hostile = r#"http://hub.example/"><script>alert(1)</script>"#;
    let r = form(
        &admin,
        &page,
        &[
            ("group", "line-1"),
            ("hours", "48"),
            ("hub_url", hostile),
            ("ca_pem", ""),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let field = part(&r.text, r#"id="f-hub_url""#, "</div>");
    assert!(field.contains("field-error"), "{field}");
    assert!(
        !r.text.contains("<script>alert(1)"),
        "typed text is escaped"
    );
    assert!(r.text.contains("&#60;script&#62;alert(1)"), "{}", r.text);
    assert!(r.text.contains(r#"value="line-1""#), "{}", r.text);
    assert!(r.text.contains(r#"value="48""#), "{}", r.text);
    for (fields, id) in [
        (vec![("hours", "a week")], "f-hours"),
        (vec![("hours", "500")], "f-hours"),
        (vec![("group", "Line One")], "f-group"),
        (vec![("ca_pem", "not a certificate")], "f-ca_pem"),
    ] {
        let r = form(&admin, &page, &fields).await;
        assert_eq!(r.status, 422, "{fields:?}: {}", r.text);
        let field = part(&r.text, &format!(r#"id="{id}""#), "</div>");
        assert!(field.contains("field-error"), "{fields:?}: {field}");
        assert!(!r.text.contains(r#"data-testid="agent-bundle""#));
    }
    assert!(tokens(&admin, &team).await.is_empty(), "nothing was made");

    // Made: the bundle, once, in the answer to the form, never stored.
    let csrf = admin.csrf.clone().unwrap();
    let fields = [
        ("csrf", csrf.as_str()),
        ("form_id", "0123456789abcdef0123456789abcdef"),
        ("group", "line-1"),
        ("hours", "48"),
        ("hub_url", ""),
        ("ca_pem", ""),
    ];
    let r = form_raw(&admin, &page, &fields, &admin.base).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let shown = part(&r.text, r#"data-testid="agent-bundle""#, "</div>");
    let line = part(shown, r#"data-testid="new-bundle">"#, "</code>");
    let bundle = ProvisioningBundle::decode(line).expect("the page shows a bundle");
    assert!(bundle.hub_url.starts_with("https://"), "{bundle:?}");
    assert!(bundle.provisioning_token.starts_with("rwe_"));
    assert!(shown.contains("redwall-agent enrol --name NAME --bundle @bundle.txt"));
    assert!(shown.contains("redwall-agent run"));
    assert!(shown.contains(r#"data-copy="new-bundle""#), "{shown}");
    assert!(shown.contains("line-1"));
    // The form is empty again, and the new token listed.
    let listed = tokens(&admin, &team).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let token_row = part(&r.text, &format!(r#"data-token="{id}""#), "</tr>");
    assert!(token_row.contains("line-1"), "{token_row}");
    // The same form again: where the first went, nothing shown or made.
    let again = form_raw(&admin, &page, &fields, &admin.base).await;
    assert_eq!(again.status, 303, "{}", again.text);
    assert_eq!(location(&again), format!("{page}#tokens"));
    assert!(!again.text.contains(&bundle.provisioning_token));
    assert_eq!(tokens(&admin, &team).await.len(), 1);
    // Reloaded: listed, usable, but the bundle is gone.
    let r = admin.get(&page).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(!r.text.contains(r#"data-testid="agent-bundle""#));
    assert!(!r.text.contains(&bundle.provisioning_token));
    assert!(!r.text.contains(line));
    let token_row = part(&r.text, &format!(r#"data-token="{id}""#), "</tr>");
    assert!(token_row.contains(r#"data-state="usable""#), "{token_row}");
    assert!(
        token_row.contains(r#"data-testid="withdraw""#),
        "{token_row}"
    );
    assert!(token_row.contains("data-confirm="), "{token_row}");

    // Withdrawn: gone from the list, and the bundle no longer enrols.
    let r = form(
        &admin,
        &format!("/teams/{team}/agent-tokens/{id}/withdraw"),
        &[],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(location(&r), format!("{page}?done=token_withdrawn#tokens"));
    assert!(tokens(&admin, &team).await.is_empty());
    assert_eq!(
        audit_events(&admin, "agent.provisioning_token_withdrawn")
            .await
            .len(),
        1
    );
    let r = admin.get(&location(&r)).await;
    assert!(r.text.contains("The provisioning token was withdrawn"));
    assert!(r.text.contains(r#"data-testid="no-tokens""#), "{}", r.text);
    assert!(!r.text.contains(&format!(r#"data-token="{id}""#)));
    let r = enrol_as(
        s,
        &bundle.provisioning_token,
        "press-1",
        &AgentKey::generate(),
        "0.1.0",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Withdrawn twice: said on the page.
    let r = form(
        &admin,
        &format!("/teams/{team}/agent-tokens/{id}/withdraw"),
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="form-error""#), "{}", r.text);
}

/// A Member sees the agents and pings them, with no Owner's form; forced
/// Owners' posts are refused by the API. A Viewer does not see the page.
async fn a_member_sees_agents_but_does_not_manage_them(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let member = s.user(&admin, "mona").await;
    join_team(&admin, &member, &team, "mona", "member").await;
    let viewer = s.user(&admin, "vera").await;
    join_team(&admin, &viewer, &team, "vera", "viewer").await;
    let page = format!("/teams/{team}/agents");
    let id = enrolled(s, &admin, &team, "press-1", &AgentKey::generate()).await;
    token(&admin, &team).await;
    let token_id = tokens(&admin, &team).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = member.get(&format!("/teams/{team}")).await;
    assert!(r.text.contains(&format!(r#"href="{page}""#)), "{}", r.text);
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let press = row(&r.text, "press-1");
    assert!(press.contains(r#"data-state="offline""#), "{press}");
    assert!(press.contains(r#"data-testid="ping""#), "{press}");
    for control in [
        r#"data-testid="provision-form""#,
        r#"data-testid="revoke""#,
        r#"data-testid="delete""#,
        r#"data-testid="withdraw""#,
        r#"id="tokens""#,
        "/revoke",
        "/delete",
        "/agent-tokens/",
    ] {
        assert!(!r.text.contains(control), "a member sees {control}");
    }

    // Forced: refused by the API, nothing changed.
    let r = form(&member, &page, &[("hours", "24")]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text
            .contains("Only the team&#39;s Owners may provision agents.")
            || r.text
                .contains("Only the team's Owners may provision agents."),
        "{}",
        r.text
    );
    assert!(!r.text.contains("rwbundle1."));
    assert_eq!(tokens(&admin, &team).await.len(), 1);
    for path in [
        format!("{page}/{id}/revoke"),
        format!("{page}/{id}/delete"),
        format!("/teams/{team}/agent-tokens/{token_id}/withdraw"),
    ] {
        let r = form(&member, &path, &[]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert!(r.text.contains(r#"data-testid="form-error""#), "{path}");
    }
    let v = agent(&admin, &team, "press-1").await;
    assert_eq!(v["revoked"], false, "{v}");
    assert_eq!(tokens(&admin, &team).await.len(), 1);
    assert!(audit_events(&admin, "agent.revoked").await.is_empty());

    // A Member may ping.
    let r = form(&member, &format!("{page}/{id}/ping"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(
        location(&r).starts_with(&format!("{page}?command=")),
        "{r:?}"
    );

    // A Viewer: no link, no page, no ping.
    let r = viewer.get(&format!("/teams/{team}")).await;
    assert!(!r.text.contains(&format!(r#"href="{page}""#)), "{}", r.text);
    let r = viewer.get(&page).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(!r.text.contains("press-1"));
    let r = form(&viewer, &format!("{page}/{id}/ping"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
}

/// An enrolled agent on the page: offline, what it reported escaped; a
/// ping waits, then shows the agent's answer; revoked and deleted through
/// the rows' forms.
async fn owners_ping_revoke_and_delete_an_agent(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let page = format!("/teams/{team}/agents");
    let key = AgentKey::generate();
    let id = enrolled(s, &admin, &team, "press-1", &key).await;

    let r = admin.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(r#"data-testid="no-agents""#));
    let press = row(&r.text, "press-1");
    assert!(
        r.text
            .contains(&format!(r#"id="agent-{id}" data-agent="press-1""#)),
        "{}",
        r.text
    );
    assert!(press.contains(r#"data-state="offline""#), "{press}");
    assert!(press.contains("never"), "{press}");
    assert!(press.contains("linux-x86_64"), "{press}");
    assert!(
        press.contains(&key.public_key().fingerprint()),
        "the key's fingerprint: {press}"
    );
    // The version is the agent's to say: escaped.
    assert!(!r.text.contains("<b>x</b>"), "{}", r.text);
    assert!(press.contains("&#60;b&#62;x&#60;/b&#62;"), "{press}");
    for control in ["ping", "restart", "revoke", "delete"] {
        assert!(
            press.contains(&format!(r#"data-testid="{control}""#)),
            "{control}: {press}"
        );
    }
    assert!(press.contains("data-confirm=\"Revoke press-1?"), "{press}");
    assert!(press.contains("data-confirm=\"Delete press-1?"), "{press}");

    // Ping: queued while the agent is away; the page says it waits.
    let r = form(&admin, &format!("{page}/{id}/ping"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let to = location(&r);
    let command = part(&to, "?command=", "#").to_string();
    assert_eq!(to, format!("{page}?command={command}#agent-{id}"));
    let r = admin.get(&to).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let shown = part(&r.text, r#"data-testid="command""#, "</section>");
    assert!(shown.contains(r#"data-command-state="waiting""#), "{shown}");
    assert!(shown.contains("Waiting for the agent"), "{shown}");
    assert!(shown.contains("press-1"), "{shown}");
    assert!(
        shown.contains(&format!(r#"href="{page}?command={command}#command""#)),
        "a refresh link: {shown}"
    );

    // The agent connects: online, it gets the ping and answers.
    let mut ws = connect(s, &id, &key).await;
    send(
        &mut ws,
        json!({"type": "heartbeat", "status": {"node_red": "running"}}),
    )
    .await;
    let got = next_json(&mut ws).await.expect("the queued command");
    assert_eq!(
        got,
        json!({"type": "command", "id": command, "command": {"kind": "ping"}})
    );
    until(
        "online",
        || agent(&admin, &team, "press-1"),
        |v| v["online"] == true,
    )
    .await;
    send(
        &mut ws,
        json!({"type": "command_done", "id": command, "ok": true, "message": "<i>pong</i>"}),
    )
    .await;
    let path = format!("/api/v1/teams/{team}/agent-commands/{command}");
    until(
        "answered",
        || async { admin.get(&path).await.body },
        |v| v["ok"] == true,
    )
    .await;
    let r = admin.get(&to).await;
    let shown = part(&r.text, r#"data-testid="command""#, "</section>");
    assert!(shown.contains(r#"data-command-state="ok""#), "{shown}");
    assert!(shown.contains("&#60;i&#62;pong&#60;/i&#62;"), "{shown}");
    assert!(!r.text.contains("<i>pong</i>"), "the answer is escaped");
    let press = row(&r.text, "press-1");
    assert!(press.contains(r#"data-state="online""#), "{press}");
    assert!(press.contains(r#"data-status="running""#), "{press}");
    assert!(!press.contains("never"), "{press}");
    // A command id that is not one, or another's, shows nothing.
    let r = admin.get(&format!("{page}?command=nope")).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(r#"data-testid="command""#));
    let r = admin
        .get(&format!("{page}?command={}", "0".repeat(32)))
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(r#"data-testid="command""#));

    // Revoke: its connection closes, the row says so, the log has it.
    let r = form(&admin, &format!("{page}/{id}/revoke"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        location(&r),
        format!("{page}?done=agent_revoked#agent-{id}")
    );
    assert_eq!(close_code(&mut ws).await, Some(4001));
    let r = admin.get(&location(&r)).await;
    assert!(r.text.contains("The agent was revoked"), "{}", r.text);
    let press = row(&r.text, "press-1");
    assert!(press.contains(r#"data-state="revoked""#), "{press}");
    for gone in ["ping", "restart", "revoke"] {
        assert!(
            !press.contains(&format!(r#"data-testid="{gone}""#)),
            "{gone}: {press}"
        );
    }
    assert!(press.contains(r#"data-testid="delete""#), "{press}");
    let revoked = audit_events(&admin, "agent.revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(agent(&admin, &team, "press-1").await["revoked"], true);
    // A forced ping of a revoked agent: the API's reason on the page.
    let r = form(&admin, &format!("{page}/{id}/ping"), &[]).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("The agent is revoked."), "{}", r.text);
    let r = form(&admin, &format!("{page}/{id}/revoke"), &[]).await;
    assert_eq!(r.status, 409, "{}", r.text);

    // Unknown actions and ids name nothing.
    let r = form(&admin, &format!("{page}/{id}/explode"), &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = form(&admin, &format!("{page}/press-1/revoke"), &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);

    // Delete: gone from the page.
    let r = form(&admin, &format!("{page}/{id}/delete"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(location(&r), format!("{page}?done=agent_deleted#agents"));
    let r = admin.get(&location(&r)).await;
    assert!(r.text.contains("The agent was deleted"), "{}", r.text);
    assert!(r.text.contains(r#"data-testid="no-agents""#), "{}", r.text);
    assert!(!r.text.contains(r#"data-agent="press-1""#));
    assert_eq!(audit_events(&admin, "agent.deleted").await.len(), 1);
    assert_eq!(audit_events(&admin, "agent.revoked").await.len(), 1);
}

/// Rollouts of agent builds on the page: Owners get the form once a
/// platform admin added a build; a started rollout is listed with its
/// progress; a Member sees the list without the form, and a forced post
/// is refused by the API.
async fn owners_roll_builds_out_on_the_page(s: &TestServer) {
    use base64::Engine as _;
    let admin = s.admin().await;
    let member = s.user(&admin, "martin").await;
    let team = create_team(&admin, "Plant").await;
    join_team(&admin, &member, &team, "martin", "member").await;
    let page = format!("/teams/{team}/agents");
    let r = new_token(
        &admin,
        &team,
        json!({"hub_url": "https://hub.example", "group": "plants"}),
    )
    .await;
    let key = AgentKey::generate();
    let r = enrol(s, r.body["token"].as_str().unwrap(), "press-1", &key).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let r = admin.get(&page).await;
    assert!(r.text.contains(r#"data-testid="no-updates""#), "{}", r.text);
    assert!(!r.text.contains(r#"data-testid="update-form""#));
    assert!(r.text.contains("redwall agent build-add"), "{}", r.text);
    let mut elf = vec![1u8; 256];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[18..20].copy_from_slice(&62u16.to_le_bytes());
    let r = admin
        .post(
            "/api/v1/agent-builds",
            json!({"version": "0.9.0", "platform": "linux-x86_64",
                   "binary": base64::engine::general_purpose::STANDARD.encode(&elf)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let build = r.body["id"].as_str().unwrap().to_string();
    let r = admin.get(&page).await;
    let form_html = part(&r.text, r#"data-testid="update-form""#, "</form>");
    assert!(form_html.contains(&build), "{form_html}");
    assert!(
        form_html.contains(r#"value="agent:press-1""#),
        "{form_html}"
    );
    assert!(
        form_html.contains(r#"value="agent-group:plants""#),
        "{form_html}"
    );

    let post = format!("/teams/{team}/agent-updates");
    let fields = [
        ("build", build.as_str()),
        ("target", "agent-group:plants"),
        ("batch", "5"),
    ];
    let r = form(&member, &post, &fields).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = form(
        &admin,
        &post,
        &[("build", build.as_str()), ("target", "robot:x")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("Choose an agent or a group."), "{}", r.text);
    let r = form(&admin, &post, &fields).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(location(&r), format!("{page}?done=update_started#updates"));
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = part(&r.text, r#"data-testid="updates""#, "</table>");
    assert!(
        listed.contains("0.9.0") && listed.contains("agent group plants"),
        "{listed}"
    );
    assert!(listed.contains(r#"data-state="rolling""#), "{listed}");
    assert!(listed.contains("0 of 1 updated"), "{listed}");
    assert!(!r.text.contains(r#"data-testid="update-form""#));
}

/// What the site reports is on the page: the store-and-forward figures in
/// the agent's row (said as a warning when messages were dropped), and the
/// site's log lines on their own page, escaped, with those kept while the
/// link was down marked; a Viewer sees neither.
async fn the_sites_figures_and_logs_are_on_the_console(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let member = s.user(&admin, "mona").await;
    join_team(&admin, &member, &team, "mona", "member").await;
    let viewer = s.user(&admin, "vera").await;
    join_team(&admin, &viewer, &team, "vera", "viewer").await;
    let key = AgentKey::generate();
    let id = enrolled(s, &admin, &team, "press-1", &key).await;
    let mut ws = connect(s, &id, &key).await;
    // A line written at the site an hour before it arrived, one just now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    send(
        &mut ws,
        json!({"type": "site_events", "stream": "log", "epoch": "0123456789abcdef", "events": [
            {"seq": 1, "at_ms": now_ms - 3_600_000, "source": "node-red", "text": "kept <script>alert(1)</script>"},
            {"seq": 2, "at_ms": now_ms, "source": "node-red-stderr", "text": "live line"}]}),
    )
    .await;
    let answer = next_json(&mut ws).await.unwrap();
    assert_eq!(answer["through"], 2, "{answer}");
    send(
        &mut ws,
        json!({"type": "heartbeat", "status": {"node_red": "running", "site": {
            "bridge": {"local_connected": true, "team_connected": false, "queued": 75,
                       "queued_bytes": 3000, "max_bytes": 67108864, "in_flight": false,
                       "delivered": 10, "dropped": 5, "refused": 0, "resent_after_session_loss": 0},
            "journal": {"audit_pending": 0, "log_pending": 0, "audit_dropped": 0, "log_dropped": 0}}}}),
    )
    .await;
    until(
        "the heartbeat's figures",
        || async {
            let r = member
                .get(&format!("/api/v1/teams/{team}/agents/press-1"))
                .await;
            r.body
        },
        |a| a["site"]["bridge"]["queued"] == 75,
    )
    .await;

    let r = member.get(&format!("/teams/{team}/agents")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let site = part(
        row(&r.text, "press-1"),
        r#"data-testid="agent-site""#,
        "</td>",
    );
    assert!(site.contains(r#"class="error-text""#), "{site}");
    assert!(
        site.contains("MQTT to the team broker not connected: 75 queued, 10 delivered"),
        "{site}"
    );
    assert!(
        site.contains("5 messages dropped when the outbox was full"),
        "{site}"
    );
    assert!(
        site.contains(&format!(r#"href="/teams/{team}/agents/press-1/logs""#)),
        "{site}"
    );

    let r = member
        .get(&format!("/teams/{team}/agents/press-1/logs"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lines = part(&r.text, r#"data-testid="site-lines""#, "</pre>");
    assert!(!lines.contains("<script>"), "{lines}");
    assert!(
        lines.contains("kept &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{lines}"
    );
    let kept = part(lines, "kept &#60;script", "</div>");
    assert!(kept.contains("(arrived "), "{kept}");
    let live = part(lines, "live line", "</div>");
    assert!(!live.contains("arrived"), "{live}");
    assert!(lines.contains(r#"<div class="stderr">"#), "{lines}");

    // A Viewer sees no agents, so no site logs either; a stranger's answer
    // is the one for a missing agent.
    let r = viewer
        .get(&format!("/teams/{team}/agents/press-1/logs"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(!r.text.contains("live line"));
    let r = member
        .get(&format!("/teams/{team}/agents/nobody/logs"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

on_both_backends!(
    the_sites_figures_and_logs_are_on_the_console,
    owners_roll_builds_out_on_the_page,
    owners_provision_and_withdraw_on_the_page,
    a_member_sees_agents_but_does_not_manage_them,
    owners_ping_revoke_and_delete_an_agent,
);
