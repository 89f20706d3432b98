//! Running a verified snapshot on the agent's Node-RED, or not at all:
//!
//! 1. Up front, nothing changed yet: Node-RED must be running, must have
//!    every module the snapshot needs at that exact version, and what it
//!    runs now must be readable (it is what a rollback goes back to).
//! 2. The flows, with their credentials, go through Node-RED's own deploy
//!    API (a full deploy, no restart), as the hub deploys to its instances.
//! 3. Health check after a settle time: the same Node-RED process still
//!    runs and answers, holds exactly the snapshot's flows, and knows every
//!    node type they use (Node-RED accepts flows with unknown types and
//!    then quietly runs none of them).
//! 4. Anything wrong in 2 or 3: back to what ran before, through the deploy
//!    API if Node-RED answers, else by stopping it, writing the old flows
//!    into its userdir and starting it again (a flow that blocks the event
//!    loop is in the saved flows too, so a plain restart would hang again).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redwall_policy::snapshot_format::{flows_sha256, Content, Statement};
use redwall_runtime::request;
use redwall_runtime::{
    deploy_flows, installed_modules, mint_editor_token, read_flow_files, with_credentials,
    EditorPermission, EDITOR_TOKEN_HEADER,
};
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::apply::{RunResult, SnapshotRunner};
use crate::node_red::{Control, NodeRed};
use crate::snapshot::{Credentials, Verified, Wiped};

/// The user Node-RED records for the agent's deploys.
const DEPLOY_USER: &str = "redwall-agent";
/// A module that was not installed when the snapshot was taken.
const UNRESOLVED: &str = "unresolved:";
/// Entries of a flows array that are not node types Node-RED registers.
const STRUCTURAL_TYPES: [&str; 4] = ["tab", "subflow", "group", "junction"];

/// How long each step of a deploy may take.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// How long the new flows run before they count as healthy: long
    /// enough for a start-up fault (a crash, a blocked event loop) to show.
    pub settle: Duration,
    /// How long Node-RED may take to answer the deploy itself.
    pub deploy_timeout: Duration,
    /// How long Node-RED may take to answer one health-check request.
    pub probe_timeout: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(3),
            deploy_timeout: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// The agent's runner: snapshots go to its Node-RED.
pub struct NodeRedRunner {
    node_red: Arc<NodeRed>,
    options: DeployOptions,
}

impl NodeRedRunner {
    pub fn new(node_red: Arc<NodeRed>, options: DeployOptions) -> Self {
        Self { node_red, options }
    }
}

impl SnapshotRunner for NodeRedRunner {
    fn run<'a>(
        &'a self,
        snapshot: &'a Verified,
        previous: Option<&'a Statement>,
    ) -> Pin<Box<dyn Future<Output = RunResult> + Send + 'a>> {
        Box::pin(async move {
            let control = self.node_red.control().await;
            let deploy = Deploy {
                control: &control,
                options: &self.options,
            };
            deploy.run(snapshot, previous).await
        })
    }
}

/// What Node-RED ran before a deploy: the rollback's target.
struct Before {
    flows: Value,
    credentials: Credentials,
    /// How the answer names it.
    name: String,
}

struct Deploy<'a> {
    control: &'a Control<'a>,
    options: &'a DeployOptions,
}

