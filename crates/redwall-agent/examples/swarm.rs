//! Many agents in one process, for the hub's benchmark (scripts/bench-agent,
//! SWARM=N): each is a real agent of this crate (its own keys, the real
//! protocol over its own TLS connection, heartbeats), without Node-RED.
//!
//! Snapshots the hub deploys to them are checked in full, as on a real
//! agent (signature, team, digests, credentials opened with the agent's
//! own box key), then only recorded as running ([`RecordOnly`]): each agent
//! answers the deploy and reports the snapshot in its heartbeats, so a
//! rollout benchmark can count the answers on the hub.
//!
//!   swarm HUB_URL TEAM COUNT DIR      (REDWALL_TOKEN: an Owner's token)
//!
//! Makes COUNT provisioning tokens through the API (at most 50 open at
//! once, under the team's limit; every agent joins the group "swarm"),
//! enrols an agent with each in DIR/aNNNN,
//! then runs them all until SIGTERM or Ctrl-C. Prints "enrolled N" and
//! "running N".

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::{self, StreamExt as _};
use redwall_agent::{enrol, run_dir_with, RecordOnly, RunOptions, SnapshotRunner};
use redwall_policy::agent_protocol::ProvisioningBundle;

const AT_ONCE: usize = 50;
/// The agent group every swarm agent joins.
const SWARM_GROUP: &str = "swarm";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, hub, team, count, dir] = args.as_slice() else {
        return Err("usage: swarm HUB_URL TEAM COUNT DIR (REDWALL_TOKEN set)".into());
    };
    let count: usize = count.parse()?;
    let token = std::env::var("REDWALL_TOKEN")?;
    redwall_agent::tls::install_crypto_provider();
    // The benchmark's hub has its own self-signed certificate; the agents
    // themselves pin it through their bundles.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let base = PathBuf::from(dir);
    let enrolled = stream::iter(0..count)
        .map(|i| {
            let (http, hub, team, token, base) = (&http, hub, team, &token, &base);
            async move {
                let made: serde_json::Value = http
                    .post(format!("{hub}/api/v1/teams/{team}/agent-tokens"))
                    .bearer_auth(token)
                    // One group, so a rollout can target them all.
                    .json(&serde_json::json!({ "group": SWARM_GROUP }))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let line = made["bundle"].as_str().ok_or("no bundle")?;
                let bundle = ProvisioningBundle::decode(line).map_err(|e| e.message)?;
                let dir = base.join(format!("a{i:04}"));
                enrol(&bundle, &format!("swarm-{i:04}"), &dir).await?;
                Ok::<PathBuf, Box<dyn std::error::Error>>(dir)
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    println!("enrolled {}", enrolled.len());

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let options = RunOptions::default();
    let runner: Arc<dyn SnapshotRunner> = Arc::new(RecordOnly);
    let mut tasks = Vec::with_capacity(enrolled.len());
    for dir in enrolled {
        let mut stopped = stopped.clone();
        let options = options.clone();
        let runner = runner.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            run_dir_with(&dir, &options, runner, shutdown).await
        }));
    }
    println!("running {}", tasks.len());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
