//! Whether an instance's own uid can reach a path: every directory on the
//! way must let it search (`x`). Redwall runs as root, which passes any
//! directory, so a data directory under `/root` (mode 0700) or in a private
//! temp dir works for Redwall and silently fails for its instances; this
//! finds the directory that stops them, so Redwall can say so.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The first directory on a path that does not let a uid through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub dir: PathBuf,
    pub mode: u32,
    pub owner: u32,
    pub uid: u32,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (mode {:04o}, owner uid {}) does not let the instance's user (uid {}) pass",
            self.dir.display(),
            self.mode & 0o7777,
            self.owner,
            self.uid
        )
    }
}

/// The first directory, from the root down to `path` itself, that uid/gid
/// may not search. Ancestors that do not exist yet are skipped (whoever
/// creates them chooses their mode); symbolic links are resolved first.
pub fn blocked_on_the_way(path: &Path, uid: u32, gid: u32) -> Option<Blocked> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    // Resolve the deepest part that exists; the rest is created later.
    let mut existing = absolute.as_path();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            Err(_) => existing = existing.parent()?,
        }
    };
    let mut dirs: Vec<PathBuf> = resolved.ancestors().map(Path::to_path_buf).collect();
    dirs.reverse();
    for dir in dirs {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.mode();
        let search = if meta.uid() == uid {
            mode & 0o100
        } else if meta.gid() == gid {
            mode & 0o010
        } else {
            mode & 0o001
        };
        if search == 0 {
            return Some(Blocked {
                dir,
                mode,
                owner: meta.uid(),
                uid,
            });
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const STRANGER: u32 = 4_000_000;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_directory_on_the_way_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let private = tmp.path().join("private");
        let data = private.join("data");
        fs::create_dir_all(&data).unwrap();
        chmod(tmp.path(), 0o755);
        chmod(&private, 0o700);
        chmod(&data, 0o711);
        let blocked = blocked_on_the_way(&data.join("instances/not-yet"), STRANGER, STRANGER)
            .expect("the 0700 directory stops a stranger");
        assert_eq!(blocked.dir, private.canonicalize().unwrap());
        let text = blocked.to_string();
        assert!(text.contains("0700") && text.contains("4000000"), "{text}");

        chmod(&private, 0o711);
        assert_eq!(blocked_on_the_way(&data, STRANGER, STRANGER), None);
    }

    #[test]
    fn the_owner_and_group_bits_count_for_their_own_uid_and_gid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        chmod(tmp.path(), 0o755);
        let meta = fs::metadata(&dir).unwrap();
        chmod(&dir, 0o710);
        // Its group may pass; a stranger may not; its owner may.
        assert_eq!(blocked_on_the_way(&dir, STRANGER, meta.gid()), None);
        assert!(blocked_on_the_way(&dir, STRANGER, STRANGER).is_some());
        chmod(&dir, 0o100);
        assert_eq!(blocked_on_the_way(&dir, meta.uid(), STRANGER), None);
    }
}
