//! LDAP login against a real OpenLDAP server (see `ldap_kit`): directory
//! users log in with their directory password, get team roles and the admin
//! flag from their groups, and lose them when the directory says so; every
//! kind of failure gets the same answer and its own reason in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod ldap_kit;

use common::{audit_events, create_team, Backend, Client, TestServer, ADMIN, ADMIN_PASSWORD};
use ldap_kit::{group_dn, password_of, user_dn, Slapd};
use redwall_crypto::Secret;
use redwall_policy::permission::TeamRole;
use redwall_policy::sso_mapping::MappingRule;
use redwall_server::sso::config::LdapProvider;
use serde_json::{json, Value};

fn team_rule(group: &str, role: TeamRole) -> MappingRule {
    MappingRule {
        provider: "corp".into(),
        group: group_dn(group),
        team: Some("ops".into()),
        role: Some(role),
        admin: false,
    }
}

fn admin_rule(group: &str) -> MappingRule {
    MappingRule {
        provider: "corp".into(),
        group: group_dn(group),
        team: None,
        role: None,
        admin: true,
    }
}

struct World {
    ldap: Slapd,
    s: TestServer,
    admin: Client,
}

/// slapd plus a Redwall whose provider "corp" is that slapd, with the
/// standard mapping (editors -> ops Member, viewers -> ops Viewer,
/// nr-admins -> platform admin); `tweak` adjusts the providers.
async fn world_with(
    tweak: impl FnOnce(&Slapd, &redwall_crypto::keyring::Keyring) -> Vec<LdapProvider>,
) -> Option<World> {
    let ldap = Slapd::start()?;
    let mut providers = None;
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        let keyring = ldap_kit::install_master_key(&c.data_dir);
        providers = Some(tweak(&ldap, &keyring));
        c.sso.ldap = providers.clone().unwrap();
        c.sso.mappings = vec![
            team_rule("nr-editors", TeamRole::Member),
            team_rule("nr-viewers", TeamRole::Viewer),
            admin_rule("nr-admins"),
        ];
    })
    .await?;
    let admin = s.admin().await;
    Some(World { ldap, s, admin })
}

async fn world() -> Option<World> {
    world_with(|l, k| vec![l.provider("corp", k)]).await
}

async fn ldap_login(
    s: &TestServer,
    provider: &str,
    username: &str,
    password: &str,
) -> (Client, common::Resp) {
    let mut c = s.anonymous();
    let r = c
        .post(
            &format!("/api/v1/auth/ldap/{provider}"),
            json!({"username": username, "password": password}),
        )
        .await;
    if r.status == 200 && r.body["status"] == "ok" {
        c.adopt_session(&r);
    }
    (c, r)
}

async fn logged_in(s: &TestServer, username: &str) -> Client {
    let (c, r) = ldap_login(s, "corp", username, &password_of(username)).await;
    assert_eq!(r.status, 200, "ldap login {username}: {}", r.body);
    assert_eq!(r.body["status"], "ok", "{}", r.body);
    c
}

/// The reasons of the audited SSO failures, oldest first.
async fn failure_reasons(admin: &Client) -> Vec<String> {
    let mut v: Vec<String> = audit_events(admin, "auth.sso_failed")
        .await
        .iter()
        .map(reason_of)
        .collect();
    v.reverse();
    v
}

