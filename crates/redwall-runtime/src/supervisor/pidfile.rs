//! Pidfiles let a new supervisor find instances a killed one left behind.
//! Each records the group leader's pid and start time (field 22 of
//! `/proc/<pid>/stat`), so a recycled pid is never mistaken for an instance.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) fn path(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join(format!("{id}.pid"))
}

pub(crate) fn write(run_dir: &Path, id: &str, pid: u32) -> std::io::Result<()> {
    let start = stat(pid).map(|s| s.start_time).unwrap_or(0);
    let target = path(run_dir, id);
    let scratch = run_dir.join(format!(".{id}.pid.new"));
    fs::write(&scratch, format!("{pid} {start}\n"))?;
    fs::rename(scratch, target)
}

pub(crate) fn remove(run_dir: &Path, id: &str) {
    let _ = fs::remove_file(path(run_dir, id));
}

/// Records that the isolated network of the instance on `port` exists, so a
/// supervisor that finds it orphaned removes it.
pub(crate) fn write_network(run_dir: &Path, id: &str, port: u16) -> std::io::Result<()> {
    fs::write(run_dir.join(format!("{id}.net")), format!("{port}\n"))
}

pub(crate) fn remove_network(run_dir: &Path, id: &str) {
    let _ = fs::remove_file(run_dir.join(format!("{id}.net")));
}

/// Removes the networks (namespace, link, nftables table) that `.net`
/// records in `run_dir` name, except ids in `skip`. Call after their
/// processes are gone.
pub(crate) fn reap_networks(run_dir: &Path, skip: &[String]) {
    let Ok(entries) = fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.path();
        let Some(id) = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".net"))
            .map(str::to_owned)
        else {
            continue;
        };
        if skip.contains(&id) {
            continue;
        }
        if let Some(port) = fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
        {
            crate::netns::tear_down(port);
        }
        let _ = fs::remove_file(&file);
    }
}

fn read(path: &Path) -> Option<(i32, u64)> {
    let text = fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start))
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub state: char,
    pub pgrp: i32,
    pub start_time: u64,
}

pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields
    // after the last ')' are plain.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Live (non-zombie) members of process group `pgrp` started no earlier than
/// its recorded leader.
pub(crate) fn group_members(pgrp: i32, not_before: u64) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat(*pid).is_some_and(|s| {
                s.pgrp == pgrp && s.start_time >= not_before && s.state != 'Z' && s.state != 'X'
            })
        })
        .collect()
}

/// Kills what each pidfile in `run_dir` still names, except ids in `skip`
/// (this supervisor's own instances), and removes the pidfiles. Returns the
/// ids whose processes were still alive.
pub(crate) fn reap(run_dir: &Path, skip: &[String]) -> Vec<String> {
    let Ok(entries) = fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let file = entry.path();
        let Some(id) = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pid"))
            .filter(|n| !n.starts_with('.'))
            .map(str::to_owned)
        else {
            continue;
        };
        if skip.contains(&id) {
            continue;
        }
        if let Some((pgrp, start)) = read(&file) {
            if pgrp > 1 && kill_group(pgrp, start) {
                reaped.push(id);
            }
        }
        let _ = fs::remove_file(&file);
    }
    reaped
}

fn kill_group(pgrp: i32, start: u64) -> bool {
    let members = group_members(pgrp, start);
    if members.is_empty() {
        return false;
    }
    for pid in &members {
        if let Ok(pid) = i32::try_from(*pid) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !group_members(pgrp, start).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat() {
        let s = stat(std::process::id()).unwrap();
        assert!(s.start_time > 0);
        assert_eq!(s.pgrp, unsafe { libc::getpgrp() });
    }

    #[test]
    fn only_processes_of_the_recorded_group_and_age_are_killed() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = stat(pid).unwrap().start_time;
        // Same pid, later start time: a recycled pid, left alone.
        fs::write(path(dir.path(), "old"), format!("{pid} {}\n", start + 1)).unwrap();
        assert!(reap(dir.path(), &[]).is_empty());
        assert!(!path(dir.path(), "old").exists());
        assert!(child.try_wait().unwrap().is_none());
        // Skipped ids are left alone too.
        write(dir.path(), "mine", pid).unwrap();
        assert!(reap(dir.path(), &["mine".into()]).is_empty());
        assert!(child.try_wait().unwrap().is_none());
        // The recorded process itself is killed.
        assert_eq!(reap(dir.path(), &[]), vec!["mine".to_owned()]);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
