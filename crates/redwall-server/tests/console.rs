//! The web console's pages and forms over HTTP: the same rules as the API,
//! forms that survive bad input, and nothing secret or unescaped on a page.
//! (The same flows in a real browser: tests/browser/.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{create_team, form, form_raw, join_team, location, Client, TestServer, USER_PASSWORD};
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

async fn pages_need_a_session_and_say_when_it_ended(s: &TestServer) {
    let r = s.anonymous().get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/login?next=%2F");
    let mut stale = s.anonymous();
    stale.cookie = Some("redwall_session=rwc_notasessionnotasessionnotasessionnotasess".into());
    let r = stale.get("/teams/new").await;
    assert_eq!(r.status, 303);
    assert!(location(&r).contains("expired=1"), "{}", location(&r));
    let r = s.anonymous().get(&location(&r)).await;
    assert!(r.text.contains("Your session has ended"), "{}", r.text);
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
}

async fn forms_refuse_stale_tokens_other_sites_and_double_submits(s: &TestServer) {
    let admin = s.admin().await;
    let r = form_raw(
        &admin,
        "/teams",
        &[
            ("csrf", "stale"),
            ("form_id", "0123456789abcdef0123"),
            ("name", "one"),
        ],
        &admin.base,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.text.contains("This page expired"), "{}", r.text);

    let csrf = admin.csrf.clone().unwrap();
    let r = form_raw(
        &admin,
        "/teams",
        &[
            ("csrf", &csrf),
            ("form_id", "0123456789abcdef0123"),
            ("name", "evil"),
        ],
        "https://evil.example",
    )
    .await;
    assert_eq!(r.status, 403);

    // The same rendered form sent twice: one team, and the second lands
    // where the first went.
    let fields = [
        ("csrf", csrf.as_str()),
        ("form_id", "fedcba9876543210fedcba98"),
        ("name", "Operations"),
    ];
    let first = form_raw(&admin, "/teams", &fields, &admin.base).await;
    let second = form_raw(&admin, "/teams", &fields, &admin.base).await;
    assert_eq!(first.status, 303, "{}", first.text);
    assert_eq!(location(&first), location(&second));
    let teams = admin.get("/api/v1/teams").await;
    let names: Vec<&str> = teams
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Operations"]);
}

