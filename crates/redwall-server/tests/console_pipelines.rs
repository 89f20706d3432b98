//! The console's pipelines page of a team, over HTTP, without Node-RED:
//! the snapshot promoted is imported from a flows file, and a deploy to a
//! stopped instance ends failed before anything is loaded. Owners set
//! groups, create pipelines, promote and approve through the page's forms;
//! a Member sees it all with no form, and a forced post is refused by the
//! API; names and typed text are escaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{create_team, form, join_team, location, Client, TestServer};
use serde_json::json;

async fn new_instance(owner: &Client, team: &str, name: &str) {
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": name, "start": false}),
        )
        .await;
    assert_eq!(r.status, 201, "create instance: {}", r.body);
}

/// Imports a small flows file as a snapshot of the instance; its id.
async fn import(c: &Client, team: &str, instance: &str) -> String {
    let flows = json!([
        {"id": "t1", "type": "tab", "label": "Line 1"},
        {"id": "n1", "type": "function", "z": "t1", "name": "scale", "func": "return msg;",
         "wires": [[]]}
    ]);
    let file = base64::engine::general_purpose::STANDARD.encode(flows.to_string());
    let r = c
        .post(
            &format!("/api/v1/teams/{team}/instances/{instance}/snapshots/import"),
            json!({"file": file, "note": "v1"}),
        )
        .await;
    assert_eq!(r.status, 201, "import: {}", r.body);
    r.body["snapshot"]["id"].as_str().unwrap().to_string()
}

/// The part of a page from `marker` to the end of its element `end`.
fn part<'a>(text: &'a str, marker: &str, end: &str) -> &'a str {
    text.split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker} in:\n{text}"))
        .split(end)
        .next()
        .unwrap()
}

