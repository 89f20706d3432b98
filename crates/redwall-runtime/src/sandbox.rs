//! The sandbox an instance process runs in.
//!
//! Everything that allocates or can fail in interesting ways (directories,
//! `settings.js`, the Landlock ruleset, the environment) is prepared in the
//! parent. The part that runs in the child between `fork` and `exec`
//! ([`ChildSetup::apply`]) only makes raw syscalls, because the parent is a
//! multi-threaded tokio process and a forked child may not allocate or lock.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, ABI,
};
use serde::Serialize;

use crate::install::{create_dir_0755, NodeRedInstall};
use crate::settings::render_settings;
use crate::spec::{InstanceSpec, SandboxIdentity};
use crate::RuntimeError;

/// The newest Landlock ABI whose rights this crate asks for; older kernels get
/// what they support (best effort) and the achieved level is reported.
const TARGET_ABI: ABI = ABI::V7;

/// System paths an instance may read and execute: Node's shared libraries,
/// name resolution, TLS roots, time zones, and the `/proc` and `/sys` files
/// Node reads about itself and the machine.
const SYSTEM_READ_PATHS: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/proc",
    "/sys/fs/cgroup",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
];

/// Devices an instance may also write to.
const DEVICE_PATHS: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// What the sandbox of a started instance achieved, for Redwall's status
/// checks and warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxReport {
    /// Landlock ABI the kernel offers, `None` when Landlock is unavailable.
    pub landlock_abi: Option<u32>,
    /// A Landlock ruleset was applied to the process.
    pub landlock_enforced: bool,
    /// TCP bind is limited to the instance's port (ABI >= 4).
    pub bind_restricted: bool,
    /// Signals and abstract unix sockets are scoped to the sandbox (ABI >= 6).
    pub ipc_scoped: bool,
    /// The instance runs under its own uid/gid.
    pub os_user: bool,
}

/// Probes the kernel's Landlock ABI version; `None` when Landlock is not
/// built in or not enabled at boot.
pub fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and the VERSION flag the syscall only
    // returns a number; it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

/// Everything the child needs, as plain values so [`ChildSetup::apply`]
/// allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildSetup {
    ruleset_fd: libc::c_int,
    rlimits: [(libc::__rlimit_resource_t, libc::rlim_t); 3],
    ids: Option<(libc::uid_t, libc::gid_t)>,
    parent_pid: libc::pid_t,
}

/// A sandbox ready for one spawn. Keep it alive until the spawn returns: the
/// child uses the ruleset through its inherited (close-on-exec) descriptor.
pub(crate) struct PreparedSandbox {
    _ruleset: Option<OwnedFd>,
    pub setup: ChildSetup,
    pub env: Vec<(OsString, OsString)>,
    pub report: SandboxReport,
}

/// Creates the instance directories, writes `settings.js` and builds the
/// Landlock ruleset and environment.
pub(crate) fn prepare(
    spec: &InstanceSpec,
    install: &NodeRedInstall,
) -> Result<PreparedSandbox, RuntimeError> {
    spec.validate()?;
    let ids = match spec.identity {
        SandboxIdentity::OsUser { uid, gid } => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err(RuntimeError::InvalidSpec(
                    "SandboxIdentity::OsUser needs Redwall to run as root".into(),
                ));
            }
            if uid == 0 || gid == 0 {
                return Err(RuntimeError::InvalidSpec(
                    "an instance may not run as uid or gid 0".into(),
                ));
            }
            Some((uid, gid))
        }
        SandboxIdentity::Inherit => None,
    };
    prepare_dirs(spec, ids)?;
    let (ruleset, report) = build_ruleset(spec, install, ids.is_some())?;
    let rlimits = [
        (libc::RLIMIT_DATA, spec.limits.memory_bytes),
        (libc::RLIMIT_NPROC, spec.limits.max_processes),
        (libc::RLIMIT_NOFILE, spec.limits.max_open_files),
    ];
    let setup = ChildSetup {
        ruleset_fd: ruleset.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        rlimits,
        ids,
        // SAFETY: getpid has no preconditions.
        parent_pid: unsafe { libc::getpid() },
    };
    Ok(PreparedSandbox {
        _ruleset: ruleset,
        setup,
        env: environment(spec),
        report,
    })
}

fn prepare_dirs(spec: &InstanceSpec, ids: Option<(u32, u32)>) -> Result<(), RuntimeError> {
    // The instance dir and settings.js stay Redwall's: the instance must not
    // be able to rewrite the file that holds its own security checks.
    create_dir_0755(&spec.dir)?;
    let userdir = spec.userdir();
    fs::create_dir_all(userdir.join("tmp")).map_err(RuntimeError::io("creating the userdir"))?;
    if let Some((uid, gid)) = ids {
        chown_tree(&userdir, uid, gid)?;
    }
    fs::set_permissions(&userdir, fs::Permissions::from_mode(0o700))
        .map_err(RuntimeError::io("chmod userdir"))?;
    let settings = spec.settings_path();
    let scratch = spec.dir.join(".settings.js.new");
    fs::write(&scratch, render_settings(spec)).map_err(RuntimeError::io("writing settings.js"))?;
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o644))
        .map_err(RuntimeError::io("chmod settings.js"))?;
    fs::rename(&scratch, &settings).map_err(RuntimeError::io("replacing settings.js"))?;
    Ok(())
}

fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), RuntimeError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        // lchown: a symlink planted by the instance must not redirect the
        // chown to a file outside its userdir.
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(RuntimeError::io(format!("chown {}", path.display())))?;
        let meta = fs::symlink_metadata(&path).map_err(RuntimeError::io("reading userdir"))?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(RuntimeError::io("reading userdir"))? {
                stack.push(entry.map_err(RuntimeError::io("reading userdir"))?.path());
            }
        }
    }
    Ok(())
}

fn build_ruleset(
    spec: &InstanceSpec,
    install: &NodeRedInstall,
    os_user: bool,
) -> Result<(Option<OwnedFd>, SandboxReport), RuntimeError> {
    let abi = landlock_abi();
    let err = |e: landlock::RulesetError| RuntimeError::Sandbox(e.to_string());
    let mut read_paths: Vec<PathBuf> = SYSTEM_READ_PATHS.iter().map(PathBuf::from).collect();
    read_paths.extend(install.sandbox_read_paths());
    if let Some(node_dir) = install.node.parent() {
        read_paths.push(node_dir.to_path_buf());
    }
    read_paths.extend(spec.read_only_paths.iter().cloned());
    read_paths.push(spec.settings_path());

    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(err)?
        .handle_access(AccessNet::BindTcp)
        .map_err(err)?
        .scope(Scope::from_all(TARGET_ABI))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(
            &read_paths,
            AccessFs::from_read(TARGET_ABI),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            DEVICE_PATHS,
            AccessFs::from_file(TARGET_ABI),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            [spec.userdir()],
            AccessFs::from_all(TARGET_ABI),
        ))
        .map_err(err)?
        .add_rule(NetPort::new(spec.port, AccessNet::BindTcp))
        .map_err(err)?;
    let fd: Option<OwnedFd> = ruleset.into();
    let level = abi.unwrap_or(0);
    let report = SandboxReport {
        landlock_abi: abi,
        landlock_enforced: fd.is_some(),
        bind_restricted: fd.is_some() && level >= 4,
        ipc_scoped: fd.is_some() && level >= 6,
        os_user,
    };
    Ok((fd, report))
}

fn environment(spec: &InstanceSpec) -> Vec<(OsString, OsString)> {
    let userdir = spec.userdir();
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), userdir.clone().into()),
        ("TMPDIR".into(), userdir.join("tmp").into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("NODE_ENV".into(), "production".into()),
        (
            "REDWALL_ADMIN_SECRET".into(),
            spec.admin_secret.expose().into(),
        ),
        (
            "REDWALL_ENDPOINT_SECRET".into(),
            spec.endpoint_secret.expose().into(),
        ),
        (
            "REDWALL_CREDENTIAL_SECRET".into(),
            spec.credential_secret.expose().into(),
        ),
    ];
    for var in &spec.env {
        env.push((var.name.clone().into(), var.value.expose().into()));
    }
    env
}

impl ChildSetup {
    /// Runs in the forked child before `exec`.
    ///
    /// # Safety
    /// Only async-signal-safe syscalls: no allocation, no locks. The order
    /// matters: identity changes clear the parent-death signal, so it is set
    /// after them; `no_new_privs` must precede `landlock_restrict_self`.
    pub(crate) unsafe fn apply(&self) -> io::Result<()> {
        let check = |r: libc::c_long| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        check(libc::setsid() as libc::c_long)?;
        libc::umask(0o077);
        for (resource, value) in self.rlimits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            check(libc::setrlimit(resource, &limit) as libc::c_long)?;
        }
        // An instance needs no capabilities. Emptying the bounding set means
        // even a root instance (Inherit under a root Redwall) execs without
        // any, so it cannot bypass permission checks or read non-dumpable
        // processes' /proc files. Fails harmlessly (EPERM) when not root.
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        if let Some((uid, gid)) = self.ids {
            check(libc::setgroups(0, std::ptr::null()) as libc::c_long)?;
            check(libc::setgid(gid) as libc::c_long)?;
            check(libc::setuid(uid) as libc::c_long)?;
        }
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) as libc::c_long)?;
        // The parent may have died before the line above: then nobody would
        // ever kill this child.
        if libc::getppid() != self.parent_pid {
            libc::_exit(1);
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
        if self.ruleset_fd >= 0 {
            check(libc::syscall(
                libc::SYS_landlock_restrict_self,
                self.ruleset_fd,
                0,
            ))?;
        }
        Ok(())
    }
}
