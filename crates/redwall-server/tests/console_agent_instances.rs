//! Instances on remote agents in the console, over HTTP, with a
//! protocol-speaking agent in the test (as `console_agents.rs`): the
//! new-instance form offers an Owner the team's agents that are not
//! revoked and creates the instance on one through the API's
//! `POST .../agents/{agent}/instance` (the start box ignored); refusals show on
//! the "Runs on" field; the instance page and the lists say which agent it
//! is on and whether that agent is connected, and hide what only this hub
//! can do for an instance (start/stop/restart, logs, environment,
//! options), while route rules, API keys and the editor stay; a forced
//! start is refused by the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;

use agent_kit::*;
use common::{create_team, form, join_team, location, Client, TestServer};
use redwall_crypto::signing::AgentKey;
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

/// Enrols an agent with a fresh token of the Owner's; its id.
async fn enrolled(
    s: &TestServer,
    owner: &Client,
    team: &str,
    name: &str,
    key: &AgentKey,
) -> String {
    let r = enrol(s, &token(owner, team).await, name, key).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["agent_id"].as_str().unwrap().to_string()
}

/// The instance, through the API.
async fn instance(c: &Client, team: &str, name: &str) -> Value {
    let r = c
        .get(&format!("/api/v1/teams/{team}/instances/{name}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Reads the page at `path` until it holds `marker` (bounded: the agent's
/// heartbeat is taken asynchronously).
async fn page_with(c: &Client, path: &str, marker: &str) -> String {
    let start = Instant::now();
    loop {
        let r = c.get(path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.text.contains(marker) {
            return r.text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {marker} on {path}:\n{}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an instance this hub runs has, and one on an agent must not show.
const HERE_ONLY: [&str; 10] = [
    "/start\"",
    "/stop\"",
    "/restart\"",
    "/env\"",
    "/options\"",
    r#"id="logs""#,
    r#"id="env""#,
    r#"id="options""#,
    "data-log-stream",
    r##"href="#env""##,
];

async fn an_instance_is_created_on_an_agent_from_the_form(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let new_page = format!("/teams/{team}/instances/new");

    // No agents yet: no choice shown, the start box as before.
    let r = admin.get(&new_page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(r#"data-testid="runs-on""#), "{}", r.text);
    assert!(!r.text.contains(r#"name="agent""#));
    assert!(r.text.contains(r#"name="start""#));

    // Three agents: one connected, one never heard from, one revoked.
    let key = AgentKey::generate();
    let site1 = enrolled(s, &admin, &team, "site-1", &key).await;
    enrolled(s, &admin, &team, "site-2", &AgentKey::generate()).await;
    let gone = enrolled(s, &admin, &team, "gone-3", &AgentKey::generate()).await;
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/agents/{gone}/revoke"),
            json!({}),
        )
        .await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
    let mut ws = connect(s, &site1, &key).await;
    send(
        &mut ws,
        json!({"type": "heartbeat", "status": {"node_red": "running"}}),
    )
    .await;

    let r = admin.get(&new_page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let choice = part(&r.text, r#"data-testid="runs-on""#, "</select>");
    assert!(
        choice.contains(r#"<option value="" selected>this hub</option>"#),
        "this hub is the default: {choice}"
    );
    assert!(choice.contains(r#"value="site-1""#), "{choice}");
    assert!(choice.contains(r#"value="site-2""#), "{choice}");
    assert!(
        part(choice, r#"value="site-2""#, "</option>").contains("offline"),
        "{choice}"
    );
    assert!(!choice.contains("gone-3"), "a revoked agent is offered");
    assert!(
        r.text
            .contains("on this hub only; an instance on an agent runs whenever"),
        "the start box says it is ignored for an agent: {}",
        r.text
    );

    // Created on site-1 with the start box ticked: no start is sent (the
    // API would refuse it), and the page of the new instance follows.
    let r = form(
        &admin,
        &format!("/teams/{team}/instances"),
        &[("name", "plant-a"), ("agent", "site-1"), ("start", "1")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let v = instance(&admin, &team, "plant-a").await;
    assert_eq!(v["agent"], "site-1", "{v}");
    assert_eq!(v["desired_state"], "stopped", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let here = format!("/teams/{team}/instances/{id}");
    assert_eq!(location(&r), format!("{here}?done=created"));

    // Its page: on agent site-1, connected, Node-RED running; nothing of
    // what only this hub can do; rules, keys and the editor stay.
    let page = page_with(&admin, &here, r#"data-status="running""#).await;
    assert!(
        part(&page, r#"data-testid="on-agent""#, "</span>").contains("on agent site-1"),
        "{page}"
    );
    let note = part(&page, r#"data-testid="agent-note""#, "</p>");
    assert!(
        note.contains("its process, environment and network are the site&#39;s")
            || note.contains("its process, environment and network are the site's"),
        "{note}"
    );
    assert!(note.contains("restarted through its agent"), "{note}");
    assert!(
        note.contains(&format!(r#"href="/teams/{team}/agents""#)),
        "{note}"
    );
    let link = part(&page, r#"data-testid="agent-link""#, "</dd>");
    assert!(link.contains(r#"data-link="online""#), "{link}");
    assert!(link.contains("its Node-RED is running"), "{link}");
    for gone in HERE_ONLY {
        assert!(
            !page.contains(gone),
            "the page of an agent's instance has {gone}"
        );
    }
    assert!(
        page.contains(&format!(r#"action="{here}/routes""#)),
        "rule form"
    );
    assert!(
        page.contains(&format!(r#"action="{here}/keys""#)),
        "key form"
    );
    assert!(page.contains(r#"data-testid="open-editor""#), "{page}");
    assert!(
        page.contains("/api/v1/instance-login?instance=plant-a"),
        "{page}"
    );

    // Its flows are the site's: no snapshot is taken of them here (the
    // API refuses it), so the page offers none.
    let r = admin.get(&format!("{here}/snapshots")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains(r#"data-testid="take-snapshot""#),
        "{}",
        r.text
    );
    assert!(r.text.contains("runs on agent site-1"), "{}", r.text);

    // The lists: on the team page and the home page, without start/stop.
    let r = admin.get(&format!("/teams/{team}")).await;
    let row = part(&r.text, &format!(r#"data-instance="{id}""#), "</tr>");
    assert!(row.contains("on agent site-1"), "{row}");
    let r = admin.get("/").await;
    let row = part(&r.text, &format!(r#"data-instance="{id}""#), "</tr>");
    assert!(row.contains("on agent site-1"), "{row}");
    assert!(row.contains(r#"data-status="running""#), "{row}");
    assert!(
        !row.contains("/start\"") && !row.contains("/stop\""),
        "{row}"
    );

    // Route rules and keys work from the page as for any instance.
    let r = form(
        &admin,
        &format!("{here}/routes"),
        &[
            ("rule_order", "1"),
            ("rule_path", "/hello"),
            ("rule_methods", ""),
            ("rule_policy", "public"),
            ("rule_role", "viewer"),
            ("rule_ranges", ""),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let rules = admin
        .get(&format!("/api/v1/teams/{team}/instances/plant-a/routes"))
        .await;
    assert_eq!(rules.body[0]["path_prefix"], "/hello", "{}", rules.body);
    let r = form(&admin, &format!("{here}/keys"), &[("key_name", "line 4")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="new-key""#), "{}", r.text);

    // A forced start, and a forced environment: refused by the API (409),
    // said on the page; the API itself says why.
    for action in ["start", "restart", "env"] {
        let r = form(
            &admin,
            &format!("{here}/{action}"),
            &[("env_name", "A"), ("env_kind", "plain"), ("env_value", "1")],
        )
        .await;
        assert_eq!(r.status, 409, "{action}: {}", r.text);
        let said = part(&r.text, r#"data-testid="form-error""#, "</p>");
        assert!(said.contains("runs on a remote agent"), "{action}: {said}");
    }
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/instances/plant-a/start"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "instance_on_agent", "{}", r.body);
    assert_eq!(
        instance(&admin, &team, "plant-a").await["desired_state"],
        "stopped"
    );

    // The agent goes away: the page says offline, clearly.
    drop(ws);
    let page = page_with(&admin, &here, r#"data-status="offline""#).await;
    let link = part(&page, r#"data-testid="agent-link""#, "</dd>");
    assert!(link.contains(r#"data-link="offline""#), "{link}");
    assert!(
        link.contains("offline: not connected to this hub"),
        "{link}"
    );
    assert!(page.contains("its agent is not connected"), "{page}");

    // Refusals on the "Runs on" field, with what was typed kept.
    let create = format!("/teams/{team}/instances");
    for (agent, status, says) in [
        ("site-1", 409, "The agent site-1 runs an instance already."),
        ("gone-3", 409, "The agent is revoked."),
        ("no-such", 404, "The team has no agent of that name."),
    ] {
        let r = form(&admin, &create, &[("name", "plant-b"), ("agent", agent)]).await;
        assert_eq!(r.status, status, "{agent}: {}", r.text);
        let field = part(&r.text, r#"data-testid="runs-on""#, "</div>");
        assert!(field.contains("field-error"), "{agent}: {field}");
        assert!(field.contains(says), "{agent}: {field}");
        assert!(r.text.contains(r#"value="plant-b""#), "{agent}: {}", r.text);
        if agent != "no-such" && agent != "gone-3" {
            assert!(
                field.contains(&format!(r#"value="{agent}" selected"#)),
                "{agent}: {field}"
            );
        }
    }
    let r = admin
        .get(&format!("/api/v1/teams/{team}/instances/plant-b"))
        .await;
    assert_eq!(r.status, 404, "nothing was made: {}", r.body);

    // "This hub" still makes an instance of this hub, stopped as asked.
    let r = form(&admin, &create, &[("name", "central"), ("agent", "")]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let v = instance(&admin, &team, "central").await;
    assert!(v["agent"].is_null(), "{v}");
    assert_eq!(v["desired_state"], "stopped", "{v}");
    let page = admin.get(&location(&r)).await;
    assert!(page.text.contains(r#"id="env""#), "{}", page.text);
    assert!(!page.text.contains(r#"data-testid="agent-note""#));
}

/// Putting an instance on an agent is an Owner's choice (it opens a
/// site's Node-RED to the team): a Member gets no "Runs on" choice and a
/// forced post is refused by the API; a Viewer sees the instance on its
/// agent without any control.
async fn only_owners_put_one_on_an_agent_and_a_viewer_sees_no_controls(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let member = s.user(&admin, "mona").await;
    join_team(&admin, &member, &team, "mona", "member").await;
    let viewer = s.user(&admin, "vera").await;
    join_team(&admin, &viewer, &team, "vera", "viewer").await;
    enrolled(s, &admin, &team, "site-1", &AgentKey::generate()).await;
    let create = format!("/teams/{team}/instances");

    let r = member.get(&format!("/teams/{team}/instances/new")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(r#"data-testid="runs-on""#), "{}", r.text);
    assert!(!r.text.contains("site-1"), "{}", r.text);
    let r = form(
        &member,
        &create,
        &[("name", "plant-a"), ("agent", "site-1")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="form-error""#), "{}", r.text);
    let r = admin
        .get(&format!("/api/v1/teams/{team}/instances/plant-a"))
        .await;
    assert_eq!(r.status, 404, "nothing was made: {}", r.body);
    // A name no agent can have is not put into the API's path.
    let r = form(&admin, &create, &[("name", "plant-a"), ("agent", "../x")]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let field = part(&r.text, r#"data-testid="runs-on""#, "</div>");
    assert!(
        field.contains("The team has no agent of that name."),
        "{field}"
    );

    let r = form(&admin, &create, &[("name", "plant-a"), ("agent", "site-1")]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let v = instance(&admin, &team, "plant-a").await;
    assert_eq!(v["agent"], "site-1", "{v}");
    assert_eq!(v["status"]["state"], "offline", "{v}");

    let here = location(&r).replace("?done=created", "");
    let r = viewer.get(&here).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("on agent site-1"), "{}", r.text);
    assert!(r.text.contains(r#"data-status="offline""#), "{}", r.text);
    // A Viewer does not read the agents page: its name is not a link.
    assert!(!r.text.contains(&format!(r#"href="/teams/{team}/agents""#)));
    for gone in HERE_ONLY {
        assert!(!r.text.contains(gone), "a viewer sees {gone}");
    }
    let r = form(&viewer, &format!("{here}/start"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
}

on_both_backends!(
    an_instance_is_created_on_an_agent_from_the_form,
    only_owners_put_one_on_an_agent_and_a_viewer_sees_no_controls,
);
