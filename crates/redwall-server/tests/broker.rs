//! The embedded team broker as devices and scripts use it: a real MQTT
//! client (3.1.1 and 5) over TCP, TLS and WebSocket, logging in with the
//! credentials the API showed once. Two teams share topic names and never
//! see each other's messages; rules decide every publish and subscription;
//! a revoked, rotated or re-ruled client is disconnected within a second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
mod mqtt_kit;
use common::*;
use mqtt_kit::raw::Raw;
use mqtt_kit::{allow, broker_client, connect, granted, v5_round_trip, Via};
use serde_json::json;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const SOON: Duration = Duration::from_secs(5);

fn plain(s: &TestServer) -> Via {
    Via::Tcp(
        s.running
            .state
            .broker
            .get()
            .expect("broker runs")
            .plain_addrs()[0],
    )
}

async fn teams_share_names_but_never_traffic(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let bob = s.user(&admin, "bob").await;
    let plant = create_team(&alice, "Plant").await;
    let other = create_team(&bob, "Other").await;
    let (sensor, sensor_pw) = broker_client(
        &alice,
        &plant,
        "sensor",
        json!([allow("publish", "plant/#")]),
    )
    .await;
    let (board, board_pw) = broker_client(
        &alice,
        &plant,
        "dashboard",
        json!([allow("subscribe", "plant/#")]),
    )
    .await;
    let (spy, spy_pw) = broker_client(&bob, &other, "spy", json!([allow("both", "#")])).await;
    let via = plain(s);

    let mut dashboard = connect(&via, &board, &board, &board_pw).await.unwrap();
    assert!(granted(dashboard.subscribe("plant/#").await));
    let mut spy_conn = connect(&via, &format!("{spy}-1"), &spy, &spy_pw)
        .await
        .unwrap();
    assert!(granted(spy_conn.subscribe("#").await));
    let sensor_conn = connect(&via, &format!("{sensor}-line1"), &sensor, &sensor_pw)
        .await
        .unwrap();

    // The team sees its bare topic; the other team, subscribed to
    // everything, sees only its own message on the same topic name.
    sensor_conn.publish("plant/temp", "21").await;
    assert_eq!(
        dashboard.message(SOON).await,
        Some(("plant/temp".into(), "21".into()))
    );
    spy_conn.publish("plant/temp", "theirs").await;
    assert_eq!(
        spy_conn.message(SOON).await,
        Some(("plant/temp".into(), "theirs".into())),
        "the other team's own message is its first"
    );
    sensor_conn.publish("plant/temp", "22").await;
    assert_eq!(
        dashboard.message(SOON).await,
        Some(("plant/temp".into(), "22".into())),
        "the other team's message never reached this team"
    );
    assert_eq!(spy_conn.message(QUIET).await, None);

    // A publish-only client cannot subscribe; a subscription wider than the
    // rules is refused; `$SYS` and shared subscriptions stay in the team.
    let mut sensor_conn = sensor_conn;
    assert!(!granted(sensor_conn.subscribe("plant/#").await));
    assert!(!granted(dashboard.subscribe("#").await));
    assert!(!granted(dashboard.subscribe("+/temp").await));
    assert!(granted(spy_conn.subscribe("$share/g/plant/#").await));
    sensor_conn.publish("plant/temp", "23").await;
    assert_eq!(
        dashboard.message(SOON).await,
        Some(("plant/temp".into(), "23".into()))
    );
    assert_eq!(spy_conn.message(QUIET).await, None);

    // A subscribe-only client's publish goes nowhere.
    dashboard.publish("plant/temp", "forged").await;
    assert_eq!(dashboard.message(QUIET).await, None);

    // Credentials: a wrong password, and one client's id used by another,
    // are refused at CONNECT, and the refusals are audited.
    let wrong = connect(&via, &board, &board, "rwb_wrong").await;
    assert!(wrong.is_err());
    let taken = connect(&via, &board, &sensor, &sensor_pw).await;
    assert!(taken.is_err(), "a client may not use another client's id");
    assert_eq!(
        dashboard.message(QUIET).await,
        None,
        "the refused takeover left the dashboard connected"
    );
    // A free-form client id (as Node-RED's mqtt node makes up) is taken by
    // no other client while its holder is connected.
    let mut free = connect(&via, "nodered_7f3a", &board, &board_pw)
        .await
        .unwrap();
    let squat = connect(&via, "nodered_7f3a", &spy, &spy_pw).await;
    assert!(
        squat.is_err(),
        "another team's client may not take a held id"
    );
    assert_eq!(
        free.message(QUIET).await,
        None,
        "the holder stayed connected"
    );
    let anonymous = connect(&via, "anon", "", "").await;
    assert!(anonymous.is_err());
    let log = admin
        .get("/api/v1/audit?event=broker.connect_refused")
        .await;
    assert_eq!(log.status, 200, "{}", log.body);
    assert!(
        log.text.contains("wrong_credentials") && log.text.contains("foreign_client_id"),
        "{}",
        log.text
    );
    let metrics = s.running.state.hub.metrics.render(
        s.running.state.hub.audit.health(),
        s.running.state.hub.entries_recorded(),
    );
    assert!(
        metrics.contains("redwall_broker_acl_denials_total{action=\"subscribe\"} 3"),
        "{metrics}"
    );
}