async fn count(c: &Client, path: &str) -> usize {
    let r = c.get(path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.as_array().unwrap().len()
}

async fn owners_manage_groups_and_pipelines_on_the_page(s: &TestServer) {
    let admin = s.admin().await;
    let hostile_team = r#""><script>alert(1)</script> Plant"#;
    let team = create_team(&admin, hostile_team).await;
    new_instance(&admin, &team, "dev").await;
    new_instance(&admin, &team, "prod").await;
    let oscar = s.user(&admin, "oscar").await;
    join_team(&admin, &oscar, &team, "oscar", "owner").await;
    let page = format!("/teams/{team}/pipelines");
    let groups_api = format!("/api/v1/teams/{team}/groups");
    let pipelines_api = format!("/api/v1/teams/{team}/pipelines");

    // The team page links to it; empty at first, with the forms, UTC said,
    // the team's name escaped.
    let r = admin.get(&format!("/teams/{team}")).await;
    assert!(r.text.contains(&format!(r#"href="{page}""#)), "{}", r.text);
    let r = admin.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="no-groups""#), "{}", r.text);
    assert!(r.text.contains(r#"data-testid="no-pipelines""#));
    assert!(r
        .text
        .contains("All times and deploy windows on this page are UTC."));
    assert!(r.text.contains(&format!(r#"action="{page}/groups""#)));
    assert!(r.text.contains(&format!(r#"action="{page}""#)));
    assert!(
        !r.text.contains("<script>alert(1)"),
        "the team name is escaped"
    );
    assert!(r.text.contains("&#60;script&#62;alert(1)"), "{}", r.text);

    // A group from a ticked box and a typed list.
    let r = form(
        &admin,
        &format!("{page}/groups"),
        &[
            ("group_name", "fleet"),
            ("instances", "dev"),
            ("instance_list", "prod"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(location(&r), format!("{page}?done=group_saved#groups"));
    let groups = admin.get(&groups_api).await;
    assert_eq!(groups.body[0]["name"], "fleet");
    assert_eq!(groups.body[0]["instances"].as_array().unwrap().len(), 2);
    let r = admin.get(&location(&r)).await;
    assert!(r.text.contains("The group was saved."), "{}", r.text);
    let row = part(&r.text, r#"data-group="fleet""#, "</tr>");
    assert!(row.contains("dev, prod"), "{row}");
    assert!(row.contains(r#"data-testid="delete-group""#), "{row}");

    // Refused groups: the typed text is kept, escaped, next to its field.
    let hostile = r#""><img src=x onerror=alert(2)>"#;
    let r = form(
        &admin,
        &format!("{page}/groups"),
        &[("group_name", hostile), ("instances", "dev")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("field-error"), "{}", r.text);
    assert!(!r.text.contains("<img src=x"), "typed text is escaped");
    assert!(r.text.contains("&#60;img src=x"), "{}", r.text);
    let r = form(
        &admin,
        &format!("{page}/groups"),
        &[("group_name", "spare"), ("instance_list", "<b>nowhere</b>")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("has no instance"), "{}", r.text);
    assert!(
        !r.text.contains("<b>nowhere</b>"),
        "the API's message is escaped"
    );
    assert_eq!(count(&admin, &groups_api).await, 1);

    // A pipeline from the create form, its stages in order.
    let r = form(
        &admin,
        &page,
        &[
            ("name", "release"),
            (
                "stages",
                "dev instance:dev\r\nprod group:fleet approval\r\n",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        location(&r),
        format!("{page}?done=pipeline_created#pipelines")
    );
    let listed = admin.get(&pipelines_api).await;
    assert_eq!(listed.body[0]["name"], "release");
    assert_eq!(listed.body[0]["stages"][0]["name"], "dev");
    assert_eq!(
        listed.body[0]["stages"][1]["target"],
        json!({"kind": "group", "name": "fleet"})
    );
    assert_eq!(listed.body[0]["stages"][1]["requires_approval"], true);
    let r = admin.get(&page).await;
    let card = part(&r.text, r#"data-pipeline="release""#, "</article>");
    let stages = part(card, r#"data-testid="stages""#, "</ol>");
    let (dev, prod) = (
        stages.find(r#"data-stage="dev""#).unwrap(),
        stages.find(r#"data-stage="prod""#).unwrap(),
    );
    assert!(dev < prod, "{stages}");
    assert!(stages.contains("instance dev") && stages.contains("group fleet"));
    assert_eq!(stages.matches(r#"data-testid="approval""#).count(), 1);
    assert!(card.contains(r#"data-testid="no-promotions""#), "{card}");
    assert!(card.contains(&format!(r#"action="{page}/release/promote#pipeline-"#)));
    assert!(card.contains(r#"data-testid="delete-pipeline""#));

    // Refused pipelines: a line that does not read is named; the API's
    // refusal goes next to its field with what was typed, escaped.
    let r = form(
        &admin,
        &page,
        &[
            ("name", "other"),
            ("stages", "dev instance:dev\nprod somewhere"),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        part(&r.text, r#"data-testid="stages-error""#, "</small>").contains("Line 2:"),
        "{}",
        r.text
    );
    let r = form(
        &admin,
        &page,
        &[("name", hostile), ("stages", "dev instance:dev")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("pipeline name is"), "{}", r.text);
    assert!(!r.text.contains("<img src=x"), "typed text is escaped");
    let r = form(
        &admin,
        &page,
        &[("name", "ghost"), ("stages", "dev instance:nowhere")],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.contains("does not have"), "{}", r.text);
    assert_eq!(count(&admin, &pipelines_api).await, 1);

    // Promote: an unknown snapshot and a stage before its turn are
    // explained on the pipeline; into dev at once, whose instance is
    // stopped, the deploy fails and the page says so.
    let snapshot = import(&admin, &team, "dev").await;
    let promote = format!("{page}/release/promote");
    let r = form(
        &admin,
        &promote,
        &[
            ("snapshot", "0123456789abcdef0123456789abcdef"),
            ("stage", "dev"),
        ],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let refused = part(&r.text, r#"data-testid="promote-error""#, "</p>");
    assert!(refused.contains("No such snapshot"), "{refused}");
    let r = form(
        &admin,
        &promote,
        &[("snapshot", &snapshot), ("stage", "prod")],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let refused = part(&r.text, r#"data-testid="promote-error""#, "</p>");
    assert!(refused.contains("into dev first"), "{refused}");
    assert!(
        r.text.contains(&format!(
            r#"name="snapshot" type="text" value="{snapshot}""#
        )),
        "typed kept"
    );
    let r = form(
        &admin,
        &promote,
        &[("snapshot", &snapshot), ("stage", "dev")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(location(&r).starts_with(&format!("{page}?done=promotion_failed#promotion-")));
    let r = admin.get(&location(&r)).await;
    assert!(
        r.text.contains("deploy failed on at least one instance"),
        "{}",
        r.text
    );
    let card = part(&r.text, r#"data-pipeline="release""#, "</article>");
    assert!(card.contains(r#"data-status="failed""#), "{card}");
    assert!(card.contains("start it first"), "{card}");
    assert!(card.contains(&snapshot[..8]), "{card}");

    // Held for a window (UTC), shown in UTC.
    let r = form(
        &admin,
        &promote,
        &[
            ("snapshot", &snapshot),
            ("stage", "dev"),
            ("not_before", "2999-01-01T00:00"),
            ("daily", "22:00-02:00"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(
        location(&r).contains("done=promotion_scheduled"),
        "{}",
        location(&r)
    );
    let r = admin.get(&page).await;
    let card = part(&r.text, r#"data-pipeline="release""#, "</article>");
    assert!(card.contains(r#"data-status="scheduled""#), "{card}");
    assert!(
        card.contains("not before 2999-01-01 00:00:00 UTC, daily 22:00-02:00 UTC"),
        "{card}"
    );

    // A stage that needs approval: the promoter is offered no Approve (only
    // why), and a forced approval is refused; another Owner approves.
    let r = form(
        &admin,
        &page,
        &[
            ("name", "direct"),
            ("stages", "prod instance:prod approval"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let r = form(
        &admin,
        &format!("{page}/direct/promote"),
        &[("snapshot", &snapshot), ("stage", "prod")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(
        location(&r).contains("done=promotion_awaiting"),
        "{}",
        location(&r)
    );
    let promotion = location(&r)
        .rsplit("#promotion-")
        .next()
        .unwrap()
        .to_string();
    let r = admin.get(&page).await;
    let row = part(
        &r.text,
        &format!(r#"data-promotion="{promotion}""#),
        "</tr>",
    );
    assert!(row.contains(r#"data-status="awaiting_approval""#), "{row}");
    assert!(row.contains("promoted by admin"), "{row}");
    assert!(!row.contains(r#"data-testid="approve""#), "{row}");
    assert!(row.contains("You promoted it"), "{row}");
    let approve = format!("{page}/promotions/{promotion}/approve");
    let r = form(&admin, &approve, &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let row = part(
        &r.text,
        &format!(r#"data-promotion="{promotion}""#),
        "</tr>",
    );
    assert!(
        part(row, r#"data-testid="approve-error""#, "</p>")
            .contains("an Owner other than the one who promoted it"),
        "{row}"
    );
    let r = oscar.get(&page).await;
    let row = part(
        &r.text,
        &format!(r#"data-promotion="{promotion}""#),
        "</tr>",
    );
    assert!(row.contains(r#"data-testid="approve""#) && !row.contains("You promoted it"));
    let r = form(&oscar, &approve, &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(
        location(&r).contains("done=promotion_failed"),
        "{}",
        location(&r)
    );
    let r = oscar.get(&page).await;
    let row = part(
        &r.text,
        &format!(r#"data-promotion="{promotion}""#),
        "</tr>",
    );
    assert!(row.contains("approved by oscar"), "{row}");
    assert!(!row.contains(r#"data-testid="approve""#), "{row}");

    // Deleting: the pipeline, then the group.
    let r = form(&admin, &format!("{page}/direct/delete"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        location(&r),
        format!("{page}?done=pipeline_deleted#pipelines")
    );
    assert_eq!(count(&admin, &pipelines_api).await, 1);
    let r = form(&admin, &format!("{page}/groups/fleet/delete"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(count(&admin, &groups_api).await, 0);
    // Not a name: no such page.
    let r = form(&admin, &format!("{page}/groups/Not%20A%20Name/delete"), &[]).await;
    assert_eq!(r.status, 404);
}

async fn a_member_sees_the_pipelines_but_no_form_and_is_refused(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Mill").await;
    new_instance(&admin, &team, "dev").await;
    let member = s.user(&admin, "mona").await;
    join_team(&admin, &member, &team, "mona", "member").await;
    let viewer = s.user(&admin, "vic").await;
    join_team(&admin, &viewer, &team, "vic", "viewer").await;
    let stranger = s.user(&admin, "stu").await;
    let page = format!("/teams/{team}/pipelines");
    let r = admin
        .put(
            &format!("/api/v1/teams/{team}/groups/line"),
            json!({"instances": ["dev"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/pipelines"),
            json!({"name": "release", "stages": [
                {"name": "dev", "target": {"kind": "group", "name": "line"}, "requires_approval": true}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let snapshot = import(&admin, &team, "dev").await;
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/pipelines/release/promote"),
            json!({"snapshot": snapshot, "stage": "dev"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let promotion = r.body["id"].as_str().unwrap().to_string();

    // The Member reads it all, with no form anywhere.
    let r = member.get(&format!("/teams/{team}")).await;
    assert!(r.text.contains(&format!(r#"href="{page}""#)), "{}", r.text);
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(part(&r.text, r#"data-group="line""#, "</tr>").contains("dev"));
    let card = part(&r.text, r#"data-pipeline="release""#, "</article>");
    assert!(card.contains(r#"data-testid="approval""#), "{card}");
    assert!(
        card.contains(&format!(r#"data-promotion="{promotion}""#)),
        "{card}"
    );
    assert!(card.contains("awaiting_approval"), "{card}");
    for control in [
        format!(r#"action="{page}""#),
        format!(r#"action="{page}/groups""#),
        "/promote".to_string(),
        "/approve".to_string(),
        "/delete".to_string(),
        "<textarea".to_string(),
        "<select".to_string(),
        "Save group".to_string(),
        "Create pipeline".to_string(),
    ] {
        assert!(!r.text.contains(&control), "a member sees {control}");
    }

    // Forced posts are refused, say who may, and change nothing.
    let posts: [(String, Vec<(&str, &str)>); 6] = [
        (
            format!("{page}/groups"),
            vec![("group_name", "mine"), ("instances", "dev")],
        ),
        (format!("{page}/groups/line/delete"), vec![]),
        (
            page.clone(),
            vec![("name", "mine"), ("stages", "dev instance:dev")],
        ),
        (format!("{page}/release/delete"), vec![]),
        (
            format!("{page}/release/promote"),
            vec![("snapshot", &snapshot), ("stage", "dev")],
        ),
        (format!("{page}/promotions/{promotion}/approve"), vec![]),
    ];
    for (path, fields) in &posts {
        let r = form(&member, path, fields).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert!(
            r.text.contains("Only the team&#39;s Owners may")
                || r.text.contains("Only the team's Owners may"),
            "{path}: {}",
            r.text
        );
    }
    let groups = admin.get(&format!("/api/v1/teams/{team}/groups")).await;
    assert_eq!(groups.body.as_array().unwrap().len(), 1);
    let pipelines = admin.get(&format!("/api/v1/teams/{team}/pipelines")).await;
    assert_eq!(pipelines.body.as_array().unwrap().len(), 1);
    let promotions = admin
        .get(&format!(
            "/api/v1/teams/{team}/pipelines/release/promotions"
        ))
        .await;
    assert_eq!(promotions.body.as_array().unwrap().len(), 1);
    assert_eq!(promotions.body[0]["state"], "awaiting_approval");

    // A Viewer may not read pipelines, and the team page does not link
    // them; someone outside the team learns nothing.
    let r = viewer.get(&page).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = viewer.get(&format!("/teams/{team}")).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(&format!(r#"href="{page}""#)));
    let r = stranger.get(&page).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(!r.text.contains("release"));
    let r = form(&stranger, &format!("{page}/release/delete"), &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(
        admin
            .get(&format!("/api/v1/teams/{team}/pipelines"))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Without a session: to the login page.
    let r = s.anonymous().get(&page).await;
    assert_eq!(r.status, 303);
    assert!(location(&r).starts_with("/login?next="), "{}", location(&r));
}

async fn owners_deploy_and_set_git_on_the_page(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Foundry").await;
    new_instance(&admin, &team, "dev").await;
    let member = s.user(&admin, "milo").await;
    join_team(&admin, &member, &team, "milo", "member").await;
    let page = format!("/teams/{team}/pipelines");
    let git_api = format!("/api/v1/teams/{team}/git");
    let snapshot = import(&admin, &team, "dev").await;

    // The Owner has the deploy form and the git section (nothing set
    // yet); the Member neither.
    let r = admin.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains(r#"data-testid="deploy-form""#),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(r#"<option value="instance:dev""#),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"data-testid="git-settings""#));
    assert!(r.text.contains(r#"data-testid="git-unset""#));
    assert!(r.text.contains(&format!(r#"action="{page}/git""#)));
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains(r#"data-testid="deploy-form""#),
        "{}",
        r.text
    );
    assert!(!r.text.contains(r#"data-testid="git-settings""#));
    assert!(!r.text.contains(&format!(r#"action="{page}/git""#)));

    // A deploy to the (stopped) instance: its deployment, with its status,
    // shown once; a second submit of the same form goes back to the page.
    let deploys = format!("/api/v1/teams/{team}/instances/dev/deployments");
    let before = count(&admin, &deploys).await;
    let r = form(
        &admin,
        &format!("{page}/deploy"),
        &[
            ("snapshot", &snapshot),
            ("target", "instance:dev"),
            ("only", ""),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let card = part(&r.text, r#"data-testid="deploy-result""#, "</section>");
    assert!(card.contains(r#"data-deployed="dev""#), "{card}");
    assert!(card.contains("data-status="), "{card}");
    assert_eq!(count(&admin, &deploys).await, before + 1);
    // A target that is not one: refused on the form, as typed.
    let r = form(
        &admin,
        &format!("{page}/deploy"),
        &[("snapshot", &snapshot), ("target", "<b>x</b>")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="deploy-error""#));
    // An unknown snapshot: said so.
    let r = form(
        &admin,
        &format!("{page}/deploy"),
        &[
            ("snapshot", "0123456789abcdef0123456789abcdef"),
            ("target", "instance:dev"),
        ],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(
        r.text.contains("No such snapshot in this team"),
        "{}",
        r.text
    );
    // A Member's forced deploy is refused by the API, deploys nothing.
    let r = form(
        &member,
        &format!("{page}/deploy"),
        &[("snapshot", &snapshot), ("target", "instance:dev")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("Owners may deploy snapshots"), "{}", r.text);
    assert_eq!(count(&admin, &deploys).await, before + 1);

    // The git settings form saves; the token is stored, never shown back.
    let token = "ghp_s3cretTokenValue42";
    let r = form(
        &admin,
        &format!("{page}/git"),
        &[
            (
                "repository_url",
                "https://git.example.com/foundry/flows.git",
            ),
            ("push_branch", "review"),
            ("pull_branch", "main"),
            ("token", token),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(location(&r), format!("{page}?done=git_saved#git"));
    let r = admin.get(&location(&r)).await;
    assert!(r.text.contains("git settings were saved"), "{}", r.text);
    let section = part(&r.text, r#"data-testid="git-settings""#, "</section>");
    assert!(
        section.contains("https://git.example.com/foundry/flows.git"),
        "{section}"
    );
    assert!(section.contains("stored (never shown)"), "{section}");
    assert!(section.contains(r#"value="review""#), "{section}");
    assert!(!r.text.contains(token));
    let got = admin.get(&git_api).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["has_token"], true);
    assert_eq!(got.body["pull_branch"], "main");

    // Hostile input is refused, shown escaped, and changes nothing.
    let hostile = r#"https://x/"><script>alert(1)</script>"#;
    let r = form(
        &admin,
        &format!("{page}/git"),
        &[
            ("repository_url", hostile),
            ("push_branch", "review"),
            ("pull_branch", "main"),
            ("token", token),
        ],
    )
    .await;
    assert!(r.status >= 400, "{}", r.text);
    assert!(r.text.contains(r#"data-testid="git-error""#), "{}", r.text);
    assert!(!r.text.contains("<script>alert(1)"), "{}", r.text);
    assert!(!r.text.contains(token));
    let got = admin.get(&git_api).await;
    assert_eq!(
        got.body["repository_url"],
        "https://git.example.com/foundry/flows.git"
    );

    // A Member's forced save is refused by the API.
    let r = form(
        &member,
        &format!("{page}/git"),
        &[
            ("repository_url", "https://evil.example.com/x.git"),
            ("push_branch", "a"),
            ("pull_branch", "b"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text.contains("Owners may set the team's git repository")
            || r.text
                .contains("Owners may set the team&#39;s git repository"),
        "{}",
        r.text
    );
    let got = admin.get(&git_api).await;
    assert_eq!(
        got.body["repository_url"],
        "https://git.example.com/foundry/flows.git"
    );
}

on_both_backends!(
    owners_manage_groups_and_pipelines_on_the_page,
    a_member_sees_the_pipelines_but_no_form_and_is_refused,
    owners_deploy_and_set_git_on_the_page,
);
