//! The Redwall agent: runs on a host that can only dial out, enrols once
//! with the hub, then keeps one WebSocket open to it. It listens on no
//! port unless the operator asks it to serve the flows' endpoints on the
//! site's network ([`site_endpoints`]). The protocol is in
//! [`redwall_policy::agent_protocol`].
//!
//! # What runs
//!
//! `redwall-agent run` is one process with two independent jobs:
//!
//! - the hub link ([`run::run`], `session.rs`): dial, answer the challenge,
//!   heartbeats every `heartbeat_secs`, commands, jittered redials;
//! - when enrolled with `--node-red-path` ([`node_red`]): one Node-RED,
//!   started before the first dial under `redwall_runtime`'s supervisor
//!   (crash restarts with backoff), listening on `127.0.0.1:PORT` only
//!   (`--port`, default 1880), with the runtime's generated `settings.js`
//!   (every admin request needs an editor token, every endpoint request
//!   an endpoint token, made with keys only this agent holds) and its
//!   sandbox (Landlock, rlimits, `no_new_privs`, no capabilities; the
//!   agent's own uid: see [`node_red`] for why). A dropped hub link never
//!   touches it; SIGTERM stops it (then the agent exits 0).
//!
//! # Through the hub, and at the site
//!
//! An Owner may make the agent's Node-RED an instance of the hub. The hub
//! then sends its id and token keys ([`hosting`]), and reaches Node-RED
//! through the connection itself: binary frames carry a yamux session
//! (`redwall_tunnel`), each stream an HTTP connection the hub's proxy
//! made after its own checks, joined here to `127.0.0.1:PORT`
//! (`tunnel.rs`). With `DIR/local-endpoints.toml` the agent also serves
//! the flows' endpoints on the site's network, over TLS, under the same
//! route rules and API keys ([`local_endpoints`]); never the editor.
//!
//! Under systemd (`Type=notify`, `WatchdogSec=`) the agent says it is
//! ready and, while its main loop moves, alive ([`watchdog`]), so a build
//! that hangs is killed and rolled back.
//!
//! Heartbeats report Node-RED's state from the supervisor: `running`,
//! `starting`, `stopped`, `failed` (crashed, or could not be started), or
//! `none` without Node-RED. The hub's `restart` restarts it through the
//! supervisor on a task of its own, and answers `restarted` once it
//! answers again (or why not); without Node-RED it is refused as before.
//!
//! # Snapshots
//!
//! The hub sends its team's snapshots in `deploy` messages. Each is checked
//! first ([`snapshot`]: the hub's signature under the key from enrolment,
//! this agent's team, the digests, the credentials opened with the agent's
//! own box key), then run one at a time on a task apart from the
//! connection ([`apply`]): Node-RED's deploy API, a health check after a
//! settle time, and a rollback to what ran before if it fails
//! ([`node_red_deploy`]). The answer says which; heartbeats name the
//! snapshot that runs, also after the agent restarts.
//!
//! # Updates
//!
//! The hub may offer a signed build of the agent itself (`update`). It is
//! checked like a snapshot ([`update`]: the enrolled hub key, this
//! platform, size and SHA-256), kept in `DIR/builds/` ([`builds`]), and
//! the agent execs it, same PID, after stopping Node-RED (the new build
//! starts it again). The new build must be welcomed by the hub within the
//! time the hub gave (`confirm_within_secs`), or the agent goes back to the
//! build it ran. Every start passes through [`launcher::at_start`], which
//! execs the installed build (checked again), retries a new build that
//! crashed while its time lasts, or rolls it back. The hello names the
//! build that runs (SHA-256 of the executable). The answer to the update
//! comes from the new build once connected (ok), or from the old one after
//! a refusal or a rollback (not ok). Only the binary updates itself
//! ([`RunOptions`]'s `self_update`): the library run inside another
//! program never execs.
//!
//! # Files on disk
//!
//! Everything lives in one state directory (`/var/lib/redwall-agent`,
//! or `--dir`, or `REDWALL_AGENT_DIR`), created mode 0700:
//!
//! - `agent.key`: the 32-byte seed of the agent's Ed25519 key, mode 0600,
//!   created exclusively (`O_CREAT|O_EXCL`) so it is never readable by
//!   others, even briefly, and never overwritten. `run` refuses to start
//!   when the group or others can read it. The key never leaves the host:
//!   the hub only ever sees its public half and signatures made with it.
//! - `agent-box.key`: the agent's X25519 secret key, which opens the
//!   credentials the hub seals for it; made and guarded like `agent.key`.
//!   An agent enrolled before it existed runs without it and refuses
//!   snapshots (it cannot open their credentials).
//! - `running-snapshot.json`: the last snapshot that ran, as the hub sent
//!   it (credentials still sealed), mode 0600, replaced atomically; checked
//!   again at every start before it is reported.
//! - `agent.json`: the hub's URL, how to trust its certificate, the ids
//!   the hub gave the agent, its name, the hub's signing key, and the
//!   Node-RED to run (package directory, `node`, port), if any; mode 0600.
//! - `node-red.secrets` (with Node-RED only): the instance's editor and
//!   endpoint token keys and its `credentialSecret`, made by the agent on
//!   its first run, mode 0600, created exclusively; `run` refuses it when
//!   others can read it.
//! - `node-red.hosted` (0600): the hub instance the Node-RED is, with its
//!   token keys (which then replace the agent's own), route rules and API
//!   key digests.
//! - `local-endpoints.toml` (the operator's) and `local-endpoints/` (its
//!   self-signed certificate and key, 0600).
//! - `builds/` (0700), `update-pending.json`, `update-answer.json`: the
//!   hub's builds of the agent and an update in progress (see [`builds`]).
//! - `node-red/` (with Node-RED only): `settings.js` (rewritten at each
//!   start, no secret in it), `userdir/` (0700: flows, credentials; the
//!   only place Node-RED may write) and `run/` (the supervisor's lock,
//!   which keeps two agents on one directory from both running it, and
//!   the pidfile through which a next `run` stops what a killed agent
//!   left running).
//!
//! # What is never written
//!
//! The provisioning token. It is read from the bundle, sent once in the
//! enrolment request, and dropped; it is not in `agent.json` (which has no
//! field for it), not in any log line, not in any error message. No other
//! secret of the hub exists on the agent: it proves itself with its key,
//! not with a bearer token. Node-RED's keys are the agent's own, never
//! sent anywhere, until an Owner makes it an instance of the hub: then the
//! hub's keys for that one instance (sealed for the agent) take their
//! place, and API keys arrive as digests only.
//!
//! # TLS
//!
//! One rustls configuration ([`tls::client_config`]) serves enrolment and
//! the WebSocket, TLS 1.2+ only:
//!
//! - with `cert_sha256` in the bundle, exactly the hub certificate with
//!   that SHA-256 is accepted, whatever its name or issuer (a self-signed
//!   hub);
//! - else with `ca_pem`, the certificate must chain to that CA alone and
//!   name the hub's host;
//! - else the public roots (webpki-roots) apply, as for any website.
//!
//! # Library
//!
//! The binary is a thin shell over [`enrol::enrol_with`] and [`run::run`]
//! (or [`run::run_dir`]), which the tests call directly: `run` returns a
//! [`RunOutcome`] instead of exiting (after stopping Node-RED).

pub mod apply;
pub mod bridge;
pub mod builds;
pub mod enrol;
mod heard;
pub mod hosting;
pub mod hub_url;
pub mod journal;
pub mod launcher;
pub mod local_endpoints;
pub mod node_red;
pub mod node_red_deploy;
pub mod outbox;
mod private_dir;
pub mod run;
mod self_update;
mod session;
pub mod site_broker;
pub mod site_endpoints;
pub mod site_events;
pub mod site_mqtt;
mod site_tls;
pub mod snapshot;
pub mod state;
pub mod tls;
mod tunnel;
pub mod update;
pub mod watchdog;

pub use apply::{RecordOnly, SnapshotRunner};
pub use enrol::{enrol, enrol_with, read_bundle_arg, EnrolError, Enrolled};
pub use node_red_deploy::DeployOptions;
pub use run::{run, run_dir, run_dir_with, run_with, RunError, RunOptions, RunOutcome};
pub use state::{Agent, AgentConfig, NodeRedConfig, StateError, DEFAULT_DIR};

/// An error with its sources: reqwest and rustls put the useful part (the
/// TLS or connect failure) there, not in the top-level message.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