fn reason_of(e: &Value) -> String {
    e["details"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn ops_roles(admin: &Client, team: &str) -> Vec<(String, String)> {
    let r = admin.get(&format!("/api/v1/teams/{team}/members")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut v: Vec<(String, String)> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["username"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(u, _)| u != ADMIN)
        .collect();
    v.sort();
    v
}

fn assert_generic_401(r: &common::Resp) {
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.code(), "sso_failed", "{}", r.body);
    assert!(r.headers.get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_user_logs_in_and_the_session_works() {
    let Some(w) = world().await else { return };
    let p = w.s.anonymous().get("/api/v1/auth/providers").await;
    assert_eq!(p.status, 200);
    assert_eq!(
        p.body,
        json!([{"name": "corp", "label": "Directory corp", "kind": "ldap"}])
    );
    let alice = logged_in(&w.s, "alice").await;
    let me = alice.get("/api/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["username"], "alice");
    assert_eq!(me.body["authenticated_by"], "session");
    assert_eq!(me.body["is_admin"], false);
    // Provisioned once, linked by entryUUID: the second login is the same user.
    let again = logged_in(&w.s, "alice").await;
    assert_eq!(again.get("/api/v1/me").await.body["id"], me.body["id"]);
    assert_eq!(audit_events(&w.admin, "user.provisioned").await.len(), 1);
    let ok = audit_events(&w.admin, "auth.login").await;
    assert!(
        ok.iter().any(|e| e.to_string().contains("\"corp\"")),
        "{ok:?}"
    );
    // An unknown provider is absent, not a failed login.
    let (_, r) = ldap_login(&w.s, "nope", "alice", &password_of("alice")).await;
    assert_eq!(r.status, 404);

    // The console's login page offers the directory and logs in through it.
    let (browser, page, csrf) = w.s.login_page().await;
    assert!(
        page.text
            .contains(r#"<option value="corp">Directory corp</option>"#),
        "{}",
        page.text
    );
    let password = password_of("alice");
    let r =
        w.s.anonymous()
            .raw(
                w.s.anonymous()
                    .http
                    .post(w.s.url("/login"))
                    .header("cookie", browser.cookie.clone().unwrap())
                    .header("origin", w.s.url(""))
                    .form(&[
                        ("csrf", csrf.as_str()),
                        ("provider", "corp"),
                        ("username", "alice"),
                        ("password", password.as_str()),
                        ("next", "/teams/new"),
                    ]),
            )
            .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/teams/new");
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("redwall_session="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let Some(w) = world().await else { return };
    let (_, wrong) = ldap_login(&w.s, "corp", "alice", "not-her-password").await;
    let (_, unknown) = ldap_login(&w.s, "corp", "mallory", "whatever-password").await;
    assert_generic_401(&wrong);
    assert_generic_401(&unknown);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(
        failure_reasons(&w.admin).await,
        ["wrong_password", "unknown_user"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_password_is_refused_before_any_bind() {
    let Some(w) = world().await else { return };
    // An empty-password simple bind is an unauthenticated bind that many
    // servers answer with success: it must never reach the directory.
    let (_, r) = ldap_login(&w.s, "corp", "alice", "").await;
    assert_generic_401(&r);
    assert_eq!(failure_reasons(&w.admin).await, ["empty_password"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_metacharacters_in_the_username_match_nobody() {
    let Some(w) = world().await else { return };
    let attempts = [
        "*",
        "*)(uid=*",
        "alice)(|(uid=*",
        "*)(objectClass=*",
        "al*",
        "alice\\2a",
    ];
    for name in attempts {
        let (_, r) = ldap_login(&w.s, "corp", name, &password_of("alice")).await;
        assert_generic_401(&r);
    }
    let reasons = failure_reasons(&w.admin).await;
    assert_eq!(
        reasons,
        vec!["unknown_user"; attempts.len()],
        "escaped, they name no user"
    );
    assert!(audit_events(&w.admin, "user.provisioned").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_give_team_roles_and_leaving_a_group_takes_the_role_away() {
    let Some(w) = world().await else { return };
    let ops = create_team(&w.admin, "ops").await;
    logged_in(&w.s, "alice").await;
    logged_in(&w.s, "bob").await;
    assert_eq!(
        ops_roles(&w.admin, &ops).await,
        [
            ("alice".into(), "member".into()),
            ("bob".into(), "viewer".into())
        ]
    );
    // bob leaves nr-viewers in the directory: his next login drops the role.
    w.ldap.modify(
        "ldapmodify",
        &format!(
            "dn: {}\nchangetype: modify\ndelete: member\nmember: {}\n",
            group_dn("nr-viewers"),
            user_dn("bob")
        ),
    );
    logged_in(&w.s, "bob").await;
    assert_eq!(
        ops_roles(&w.admin, &ops).await,
        [("alice".to_string(), "member".to_string())]
    );
    // Each change is in the team's audit log.
    let log = w
        .admin
        .get(&format!(
            "/api/v1/teams/{ops}/audit?event=team.roles_mapped"
        ))
        .await;
    assert_eq!(log.status, 200, "{}", log.body);
    let results: Vec<String> = log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["details"]["change"]["result"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(results.contains(&"removed".to_string()), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_can_make_platform_admins() {
    let Some(w) = world().await else { return };
    let carol = logged_in(&w.s, "carol").await;
    assert_eq!(carol.get("/api/v1/me").await.body["is_admin"], true);
    let alice = logged_in(&w.s, "alice").await;
    assert_eq!(alice.get("/api/v1/me").await.body["is_admin"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_provisioning_an_unlinked_user_is_refused() {
    let Some(w) = world_with(|l, k| {
        let mut p = l.provider("corp", k);
        p.policy.provision = Some(false);
        vec![p]
    })
    .await
    else {
        return;
    };
    let (_, r) = ldap_login(&w.s, "corp", "alice", &password_of("alice")).await;
    assert_generic_401(&r);
    assert_eq!(failure_reasons(&w.admin).await, ["not_linked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_with_the_same_name_is_not_taken_over() {
    let Some(w) = world().await else { return };
    w.s.create_user(&w.admin, "dave").await;
    let (_, r) = ldap_login(&w.s, "corp", "dave", &password_of("dave")).await;
    assert_generic_401(&r);
    assert_eq!(failure_reasons(&w.admin).await, ["username_taken"]);
    // The local dave is untouched: his own password still works.
    let local = w.s.login("dave", common::USER_PASSWORD).await;
    assert_eq!(local.get("/api/v1/me").await.body["username"], "dave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_ldaps_verify_the_server_against_the_configured_ca() {
    let Some(w) = world_with(|l, k| {
        let mut starttls = l.provider("starttls", k);
        starttls.starttls = true;
        let mut ldaps = l.provider("ldaps", k);
        ldaps.url = l.ldaps_url();
        let mut rogue_starttls = starttls.clone();
        rogue_starttls.name = "rogue-starttls".into();
        rogue_starttls.ca_file = Some(l.other_ca_file.clone());
        let mut rogue_ldaps = ldaps.clone();
        rogue_ldaps.name = "rogue-ldaps".into();
        rogue_ldaps.ca_file = Some(l.other_ca_file.clone());
        vec![
            l.provider("corp", k),
            starttls,
            ldaps,
            rogue_starttls,
            rogue_ldaps,
        ]
    })
    .await
    else {
        return;
    };
    // Two users, since each provider name links its own users.
    for (p, user) in [("starttls", "alice"), ("ldaps", "bob")] {
        let (c, r) = ldap_login(&w.s, p, user, &password_of(user)).await;
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        assert_eq!(c.get("/api/v1/me").await.status, 200);
    }
    // A server certificate from a CA we were not told to trust is refused.
    for p in ["rogue-starttls", "rogue-ldaps"] {
        let (_, r) = ldap_login(&w.s, p, "alice", &password_of("alice")).await;
        assert_generic_401(&r);
    }
    assert_eq!(
        failure_reasons(&w.admin).await,
        ["tls_failed", "tls_failed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_down_fails_clearly_and_local_admins_still_log_in() {
    let Some(mut w) = world().await else { return };
    let port = w.ldap.port;
    w.ldap.stop();
    // slapd is gone; its port refuses connections.
    let (_, r) = ldap_login(&w.s, "corp", "alice", &password_of("alice")).await;
    assert_generic_401(&r);
    assert_eq!(failure_reasons(&w.admin).await, ["server_unreachable"]);
    let admin = w.s.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_redwall_mfa_answers_the_second_factor() {
    let Some(w) = world().await else { return };
    let alice = logged_in(&w.s, "alice").await;
    let secret = common::enrol_mfa(&w.s, &alice).await;
    let (_, r) = ldap_login(&w.s, "corp", "alice", &password_of("alice")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "mfa_required");
    assert!(r.headers.get("set-cookie").is_none());
    use redwall_server::clock::Clock;
    w.s.clock.advance_secs(31);
    let code = secret.code_at((w.s.clock.now() / 1_000_000) as u64);
    let mut c = w.s.anonymous();
    let r = c
        .post(
            "/api/v1/auth/ldap/corp",
            json!({"username": "alice", "password": password_of("alice"), "totp": code}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ok");
    c.adopt_session(&r);
    assert_eq!(c.get("/api/v1/me").await.body["username"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_throttled() {
    let Some(w) = world().await else { return };
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (_, r) = ldap_login(&w.s, "corp", "bob", "guess-guess-guess").await;
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(!audit_events(&w.admin, "auth.login_throttled")
        .await
        .is_empty());
}

/// The directory treats "bob", " bob" and "bob         " as one user (uid
/// matches ignoring case and insignificant spaces), so the throttle does too;
/// bob's own known client still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_spelling_of_a_locked_name_is_still_locked() {
    let Some(w) = world().await else { return };
    // Bob logged in from his laptop before: it keeps a device cookie.
    let (_, r) = ldap_login(&w.s, "corp", "bob", &password_of("bob")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let jar: String = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|p| !p.contains("_session="))
        .collect::<Vec<_>>()
        .join("; ");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (_, r) = ldap_login(&w.s, "corp", "bob", "guess-guess-guess").await;
        statuses.push(r.status);
    }
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    for spelling in [
        "bob",
        "bob         ",
        " bob",
        "BOB",
        "b\u{00AD}ob",
        "  Bob  ",
    ] {
        let (_, r) = ldap_login(&w.s, "corp", spelling, &password_of("bob")).await;
        assert_eq!(
            r.status, 429,
            "{spelling:?} from an unknown client: {}",
            r.body
        );
    }
    assert!(!jar.is_empty(), "a successful login gives a device cookie");
    let r =
        w.s.anonymous()
            .raw(
                w.s.anonymous()
                    .http
                    .post(w.s.url("/api/v1/auth/ldap/corp"))
                    .header("cookie", jar)
                    .json(&json!({"username": "bob", "password": password_of("bob")})),
            )
            .await;
    assert_eq!(r.status, 200, "bob's known client: {}", r.body);
    assert_eq!(r.body["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_check_explains_a_bad_service_password() {
    let Some(mut ldap) = Slapd::start() else {
        return;
    };
    let keyring = redwall_crypto::keyring::Keyring::generate();
    let p = ldap.provider("corp", &keyring);
    let good = Secret::new(ldap_kit::SERVICE_PASSWORD.to_string());
    assert_eq!(redwall_server::sso::ldap::check(&p, &good).await, Ok(()));
    let bad = redwall_server::sso::ldap::check(&p, &Secret::new("wrong".to_string()))
        .await
        .unwrap_err();
    assert!(
        bad.contains("service bind failed") && bad.contains("bind_password"),
        "{bad}"
    );
    let mut rogue = p.clone();
    rogue.ca_file = Some(ldap.other_ca_file.clone());
    rogue.starttls = true;
    let tls = redwall_server::sso::ldap::check(&rogue, &good)
        .await
        .unwrap_err();
    assert!(tls.contains("TLS failed"), "{tls}");
    let mut base = p.clone();
    base.user_base = "ou=nowhere,dc=example,dc=org".into();
    let missing = redwall_server::sso::ldap::check(&base, &good)
        .await
        .unwrap_err();
    assert!(missing.contains("user_base"), "{missing}");
    ldap.stop();
    let down = redwall_server::sso::ldap::check(&p, &good)
        .await
        .unwrap_err();
    assert!(down.contains("cannot reach"), "{down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_finds_users_by_subject_and_notices_when_they_are_gone() {
    let Some(ldap) = Slapd::start() else { return };
    let keyring = redwall_crypto::keyring::Keyring::generate();
    let good = Secret::new(ldap_kit::SERVICE_PASSWORD.to_string());
    for subject_attribute in ["entryUUID", ""] {
        let mut p = ldap.provider("corp", &keyring);
        p.subject_attribute = subject_attribute.into();
        let id = redwall_server::sso::ldap::authenticate(&p, &good, "bob", &password_of("bob"))
            .await
            .unwrap();
        let mut dir = redwall_server::sso::ldap::Directory::open(&p, &good)
            .await
            .unwrap();
        let found = dir.find_subject(&id.subject).await.unwrap().unwrap();
        assert_eq!(found.groups, id.groups);
        assert_eq!(found.username.as_deref(), Some("bob"));
        // A subject that is not a user (or not a valid DN) is simply absent.
        assert_eq!(
            dir.find_subject(&group_dn("nr-viewers")).await.unwrap(),
            None
        );
        dir.close().await;
    }
    // Group search instead of memberOf gives the same groups.
    let mut by_search = ldap.provider("corp", &keyring);
    by_search.group_attribute = String::new();
    by_search.group_base = Some(format!("ou=groups,{}", ldap_kit::BASE));
    let id =
        redwall_server::sso::ldap::authenticate(&by_search, &good, "alice", &password_of("alice"))
            .await
            .unwrap();
    let mut groups = id.groups.clone();
    groups.sort();
    assert_eq!(groups, [group_dn("nr-editors"), group_dn("nr-viewers")]);
    // bob is deleted from the directory: the lookup says so.
    let p = ldap.provider("corp", &keyring);
    let id = redwall_server::sso::ldap::authenticate(&p, &good, "bob", &password_of("bob"))
        .await
        .unwrap();
    ldap.modify(
        "ldapmodify",
        &format!("dn: {}\nchangetype: delete\n", user_dn("bob")),
    );
    let mut dir = redwall_server::sso::ldap::Directory::open(&p, &good)
        .await
        .unwrap();
    assert_eq!(dir.find_subject(&id.subject).await.unwrap(), None);
    dir.close().await;
}

/// BENCHMARKS.md "SSO": `cargo nextest run -p redwall-server --test sso_ldap
/// --run-ignored only -E 'test(ldap_login_latency)' --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark, run by hand"]
async fn ldap_login_latency() {
    fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
        v.sort();
        v[v.len() / 2]
    }
    let Some(w) = world().await else { return };
    let keyring = redwall_crypto::keyring::Keyring::generate();
    let p = w.ldap.provider("corp", &keyring);
    let good = Secret::new(ldap_kit::SERVICE_PASSWORD.to_string());
    let n = 300;
    // Warm up: provisioning, the first TLS roots read.
    logged_in(&w.s, "alice").await;
    let (mut direct, mut http, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = std::time::Instant::now();
        redwall_server::sso::ldap::authenticate(&p, &good, "alice", &password_of("alice"))
            .await
            .unwrap();
        direct.push(t.elapsed());
        let t = std::time::Instant::now();
        let (_, r) = ldap_login(&w.s, "corp", "alice", &password_of("alice")).await;
        assert_eq!(r.status, 200);
        http.push(t.elapsed());
        let t = std::time::Instant::now();
        w.s.login(ADMIN, ADMIN_PASSWORD).await;
        local.push(t.elapsed());
    }
    let (d, h, l) = (median(direct), median(http), median(local));
    println!(
        "LDAP login, {n} runs: directory only (connect+service bind+search+user bind) median {:.2} ms; \
         HTTP end to end median {:.2} ms; local password login (test argon2 parameters) median {:.2} ms; ratio HTTP LDAP / local {:.2}",
        d.as_secs_f64() * 1e3,
        h.as_secs_f64() * 1e3,
        l.as_secs_f64() * 1e3,
        h.as_secs_f64() / l.as_secs_f64()
    );
}

/// Issue 21: the directory password alone (without Redwall's second factor)
/// must not change the user's stored roles; they change once the code is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_waits_for_the_second_factor() {
    let Some(w) = world().await else { return };
    let ops = create_team(&w.admin, "ops").await;
    let bob = logged_in(&w.s, "bob").await;
    let secret = common::enrol_mfa(&w.s, &bob).await;
    assert_eq!(
        ops_roles(&w.admin, &ops).await,
        [("bob".to_string(), "viewer".to_string())]
    );
    // bob leaves nr-viewers; someone with his directory password logs in.
    w.ldap.modify(
        "ldapmodify",
        &format!(
            "dn: {}\nchangetype: modify\ndelete: member\nmember: {}\n",
            group_dn("nr-viewers"),
            user_dn("bob")
        ),
    );
    let (_, r) = ldap_login(&w.s, "corp", "bob", &password_of("bob")).await;
    assert_eq!(r.body["status"], "mfa_required", "{}", r.body);
    assert_eq!(
        ops_roles(&w.admin, &ops).await,
        [("bob".to_string(), "viewer".to_string())],
        "no change before the second factor"
    );
    // A wrong code changes nothing either.
    let token = r.body["mfa_token"].as_str().unwrap().to_string();
    let mut c = w.s.anonymous();
    let wrong = c
        .post(
            "/api/v1/auth/mfa",
            json!({"mfa_token": token, "code": "000000"}),
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(ops_roles(&w.admin, &ops).await.len(), 1);
    // With the code: the session, and the directory's word applies.
    use redwall_server::clock::Clock;
    w.s.clock.advance_secs(31);
    let code = secret.code_at((w.s.clock.now() / 1_000_000) as u64);
    let r = c
        .post(
            "/api/v1/auth/mfa",
            json!({"mfa_token": token, "code": code}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ok");
    c.adopt_session(&r);
    assert_eq!(c.get("/api/v1/me").await.body["username"], "bob");
    assert!(ops_roles(&w.admin, &ops).await.is_empty());
    let logins = audit_events(&w.admin, "auth.login").await;
    assert_eq!(logins[0]["details"]["provider"], "corp", "{:?}", logins[0]);
}
