#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The site broker as the agent runs it: the real `redwall-agent
//! site-broker` child under the agent's supervisor (`SiteBroker`), on a
//! free loopback port of the test's own (never 1883), with real MQTT
//! clients (rumqttc): who may log in, QoS 1 and 2 round trips, the `$`
//! topics, a child killed with SIGKILL and started again, the uid it runs
//! as, and its end when the agent side goes.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redwall_agent::site_broker::{
    SiteBroker, SiteBrokerConfig, SiteBrokerOptions, BRIDGE_USER, NODE_RED_USER,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet,
    Publish, QoS,
};
use tokio::sync::mpsc;

/// The raw MQTT client of the hub's broker tests (one engine, one client).
#[allow(dead_code)]
#[path = "../../redwall-server/tests/mqtt_kit/raw.rs"]
mod raw;

const DEADLINE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn options() -> SiteBrokerOptions {
    SiteBrokerOptions {
        executable: Some(PathBuf::from(env!("CARGO_BIN_EXE_redwall-agent"))),
        restart_base: Duration::from_millis(100),
        restart_max: Duration::from_secs(1),
        state_dir: None,
    }
}

async fn start() -> SiteBroker {
    let config =
        SiteBrokerConfig::parse(&format!("listen = [\"127.0.0.1:{}\"]", free_port())).unwrap();
    let broker = SiteBroker::start(&config, options()).await.unwrap();
    assert!(
        broker.running_pid().is_some(),
        "not running: {:?}",
        broker.state()
    );
    broker
}

/// Connects and waits for the CONNACK: the client and its event loop, or
/// the refusal.
async fn connect(
    broker: &SiteBroker,
    client_id: &str,
    credentials: Option<(&str, &str)>,
    clean: bool,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let addr = broker.address();
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(clean);
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "no CONNACK");
        match tokio::time::timeout(DEADLINE, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, eventloop)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => panic!("no CONNACK within {DEADLINE:?}"),
        }
    }
}

fn node_red(broker: &SiteBroker) -> (&'static str, String) {
    (
        NODE_RED_USER,
        broker.credentials().node_red_password().to_owned(),
    )
}

fn bridge(broker: &SiteBroker) -> (&'static str, String) {
    (
        BRIDGE_USER,
        broker.credentials().bridge_password().to_owned(),
    )
}

/// Polls the event loop for ever, passing on every publish received.
fn drive(mut eventloop: EventLoop) -> mpsc::UnboundedReceiver<Publish> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    rx
}