impl Deploy<'_> {
    fn node_red(&self) -> &NodeRed {
        self.control.node_red()
    }

    async fn run(&self, snapshot: &Verified, previous: Option<&Statement>) -> RunResult {
        let id = &snapshot.statement.id;
        let refused = |why: String| format!("refused, nothing was changed: {why}");
        let Some(pid) = self.node_red().running_pid() else {
            return Err(refused(format!(
                "Node-RED is not running (it is {})",
                self.node_red().state()
            )));
        };
        // The hub hands a deploy over again when its answer was lost (the
        // link or the hub went down meanwhile): if it already runs, say so
        // rather than load the same flows again.
        if previous.is_some_and(|p| p.id == *id) {
            if let Ok(held) = self.api().flows().await {
                if flows_sha256(&held) == snapshot.statement.flows_sha256 {
                    return Ok("it already ran here".to_string());
                }
            }
        }
        let installed = installed_modules(&self.node_red().userdir())
            .map_err(|e| refused(format!("cannot read Node-RED's modules: {e}")))?;
        let missing = missing_modules(&snapshot.content, &installed);
        if !missing.is_empty() {
            return Err(refused(format!(
                "the snapshot needs {}, which this Node-RED does not have; install {} into {} first",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                self.node_red().userdir().display()
            )));
        }
        let before = self.what_runs(previous).map_err(|e| {
            refused(format!(
                "cannot read what Node-RED runs now, so could not roll back: {e}"
            ))
        })?;

        info!("deploying snapshot {id} to Node-RED");
        let outcome = match self
            .load(&snapshot.content.flows, snapshot.credentials.as_map())
            .await
        {
            Ok(()) => {
                self.health_check(pid, &snapshot.content.flows, &snapshot.statement)
                    .await
            }
            Err(e) => Err(e),
        };
        let Err(fault) = outcome else {
            info!("snapshot {id} runs");
            return Ok(String::new());
        };
        warn!(
            "snapshot {id} failed ({fault}); rolling back to {}",
            before.name
        );
        match self.roll_back(&before).await {
            Ok(()) => Err(format!(
                "snapshot {id} failed, rolled back to {}: {fault}",
                before.name
            )),
            Err(e) => Err(format!(
                "snapshot {id} failed ({fault}), and rolling back to {} failed too: {e}",
                before.name
            )),
        }
    }

    /// The flows and credentials Node-RED holds now, from its userdir (the
    /// files it loads at start), named after `previous` when they are its.
    fn what_runs(&self, previous: Option<&Statement>) -> Result<Before, String> {
        let n = self.node_red();
        let files = read_flow_files(&n.userdir(), n.credential_secret().expose())
            .map_err(|e| e.to_string())?;
        let sha = flows_sha256(&files.flows);
        let name = match previous {
            Some(p) if p.flows_sha256 == sha => format!("snapshot {}", p.id),
            _ => format!("the flows it ran before (flows sha256 {})", &sha[..12]),
        };
        Ok(Before {
            flows: files.flows.clone(),
            credentials: Credentials::from_map(files.credentials.clone()),
            name,
        })
    }

    /// A full deploy through Node-RED's API.
    async fn load(&self, flows: &Value, credentials: &Map<String, Value>) -> Result<(), String> {
        let n = self.node_red();
        let body = Wiped(with_credentials(flows, credentials));
        deploy_flows(
            n.address(),
            &n.editor_secret(),
            &n.instance_id(),
            DEPLOY_USER,
            &body.0,
            self.options.deploy_timeout,
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("Node-RED did not take the flows: {e}"))
    }

    /// After the settle time: the same process runs and answers, with the
    /// snapshot's flows, and knows every type in them.
    async fn health_check(
        &self,
        pid: u32,
        flows: &Value,
        statement: &Statement,
    ) -> Result<(), String> {
        tokio::time::sleep(self.options.settle).await;
        match self.node_red().running_pid() {
            Some(now) if now == pid => {}
            Some(_) => return Err("Node-RED restarted after the deploy (it crashed)".into()),
            None => {
                return Err(format!(
                    "Node-RED stopped running after the deploy (it is {})",
                    self.node_red().state()
                ))
            }
        }
        let api = self.api();
        let held = api.flows().await?;
        if flows_sha256(&held) != statement.flows_sha256 {
            return Err("Node-RED accepted the deploy but holds other flows".into());
        }
        let known = api.node_types().await?;
        let unknown = unknown_types(flows, &known);
        if !unknown.is_empty() {
            return Err(format!(
                "Node-RED does not know the node types {}, so it runs none of the flows",
                unknown.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }

    /// Back to `before`: through the deploy API while Node-RED answers;
    /// else, or if that did not take, a restart on the old files. Either
    /// way it counts only once Node-RED answers with the old flows.
    async fn roll_back(&self, before: &Before) -> Result<(), String> {
        let want = flows_sha256(&before.flows);
        let api = self.api();
        if api.answers().await {
            let redeployed = self.load(&before.flows, before.credentials.as_map()).await;
            match redeployed {
                Ok(()) if api.flows().await.is_ok_and(|f| flows_sha256(&f) == want) => {
                    return Ok(())
                }
                Ok(()) => warn!("the rollback's deploy did not take; restarting Node-RED"),
                Err(e) => warn!("{e}; restarting Node-RED"),
            }
        } else {
            warn!("Node-RED does not answer; restarting it on the flows it ran before");
        }
        self.control
            .restart_with(&before.flows, before.credentials.as_map())
            .await?;
        match api.flows().await {
            Ok(f) if flows_sha256(&f) == want => Ok(()),
            Ok(_) => Err("Node-RED came back with other flows".into()),
            Err(e) => Err(e),
        }
    }

    fn api(&self) -> Api<'_> {
        Api {
            node_red: self.node_red(),
            timeout: self.options.probe_timeout,
        }
    }
}

/// Node-RED's admin API, read-only, with short-lived editor tokens.
struct Api<'a> {
    node_red: &'a NodeRed,
    timeout: Duration,
}

impl Api<'_> {
    async fn get(&self, path: &str, accept_json: bool) -> Result<Value, String> {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
            + 300;
        let token = mint_editor_token(
            &self.node_red.editor_secret(),
            &self.node_red.instance_id(),
            DEPLOY_USER,
            EditorPermission::Read,
            expires,
        );
        let mut headers = vec![
            (EDITOR_TOKEN_HEADER, token.as_str()),
            ("Node-RED-API-Version", "v1"),
        ];
        if accept_json {
            headers.push(("Accept", "application/json"));
        }
        let answer = request(
            self.node_red.address(),
            "GET",
            path,
            &headers,
            None,
            self.timeout,
        )
        .await
        .map_err(|e| format!("Node-RED does not answer: {e}"))?;
        if answer.status != 200 {
            return Err(format!(
                "Node-RED answered {path} with HTTP {}",
                answer.status
            ));
        }
        answer
            .json()
            .ok_or_else(|| format!("Node-RED's answer to {path} is not JSON"))
    }

    async fn answers(&self) -> bool {
        self.get("/editor/settings", false).await.is_ok()
    }

    /// The flows Node-RED holds (API v1: the bare array).
    async fn flows(&self) -> Result<Value, String> {
        self.get("/editor/flows", false).await
    }

    /// Every node type Node-RED has loaded.
    async fn node_types(&self) -> Result<BTreeSet<String>, String> {
        let sets = self.get("/editor/nodes", true).await?;
        Ok(known_types(&sets))
    }
}

