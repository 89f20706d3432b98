//! Directories only the agent may use (0700), and one writer at a time in
//! each: the outbox and the site's journals both keep state that two
//! processes appending at once would corrupt.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

/// Makes `dir` (0700) if missing, and takes group and other access away
/// if it exists with more.
pub(crate) fn ensure(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Takes `dir/lock` (`flock`, held until the file drops); `Ok(None)` when
/// another process holds it. An error names the lock file.
pub(crate) fn lock(dir: &Path) -> Result<Option<File>, (PathBuf, std::io::Error)> {
    let path = dir.join("lock");
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return Err((path, e)),
    };
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err((path, e));
    }
    Ok(Some(file))
}