/// Waits for the SUBACK before anything is published.
async fn subscribed(
    broker: &SiteBroker,
    id: &str,
    filter: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>) {
    let (user, password) = bridge(broker);
    let (client, mut eventloop) = connect(broker, id, Some((user, &password)), true)
        .await
        .unwrap();
    client.subscribe(filter, QoS::ExactlyOnce).await.unwrap();
    loop {
        match tokio::time::timeout(DEADLINE, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                assert!(
                    !ack.return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                    "{filter} refused"
                );
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    (client, drive(eventloop))
}

fn refused(result: Result<(AsyncClient, EventLoop), ConnectionError>) -> ConnectReturnCode {
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(e) => panic!("refused otherwise: {e:?}"),
        Ok(_) => panic!("logged in"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_built_in_users_with_their_own_passwords_log_in() {
    let broker = start().await;
    let (nr, nr_password) = node_red(&broker);
    let (br, br_password) = bridge(&broker);
    connect(&broker, "flows", Some((nr, &nr_password)), true)
        .await
        .unwrap();
    connect(&broker, "bridge", Some((br, &br_password)), true)
        .await
        .unwrap();
    // Wrong password, another user's password, an unknown user, none.
    let wrong = refused(connect(&broker, "a", Some((nr, "wrong")), true).await);
    assert_eq!(wrong, ConnectReturnCode::BadUserNamePassword);
    let swapped = refused(connect(&broker, "b", Some((nr, &br_password)), true).await);
    assert_eq!(swapped, ConnectReturnCode::BadUserNamePassword);
    let unknown = refused(connect(&broker, "c", Some(("admin", &nr_password)), true).await);
    assert_eq!(unknown, ConnectReturnCode::BadUserNamePassword);
    let anonymous = refused(connect(&broker, "d", None, true).await);
    assert!(
        matches!(
            anonymous,
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
        ),
        "{anonymous:?}"
    );
    // The passwords are this run's: a new start makes new ones.
    let again = start().await;
    assert_ne!(
        again.credentials().node_red_password(),
        broker.credentials().node_red_password()
    );
    let old = refused(connect(&again, "e", Some((nr, &nr_password)), true).await);
    assert_eq!(old, ConnectReturnCode::BadUserNamePassword);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_1_and_2_arrive_once_and_in_order_and_dollar_topics_are_the_brokers() {
    let broker = start().await;
    let (sub, mut received) = subscribed(&broker, "sub", "plant/#").await;
    let (_sys, mut sys_received) = subscribed(&broker, "sys", "$SYS/#").await;
    let (nr, password) = node_red(&broker);
    let (publisher, eventloop) = connect(&broker, "pub", Some((nr, &password)), true)
        .await
        .unwrap();
    let _publisher_events = drive(eventloop);
    for n in 0..200u32 {
        let qos = if n % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publisher
            .publish("plant/seq", qos, false, n.to_string())
            .await
            .unwrap();
    }
    publisher
        .publish("$SYS/forged", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 200 {
        let p = tokio::time::timeout(DEADLINE, received.recv())
            .await
            .expect("messages stopped arriving")
            .unwrap();
        assert_eq!(p.topic, "plant/seq");
        got.push((String::from_utf8(p.payload.to_vec()).unwrap(), p.qos));
    }
    let want: Vec<(String, QoS)> = (0..200u32)
        .map(|n| {
            let qos = if n % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            (n.to_string(), qos)
        })
        .collect();
    assert_eq!(got, want);
    // Nothing more: no duplicate, and the forged $SYS message went nowhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(received.try_recv().is_err(), "a duplicate arrived");
    assert!(
        sys_received.try_recv().is_err(),
        "a client published to $SYS"
    );
    drop(sub);
}

/// A flow's Node-RED that keeps its session and loses its connection in
/// the middle of a QoS 2 exchange resends the PUBLISH with DUP once back;
/// the site broker passes the message on once (the engine's fix, see
/// vendor/README.md), with the old connection cut or closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_qos2_publish_is_delivered_once_across_a_reconnect() {
    let broker = start().await;
    let (_sub, mut received) = subscribed(&broker, "sub", "plant/#").await;
    let (nr, password) = node_red(&broker);
    for cut in [true, false] {
        let topic = format!("plant/{cut}");
        let (mut first, _) =
            raw::Raw::connect(broker.address(), 4, "flows", nr, &password, false).await;
        assert_eq!(first.publish_qos2(&topic, 3, "once", false).await, 0);
        let _kept = if cut {
            Some(first)
        } else {
            drop(first);
            tokio::time::sleep(Duration::from_millis(300)).await;
            None
        };
        let (mut second, present) =
            raw::Raw::connect(broker.address(), 4, "flows", nr, &password, false).await;
        assert!(present, "the session was kept");
        assert_eq!(second.publish_qos2(&topic, 3, "once", true).await, 0);
        assert_eq!(second.release(3).await, 0);
        assert_eq!(second.publish_qos2(&topic, 3, "next", false).await, 0);
        assert_eq!(second.release(3).await, 0);
        let mut got = Vec::new();
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_millis(700), received.recv()).await
        {
            assert_eq!(p.topic, topic);
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
        assert_eq!(got, ["once", "next"], "cut: {cut}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_started_again_and_clients_reconnect() {
    let broker = start().await;
    let first = broker.running_pid().unwrap();
    // SAFETY: kill has no memory preconditions; first is our child.
    assert_eq!(
        unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) },
        0
    );
    let second = broker
        .wait_restarted(first, DEADLINE)
        .await
        .unwrap_or_else(|| panic!("not restarted: {:?}", broker.state()));
    assert_ne!(first, second);
    // Same address, same passwords: the clients just reconnect.
    let (sub, mut received) = subscribed(&broker, "sub", "again/#").await;
    let (nr, password) = node_red(&broker);
    let (publisher, eventloop) = connect(&broker, "pub", Some((nr, &password)), true)
        .await
        .unwrap();
    let _events = drive(eventloop);
    publisher
        .publish("again/x", QoS::ExactlyOnce, false, "hello")
        .await
        .unwrap();
    let p = tokio::time::timeout(DEADLINE, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&p.payload[..], b"hello");
    drop(sub);
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_runs_as_nobody_without_new_privileges_and_dies_with_the_agent_side() {
    let broker = start().await;
    let pid = broker.running_pid().unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let uids = status_field(pid, "Uid:").unwrap();
        let gids = status_field(pid, "Gid:").unwrap();
        assert!(uids.split_whitespace().all(|u| u == "65534"), "uids {uids}");
        assert!(gids.split_whitespace().all(|g| g == "65534"), "gids {gids}");
        assert_eq!(status_field(pid, "Groups:").unwrap(), "");
        assert_eq!(status_field(pid, "CapEff:").unwrap(), "0000000000000000");
    } else {
        eprintln!("note: not root; the uid drop is not tested");
    }
    assert_eq!(status_field(pid, "NoNewPrivs:").unwrap(), "1");
    // The agent side goes: the child goes with it.
    drop(broker);
    let deadline = Instant::now() + DEADLINE;
    while status_field(pid, "State:").is_some_and(|s| !s.starts_with('Z')) {
        assert!(Instant::now() < deadline, "the child outlived its agent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_cannot_listen_is_retried_and_reported() {
    // The port is taken: the child cannot bind, exits, and is retried.
    let taken = StdListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = SiteBrokerConfig::parse(&format!("listen = [\"127.0.0.1:{port}\"]")).unwrap();
    let options = SiteBrokerOptions {
        restart_base: Duration::from_millis(50),
        ..options()
    };
    let started = tokio::time::timeout(DEADLINE, SiteBroker::start(&config, options));
    let broker = started.await.unwrap().unwrap();
    assert_eq!(broker.running_pid(), None);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let redwall_agent::site_broker::SiteBrokerState::Restarting { why, failures } =
            broker.state()
        {
            if failures >= 2 {
                assert!(why.contains("exited with status 1"), "{why}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "{:?}", broker.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once the port is free, it runs.
    drop(taken);
    assert!(broker.wait_running(DEADLINE).await.is_some());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_user_logs_in_with_the_password_in_its_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scada.password");
    std::fs::write(&file, "correct-horse-battery-staple\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = SiteBrokerConfig::parse(&format!(
        "listen = [\"127.0.0.1:{}\"]\n[[users]]\nname = \"scada\"\npassword_file = \"{}\"\n",
        free_port(),
        file.display()
    ))
    .unwrap();
    let broker = SiteBroker::start(&config, options()).await.unwrap();
    assert!(broker.running_pid().is_some(), "{:?}", broker.state());
    let (client, eventloop) = connect(
        &broker,
        "scada-1",
        Some(("scada", "correct-horse-battery-staple")),
        true,
    )
    .await
    .unwrap();
    let _events = drive(eventloop);
    let (_sub, mut received) = subscribed(&broker, "sub", "scada/#").await;
    client
        .publish("scada/x", QoS::AtLeastOnce, false, "1")
        .await
        .unwrap();
    let p = tokio::time::timeout(DEADLINE, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&p.payload[..], b"1");
    let wrong = refused(connect(&broker, "scada-2", Some(("scada", "correct-horse")), true).await);
    assert_eq!(wrong, ConnectReturnCode::BadUserNamePassword);
    // A password file others can read stops the start, naming the file.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SiteBroker::start(&config, options())
        .await
        .err()
        .expect("an exposed password file is refused");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_held_by_another_users_session_is_not_taken_over() {
    let broker = start().await;
    let (br, br_password) = bridge(&broker);
    let (nr, nr_password) = node_red(&broker);
    // The bridge's persistent session, then the bridge goes away.
    let (client, eventloop) = connect(&broker, "site-bridge", Some((br, &br_password)), false)
        .await
        .unwrap();
    drop(eventloop);
    drop(client);
    let taken = refused(connect(&broker, "site-bridge", Some((nr, &nr_password)), false).await);
    assert_eq!(taken, ConnectReturnCode::NotAuthorized);
    // Its own user gets it back.
    connect(&broker, "site-bridge", Some((br, &br_password)), false)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_serves_the_same_users_with_a_pinnable_certificate() {
    let tls_port = free_port();
    let config = SiteBrokerConfig::parse(&format!(
        "listen = [\"127.0.0.1:{}\"]\n[tls]\nlisten = \"127.0.0.1:{tls_port}\"\nnames = [\"plant-gw.example.test\"]\n",
        free_port()
    ))
    .unwrap();
    let broker = SiteBroker::start(&config, options()).await.unwrap();
    assert!(broker.running_pid().is_some(), "{:?}", broker.state());
    let (addr, sha256) = broker.tls().unwrap();
    assert_eq!(addr.port(), tls_port);
    let trust = redwall_agent::tls::HubTrust::new(Some(sha256), None);
    let mut client_tls = redwall_agent::tls::client_config(&trust).unwrap();
    client_tls.alpn_protocols.clear();
    let client_tls = std::sync::Arc::new(client_tls);
    let tls_client = |id: &str, password: &str| {
        let mut options = MqttOptions::new(id, "127.0.0.1", tls_port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_credentials(NODE_RED_USER, password);
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(client_tls.clone()),
        ));
        AsyncClient::new(options, 10)
    };
    let password = broker.credentials().node_red_password().to_owned();
    let (client, mut eventloop) = tls_client("tls-1", &password);
    loop {
        match tokio::time::timeout(DEADLINE, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK over TLS: {other:?}"),
        }
    }
    let _events = drive(eventloop);
    let (_sub, mut received) = subscribed(&broker, "sub", "tls/#").await;
    client
        .publish("tls/x", QoS::ExactlyOnce, false, "over tls")
        .await
        .unwrap();
    let p = tokio::time::timeout(DEADLINE, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&p.payload[..], b"over tls");
    // The same login rules: a wrong password is refused.
    let (_c, mut eventloop) = tls_client("tls-2", "wrong");
    let refused = loop {
        match tokio::time::timeout(DEADLINE, eventloop.poll()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break e,
            Err(_) => panic!("no answer"),
        }
    };
    assert!(
        matches!(
            refused,
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)
        ),
        "{refused:?}"
    );
    // Plain MQTT on the TLS port gets nowhere.
    let mut plain = MqttOptions::new("plain", "127.0.0.1", tls_port);
    plain.set_credentials(NODE_RED_USER, password.as_str());
    let (_c, mut eventloop) = AsyncClient::new(plain, 10);
    let answer = tokio::time::timeout(Duration::from_secs(15), eventloop.poll()).await;
    assert!(
        !matches!(answer, Ok(Ok(Event::Incoming(Packet::ConnAck(_))))),
        "plain MQTT was accepted on the TLS port"
    );
}
