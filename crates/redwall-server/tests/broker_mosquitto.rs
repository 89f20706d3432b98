//! The same team-broker scenarios against a Mosquitto 2 that Redwall
//! manages through its dynamic-security plugin (`broker.mode =
//! "mosquitto"`): the test starts its own mosquitto (Debian's package) on a
//! port of its own, with its own configuration, never the one a machine may
//! already run. Topics carry the team's prefix in the clear there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
mod mqtt_kit;
use common::*;
use mqtt_kit::{allow, broker_client, connect, granted, Via};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const DYNSEC: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";
const SOON: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

struct ManagedMosquitto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for ManagedMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's mosquitto, installed when missing (as root with apt); `None`
/// where that cannot be done, except under CI, where it must.
fn mosquitto_installed() -> bool {
    let present =
        || std::path::Path::new(MOSQUITTO).exists() && std::path::Path::new(DYNSEC).exists();
    if !present() && unsafe { libc::geteuid() } == 0 {
        eprintln!("installing mosquitto with apt-get (once per machine)");
        let _ = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null")
            .status();
    }
    if !present() && std::env::var_os("CI").is_some() {
        panic!("mosquitto is required under CI");
    }
    present()
}

fn start_mosquitto(admin_password: &str) -> Option<ManagedMosquitto> {
    if !mosquitto_installed() {
        eprintln!("skipped: mosquitto is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let dynsec = dir.path().join("dynamic-security.json");
    let init = Command::new("mosquitto_ctrl")
        .args(["dynsec", "init"])
        .arg(&dynsec)
        .args(["redwall-admin", admin_password])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = redwall_runtime::testing::free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nuser root\nlistener {port} 127.0.0.1\nallow_anonymous false\n\
             plugin {DYNSEC}\nplugin_opt_config_file {}\npersistence false\nlog_dest stderr\n",
            dynsec.display()
        ),
    )
    .unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Held at once, so it is killed and waited for on every path.
    let managed = ManagedMosquitto { child, port, dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(managed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mosquitto did not listen on {port}");
}

async fn managed_server(m: &ManagedMosquitto, password: &str) -> TestServer {
    let file = m.dir.path().join("admin-password");
    std::fs::write(&file, password).unwrap();
    let address = format!("127.0.0.1:{}", m.port);
    TestServer::start_with(Backend::Sqlite, move |c| {
        c.broker.mode = redwall_server::config::BrokerMode::Mosquitto;
        c.broker.mosquitto.address = address;
        c.broker.mosquitto.admin_username = "redwall-admin".into();
        c.broker.mosquitto.admin_password_file = Some(file);
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_mosquitto_keeps_teams_apart_and_cuts_off_revoked_clients() {
    let password = "admin-secret-for-this-test";
    let Some(mosquitto) = start_mosquitto(password) else {
        return;
    };
    let s = managed_server(&mosquitto, password).await;
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
    let via = Via::Tcp(format!("127.0.0.1:{}", mosquitto.port).parse().unwrap());
    let ours = |t: &str| format!("t/{plant}/{t}");
    let theirs = |t: &str| format!("t/{other}/{t}");

    let mut dashboard = connect(&via, &board, &board, &board_pw).await.unwrap();
    assert!(granted(dashboard.subscribe(&ours("plant/#")).await));
    let mut spy_conn = connect(&via, &spy, &spy, &spy_pw).await.unwrap();
    // The other team reaches its own prefix only.
    assert!(!granted(spy_conn.subscribe("#").await));
    assert!(!granted(spy_conn.subscribe(&ours("#")).await));
    assert!(!granted(spy_conn.subscribe("+/+/plant/temp").await));
    assert!(granted(spy_conn.subscribe(&theirs("#")).await));
    let mut sensor_conn = connect(&via, &sensor, &sensor, &sensor_pw).await.unwrap();

    sensor_conn.publish(&ours("plant/temp"), "21").await;
    assert_eq!(
        dashboard.message(SOON).await,
        Some((ours("plant/temp"), "21".into()))
    );
    spy_conn.publish(&theirs("plant/temp"), "mine").await;
    assert_eq!(
        spy_conn.message(SOON).await,
        Some((theirs("plant/temp"), "mine".into()))
    );
    assert_eq!(dashboard.message(QUIET).await, None);
    // A publish-only client cannot subscribe.
    assert!(!granted(sensor_conn.subscribe(&ours("plant/#")).await));
    // A wrong password is refused.
    assert!(connect(&via, &board, &board, "rwb_wrong").await.is_err());

    // Rotated: cut off at once; the old password fails, the new one works.
    let clients = format!("/api/v1/teams/{plant}/broker/clients");
    let r = alice
        .post(&format!("{clients}/{board}/rotate"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_pw = r.body["password"].as_str().unwrap().to_string();
    let took = dashboard
        .closed(SOON)
        .await
        .expect("closed after the rotation");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(connect(&via, &board, &board, &board_pw).await.is_err());
    let mut dashboard = connect(&via, &board, &board, &new_pw).await.unwrap();
    assert!(granted(dashboard.subscribe(&ours("plant/#")).await));

    // New rules: the connection closes and comes back under them.
    let r = alice
        .put(
            &format!("{clients}/{board}/rules"),
            json!([allow("subscribe", "plant/line1/#")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let took = dashboard
        .closed(SOON)
        .await
        .expect("closed after new rules");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let mut dashboard = connect(&via, &board, &board, &new_pw).await.unwrap();
    assert!(!granted(dashboard.subscribe(&ours("plant/#")).await));
    assert!(granted(dashboard.subscribe(&ours("plant/line1/#")).await));

    // Disabled: cut off and refused until enabled again.
    let r = alice
        .post(&format!("{clients}/{board}/disable"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let took = dashboard.closed(SOON).await.expect("closed when disabled");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(connect(&via, &board, &board, &new_pw).await.is_err());
    let r = alice
        .post(&format!("{clients}/{board}/enable"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut dashboard = connect(&via, &board, &board, &new_pw).await.unwrap();

    // Revoked: cut off within a second, and the password stops working.
    let r = alice.delete(&format!("{clients}/{board}")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let took = dashboard
        .closed(SOON)
        .await
        .expect("closed after the revocation");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(connect(&via, &board, &board, &new_pw).await.is_err());
    s.stop().await;
}
