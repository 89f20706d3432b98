//! Kept sessions and QoS 2 across a lost connection, against the team
//! broker as a client sees it (raw MQTT over TCP, 3.1.1 and 5).
//!
//! A client that keeps its session and loses its connection in the middle
//! of a QoS 2 exchange sends the PUBLISH again, with DUP and the same packet
//! id, once it is back (MQTT 3.1.1 §4.4, 5 §4.4). The broker has already
//! passed that message on, so it must answer PUBREC and not deliver it a
//! second time (§4.3.3), whether the old connection still looks open to the
//! broker (a cut link: the new connection takes the session over) or had
//! already ended. Found by the agent's store-and-forward test, which saw the
//! message in flight at the cut arrive twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
mod mqtt_kit;
use common::*;
use mqtt_kit::raw::Raw;
use mqtt_kit::{allow, broker_client, connect, granted, Conn, Via};
use serde_json::json;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);

/// Every message `watcher` receives until it has been quiet for a while.
async fn received(watcher: &mut Conn) -> Vec<String> {
    let mut all = Vec::new();
    let mut wait = SOON;
    while let Some((_, payload)) = watcher.message(wait).await {
        all.push(payload);
        wait = QUIET;
    }
    all
}

/// How the first connection ends before the second one comes.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// Still open as far as the broker knows: the link was cut.
    LinkCut,
    /// Closed (the client's process died, or the broker saw the cut).
    Closed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_qos2_publish_is_delivered_once_across_a_reconnect() {
    let s = TestServer::start_with(Backend::Sqlite, |_| {})
        .await
        .unwrap();
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let (id, pw) = broker_client(&admin, &team, "line", json!([allow("both", "#")])).await;
    let addr = s.running.state.broker.get().unwrap().plain_addrs()[0];
    let mut watcher = connect(&Via::Tcp(addr), &format!("{id}-watch"), &id, &pw)
        .await
        .unwrap();
    assert!(granted(watcher.subscribe("line/#").await));

    for level in [4u8, 5] {
        for loss in [Loss::LinkCut, Loss::Closed] {
            let case = format!("MQTT level {level}, {loss:?}");
            let client_id = format!("{id}-pub-{level}-{loss:?}");
            let topic = format!("line/{level}/{loss:?}");
            let (mut first, present) = Raw::connect(addr, level, &client_id, &id, &pw, false).await;
            assert!(!present, "{case}: a new session");

            // Packet 7 reaches the broker, which passes it on; its PUBREC
            // is lost with the connection (read here, then forgotten).
            assert_eq!(first.publish_qos2(&topic, 7, "seven", false).await, 0);
            // Packet 8: the PUBREC came back and the PUBREL is lost.
            assert_eq!(first.publish_qos2(&topic, 8, "eight", false).await, 0);
            let _kept = match loss {
                Loss::LinkCut => Some(first),
                Loss::Closed => {
                    drop(first);
                    tokio::time::sleep(QUIET).await;
                    None
                }
            };

            let (mut second, present) =
                Raw::connect(addr, level, &client_id, &id, &pw, false).await;
            assert!(present, "{case}: the session was kept");
            // What MQTT asks of the client: the PUBLISH whose PUBREC never
            // came is sent again with DUP, the PUBREL again as it was.
            let code = second.publish_qos2(&topic, 7, "seven", true).await;
            assert!(
                code < 0x80,
                "{case}: the resent PUBLISH is acknowledged ({code:#x})"
            );
            assert_eq!(second.release(7).await, 0, "{case}: packet 7 released");
            assert_eq!(second.release(8).await, 0, "{case}: packet 8 released");
            // Both ids are free again: a new message may use them.
            assert_eq!(second.publish_qos2(&topic, 7, "nine", false).await, 0);
            assert_eq!(second.release(7).await, 0);

            assert_eq!(
                received(&mut watcher).await,
                ["seven", "eight", "nine"],
                "{case}: each message exactly once, in order"
            );
        }
    }
    s.stop().await;
}
