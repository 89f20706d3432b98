//! Helpers for tests of this crate and of crates that drive instances (the
//! server's proxy tests): a shared Node-RED install, free ports, specs with
//! fresh secrets, direct deploys, and a recording [`Reporter`].

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use redwall_crypto::Secret;

pub use crate::http::{request, HttpResponse};
use crate::install::create_dir_0755;
use crate::supervisor::{InstanceStatus, NodeRedAuditEvent, Reporter};
use crate::{
    mint_editor_token, mint_endpoint_token, EditorPermission, Installer, InstanceOptions,
    InstanceSpec, Limits, NodeRedInstall, RuntimeError, SandboxIdentity, DEFAULT_NODE_RED_VERSION,
    EDITOR_TOKEN_HEADER, ENDPOINT_TOKEN_HEADER,
};

/// Default cache for [`shared_install`]; `REDWALL_TEST_NODE_RED_CACHE`
/// overrides it. Outside any per-test temp dir so other uids can read it.
pub const DEFAULT_CACHE: &str = "/var/tmp/redwall-test-node-red";

/// Installs [`DEFAULT_NODE_RED_VERSION`] once per machine and returns it.
/// Safe to call from many test processes at once: a file lock serialises
/// the install.
pub fn shared_install() -> Result<NodeRedInstall, RuntimeError> {
    let dir = std::env::var_os("REDWALL_TEST_NODE_RED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    create_dir_0755(&dir)?;
    let lock_path = dir.join(".install.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(RuntimeError::io("opening the install lock"))?;
    // SAFETY: flock on a descriptor we own; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(RuntimeError::io("locking the install cache")(
            std::io::Error::last_os_error(),
        ));
    }
    let installer = Installer {
        dir,
        version: DEFAULT_NODE_RED_VERSION.to_owned(),
        npm: PathBuf::from("npm"),
        node: PathBuf::from("node"),
    };
    installer.ensure(&mut |line| eprintln!("[npm] {line}"))
}

