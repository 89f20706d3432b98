#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redwall_runtime::testing::{self, RecordingReporter};
use redwall_runtime::{
    InstanceSpec, NodeRedInstall, SandboxIdentity, Supervisor, SupervisorOptions,
};
use serde_json::{json, Value};

pub const BOOT: Duration = Duration::from_secs(60);

/// A data directory laid out like Redwall's, a supervisor on it and a
/// reporter that records.
pub struct Harness {
    pub data: tempfile::TempDir,
    pub install: NodeRedInstall,
    pub reporter: Arc<RecordingReporter>,
    pub sup: Supervisor,
}

pub fn quick_options() -> SupervisorOptions {
    SupervisorOptions {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ..SupervisorOptions::default()
    }
}

impl Harness {
    pub fn new() -> Self {
        let data = tempfile::tempdir().unwrap();
        // Instances running as other uids must traverse the data dir.
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let install = testing::shared_install().unwrap();
        let reporter = Arc::new(RecordingReporter::default());
        let sup =
            Supervisor::with_options(data.path().join("run"), reporter.clone(), quick_options())
                .unwrap();
        Self {
            data,
            install,
            reporter,
            sup,
        }
    }

    pub fn instances(&self) -> PathBuf {
        self.data.path().join("instances")
    }

    pub fn spec(&self, id: &str, identity: SandboxIdentity) -> InstanceSpec {
        let mut spec = testing::spec(id, &self.instances(), testing::free_port(), identity);
        spec.read_only_paths = self.install.sandbox_read_paths();
        spec
    }

    pub async fn start(&self, spec: &InstanceSpec) {
        self.sup.start(spec.clone(), &self.install).await.unwrap();
        if let Err(e) = self.sup.wait_until_running(&spec.id, BOOT).await {
            let logs: Vec<String> = self
                .sup
                .logs(&spec.id, 40)
                .into_iter()
                .map(|l| l.text)
                .collect();
            panic!("{e}\n{}", logs.join("\n"));
        }
    }
}

/// One tab with an `http in` at `url` whose function node `func` answers.
pub fn endpoint_flow(url: &str, func: &str) -> Value {
    json!([
        {"id": "tab1", "type": "tab", "label": "test"},
        {"id": "in1", "type": "http in", "z": "tab1", "url": url, "method": "get",
         "upload": false, "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "func": func, "outputs": 1,
         "libs": [], "wires": [["out1"]]},
        {"id": "out1", "type": "http response", "z": "tab1", "statusCode": "", "headers": {},
         "wires": []}
    ])
}
