//! Installing Node-RED from npm, or adopting an existing installation.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::RuntimeError;

/// The version Redwall installs unless configured otherwise. 4.x runs on the
/// Node.js 20 most distributions ship; 5.x needs Node.js >= 22.9.
pub const DEFAULT_NODE_RED_VERSION: &str = "4.1.8";

/// Written last into a finished install, so a directory without it is never
/// mistaken for a complete one.
const COMPLETE_MARKER: &str = ".redwall-install-complete";

/// Installs a pinned Node-RED version with npm into `dir`.
#[derive(Debug, Clone)]
pub struct Installer {
    /// Parent of the per-version install dirs (e.g. `data_dir/runtime`).
    pub dir: PathBuf,
    pub version: String,
    pub npm: PathBuf,
    pub node: PathBuf,
}

/// A usable Node-RED: the node binary and the package to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRedInstall {
    pub node: PathBuf,
    pub red_js: PathBuf,
    /// The `node-red` package directory (holds `red.js`).
    pub package_dir: PathBuf,
    pub version: String,
}

impl NodeRedInstall {
    /// Paths an instance must be able to read to load Node-RED: the package
    /// and, for an npm `--prefix` install, the sibling packages it depends on.
    pub fn sandbox_read_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.package_dir.clone()];
        if let Some(parent) = self.package_dir.parent() {
            if parent.file_name().is_some_and(|n| n == "node_modules") {
                paths.push(parent.to_path_buf());
            }
        }
        paths
    }
}

impl Installer {
    /// An installer for [`DEFAULT_NODE_RED_VERSION`] using `npm` and `node`
    /// from `PATH`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            version: DEFAULT_NODE_RED_VERSION.to_owned(),
            npm: PathBuf::from("npm"),
            node: PathBuf::from("node"),
        }
    }

    fn target(&self) -> PathBuf {
        self.dir.join(format!("node-red-{}", self.version))
    }

    /// Returns the installation, running npm first if it is missing or
    /// incomplete. npm's output goes to `progress` line by line.
    pub fn ensure(&self, progress: &mut dyn FnMut(&str)) -> Result<NodeRedInstall, RuntimeError> {
        let valid_version = !self.version.is_empty()
            && self
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !valid_version {
            return Err(RuntimeError::InvalidSpec(format!(
                "Node-RED version {:?} is not a plain version number",
                self.version
            )));
        }
        let target = self.target();
        if !is_complete(&target) {
            self.install(&target, progress)?;
        }
        let install = Self::use_existing(&target.join("node_modules/node-red"), &self.node)?;
        Ok(install)
    }

    fn install(&self, target: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), RuntimeError> {
        create_dir_0755(&self.dir)?;
        // npm writes into a scratch dir renamed into place on success, so a
        // killed install leaves only scratch that the next attempt removes.
        let scratch = self.dir.join(format!(".node-red-{}.partial", self.version));
        if scratch.exists() {
            fs::remove_dir_all(&scratch).map_err(RuntimeError::io("removing a partial install"))?;
        }
        create_dir_0755(&scratch)?;
        progress(&format!("installing node-red@{} with npm", self.version));
        let mut command = Command::new(&self.npm);
        command
            .arg("install")
            .arg("--prefix")
            .arg(&scratch)
            .args([
                "--no-audit",
                "--no-fund",
                "--omit=dev",
                "--no-update-notifier",
                // One line per package fetched: the progress a user sees
                // while a cold cache fills (npm prints nothing else).
                "--loglevel=http",
            ])
            .arg(format!("node-red@{}", self.version))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl with plain integer arguments is async-signal-safe.
        // npm must not outlive the thread waiting for it (Redwall exiting
        // mid-install): a second npm into the same scratch dir would mix.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|source| RuntimeError::ProgramMissing {
                program: self.npm.display().to_string(),
                source,
            })?;
        let (tx, rx) = mpsc::channel::<String>();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(forward_lines(out, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(forward_lines(err, tx.clone()));
        }
        drop(tx);
        let mut last_line = String::new();
        for line in rx {
            progress(&line);
            if !line.trim().is_empty() {
                last_line = line;
            }
        }
        for reader in readers {
            let _ = reader.join();
        }
        let status = child.wait().map_err(RuntimeError::io("waiting for npm"))?;
        if !status.success() {
            let _ = fs::remove_dir_all(&scratch);
            return Err(RuntimeError::NpmFailed {
                version: self.version.clone(),
                status: status.to_string(),
                last_line,
            });
        }
        let red_js = scratch.join("node_modules/node-red/red.js");
        if !red_js.is_file() {
            return Err(RuntimeError::InvalidInstall {
                path: scratch,
                reason: "npm succeeded but red.js is missing".into(),
            });
        }
        // Instances run as other uids and must read (not write) the install.
        make_world_readable(&scratch)?;
        fs::write(scratch.join(COMPLETE_MARKER), &self.version)
            .map_err(RuntimeError::io("writing the install marker"))?;
        if target.exists() {
            fs::remove_dir_all(target)
                .map_err(RuntimeError::io("removing an incomplete install"))?;
        }
        fs::rename(&scratch, target).map_err(RuntimeError::io("moving the install into place"))?;
        progress(&format!("node-red@{} installed", self.version));
        Ok(())
    }

    /// Adopts a configured installation: `package_dir` is the `node-red`
    /// package directory (the one holding `red.js`). Also checks that `node`
    /// is recent enough for it.
    pub fn use_existing(package_dir: &Path, node: &Path) -> Result<NodeRedInstall, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidInstall {
            path: package_dir.to_path_buf(),
            reason,
        };
        let package_dir = package_dir
            .canonicalize()
            .map_err(|e| invalid(format!("cannot resolve the path: {e}")))?;
        let red_js = package_dir.join("red.js");
        if !red_js.is_file() {
            return Err(invalid("red.js not found".into()));
        }
        let manifest = fs::read_to_string(package_dir.join("package.json"))
            .map_err(|e| invalid(format!("cannot read package.json: {e}")))?;
        let manifest: serde_json::Value = serde_json::from_str(&manifest)
            .map_err(|e| invalid(format!("package.json is not JSON: {e}")))?;
        if manifest["name"] != "node-red" {
            return Err(invalid("package.json does not name node-red".into()));
        }
        let version = manifest["version"]
            .as_str()
            .ok_or_else(|| invalid("package.json has no version".into()))?
            .to_owned();
        let node = resolve_program(node);
        check_node_version(&node, &version)?;
        Ok(NodeRedInstall {
            node,
            red_js,
            package_dir,
            version,
        })
    }
}

