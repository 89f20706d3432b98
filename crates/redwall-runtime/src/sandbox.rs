//! The sandbox an instance process runs in.
//!
//! Everything that allocates or can fail in interesting ways (directories,
//! `settings.js`, the Landlock ruleset, the environment) is prepared in the
//! parent. The part that runs in the child between `fork` and `exec`
//! ([`ChildSetup::apply`]) only makes raw syscalls, because the parent is a
//! multi-threaded tokio process and a forked child may not allocate or lock.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Its own network namespace behind nftables: no host service, no
    /// link-local or metadata address, no other instance.
    pub network_isolated: bool,
    /// Private `/tmp`, `/var/tmp`, `/run` and `/dev/shm` (no host Unix
    /// sockets) and a `/proc` of its own PID namespace.
    pub namespaces: bool,
}

/// Directories whose contents (Unix sockets, other programs' scratch files)
/// an isolated instance must not see; each gets an empty tmpfs in its mount
/// namespace. A path the instance needs beneath one is mounted back.
const HIDDEN_DIRS: &[&str] = &["/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm"];

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
#[derive(Debug, Clone)]
pub(crate) struct ChildSetup {
    ruleset_fd: libc::c_int,
    rlimits: [(libc::__rlimit_resource_t, libc::rlim_t); 3],
    ids: Option<(libc::uid_t, libc::gid_t)>,
    parent_pid: libc::pid_t,
    namespaces: Option<Arc<NamespacePlan>>,
}

/// The namespaces of an isolated instance, computed in the parent.
#[derive(Debug)]
pub(crate) struct NamespacePlan {
    netns_fd: libc::c_int,
    /// Each gets an empty tmpfs.
    hidden: Vec<CString>,
    /// Created in those tmpfs, in order, as mount points.
    mkdirs: Vec<CString>,
    mkfiles: Vec<CString>,
    /// Paths opened before the tmpfs hides them, mounted back after.
    binds: Vec<CString>,
}

/// At most this many paths are mounted back (the child keeps their
/// descriptors on its stack).
const MAX_BINDS: usize = 16;

/// Descriptors the plan refers to by number.
struct PlanFds {
    _netns: OwnedFd,
}

/// A sandbox ready for one spawn. Keep it alive until the spawn returns: the
/// child uses the ruleset through its inherited (close-on-exec) descriptor.
pub(crate) struct PreparedSandbox {
    _ruleset: Option<OwnedFd>,
    _plan_fds: Option<PlanFds>,
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
    let (ruleset, mut report) = build_ruleset(spec, install, ids.is_some())?;
    let (plan, plan_fds) = if spec.is_isolated() {
        let (plan, fds) = namespace_plan(spec, install)?;
        report.network_isolated = true;
        report.namespaces = true;
        (Some(Arc::new(plan)), Some(fds))
    } else {
        (None, None)
    };
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
        namespaces: plan,
    };
    Ok(PreparedSandbox {
        _ruleset: ruleset,
        _plan_fds: plan_fds,
        setup,
        env: environment(spec),
        report,
    })
}

fn cstring(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::InvalidSpec(format!("{} holds a NUL byte", path.display())))
}