async fn revoked_rotated_and_reruled_clients_are_cut_off_within_a_second(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let plant = create_team(&alice, "Plant").await;
    let clients = format!("/api/v1/teams/{plant}/broker/clients");
    let via = plain(s);
    let (id, pw) = broker_client(&alice, &plant, "gateway", json!([allow("both", "a/#")])).await;

    // Two connections of one client (told apart by suffixes) both close.
    let mut first = connect(&via, &format!("{id}-1"), &id, &pw).await.unwrap();
    let mut second = connect(&via, &format!("{id}-2"), &id, &pw).await.unwrap();
    assert!(granted(first.subscribe("a/#").await));
    let r = alice
        .post(&format!("{clients}/{id}/rotate"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_pw = r.body["password"].as_str().unwrap().to_string();
    for conn in [&mut first, &mut second] {
        let took = conn.closed(SOON).await.expect("closed after the rotation");
        assert!(took < Duration::from_secs(1), "closed after {took:?}");
    }
    assert!(connect(&via, &id, &id, &pw).await.is_err(), "old password");

    // New rules: the connection closes and comes back under them.
    let mut conn = connect(&via, &id, &id, &new_pw).await.unwrap();
    assert!(granted(conn.subscribe("a/b").await));
    let r = alice
        .put(
            &format!("{clients}/{id}/rules"),
            json!([allow("publish", "a/#")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let took = conn.closed(SOON).await.expect("closed after new rules");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let mut conn = connect(&via, &id, &id, &new_pw).await.unwrap();
    assert!(!granted(conn.subscribe("a/b").await));

    // Disabled: closed and refused until enabled again, rules kept.
    let r = alice
        .post(&format!("{clients}/{id}/disable"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["disabled"], true);
    let took = conn.closed(SOON).await.expect("closed when disabled");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(connect(&via, &id, &id, &new_pw).await.is_err());
    let r = alice
        .post(&format!("{clients}/{id}/enable"), json!({}))
        .await;
    assert_eq!(
        (r.status, &r.body["disabled"]),
        (200, &json!(false)),
        "{}",
        r.body
    );
    let mut conn = connect(&via, &id, &id, &new_pw).await.unwrap();
    assert!(!granted(conn.subscribe("a/b").await), "the rules were kept");
    let log = alice
        .get(&format!(
            "/api/v1/teams/{plant}/audit?event=broker.client_*"
        ))
        .await;
    assert!(
        log.text.contains("broker.client_disabled") && log.text.contains("broker.client_enabled"),
        "{}",
        log.text
    );

    // Revoked: closed, and the password stops working.
    let r = alice.delete(&format!("{clients}/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let took = conn
        .closed(SOON)
        .await
        .expect("closed after the revocation");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(connect(&via, &id, &id, &new_pw).await.is_err());
}

on_both_backends!(
    teams_share_names_but_never_traffic,
    revoked_rotated_and_reruled_clients_are_cut_off_within_a_second,
);

/// MQTT 3.1.1 and 5 over TLS (the hub's certificate) and over WebSocket at
/// `/mqtt` on the hub's HTTPS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_and_5_over_tls_and_websocket() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.tls.mode = redwall_server::config::TlsMode::SelfSigned
    })
    .await
    .unwrap();
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let (id, pw) = broker_client(&admin, &team, "web", json!([allow("both", "#")])).await;
    let ca = std::fs::read(s.data_dir.path().join("tls/self-signed-cert.pem")).unwrap();
    let broker = s.running.state.broker.get().unwrap();
    let hub_port = s.running.addr.port();
    let vias = [
        (
            "tls",
            Via::Tls {
                port: broker.tls_addr().unwrap().port(),
                ca: ca.clone(),
            },
        ),
        (
            "wss",
            Via::Wss {
                port: hub_port,
                ca: ca.clone(),
            },
        ),
    ];
    for (name, via) in &vias {
        let mut conn = connect(via, &format!("{id}-{name}3"), &id, &pw)
            .await
            .unwrap_or_else(|e| panic!("MQTT 3.1.1 over {name}: {e}"));
        assert!(granted(conn.subscribe("plant/x").await), "{name}");
        conn.publish("plant/x", name).await;
        assert_eq!(
            conn.message(SOON).await,
            Some(("plant/x".into(), name.to_string())),
            "{name}"
        );
        v5_round_trip(via, &format!("{id}-{name}5"), &id, &pw, "plant/v5")
            .await
            .unwrap_or_else(|e| panic!("MQTT 5 over {name}: {e}"));
        let refused = connect(via, &format!("{id}-{name}x"), &id, "rwb_nope").await;
        assert!(refused.is_err(), "{name}");
    }
    // The WebSocket's refused login is recorded with the client's address,
    // not the hub's own loopback hop (the TLS front passes it on).
    s.stop().await;
}

/// A subscriber written by hand (MQTT 3.1.1 CONNECT and SUBSCRIBE) that
/// then never reads again: the slowest reader there is.
async fn raw_subscriber(
    addr: std::net::SocketAddr,
    client_id: &str,
    user: &str,
    pass: &str,
    filter: &str,
) -> tokio::net::TcpStream {
    let (mut raw, _) = Raw::connect(addr, 4, client_id, user, pass, true).await;
    raw.subscribe_qos0(filter).await;
    raw.stream
}

/// What one client may cost: a packet over the limit and too many
/// subscriptions end cleanly, and the other clients go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_end_one_client_and_spare_the_others() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.broker.max_packet_bytes = 64 * 1024;
        c.broker.max_subscriptions = 50;
        c.broker.handshake_secs = 2;
    })
    .await
    .unwrap();
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let (id, pw) = broker_client(&admin, &team, "dev", json!([allow("both", "#")])).await;
    let via = plain(&s);
    let mut bystander = connect(&via, &format!("{id}-b"), &id, &pw).await.unwrap();
    assert!(granted(bystander.subscribe("ok").await));

    // Malformed packets: garbage instead of a CONNECT, a CONNECT whose
    // length runs past what follows, and nothing at all; each connection
    // is closed (the last two once the handshake time is up).
    let addr = s.running.state.broker.get().unwrap().plain_addrs()[0];
    for garbage in [
        vec![0xffu8; 64],
        vec![0x10, 0xff, 0xff, 0xff, 0x7f, 0x00],
        vec![],
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw.write_all(&garbage).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(6), raw.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the broker closed the malformed connection: {read:?}"
        );
    }

    // A topic of 100 KB (a packet over 64 KiB): that connection is closed.
    let mut big = connect(&via, &format!("{id}-big"), &id, &pw).await.unwrap();
    big.client
        .publish(
            "x".repeat(60_000),
            rumqttc::QoS::AtMostOnce,
            false,
            vec![0u8; 40_000],
        )
        .await
        .unwrap();
    assert!(
        big.closed(SOON).await.is_some(),
        "the oversized packet closed it"
    );

    // Subscriptions beyond the limit are refused.
    let mut greedy = connect(&via, &format!("{id}-g"), &id, &pw).await.unwrap();
    let mut refused = 0;
    for i in 0..60 {
        if !granted(greedy.subscribe(&format!("t/{i}")).await) {
            refused += 1;
        }
    }
    assert!(refused >= 10, "{refused} of 60 refused");

    // A slow reader: subscribed, then never reads, while 20 MB are
    // published to it. Its queue is bounded (messages beyond it are
    // dropped) and the others are served as before.
    let slow = raw_subscriber(addr, &format!("{id}-slow"), &id, &pw, "flood").await;
    let flooder = connect(&via, &format!("{id}-f"), &id, &pw).await.unwrap();
    let chunk = vec![b'x'; 4096];
    for _ in 0..5_000 {
        flooder
            .client
            .publish("flood", rumqttc::QoS::AtMostOnce, false, chunk.clone())
            .await
            .unwrap();
    }
    let sender = connect(&via, &format!("{id}-s"), &id, &pw).await.unwrap();
    sender.publish("ok", "still here").await;
    assert_eq!(
        bystander.message(SOON).await,
        Some(("ok".into(), "still here".into()))
    );
    drop(slow);
    s.stop().await;
}

/// Two hubs on one PostgreSQL: a client connected to one hub's broker is
/// cut off within a second when an Owner revokes it through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_hub_closes_connections_on_another() {
    let Some(first) = TestServer::start_with(Backend::Postgres, |_| {}).await else {
        return; // no PostgreSQL outside CI
    };
    let admin = first.admin().await;
    let team = create_team(&admin, "Plant").await;
    let url = first.running.state.config.database_url.clone();
    let second = TestServer::start_with(Backend::Postgres, |c| c.database_url = url)
        .await
        .unwrap();
    let (id, pw) = broker_client(&admin, &team, "gateway", json!([allow("both", "#")])).await;
    let mut conn = connect(&plain(&second), &id, &id, &pw).await.unwrap();
    assert!(granted(conn.subscribe("a/#").await));

    let r = admin
        .delete(&format!("/api/v1/teams/{team}/broker/clients/{id}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let took = conn
        .closed(SOON)
        .await
        .expect("the other hub closed the connection");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(connect(&plain(&second), &id, &id, &pw).await.is_err());
    second.stop().await;
    first.stop().await;
}

/// A hub listens for the other hubs' announcements (broker revocations,
/// agent events) before it accepts anyone, else a client that connects to
/// a hub just started could miss its own revocation, announced before that
/// hub listened, and stay connected. Seen where PostgreSQL sees it: as soon
/// as `start` returns, both hubs have their sessions listening on both
/// channels. (The test servers share one database, a schema each, and the
/// channels are the database's: the two hubs' sessions are told apart from
/// other tests' by an application name of their own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_listens_for_other_hubs_before_it_accepts_anyone() {
    let name = format!("rw_listen_{}", rand::random::<u32>());
    let Some(first) = TestServer::start_with(Backend::Postgres, |c| {
        let url = c.database_url.take().unwrap();
        c.database_url = Some(format!("{url}&application_name={name}"));
    })
    .await
    else {
        return; // no PostgreSQL outside CI
    };
    let url = first.running.state.config.database_url.clone();
    let second = TestServer::start_with(Backend::Postgres, |c| c.database_url = url)
        .await
        .unwrap();
    let store = &first.running.state.hub.store;
    for channel in [
        redwall_store::notify::BROKER_REVOCATIONS,
        redwall_store::notify::AGENT_EVENTS,
    ] {
        let listening = redwall_store::testing::count_raw(
            store,
            &format!(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{name}' \
                 AND query LIKE 'LISTEN %{channel}%'"
            ),
        )
        .await
        .unwrap();
        assert_eq!(listening, 2, "hubs listening on {channel}");
    }
    second.stop().await;
    first.stop().await;
}

/// A member who leaves saw the passwords of the clients they made: those
/// get new passwords nobody sees, their connections close, and deleting a
/// team closes its clients' connections.
async fn a_leaving_creator_and_a_deleted_team_take_their_connections(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;
    let martin_id = member.get("/api/v1/me").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let via = plain(s);
    let (made, made_pw) =
        broker_client(&member, &team, "martins", json!([allow("both", "#")])).await;
    let (kept, kept_pw) =
        broker_client(&owner, &team, "olivias", json!([allow("both", "#")])).await;
    let mut made_conn = connect(&via, &made, &made, &made_pw).await.unwrap();
    let mut kept_conn = connect(&via, &kept, &kept, &kept_pw).await.unwrap();

    let r = owner
        .delete(&format!("/api/v1/teams/{team}/members/{martin_id}"))
        .await;
    assert!(r.status == 204 || r.status == 200, "{}", r.body);
    let took = made_conn
        .closed(SOON)
        .await
        .expect("the creator's client closed");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(connect(&via, &made, &made, &made_pw).await.is_err());
    assert_eq!(
        kept_conn.message(QUIET).await,
        None,
        "the Owner's client stays"
    );
    let log = admin.get("/api/v1/audit?event=broker.client_rotated").await;
    assert!(log.text.contains("creator_left"), "{}", log.text);

    let r = owner
        .delete_with(
            &format!("/api/v1/teams/{team}"),
            json!({"confirm_name": "Plant"}),
        )
        .await;
    assert!(r.status == 204 || r.status == 200, "{}", r.body);
    let took = kept_conn
        .closed(SOON)
        .await
        .expect("the deleted team's client closed");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
}

on_both_backends!(a_leaving_creator_and_a_deleted_team_take_their_connections);

/// An instance's own identity: an Owner narrows its rules, a Member (who
/// writes its flows) may not widen them, and nobody rotates or revokes it
/// by hand (Redwall gives it a password at each start).
async fn only_an_owner_rules_an_instances_identity(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": "flows", "start": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let hub = &s.running.state.hub;
    let instance = hub
        .team_instance(&team, r.body["id"].as_str().unwrap())
        .await
        .unwrap();
    let origin = redwall_hub::Origin::local("test");
    let (own, _) = hub
        .instance_broker_identity(redwall_hub::Who::anonymous(&origin), &instance)
        .await
        .unwrap();
    let clients = format!("/api/v1/teams/{team}/broker/clients");
    let narrow = json!([allow("publish", "plant/line1/#")]);
    let widen = json!([allow("both", "#")]);

    let r = member.put(&format!("{clients}/{own}/rules"), widen).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.body);
    let r = owner.put(&format!("{clients}/{own}/rules"), narrow).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rules"][0]["filter"], "plant/line1/#");
    for r in [
        owner
            .post(&format!("{clients}/{own}/rotate"), json!({}))
            .await,
        owner.delete(&format!("{clients}/{own}")).await,
    ] {
        assert_eq!(
            (r.status, r.code()),
            (409, "instance_identity"),
            "{}",
            r.body
        );
    }
}

on_both_backends!(only_an_owner_rules_an_instances_identity);