fn is_complete(target: &Path) -> bool {
    target.join(COMPLETE_MARKER).is_file() && target.join("node_modules/node-red/red.js").is_file()
}

fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    })
}

pub(crate) fn create_dir_0755(dir: &Path) -> Result<(), RuntimeError> {
    fs::create_dir_all(dir).map_err(RuntimeError::io(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(RuntimeError::io(format!("chmod {}", dir.display())))
}

fn make_world_readable(root: &Path) -> Result<(), RuntimeError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(RuntimeError::io("reading the install"))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        let wanted = if meta.is_dir() || mode & 0o111 != 0 {
            mode | 0o755
        } else {
            mode | 0o644
        };
        if wanted != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(wanted))
                .map_err(RuntimeError::io("chmod in the install"))?;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(RuntimeError::io("reading the install"))? {
                stack.push(
                    entry
                        .map_err(RuntimeError::io("reading the install"))?
                        .path(),
                );
            }
        }
    }
    Ok(())
}

/// Resolves a bare program name through `PATH`, because the sandboxed child
/// starts with a fixed `PATH` and the Landlock rules need the real location.
fn resolve_program(program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        return program
            .canonicalize()
            .unwrap_or_else(|_| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate.canonicalize().unwrap_or(candidate);
        }
    }
    program.to_path_buf()
}

fn check_node_version(node: &Path, node_red: &str) -> Result<(), RuntimeError> {
    let output = Command::new(node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RuntimeError::ProgramMissing {
            program: node.display().to_string(),
            source,
        })?;
    let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let needed = needed_node(node_red);
    match parse_version(&found) {
        Some(v) if v >= needed => Ok(()),
        _ => Err(RuntimeError::NodeVersion {
            found,
            needed: format!("{}.{}.{}", needed.0, needed.1, needed.2),
            node_red: node_red.to_owned(),
        }),
    }
}

fn needed_node(node_red: &str) -> (u32, u32, u32) {
    match parse_version(node_red) {
        Some((major, _, _)) if major >= 5 => (22, 9, 0),
        _ => (18, 5, 0),
    }
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn node_red_5_needs_node_22_9() {
        assert_eq!(needed_node("5.0.1"), (22, 9, 0));
        assert_eq!(needed_node("4.1.8"), (18, 5, 0));
        assert!(parse_version("v20.20.0") < Some((22, 9, 0)));
        assert!(parse_version("v22.10.0") >= Some((22, 9, 0)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn a_missing_node_is_an_error_not_a_panic() {
        let err = check_node_version(Path::new("/nonexistent/node"), "4.1.8");
        assert!(matches!(err, Err(RuntimeError::ProgramMissing { .. })));
    }

    #[test]
    fn a_too_old_node_explains_what_to_do() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fake = dir.path().join("node");
        fs::write(&fake, "#!/bin/sh\necho v20.20.0\n").unwrap_or_else(|e| panic!("{e}"));
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = check_node_version(&fake, "5.0.0")
            .err()
            .map(|e| e.to_string());
        let msg = err.unwrap_or_default();
        assert!(msg.contains("22.9.0") && msg.contains("v20.20.0"), "{msg}");
        assert!(msg.contains("node_red_version = \"4.1.8\""), "{msg}");
    }

    #[test]
    fn a_missing_npm_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut installer = Installer::new(dir.path().to_path_buf());
        installer.npm = PathBuf::from("/nonexistent/npm");
        let err = installer.ensure(&mut |_| {});
        assert!(matches!(err, Err(RuntimeError::ProgramMissing { .. })));
        // Nothing half-installed is left to be mistaken for a complete one.
        assert!(!is_complete(&installer.target()));
    }
}