/// The snapshot's modules this Node-RED lacks at that exact version, as
/// `name@version`. Versions starting "unresolved:" were not installed
/// when the snapshot was taken, so they were not loaded then either, and
/// are not asked for now (the hub's deploy makes the same exception).
pub fn missing_modules(
    content: &Content,
    installed: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    content
        .modules
        .iter()
        .filter(|(_, version)| !version.starts_with(UNRESOLVED))
        .filter(|(name, version)| installed.get(*name) != Some(version))
        .map(|(name, version)| format!("{name}@{version}"))
        .collect()
}

/// The types of Node-RED's node list (`GET /editor/nodes`, JSON): those of
/// every set that is enabled and loaded without error.
pub fn known_types(sets: &Value) -> BTreeSet<String> {
    sets.as_array()
        .into_iter()
        .flatten()
        .filter(|set| set.get("enabled").and_then(Value::as_bool) != Some(false))
        .filter(|set| set.get("err").is_none_or(Value::is_null))
        .filter_map(|set| set.get("types")?.as_array())
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

/// The node types `flows` uses that Node-RED does not know. Tabs,
/// subflow definitions, groups and junctions are no registered types, and
/// `subflow:ID` is known when the flows define subflow `ID`.
pub fn unknown_types(flows: &Value, known: &BTreeSet<String>) -> BTreeSet<String> {
    let nodes = flows.as_array().map(Vec::as_slice).unwrap_or_default();
    let subflows: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.get("type").and_then(Value::as_str) == Some("subflow"))
        .filter_map(|n| n.get("id")?.as_str())
        .collect();
    nodes
        .iter()
        .filter_map(|n| n.get("type")?.as_str())
        .filter(|t| !STRUCTURAL_TYPES.contains(t) && !known.contains(*t))
        .filter(|t| {
            t.strip_prefix("subflow:")
                .is_none_or(|id| !subflows.contains(id))
        })
        .map(|t| t.chars().filter(|c| !c.is_control()).take(100).collect())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn set(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn only_modules_missing_at_the_exact_version_are_named() {
        let content = Content {
            flows: json!([]),
            env_names: vec![],
            options: json!({}),
            modules: BTreeMap::from([
                ("a".into(), "1.0.0".into()),
                ("b".into(), "2.0.0".into()),
                ("c".into(), "unresolved:^3".into()),
                ("@s/d".into(), "4.0.0".into()),
            ]),
        };
        let installed =
            BTreeMap::from([("a".into(), "1.0.0".into()), ("b".into(), "2.0.1".into())]);
        assert_eq!(
            missing_modules(&content, &installed),
            vec!["@s/d@4.0.0".to_owned(), "b@2.0.0".to_owned()]
        );
        let all = BTreeMap::from([
            ("a".into(), "1.0.0".into()),
            ("b".into(), "2.0.0".into()),
            ("@s/d".into(), "4.0.0".into()),
        ]);
        assert!(missing_modules(&content, &all).is_empty());
    }

    #[test]
    fn the_node_list_gives_the_types_of_loaded_enabled_sets() {
        let sets = json!([
            {"id": "node-red/inject", "types": ["inject"], "enabled": true},
            {"id": "node-red/http", "types": ["http in", "http response"], "enabled": true},
            {"id": "x/off", "types": ["off-type"], "enabled": false},
            {"id": "x/broken", "types": ["broken-type"], "enabled": true, "err": "Cannot find module"},
        ]);
        assert_eq!(
            known_types(&sets),
            set(&["inject", "http in", "http response"])
        );
        assert!(known_types(&json!({"not": "a list"})).is_empty());
    }

    #[test]
    fn unknown_types_are_found_and_structure_is_not_a_type() {
        let known = set(&["inject", "function"]);
        let flows = json!([
            {"id": "t1", "type": "tab"},
            {"id": "g1", "type": "group"},
            {"id": "j1", "type": "junction"},
            {"id": "sf", "type": "subflow"},
            {"id": "a", "type": "inject"},
            {"id": "b", "type": "subflow:sf"},
            {"id": "c", "type": "subflow:nowhere"},
            {"id": "d", "type": "no-such-node"},
            {"id": "e", "type": "function"},
            {"id": "f"},
        ]);
        assert_eq!(
            unknown_types(&flows, &known),
            set(&["no-such-node", "subflow:nowhere"])
        );
        assert!(unknown_types(&json!([]), &known).is_empty());
    }
}