/// A loopback port that was free a moment ago.
///
/// Chosen below the kernel's ephemeral range (32768 and up by default): a
/// port the kernel handed out and took back could go at once to any
/// client connection of a test running beside this one, which then held
/// the instance's port (seen as rare `PortInUse` failures under load).
pub fn free_port() -> u16 {
    let mut seed = [0u8; 2];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    let start = u16::from_le_bytes(seed) % FREE_PORTS.len() as u16;
    (0..FREE_PORTS.len() as u16)
        .map(|i| FREE_PORTS.start + (start + i) % FREE_PORTS.len() as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap_or(0)
}

/// Where [`free_port`] looks: below the ephemeral range, and apart from the
/// browser suite's instance ports (20000 and up).
const FREE_PORTS: std::ops::Range<u16> = 10_000..20_000;

/// A fresh random secret (64 hex characters).
pub fn random_secret() -> Secret {
    let mut bytes = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Tests only: fall back to something unique rather than fail.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A spec with fresh secrets, default options and limits, its dir at
/// `parent/<id>`.
pub fn spec(id: &str, parent: &Path, port: u16, identity: SandboxIdentity) -> InstanceSpec {
    InstanceSpec {
        id: id.to_owned(),
        port,
        dir: parent.join(id),
        editor_secret: random_secret(),
        endpoint_secret: random_secret(),
        credential_secret: random_secret(),
        env: Vec::new(),
        platform_env: Vec::new(),
        options: InstanceOptions::default(),
        limits: Limits::default(),
        identity,
        read_only_paths: Vec::new(),
        network: crate::NetworkMode::Host,
    }
}

fn in_an_hour() -> i64 {
    crate::supervisor::now_unix_ms() / 1000 + 3600
}

/// An admin token for `spec`, valid for an hour.
pub fn editor_token(spec: &InstanceSpec, username: &str, perm: EditorPermission) -> String {
    mint_editor_token(&spec.editor_secret, &spec.id, username, perm, in_an_hour())
}

/// An endpoint token for `spec`, valid for an hour.
pub fn endpoint_token(spec: &InstanceSpec, username: Option<&str>) -> String {
    mint_endpoint_token(&spec.endpoint_secret, &spec.id, username, in_an_hour())
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Replaces the instance's flows (a full deploy) as `username`, straight to
/// its port, bypassing any proxy.
pub async fn deploy_flows(
    spec: &InstanceSpec,
    username: &str,
    flows: &serde_json::Value,
) -> std::io::Result<HttpResponse> {
    let token = editor_token(spec, username, EditorPermission::Full);
    let body = flows.to_string();
    request(
        spec.address(),
        "POST",
        "/editor/flows",
        &[
            (EDITOR_TOKEN_HEADER, &token),
            ("Content-Type", "application/json"),
            ("Node-RED-Deployment-Type", "full"),
        ],
        Some(body.as_bytes()),
        TIMEOUT,
    )
    .await
}

/// Calls an endpoint of the instance with an endpoint token for `username`.
pub async fn call_endpoint(
    spec: &InstanceSpec,
    method: &str,
    path: &str,
    username: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let token = endpoint_token(spec, username);
    request(
        spec.address(),
        method,
        path,
        &[(ENDPOINT_TOKEN_HEADER, &token)],
        None,
        TIMEOUT,
    )
    .await
}

/// Polls an endpoint until it stops answering 404: a deploy returns before
/// the new flows' routes are registered.
pub async fn wait_for_endpoint(spec: &InstanceSpec, path: &str) -> std::io::Result<HttpResponse> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let r = call_endpoint(spec, "GET", path, Some("probe")).await?;
        if r.status != 404 || std::time::Instant::now() > deadline {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records everything reported, for assertions.
#[derive(Default)]
pub struct RecordingReporter {
    pub statuses: Mutex<Vec<(String, InstanceStatus)>>,
    pub audits: Mutex<Vec<(String, NodeRedAuditEvent)>>,
}

impl RecordingReporter {
    pub fn audits(&self) -> Vec<(String, NodeRedAuditEvent)> {
        self.audits.lock().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn statuses(&self) -> Vec<(String, InstanceStatus)> {
        self.statuses.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl Reporter for RecordingReporter {
    fn status_changed(&self, instance_id: &str, status: &InstanceStatus) {
        if let Ok(mut s) = self.statuses.lock() {
            s.push((instance_id.to_owned(), status.clone()));
        }
    }

    fn audit(&self, instance_id: &str, event: NodeRedAuditEvent) {
        if let Ok(mut a) = self.audits.lock() {
            a.push((instance_id.to_owned(), event));
        }
    }
}

/// "The outside world" for network tests on a machine without internet: a
/// network namespace joined to the host by a veth pair, holding an ordinary
/// address ([`OutsideWorld::address`]) and the cloud metadata address
/// `169.254.169.254`, with a TCP server on port 80 of both that answers
/// `outside-hello`. Needs root and `ip`. Tests using it are serialised by a
/// file lock, because the metadata route is one per host. Torn down on drop.
pub struct OutsideWorld {
    name: String,
    host_if: String,
    pub address: std::net::Ipv4Addr,
    _lock: std::fs::File,
}

/// What the outside world's server answers.
pub const OUTSIDE_GREETING: &str = "outside-hello";
/// The metadata address the outside world also answers on.
pub const METADATA_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 254);

fn ip(args: &[&str]) -> std::io::Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl OutsideWorld {
    pub fn new() -> std::io::Result<Self> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/redwall-test-outside.lock")?;
        // SAFETY: flock on a descriptor we own; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let world = Self {
            name: "rwtest-outside".into(),
            host_if: "rwtout".into(),
            address: std::net::Ipv4Addr::new(198, 18, 7, 2),
            _lock: lock,
        };
        world.tear_down();
        let ns = world.name.as_str();
        ip(&["netns", "add", ns])?;
        ip(&[
            "link",
            "add",
            &world.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "rwtpeer",
            "netns",
            ns,
        ])?;
        ip(&["addr", "add", "198.18.7.1/24", "dev", &world.host_if])?;
        ip(&["link", "set", &world.host_if, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", "198.18.7.2/24", "dev", "rwtpeer"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "rwtpeer",
        ])?;
        ip(&["-n", ns, "link", "set", "rwtpeer", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", "198.18.7.1"])?;
        ip(&["route", "add", "169.254.169.254/32", "via", "198.18.7.2"])?;
        // Replies to forwarded traffic arrive on this link.
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/forwarding", world.host_if),
            "1",
        )?;
        world.serve()?;
        Ok(world)
    }

    /// Binds the server inside the namespace from a thread of its own
    /// (`setns` only moves the calling thread), then serves forever.
    fn serve(&self) -> std::io::Result<()> {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: setns on a descriptor we own, for this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            let listener = match std::net::TcpListener::bind(("0.0.0.0", 80)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            for stream in listener.incoming().flatten() {
                use std::io::Write;
                let mut stream = stream;
                let _ = stream.write_all(format!("{OUTSIDE_GREETING}\n").as_bytes());
            }
        });
        rx.recv()
            .map_err(|_| std::io::Error::other("outside server thread ended"))?
    }

    fn tear_down(&self) {
        let _ = ip(&["route", "del", "169.254.169.254/32"]);
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

impl Drop for OutsideWorld {
    fn drop(&mut self) {
        self.tear_down();
    }
}