/// Which directories to hide, and which paths the instance needs from
/// beneath them (its own directory, the Node-RED install, Node itself), to
/// be mounted back over the empty tmpfs.
fn namespace_plan(
    spec: &InstanceSpec,
    install: &NodeRedInstall,
) -> Result<(NamespacePlan, PlanFds), RuntimeError> {
    let netns_path = crate::netns::netns_path(spec.port);
    let netns =
        fs::File::open(&netns_path).map_err(RuntimeError::io(format!("opening {netns_path}")))?;
    let netns: OwnedFd = netns.into();
    let hidden: Vec<PathBuf> = HIDDEN_DIRS
        .iter()
        .map(PathBuf::from)
        .filter(|d| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        .collect();
    let mut needed: Vec<PathBuf> = vec![spec.dir.clone()];
    needed.extend(install.sandbox_read_paths());
    if let Some(node_dir) = install.node.parent() {
        needed.push(node_dir.to_path_buf());
    }
    needed.extend(spec.read_only_paths.iter().cloned());
    let mut needed: Vec<(PathBuf, PathBuf)> = needed
        .into_iter()
        .filter_map(|p| {
            let real = fs::canonicalize(&p).ok()?;
            let root = hidden.iter().find(|h| real.starts_with(h))?.clone();
            Some((real, root))
        })
        .collect();
    needed.sort();
    needed.dedup();
    // A path beneath another one comes back with it; mounting it separately
    // would create its mount point in the real directory.
    let outer: Vec<(PathBuf, PathBuf)> = needed
        .iter()
        .filter(|(p, _)| !needed.iter().any(|(q, _)| q != p && p.starts_with(q)))
        .cloned()
        .collect();
    let mut mkdirs = Vec::new();
    let mut mkfiles = Vec::new();
    let mut binds = Vec::new();
    if outer.len() > MAX_BINDS {
        return Err(RuntimeError::InvalidSpec(format!(
            "more than {MAX_BINDS} paths the instance needs lie under {HIDDEN_DIRS:?}"
        )));
    }
    for (path, root) in outer {
        let is_dir = fs::metadata(&path).is_ok_and(|m| m.is_dir());
        let mut chain: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&root) && *a != root)
            .map(Path::to_path_buf)
            .collect();
        chain.reverse();
        for dir in chain {
            let c = cstring(&dir)?;
            if !mkdirs.contains(&c) {
                mkdirs.push(c);
            }
        }
        if is_dir {
            mkdirs.push(cstring(&path)?);
        } else {
            mkfiles.push(cstring(&path)?);
        }
        binds.push(cstring(&path)?);
    }
    let plan = NamespacePlan {
        netns_fd: netns.as_raw_fd(),
        hidden: hidden
            .iter()
            .map(|h| cstring(h))
            .collect::<Result<_, _>>()?,
        mkdirs,
        mkfiles,
        binds,
    };
    Ok((plan, PlanFds { _netns: netns }))
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
        network_isolated: false,
        namespaces: false,
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
            "REDWALL_EDITOR_SECRET".into(),
            spec.editor_secret.expose().into(),
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
    for var in spec.env.iter().chain(&spec.platform_env) {
        env.push((var.name.clone().into(), var.value.expose().into()));
    }
    env
}