async fn a_refused_form_keeps_what_was_typed_and_names_the_field(s: &TestServer) {
    let admin = s.admin().await;
    let long = "Long name ".repeat(20);
    let r = form(&admin, "/teams", &[("name", &long)]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains(&format!(r#"value="{}""#, long.trim())),
        "the name typed is kept"
    );
    assert!(r.text.contains("field-error"), "{}", r.text);
    assert!(r.text.contains(r#"aria-invalid="true""#));
    // After the refusal the same form may be corrected and sent again.
    let r = form(&admin, "/teams", &[("name", "Free")]).await;
    assert_eq!(r.status, 303, "{}", r.text);
}

async fn a_viewer_sees_no_controls_and_a_forced_post_is_refused(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let instance = new_instance(&admin, &team, "plant-flows").await;
    let viewer = s.user(&admin, "vera").await;
    join_team(&admin, &viewer, &team, "vera", "viewer").await;

    let owner_page = admin
        .get(&format!("/teams/{team}/instances/{instance}"))
        .await;
    assert!(owner_page
        .text
        .contains(&format!("/instances/{instance}/start")));
    let page = viewer
        .get(&format!("/teams/{team}/instances/{instance}"))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        !page.text.contains(&format!("/instances/{instance}/start")),
        "no start button"
    );
    assert!(!page.text.contains("Save environment"));
    assert!(!page.text.contains("Delete instance"));
    let home = viewer.get("/").await;
    assert!(home.text.contains("plant-flows") && !home.text.contains("/start\""));

    let r = form(
        &viewer,
        &format!("/teams/{team}/instances/{instance}/start"),
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let i = admin
        .get(&format!("/api/v1/teams/{team}/instances/{instance}"))
        .await;
    assert_eq!(i.body["desired_state"], "stopped");

    // Someone outside the team learns nothing, not even that it exists.
    let stranger = s.user(&admin, "stan").await;
    let r = stranger.get(&format!("/teams/{team}")).await;
    assert_eq!(r.status, 404);
}

async fn a_secret_is_never_shown_again_and_values_are_escaped(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Secrets").await;
    let instance = new_instance(&admin, &team, "vault-flows").await;
    let path = format!("/teams/{team}/instances/{instance}");
    let hostile = r#""><script>alert(1)</script>"#;
    let r = form(
        &admin,
        &format!("{path}/env"),
        &[
            ("env_name", "DB_PASSWORD"),
            ("env_existing", "0"),
            ("env_value", "s3cret-value-42"),
            ("env_kind", "secret"),
            ("env_name", "GREETING"),
            ("env_existing", "0"),
            ("env_value", hostile),
            ("env_kind", "plain"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let page = admin.get(&path).await;
    assert!(page.text.contains("DB_PASSWORD"));
    assert!(
        !page.text.contains("s3cret-value-42"),
        "the secret is not on the page"
    );
    assert!(
        !page.text.contains("<script>alert(1)"),
        "typed text is escaped"
    );
    assert!(page.text.contains("&lt;script&gt;") || page.text.contains("&#60;script&#62;"));

    // Saving again with the secret's field empty keeps it; making it plain
    // without a new value is refused rather than revealing it.
    let r = form(
        &admin,
        &format!("{path}/env"),
        &[
            ("env_name", "DB_PASSWORD"),
            ("env_existing", "secret"),
            ("env_value", ""),
            ("env_kind", "plain"),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("no longer secret"), "{}", r.text);
    let env = admin
        .get(&format!("/api/v1/teams/{team}/instances/{instance}/env"))
        .await;
    let vars = env.body.as_array().unwrap();
    let secret = vars.iter().find(|v| v["name"] == "DB_PASSWORD").unwrap();
    assert_eq!(secret["secret"], true);
    assert!(secret["value"].is_null());
    assert!(!env.text.contains("s3cret-value-42"));
}

async fn route_test_explains_which_rule_matched(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Routes").await;
    let instance = new_instance(&admin, &team, "route-flows").await;
    let path = format!("/teams/{team}/instances/{instance}");
    let r = form(
        &admin,
        &format!("{path}/routes"),
        &[
            ("rule_order", "2"),
            ("rule_path", "/api"),
            ("rule_methods", "get, post"),
            ("rule_policy", "api_key"),
            ("rule_role", "viewer"),
            ("rule_ranges", ""),
            ("rule_order", "1"),
            ("rule_path", "/form"),
            ("rule_methods", ""),
            ("rule_policy", "session"),
            ("rule_role", "dashboard"),
            ("rule_ranges", "10.0.0.0/8"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let rules = admin
        .get(&format!("/api/v1/teams/{team}/instances/{instance}/routes"))
        .await;
    assert_eq!(
        rules.body[0]["path_prefix"], "/form",
        "ordered by the order column"
    );
    assert_eq!(rules.body[1]["methods"], json!(["GET", "POST"]));

    let r = form(
        &admin,
        &format!("{path}/routes-test"),
        &[
            ("method", "get"),
            ("path", "/api/orders"),
            ("credential", "none"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("Rule 2 matched: /api"), "{}", r.text);
    assert!(r.text.contains("Denied (401)"));
    let r = form(
        &admin,
        &format!("{path}/routes-test"),
        &[
            ("method", "GET"),
            ("path", "/other"),
            ("credential", "none"),
        ],
    )
    .await;
    assert!(r.text.contains("No rule matched"), "{}", r.text);
}

async fn login_form_says_what_went_wrong(s: &TestServer) {
    let admin = s.admin().await;
    s.create_user(&admin, "lena").await;
    let (browser, _, csrf) = s.login_page().await;
    let mut last = None;
    for _ in 0..12 {
        let r = form_raw(
            &browser,
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "lena"),
                ("password", "wrong-password-1"),
            ],
            &browser.base,
        )
        .await;
        if r.status == 429 {
            last = Some(r);
            break;
        }
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(r.text.contains("The username or password is incorrect"));
        assert!(r.text.contains(r#"value="lena""#), "the username is kept");
        assert!(!r.text.contains("wrong-password-1"), "the password is not");
    }
    let throttled = last.expect("repeated failures are throttled");
    assert!(
        throttled
            .text
            .contains("Too many failed attempts. Try again in"),
        "{}",
        throttled.text
    );

    // A login form from another site is refused before any password check.
    let r = form_raw(
        &browser,
        "/login",
        &[
            ("csrf", &csrf),
            ("username", "lena"),
            ("password", USER_PASSWORD),
        ],
        "https://evil.example",
    )
    .await;
    assert_eq!(r.status, 403);
}

async fn account_forms_explain_refusals_and_show_new_secrets_once(s: &TestServer) {
    let admin = s.admin().await;
    let user = s.user(&admin, "olga").await;
    let r = form(
        &user,
        "/account/password",
        &[
            ("current_password", USER_PASSWORD),
            ("new_password", "short"),
            ("new_password_confirm", "short"),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("field-error"), "{}", r.text);
    assert!(
        !r.text.contains(USER_PASSWORD),
        "passwords are never put back into the page"
    );

    let fields = [("token_name", "ci deploy"), ("token_scope", "read")];
    let r = form(&user, "/account/tokens", &fields).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r
        .text
        .split("rwp_")
        .nth(1)
        .expect("the new token is shown")
        .split('<')
        .next()
        .unwrap();
    let shown = format!("rwp_{token}");
    let page = user.get("/account").await;
    assert!(
        page.text.contains("ci deploy") && !page.text.contains(&shown),
        "shown once only"
    );

    // MFA: the QR code and key, then recovery codes once.
    let r = form(&user, "/account/mfa/enrol", &[]).await;
    assert!(r.text.contains("data:image/svg+xml;base64,"), "{}", r.text);
    let secret = r
        .text
        .split(r#"data-testid="mfa-secret">"#)
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let secret = redwall_crypto::totp::TotpSecret::from_base32(secret).unwrap();
    let code = secret.code_at((redwall_server::clock::Clock::now(&s.clock) / 1_000_000) as u64);
    let confirm = [("code", code.as_str())];
    let csrf = user.csrf.clone().unwrap();
    let with_id = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("csrf", csrf.clone()),
            ("form_id", "mfa-confirm-0123456789".to_string()),
        ];
        v.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        v
    };
    let fields = with_id(&confirm);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = form_raw(&user, "/account/mfa/confirm", &fields, &user.base).await;
    assert!(
        first.text.contains(r#"data-testid="recovery-codes""#),
        "{}",
        first.text
    );
    let again = form_raw(&user, "/account/mfa/confirm", &fields, &user.base).await;
    assert_eq!(
        again.status, 303,
        "a second submit does not show the codes again"
    );
    let page = user.get(&location(&again)).await;
    assert!(!page.text.contains("recovery-codes\""), "{}", page.text);

    // Turning it off needs the password and a fresh code.
    s.clock.advance_secs(30);
    let next = secret.code_at((redwall_server::clock::Clock::now(&s.clock) / 1_000_000) as u64);
    let r = form(
        &user,
        "/account/mfa/disable",
        &[("password", "wrong-password-here"), ("disable_code", &next)],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("field-error"));
    let r = form(
        &user,
        "/account/mfa/disable",
        &[("password", USER_PASSWORD), ("disable_code", &next)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(user.get("/api/v1/me/mfa").await.body["enabled"], false);
}

async fn admin_pages_are_for_admins_and_verify_the_chain(s: &TestServer) {
    let admin = s.admin().await;
    let user = s.user(&admin, "paul").await;
    assert_eq!(user.get("/admin/users").await.status, 403);
    assert_eq!(user.get("/admin/audit").await.status, 403);
    assert!(
        !user.get("/").await.text.contains("/admin/users"),
        "no Admin link"
    );
    let r = form(&user, "/admin/audit/verify", &[]).await;
    assert_eq!(r.status, 403);

    let page = admin.get("/admin/users").await;
    assert!(page.text.contains("paul"));
    let r = form(&admin, "/admin/audit/verify", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("Intact."), "{}", r.text);
    let events = common::audit_events(&admin, "audit.verified").await;
    assert_eq!(events.len(), 1);
}

async fn a_platform_that_requires_mfa_sends_new_users_to_enrol(s: &TestServer) {
    let admin = s.admin().await;
    common::enrol_mfa(s, &admin).await;
    let r = admin
        .patch("/api/v1/settings", json!({"require_mfa": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = s.user(&admin, "nina").await;
    let r = user.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/account/mfa?required=1");
    let page = user.get("/account/mfa?first_run=1&required=1").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("requires two-step verification"));
    assert!(!page.text.contains("Skip for now"), "no way around it");
    assert!(page.text.contains("Set up an authenticator app"));
}

/// The password a broker page shows once, and the username beside it.
fn shown_credentials(page: &str) -> Option<(String, String)> {
    let field = |id: &str| {
        page.split(&format!(r#"data-testid="{id}">"#))
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .map(str::to_string)
    };
    Some((field("new-username")?, field("new-password")?))
}

/// The publishers and subscribers the who-may table lists for a filter.
fn who_may(page: &str, filter: &str) -> Option<(String, String)> {
    let row = page
        .split(&format!(r#"<tr data-filter="{filter}">"#))
        .nth(1)?
        .split("</tr>")
        .next()?;
    let cell = |attr: &str| {
        row.split(&format!("<td {attr}>"))
            .nth(1)
            .and_then(|c| c.split("</td>").next())
            .map(str::to_string)
    };
    Some((cell("data-publishers")?, cell("data-subscribers")?))
}

/// A page with its per-render form ids blanked, to compare two answers.
fn without_form_ids(text: &str) -> String {
    text.split(r#"name="form_id" value=""#)
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_string()
            } else {
                part.split_once('"')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join("")
}

async fn broker_login_works(s: &TestServer, username: &str, password: &str) -> bool {
    s.running
        .state
        .hub
        .broker_login(username, password.as_bytes())
        .await
        .unwrap()
        .is_some()
}

async fn broker_clients_are_managed_on_the_team_broker_page(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let member = s.user(&admin, "mira").await;
    join_team(&admin, &member, &team, "mira", "member").await;
    let page = format!("/teams/{team}/broker");
    let clients_api = format!("/api/v1/teams/{team}/broker/clients");

    let team_page = member.get(&format!("/teams/{team}")).await;
    assert!(
        team_page.text.contains(&format!(r#"href="{page}""#)),
        "linked from the team page"
    );
    let r = member.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("No clients yet"));
    assert!(r
        .text
        .contains(&format!(r#"action="/teams/{team}/broker/clients""#)));
    assert!(r.text.contains("/mqtt"), "says where to connect");

    // A Member creates a client: its password is on the answer, once.
    let csrf = member.csrf.clone().unwrap();
    let fields = [
        ("csrf", csrf.as_str()),
        ("form_id", "broker-create-0123456789"),
        ("name", "line 1 gateway"),
        (
            "rules",
            "allow publish plant/#\r\ndeny both plant/secret/#\r\n\r\nallow subscribe +/temp\r\n",
        ),
    ];
    let created = form_raw(&member, &format!("{page}/clients"), &fields, &member.base).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let (username, password) = shown_credentials(&created.text).expect("the password is shown");
    assert!(password.starts_with("rwb_"), "{password}");
    assert!(broker_login_works(s, &username, &password).await);
    let list = member.get(&clients_api).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    assert_eq!(list.body[0]["id"], username.as_str());
    assert_eq!(list.body[0]["rules"][1]["filter"], "plant/secret/#");

    // Not again: neither when the same form is sent again (no second
    // client either) nor on a reload.
    let again = form_raw(&member, &format!("{page}/clients"), &fields, &member.base).await;
    assert!(!again.text.contains("rwb_"), "{}", again.text);
    // The double-submit guard holds on team pages too (their paths are
    // long): the resend lands where the first went, nothing is made twice.
    assert_eq!(again.status, 303, "{}", again.text);
    let reload = member.get(&page).await;
    assert_eq!(reload.status, 200);
    assert!(!reload.text.contains(&password) && !reload.text.contains("rwb_"));
    assert!(!reload.text.contains("new-password"));
    assert_eq!(
        member
            .get(&clients_api)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The list: name, username, rules in order.
    assert!(reload.text.contains("line 1 gateway"));
    assert!(reload.text.contains(&username));
    let at = |needle: &str| reload.text.find(needle).unwrap();
    assert!(at("allow publish plant/#") < at("deny both plant/secret/#"));
    assert!(at("deny both plant/secret/#") < at("allow subscribe +/temp"));

    // Who may: by the first rule that applies, over the whole filter.
    let (publishers, subscribers) = who_may(&reload.text, "plant/#").unwrap();
    assert!(publishers.contains("line 1 gateway"), "{publishers}");
    assert!(subscribers.contains("nobody"), "{subscribers}");
    let (publishers, subscribers) = who_may(&reload.text, "+/temp").unwrap();
    assert!(publishers.contains("nobody"), "{publishers}");
    assert!(subscribers.contains("line 1 gateway"), "{subscribers}");
    let (_, subscribers) = who_may(&reload.text, "plant/secret/#").unwrap();
    assert!(subscribers.contains("nobody"), "{subscribers}");

    // A line that is not a rule: named, what was typed kept, nothing stored.
    let r = form(
        &member,
        &format!("{page}/clients"),
        &[
            ("name", "sensor 7"),
            ("rules", "allow publish plant/7/#\npermit subscribe plant/#"),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("field-error"), "{}", r.text);
    assert!(
        r.text
            .contains("Line 2: &quot;permit&quot; is not allow or deny")
            || r.text
                .contains("Line 2: &#34;permit&#34; is not allow or deny"),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"value="sensor 7""#), "the name is kept");
    assert!(
        r.text.contains("permit subscribe plant/#"),
        "the rules are kept"
    );
    assert!(!r.text.contains("rwb_"));
    // A filter the hub refuses: its line is named too.
    let r = form(
        &member,
        &format!("{page}/clients"),
        &[
            ("name", "sensor 7"),
            ("rules", "allow both plant/#\nallow publish a/#/b"),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("Line 2: # may only be the last level"),
        "{}",
        r.text
    );
    assert_eq!(
        member
            .get(&clients_api)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // New rules; a bad line leaves the stored ones alone.
    let rules_form = format!("{page}/clients/{username}/rules");
    let r = form(
        &member,
        &rules_form,
        &[("rules", "allow both  sensors/+/x ")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(
        location(&r).contains("done=rules_saved"),
        "{}",
        location(&r)
    );
    let list = member.get(&clients_api).await;
    assert_eq!(
        list.body[0]["rules"],
        json!([{"effect": "allow", "actions": "both", "filter": "sensors/+/x"}])
    );
    let r = form(&member, &rules_form, &[("rules", "allow both")]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains(r#"data-testid="rules-error""#),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("Line 1: the rule names no topic filter"),
        "{}",
        r.text
    );
    assert_eq!(
        member.get(&clients_api).await.body[0]["rules"],
        list.body[0]["rules"]
    );

    // Rotate: a new password, once; the old one stops.
    let r = form(&member, &format!("{page}/clients/{username}/rotate"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (same, fresh) = shown_credentials(&r.text).expect("the new password is shown");
    assert_eq!(same, username);
    assert_ne!(fresh, password);
    assert!(!broker_login_works(s, &username, &password).await);
    assert!(broker_login_works(s, &username, &fresh).await);
    assert!(!member.get(&page).await.text.contains(&fresh));

    // Disable (refused at login, marked on the page), then enable again.
    let r = form(&member, &format!("{page}/clients/{username}/disable"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(location(&r).contains("done=client_disabled"));
    assert!(!broker_login_works(s, &username, &fresh).await);
    let disabled = member.get(&page).await;
    assert!(
        disabled.text.contains(r#"data-testid="disabled""#),
        "{}",
        disabled.text
    );
    let r = form(&member, &format!("{page}/clients/{username}/enable"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(broker_login_works(s, &username, &fresh).await);
    assert!(!member
        .get(&page)
        .await
        .text
        .contains(r#"data-testid="disabled""#));

    // Revoke (the page asks first), then it is gone.
    assert!(member
        .get(&page)
        .await
        .text
        .contains("data-confirm=\"Revoke line 1 gateway?"));
    let r = form(&member, &format!("{page}/clients/{username}/revoke"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(location(&r).contains("done=client_revoked"));
    assert!(member
        .get(&clients_api)
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty());
    assert!(!broker_login_works(s, &username, &fresh).await);
    let after = member.get(&location(&r)).await;
    assert!(after.text.contains("No clients yet") && !after.text.contains(&username));

    // Every change is the member's, in the log, and no password is.
    let events = common::audit_events(&admin, "broker.*").await;
    for name in [
        "broker.client_created",
        "broker.rules_changed",
        "broker.client_rotated",
        "broker.client_revoked",
    ] {
        let e = events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(e["actor_name"], "mira", "{e}");
        assert!(e["client_ip"].is_string(), "{e}");
    }
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(&password) && !log.contains(&fresh) && !log.contains("rwb_"));
}

async fn the_broker_page_follows_the_team_role(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Hall").await;
    let viewer = s.user(&admin, "vito").await;
    join_team(&admin, &viewer, &team, "vito", "viewer").await;
    let stranger = s.user(&admin, "sven").await;
    let page = format!("/teams/{team}/broker");
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/broker/clients"),
            json!({"name": "press", "rules": [
                {"effect": "allow", "actions": "both", "filter": "hall/press/#"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["username"].as_str().unwrap().to_string();

    // An instance's own identity is listed by the instance's name, and
    // Redwall, not the page, gives it passwords.
    let instance = new_instance(&admin, &team, "hall-flows").await;
    let hub = &s.running.state.hub;
    let stored = hub.team_instance(&team, &instance).await.unwrap();
    let origin = redwall_hub::Origin::local("console-test");
    let (own, _) = hub
        .instance_broker_identity(redwall_hub::Who::anonymous(&origin), &stored)
        .await
        .unwrap();
    let owner_page = admin.get(&page).await;
    assert_eq!(owner_page.status, 200, "{}", owner_page.text);
    assert!(
        owner_page.text.contains("instance: hall-flows"),
        "{}",
        owner_page.text
    );
    assert!(owner_page.text.contains(&format!("/clients/{id}/rotate")));
    assert!(!owner_page.text.contains(&format!("/clients/{own}/rotate")));
    assert!(!owner_page.text.contains(&format!("/clients/{own}/revoke")));
    assert!(owner_page.text.contains(&format!("/clients/{own}/rules")));
    let (publishers, subscribers) = who_may(&owner_page.text, "hall/press/#").unwrap();
    assert!(
        publishers.contains("instance: hall-flows, press"),
        "{publishers}"
    );
    assert!(
        subscribers.contains("instance: hall-flows, press"),
        "{subscribers}"
    );
    let (publishers, _) = who_may(&owner_page.text, "#").unwrap();
    assert_eq!(publishers, "instance: hall-flows");

    // A Viewer reads it all, with no forms.
    let r = viewer.get(&page).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("press") && r.text.contains("allow both hall/press/#"));
    assert!(r.text.contains(&id));
    assert!(who_may(&r.text, "hall/press/#").is_some());
    for control in [
        format!(r#"action="/teams/{team}/broker/clients""#),
        "/rotate".to_string(),
        "/revoke".to_string(),
        "/rules".to_string(),
        "Edit rules".to_string(),
        "<textarea".to_string(),
    ] {
        assert!(!r.text.contains(&control), "a viewer sees {control}");
    }
    assert!(viewer
        .get(&format!("/teams/{team}"))
        .await
        .text
        .contains(&format!(r#"href="{page}""#)));

    // A forced post is refused and changes nothing.
    let r = form(
        &viewer,
        &format!("{page}/clients"),
        &[("name", "mine"), ("rules", "allow both #")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(!r.text.contains("rwb_"));
    for action in ["rotate", "revoke"] {
        let r = form(&viewer, &format!("{page}/clients/{id}/{action}"), &[]).await;
        assert_eq!(r.status, 403, "{action}: {}", r.text);
        assert!(!r.text.contains("rwb_"));
    }
    let r = form(
        &viewer,
        &format!("{page}/clients/{id}/rules"),
        &[("rules", "allow both #")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let list = admin
        .get(&format!("/api/v1/teams/{team}/broker/clients"))
        .await;
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    let press = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap();
    assert_eq!(press["rules"][0]["filter"], "hall/press/#");

    // Someone outside the team gets what a team that does not exist gets.
    let nowhere = "0123456789abcdef0123456789abcdef";
    let theirs = stranger.get(&page).await;
    let none = stranger.get(&format!("/teams/{nowhere}/broker")).await;
    assert_eq!(theirs.status, 404, "{}", theirs.text);
    assert_eq!(none.status, 404);
    assert_eq!(without_form_ids(&theirs.text), without_form_ids(&none.text));
    assert!(!theirs.text.contains("press"));
    let theirs = form(&stranger, &format!("{page}/clients/{id}/rotate"), &[]).await;
    let none = form(
        &stranger,
        &format!("/teams/{nowhere}/broker/clients/{id}/rotate"),
        &[],
    )
    .await;
    assert_eq!(theirs.status, 404, "{}", theirs.text);
    assert_eq!(without_form_ids(&theirs.text), without_form_ids(&none.text));
    let theirs = form(
        &stranger,
        &format!("{page}/clients"),
        &[("name", "x"), ("rules", "")],
    )
    .await;
    assert_eq!(theirs.status, 404, "{}", theirs.text);
    assert_eq!(
        admin
            .get(&format!("/api/v1/teams/{team}/broker/clients"))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

on_both_backends!(
    a_platform_that_requires_mfa_sends_new_users_to_enrol,
    account_forms_explain_refusals_and_show_new_secrets_once,
    admin_pages_are_for_admins_and_verify_the_chain,
    pages_need_a_session_and_say_when_it_ended,
    forms_refuse_stale_tokens_other_sites_and_double_submits,
    a_refused_form_keeps_what_was_typed_and_names_the_field,
    a_viewer_sees_no_controls_and_a_forced_post_is_refused,
    a_secret_is_never_shown_again_and_values_are_escaped,
    route_test_explains_which_rule_matched,
    login_form_says_what_went_wrong,
    broker_clients_are_managed_on_the_team_broker_page,
    the_broker_page_follows_the_team_role,
);
