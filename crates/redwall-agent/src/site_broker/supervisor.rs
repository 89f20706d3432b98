//! The agent's side: one long-lived thread that spawns the child, hands it
//! its configuration, waits for its ready line, watches it exit (a pidfd,
//! so an idle broker costs the agent no wake-ups), and starts it again
//! after a growing delay. The thread, not a tokio worker, spawns the
//! child: `PR_SET_PDEATHSIG` fires when the spawning *thread* ends, and
//! this one lives exactly as long as the [`super::SiteBroker`] handle.
//!
//! The handle holds the write end of a pipe whose read end the thread
//! polls beside the child: dropping the handle (or the agent dying) ends
//! the thread, which kills the child (SIGKILL) and reaps it.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use super::child::Ready;
use super::SiteBrokerState;

/// How long a child may take from spawn to its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// A child that ran this long starts the delays afresh when it exits.
const STABLE_RUN: Duration = Duration::from_secs(60);

pub(crate) struct Plan {
    pub executable: PathBuf,
    /// The child's configuration (JSON; digests, no password).
    pub config: Zeroizing<Vec<u8>>,
    pub restart_base: Duration,
    pub restart_max: Duration,
    pub state: watch::Sender<SiteBrokerState>,
}

/// A pipe: (read end, write end), both close-on-exec.
pub(crate) fn stop_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What [`wait_for`] saw.
enum Woke {
    /// The stop pipe closed: the handle is gone.
    Stop,
    /// The other descriptor is readable (the child exited, or wrote).
    Ready,
    Timeout,
}

/// Polls `stop` and maybe `fd` for up to `timeout` (`None`: for ever).
fn wait_for(stop: &OwnedFd, fd: Option<libc::c_int>, timeout: Option<Duration>) -> Woke {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut fds = [
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Woke::Timeout;
                }
                left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: fds is a valid array of two pollfd; a negative fd is ignored.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Never expected; do not spin.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if fds[0].revents != 0 {
            return Woke::Stop;
        }
        if fds[1].revents != 0 {
            return Woke::Ready;
        }
        if n == 0 {
            return Woke::Timeout;
        }
    }
}

fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just returned to us.
    Some(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn(plan: &Plan) -> std::io::Result<Child> {
    let mut command = Command::new(&plan.executable);
    command
        .arg("site-broker")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Not in the agent's group: a Ctrl-C is the agent's to act on.
        .process_group(0);
    for var in ["REDWALL_AGENT_LOG", "PATH", "TZ"] {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    // SAFETY: prctl is async-signal-safe; nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let written = stdin.write_all(&plan.config);
        drop(stdin);
        if let Err(e) = written {
            kill(&mut child);
            return Err(e);
        }
    }
    Ok(child)
}

const EXITED_EARLY: &str = "closed its stdout before it was ready";

/// How a child that closed its stdout ended (it exits right after).
fn exit_status(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Reads the child's ready line; `Err` why not, `Ok(None)` when told to stop.
fn await_ready(child: &mut Child, stop: &OwnedFd) -> Result<Option<Ready>, String> {
    let Some(stdout) = child.stdout.as_mut() else {
        return Err("no stdout".into());
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_for(stop, Some(stdout.as_raw_fd()), Some(left)) {
            Woke::Stop => return Ok(None),
            Woke::Timeout => return Err(format!("not ready within {READY_TIMEOUT:?}")),
            Woke::Ready => {}
        }
        let mut buf = [0u8; 512];
        let n = stdout
            .read(&mut buf)
            .map_err(|e| format!("reading its ready line: {e}"))?;
        if n == 0 {
            return Err(EXITED_EARLY.into());
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            let ready: Ready = serde_json::from_slice(&line[..end])
                .map_err(|e| format!("an unexpected ready line: {e}"))?;
            if !ready.ready {
                return Err("it said it is not ready".into());
            }
            return Ok(Some(ready));
        }
        if line.len() > 64 * 1024 {
            return Err("an overlong ready line".into());
        }
    }
}

/// How the child ended, in words.
fn ended(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// Waits for the child to exit, or for `stop` (then kills it). Returns
/// how it ended, `None` when stopped.
fn watch_child(child: &mut Child, stop: &OwnedFd) -> Option<String> {
    let pidfd = pidfd(child.id());
    loop {
        let woke = match &pidfd {
            Some(fd) => wait_for(stop, Some(fd.as_raw_fd()), None),
            // A kernel without pidfds (before 5.3): look every 250 ms.
            None => wait_for(stop, None, Some(Duration::from_millis(250))),
        };
        if let Woke::Stop = woke {
            kill(child);
            return None;
        }
        match child.try_wait() {
            Ok(Some(status)) => return Some(ended(status)),
            Ok(None) => {}
            Err(e) => {
                kill(child);
                return Some(format!("could not be watched: {e}"));
            }
        }
    }
}

/// The supervising thread's body: runs until the stop pipe closes.
pub(crate) fn supervise(plan: Plan, stop: OwnedFd) {
    let mut failures: u32 = 0;
    loop {
        plan.state.send_replace(SiteBrokerState::Starting);
        let started = Instant::now();
        let why = match spawn(&plan) {
            Err(e) => format!("could not be started ({}): {e}", plan.executable.display()),
            Ok(mut child) => match await_ready(&mut child, &stop) {
                Ok(None) => {
                    kill(&mut child);
                    break;
                }
                Err(why) => {
                    let status = if why == EXITED_EARLY {
                        exit_status(&mut child)
                    } else {
                        None
                    };
                    kill(&mut child);
                    match status {
                        Some(status) => format!("{} before it was ready", ended(status)),
                        None => why,
                    }
                }
                Ok(Some(ready)) => {
                    let pid = child.id();
                    info!(pid, listen = ?ready.listen, "site broker running");
                    plan.state.send_replace(SiteBrokerState::Running {
                        pid,
                        listen: ready.listen,
                    });
                    match watch_child(&mut child, &stop) {
                        None => break,
                        Some(why) => why,
                    }
                }
            },
        };
        if started.elapsed() >= STABLE_RUN {
            failures = 0;
        }
        let delay = restart_delay(failures, plan.restart_base, plan.restart_max);
        failures = failures.saturating_add(1);
        if failures > 1 {
            error!(
                "site broker {why}; starting it again in {delay:?} (failure {failures} in a row)"
            );
        } else {
            warn!("site broker {why}; starting it again in {delay:?}");
        }
        plan.state
            .send_replace(SiteBrokerState::Restarting { why, failures });
        if let Woke::Stop = wait_for(&stop, None, Some(delay)) {
            break;
        }
    }
    info!("site broker stopped");
    plan.state.send_replace(SiteBrokerState::Stopped);
}

/// `base`, doubled after each failure in a row, at most `max`.
pub(crate) fn restart_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(1u32 << failures.min(20)).min(max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_maximum() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(30));
        let delays: Vec<_> = (0..10).map(|f| restart_delay(f, base, max)).collect();
        assert_eq!(delays[0], base);
        assert_eq!(delays[1], base * 2);
        assert_eq!(delays[3], base * 8);
        assert_eq!(delays[9], max);
        assert_eq!(restart_delay(u32::MAX, base, max), max);
    }

    #[test]
    fn a_closed_stop_pipe_wakes_the_thread() {
        let (read, write) = stop_pipe().unwrap();
        assert!(matches!(
            wait_for(&read, None, Some(Duration::from_millis(20))),
            Woke::Timeout
        ));
        drop(write);
        assert!(matches!(wait_for(&read, None, None), Woke::Stop));
    }
}