/// `landlock_path_beneath_attr`, for the one rule the child adds itself.
#[cfg(test)]
#[test]
fn descriptor_paths_are_written_without_allocating() {
    for (fd, want) in [(0, "0"), (7, "7"), (19, "19"), (1234567, "1234567")] {
        let mut out = [0xffu8; 32];
        fd_path(fd, &mut out);
        let end = out.iter().position(|b| *b == 0).unwrap_or(32);
        assert_eq!(&out[..end], format!("/proc/self/fd/{want}").as_bytes());
    }
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Execute, read file, read directory.
const LANDLOCK_READ: u64 = 1 | (1 << 2) | (1 << 3);
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;

/// Writes `/proc/self/fd/<fd>` and a NUL into `out`, without allocating.
fn fd_path(fd: libc::c_int, out: &mut [u8; 32]) {
    let prefix = b"/proc/self/fd/";
    out[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[prefix.len() + i] = digits[len - 1 - i];
    }
    out[prefix.len() + len] = 0;
}

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSetup {
    /// Runs in the forked child before `exec`.
    ///
    /// # Safety
    /// Only async-signal-safe syscalls: no allocation, no locks. The order
    /// matters: namespaces need the capabilities dropped below; identity
    /// changes clear the parent-death signal, so it is set after them;
    /// `no_new_privs` must precede `landlock_restrict_self`.
    pub(crate) unsafe fn apply(&self) -> io::Result<()> {
        check(libc::setsid() as libc::c_long)?;
        for (resource, value) in self.rlimits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            check(libc::setrlimit(resource, &limit) as libc::c_long)?;
        }
        let mut alive_fd = -1;
        if let Some(plan) = &self.namespaces {
            alive_fd = self.enter_namespaces(plan)?;
        }
        // After the mount points above, which other uids must traverse.
        libc::umask(0o077);
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
        if alive_fd >= 0 {
            // In its own PID namespace getppid() says 0; the parent holds the
            // write end of this pipe until it dies.
            let mut poll = libc::pollfd {
                fd: alive_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut poll, 1, 0) != 0 {
                libc::_exit(1);
            }
            libc::close(alive_fd);
        } else if libc::getppid() != self.parent_pid {
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

    /// Joins the instance's network namespace, makes a mount and a PID
    /// namespace, hides [`HIDDEN_DIRS`], then forks: the child goes on to
    /// exec Node-RED as PID 1 of the new namespace (mounting its own
    /// `/proc`), while this process stays outside as its stand-in. It is the
    /// process the supervisor sees (its pid and process group), it ignores
    /// SIGTERM so a stop reaches Node-RED, and it exits as Node-RED did.
    /// When PID 1 exits the kernel kills everything else in the namespace.
    /// Returns, in the child, the read end of a pipe that reports the stand-in's death.
    unsafe fn enter_namespaces(&self, plan: &NamespacePlan) -> io::Result<libc::c_int> {
        check(libc::setns(plan.netns_fd, libc::CLONE_NEWNET) as libc::c_long)?;
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) as libc::c_long)?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) as libc::c_long)?;
        // Bind mounts need sources in this mount namespace: open them here,
        // before the tmpfs hides them.
        let mut sources = [-1; MAX_BINDS];
        for (slot, path) in sources.iter_mut().zip(&plan.binds) {
            *slot = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            check(*slot as libc::c_long)?;
        }
        for dir in &plan.hidden {
            check(libc::mount(
                c"tmpfs".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0755,size=1m".as_ptr().cast(),
            ) as libc::c_long)?;
        }
        for dir in &plan.mkdirs {
            let r = libc::mkdir(dir.as_ptr(), 0o755);
            if r != 0 && *libc::__errno_location() != libc::EEXIST {
                return Err(io::Error::last_os_error());
            }
        }
        for file in &plan.mkfiles {
            let fd = libc::open(
                file.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            check(fd as libc::c_long)?;
            libc::close(fd);
        }
        for (fd, target) in sources.iter().zip(&plan.binds) {
            let mut source = [0u8; 32];
            fd_path(*fd, &mut source);
            check(libc::mount(
                source.as_ptr().cast(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) as libc::c_long)?;
            libc::close(*fd);
        }
        let mut pipe = [0; 2];
        check(libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) as libc::c_long)?;
        let child = libc::fork();
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child > 0 {
            self.stand_in(child, pipe[1]);
        }
        libc::close(pipe[1]);
        // PID 1 of the new namespace: its /proc shows only its own.
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) as libc::c_long)?;
        // The ruleset allowed reading the host's /proc; the new one is a
        // different filesystem and needs its own rule.
        if self.ruleset_fd >= 0 {
            let proc_fd = libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            check(proc_fd as libc::c_long)?;
            let attr = PathBeneathAttr {
                allowed_access: LANDLOCK_READ,
                parent_fd: proc_fd,
            };
            check(libc::syscall(
                libc::SYS_landlock_add_rule,
                self.ruleset_fd,
                LANDLOCK_RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0,
            ))?;
            libc::close(proc_fd);
        }
        Ok(pipe[0])
    }

    /// The process outside the PID namespace; never returns.
    unsafe fn stand_in(&self, child: libc::pid_t, alive_fd: libc::c_int) -> ! {
        // Keep nothing of Redwall's but the output pipes and the liveness
        // pipe (the spawn error pipe must close for the spawn to return).
        if alive_fd > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (alive_fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (alive_fd + 1) as u32, u32::MAX, 0u32);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != self.parent_pid {
            libc::kill(child, libc::SIGKILL);
            libc::_exit(1);
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(child, &mut status, 0);
            if r == child {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
}
