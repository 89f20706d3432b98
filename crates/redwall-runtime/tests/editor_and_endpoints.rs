//! Only holders of tokens minted by Redwall reach an instance: the editor
//! needs an admin token of the right permission, endpoints an endpoint token,
//! and flows learn the caller from the token, never from the client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::*;
use redwall_crypto::Secret;
use redwall_runtime::testing::{self, request};
use redwall_runtime::{
    mint_editor_token, mint_endpoint_token, EditorPermission, EnvVar, SandboxIdentity,
    EDITOR_TOKEN_HEADER, ENDPOINT_TOKEN_HEADER, USER_HEADER,
};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_and_endpoints_need_tokens_with_the_right_key_audience_and_rights() {
    let h = Harness::new();
    let spec = h.spec("gate", SandboxIdentity::Inherit);
    h.start(&spec).await;
    let port = spec.address();

    // Someone who reaches the port directly gets nothing, not even the editor page.
    for path in [
        "/editor/",
        "/editor/flows",
        "/editor/settings",
        "/editor/red/red.min.js",
    ] {
        let r = request(port, "GET", path, &[], None, T).await.unwrap();
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }

    // A read token sees the flows but cannot deploy.
    let read = testing::editor_token(&spec, "rita", EditorPermission::Read);
    let r = request(
        port,
        "GET",
        "/editor/flows",
        &[(EDITOR_TOKEN_HEADER, &read)],
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let flows = endpoint_flow("/whoami", "msg.payload = msg.req.headers; return msg;");
    let body = flows.to_string();
    let r = request(
        port,
        "POST",
        "/editor/flows",
        &[
            (EDITOR_TOKEN_HEADER, &read),
            ("Content-Type", "application/json"),
            ("Node-RED-Deployment-Type", "full"),
        ],
        Some(body.as_bytes()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "a read token deployed: {}", r.text());

    // Tokens that are expired, for another instance or signed with another
    // key are refused.
    let expired = mint_editor_token(
        &spec.editor_secret,
        &spec.id,
        "eve",
        EditorPermission::Full,
        now() - 5,
    );
    let other_instance = mint_editor_token(
        &spec.editor_secret,
        "other",
        "eve",
        EditorPermission::Full,
        now() + 600,
    );
    let wrong_key = mint_editor_token(
        &testing::random_secret(),
        &spec.id,
        "eve",
        EditorPermission::Full,
        now() + 600,
    );
    let endpoint_as_admin =
        mint_endpoint_token(&spec.editor_secret, &spec.id, Some("eve"), now() + 600);
    for (what, token) in [
        ("expired", expired.as_str()),
        ("other audience", other_instance.as_str()),
        ("wrong key", wrong_key.as_str()),
        ("endpoint kind", endpoint_as_admin.as_str()),
        ("garbage", "v1.!!!.???"),
    ] {
        let r = request(
            port,
            "GET",
            "/editor/flows",
            &[(EDITOR_TOKEN_HEADER, token)],
            None,
            T,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401, "{what} admin token accepted");
    }

    // A full token deploys an endpoint that echoes the request headers.
    let r = testing::deploy_flows(&spec, "alice", &flows).await.unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let r = testing::wait_for_endpoint(&spec, "/whoami").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // Endpoints: no token -> 401, even with a forged user header.
    let r = request(port, "GET", "/whoami", &[(USER_HEADER, "admin")], None, T)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let expired = mint_endpoint_token(&spec.endpoint_secret, &spec.id, Some("bob"), now() - 1);
    let other_instance =
        mint_endpoint_token(&spec.endpoint_secret, "other", Some("bob"), now() + 600);
    let admin_key = mint_endpoint_token(&spec.editor_secret, &spec.id, Some("bob"), now() + 600);
    for (what, token) in [
        ("expired", expired.as_str()),
        ("other audience", other_instance.as_str()),
        ("admin key", admin_key.as_str()),
        ("editor token", read.as_str()),
    ] {
        let r = request(
            port,
            "GET",
            "/whoami",
            &[(ENDPOINT_TOKEN_HEADER, token)],
            None,
            T,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401, "{what} endpoint token accepted");
    }

    // With a token the flow sees the user it names, not the one the client
    // claims, and never the token itself.
    let token = testing::endpoint_token(&spec, Some("bob"));
    let r = request(
        port,
        "GET",
        "/whoami",
        &[(ENDPOINT_TOKEN_HEADER, &token), (USER_HEADER, "admin")],
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = r.json().unwrap();
    assert_eq!(headers[USER_HEADER], "bob");
    assert!(headers.get(ENDPOINT_TOKEN_HEADER).is_none(), "{headers}");
    assert!(!r.text().contains(&token));

    // An anonymous endpoint token reaches the flow without a user header.
    let anon = testing::endpoint_token(&spec, None);
    let r = request(
        port,
        "GET",
        "/whoami",
        &[(ENDPOINT_TOKEN_HEADER, &anon), (USER_HEADER, "admin")],
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json().unwrap().get(USER_HEADER).is_none(), "{}", r.text());

    // The deploy was audited with the token's username.
    let audits = h.reporter.audits();
    let deploy = audits
        .iter()
        .find(|(id, e)| id == "gate" && e.event == "flows.set")
        .unwrap_or_else(|| panic!("no flows.set audit in {audits:?}"));
    assert_eq!(deploy.1.user.as_deref(), Some("alice"));
    // Audit lines are not log lines.
    assert!(h
        .sup
        .logs("gate", 1000)
        .iter()
        .all(|l| !l.text.contains("redwall-audit")));
    h.sup.stop("gate").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_env_reaches_flows_but_redwall_secrets_do_not() {
    let h = Harness::new();
    let mut spec = h.spec("envs", SandboxIdentity::Inherit);
    spec.env.push(EnvVar {
        name: "MY_VAR".into(),
        value: Secret::new("hello \"world\"".into()),
    });
    h.start(&spec).await;

    let func = r#"
        const p = Buffer.constructor('return process')();
        msg.payload = {
            substituted: msg.substituted,
            secretSubstitution: msg.secretSubstitution,
            envGet: env.get('MY_VAR'),
            secretEnvGet: ['REDWALL_EDITOR_SECRET', 'REDWALL_ENDPOINT_SECRET', 'REDWALL_CREDENTIAL_SECRET']
                .map(n => env.get(n)).filter(v => v !== undefined && v !== ''),
            processEnv: Object.keys(p.env).filter(k => k.startsWith('REDWALL_')),
        };
        return msg;"#;
    let flows = json!([
        {"id": "tab1", "type": "tab", "label": "test"},
        {"id": "in1", "type": "http in", "z": "tab1", "url": "/env", "method": "get", "wires": [["ch1"]]},
        {"id": "ch1", "type": "change", "z": "tab1", "rules": [
            {"t": "set", "p": "substituted", "pt": "msg", "to": "${MY_VAR}", "tot": "str"},
            {"t": "set", "p": "secretSubstitution", "pt": "msg", "to": "${REDWALL_EDITOR_SECRET}", "tot": "str"}
         ], "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "func": func, "outputs": 1, "wires": [["out1"]]},
        {"id": "out1", "type": "http response", "z": "tab1", "wires": []}
    ]);
    let r = testing::deploy_flows(&spec, "alice", &flows).await.unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let r = testing::wait_for_endpoint(&spec, "/env").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json().unwrap();
    assert_eq!(seen["substituted"], "hello \"world\"");
    assert_eq!(seen["envGet"], "hello \"world\"");
    assert_eq!(seen["secretSubstitution"], "${REDWALL_EDITOR_SECRET}");
    assert_eq!(seen["secretEnvGet"], json!([]));
    assert_eq!(seen["processEnv"], json!([]));
    for secret in [
        &spec.editor_secret,
        &spec.endpoint_secret,
        &spec.credential_secret,
    ] {
        assert!(!r.text().contains(secret.expose()));
    }
    h.sup.stop("envs").await.unwrap();
}
