//! The git command line, driven safely.
//!
//! Every call runs `git` without a shell, its arguments a vector, in a
//! private temporary directory (mode 0700, removed afterwards) holding a
//! bare repository, so no work tree is ever checked out and no file of the
//! remote becomes a file on this machine. The environment is cleared: only
//! `PATH`, a `HOME` inside the temporary directory, `LC_ALL=C` and the
//! `GIT_*` variables set here reach git: no system or user configuration,
//! no prompts (`GIT_TERMINAL_PROMPT=0`, ssh in batch mode), no hooks
//! (`core.hooksPath=/dev/null`), no credential helper, no redirects, only
//! the URL's own protocol (`protocol.allow=never` but for it), objects
//! checked as they arrive (`transfer.fsckObjects`). A token for HTTPS goes
//! to git through `GIT_CONFIG_*` variables as an `Authorization` header,
//! never in an argument (which other users could read from `/proc`) or in
//! the URL. Each call has a timeout, after which its whole process group is
//! killed; files git writes are bounded (`RLIMIT_FSIZE`).
//!
//! A push fetches the branch's head alone (`--depth=1`), writes exactly the
//! given files as one commit on top of it with `git fast-import`, and pushes
//! it only if the tree changed (a fast-forward: a branch that moved on
//! meanwhile is refused, never overwritten). A fetch reads the tree at the
//! branch's head with `git ls-tree` and `git cat-file --batch`, refusing
//! symbolic links and submodules, and more files or bytes than the layout
//! reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::check::{check_branch, check_url, file_urls_allowed, Scheme};
use crate::layout::check_tree_path;
use crate::{MAX_FILES, MAX_TOTAL_BYTES};

/// How long a call that talks to the remote may take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a local call may take.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The most git may write into one file (the fetched pack).
const MAX_FILE_WRITE: u64 = 512 * 1024 * 1024;
/// The most of git's error output kept (for the log).
const MAX_STDERR: usize = 16 * 1024;
/// The longest token accepted.
const MAX_TOKEN: usize = 1024;
/// The local branch names inside the temporary repository.
const BASE_REF: &str = "refs/heads/redwall-base";
const NEW_REF: &str = "refs/heads/redwall-new";

/// Why a git operation did not happen. The `Display` of each is fit to be
/// shown; [`GitError::detail`] is what git said, for the log only (it may
/// quote the remote).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The URL, branch, token, author or a path is refused before git runs.
    #[error("{0}")]
    Invalid(String),
    #[error("git is not installed on this server (Debian: apt-get install git)")]
    NotInstalled,
    #[error("the repository could not be reached, or it refused access")]
    Unreachable { detail: String },
    #[error("the repository has no branch {branch}")]
    NoBranch { branch: String },
    #[error("the push to {branch} was refused: the branch moved on meanwhile (try again), or it is protected")]
    Rejected { branch: String, detail: String },
    /// The tree at the branch's head holds what is never read.
    #[error("the branch's tree is refused: {0}")]
    Tree(String),
    #[error("git did not finish within {0} seconds")]
    Timeout(u64),
    /// Anything else: local files, git failing unexpectedly.
    #[error("git failed")]
    Failed { detail: String },
}

impl GitError {
    /// What git itself said, for the log.
    pub fn detail(&self) -> Option<&str> {
        match self {
            GitError::Unreachable { detail }
            | GitError::Rejected { detail, .. }
            | GitError::Failed { detail } => Some(detail),
            _ => None,
        }
    }
}

fn failed(detail: impl std::fmt::Display) -> GitError {
    GitError::Failed {
        detail: detail.to_string(),
    }
}

/// A repository and how to reach it.
pub struct Remote {
    url: String,
    scheme: Scheme,
    /// The `Authorization` header's value for HTTPS.
    header: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url)
            .field("token", &self.header.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Checks a token for an HTTPS repository: it becomes a header value, so
/// printable ASCII only (no line breaks to smuggle a header in).
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(format!("a token has 1 to {MAX_TOKEN} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token holds printable ASCII characters only, no spaces".into());
    }
    Ok(())
}

impl Remote {
    /// A remote at `url` (checked; `file://` only where allowed), with a
    /// token for HTTPS.
    pub fn new(url: &str, token: Option<&str>) -> Result<Remote, GitError> {
        let scheme =
            check_url(url, file_urls_allowed()).map_err(|e| GitError::Invalid(e.to_string()))?;
        let header = match token {
            None => None,
            Some(_) if scheme != Scheme::Https => {
                return Err(GitError::Invalid(
                    "a token is used with https:// repositories only".into(),
                ))
            }
            Some(token) => {
                check_token(token).map_err(GitError::Invalid)?;
                let pair = Zeroizing::new(format!("x-access-token:{token}"));
                let encoded = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
                );
                Some(Zeroizing::new(format!("Authorization: Basic {}", *encoded)))
            }
        };
        Ok(Remote {
            url: url.to_string(),
            scheme,
            header,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// What a commit says about itself.
#[derive(Clone, Debug)]
pub struct Commit<'a> {
    pub message: &'a str,
    pub author_name: &'a str,
    pub author_email: &'a str,
    /// Seconds since the Unix epoch (UTC).
    pub time: i64,
}

/// The outcome of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The branch's head now.
    pub commit: String,
    /// False when the branch already held exactly these files: nothing was
    /// committed or pushed, and `commit` is its head as it was.
    pub changed: bool,
}

/// A temporary bare repository and the remote it talks to.
struct Session<'a> {
    _dir: tempfile::TempDir,
    home: PathBuf,
    git_dir: PathBuf,
    remote: &'a Remote,
}

/// What a finished git call left.
struct Finished {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

impl<'a> Session<'a> {
    async fn open(remote: &'a Remote) -> Result<Session<'a>, GitError> {
        let dir = tempfile::Builder::new()
            .prefix("redwall-git-")
            .tempdir()
            .map_err(failed)?;
        // tempfile makes it 0700 already; say so rather than rely on it.
        set_private(dir.path())?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home).map_err(failed)?;
        let git_dir = dir.path().join("repo.git");
        let session = Session {
            home,
            git_dir,
            remote,
            _dir: dir,
        };
        let init = session
            .run(
                &[
                    "init".into(),
                    "--bare".into(),
                    "--quiet".into(),
                    session.git_dir.display().to_string(),
                ],
                None,
                false,
                1024,
            )
            .await?;
        if !init.ok {
            return Err(failed(init.stderr));
        }
        Ok(session)
    }

    /// Runs git with `args` after the fixed options. `network`: the call
    /// talks to the remote (its protocol allowed, its token set, a longer
    /// timeout).
    async fn run(
        &self,
        args: &[String],
        input: Option<Vec<u8>>,
        network: bool,
        max_stdout: usize,
    ) -> Result<Finished, GitError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        );
        cmd.env("HOME", &self.home);
        cmd.env("LC_ALL", "C");
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        cmd.env("GIT_CONFIG_NOSYSTEM", "1");
        cmd.env("GIT_CONFIG_GLOBAL", "/dev/null");
        cmd.env("GIT_PROTOCOL_FROM_USER", "0");
        cmd.env("GIT_NO_REPLACE_OBJECTS", "1");
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        let protocol = self.remote.scheme.protocol();
        let fixed = [
            "core.hooksPath=/dev/null".to_string(),
            "core.fsmonitor=false".to_string(),
            "credential.helper=".to_string(),
            "core.askPass=".to_string(),
            "protocol.allow=never".to_string(),
            format!("protocol.{protocol}.allow=always"),
            "http.followRedirects=false".to_string(),
            "transfer.fsckObjects=true".to_string(),
            "submodule.recurse=false".to_string(),
            "fetch.recurseSubmodules=false".to_string(),
            "gc.auto=0".to_string(),
            "maintenance.auto=false".to_string(),
            "init.defaultBranch=main".to_string(),
        ];
        for setting in &fixed {
            cmd.arg("-c").arg(setting);
        }
        if network {
            if let Some(header) = &self.remote.header {
                cmd.env("GIT_CONFIG_COUNT", "1");
                cmd.env("GIT_CONFIG_KEY_0", "http.extraHeader");
                cmd.env("GIT_CONFIG_VALUE_0", header.as_str());
            }
        }
        if args.first().map(String::as_str) != Some("init") {
            cmd.arg(format!("--git-dir={}", self.git_dir.display()));
        }
        cmd.args(args);
        cmd.current_dir(&self.home);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        cmd.process_group(0);
        // SAFETY: setrlimit is async-signal-safe, and nothing else runs
        // between fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: MAX_FILE_WRITE,
                    rlim_max: MAX_FILE_WRITE,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(GitError::NotInstalled)
            }
            Err(e) => return Err(failed(e)),
        };
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let timeout = if network {
            NETWORK_TIMEOUT
        } else {
            LOCAL_TIMEOUT
        };
        let work = async {
            let write = async {
                if let (Some(mut stdin), Some(input)) = (stdin, input) {
                    // git may stop reading early (an error): its answer says why.
                    let _ = stdin.write_all(&input).await;
                    let _ = stdin.shutdown().await;
                }
            };
            let (_, out, err, status) = tokio::join!(
                write,
                read_bounded(stdout, max_stdout),
                read_bounded(stderr, MAX_STDERR),
                child.wait()
            );
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(timeout, work).await {
            Ok(done) => done,
            Err(_) => {
                kill_group(pid);
                return Err(GitError::Timeout(timeout.as_secs()));
            }
        };
        let status = status.map_err(failed)?;
        let (stdout, complete) = out.map_err(failed)?;
        let (stderr, _) = err.map_err(failed)?;
        if !complete {
            kill_group(pid);
            return Err(GitError::Tree(
                "git's answer is larger than the layout reads".into(),
            ));
        }
        Ok(Finished {
            ok: status.success(),
            stdout,
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        })
    }

    /// The branch's head on the remote, if it has that branch.
    async fn remote_head(&self, branch: &str) -> Result<Option<String>, GitError> {
        let refname = format!("refs/heads/{branch}");
        let done = self
            .run(
                &[
                    "ls-remote".into(),
                    "--heads".into(),
                    "--".into(),
                    self.remote.url.clone(),
                    refname.clone(),
                ],
                None,
                true,
                64 * 1024,
            )
            .await?;
        if !done.ok {
            return Err(GitError::Unreachable {
                detail: done.stderr,
            });
        }
        let out = String::from_utf8_lossy(&done.stdout);
        for line in out.lines() {
            if let Some((sha, name)) = line.split_once('\t') {
                if name == refname && is_object_id(sha) {
                    return Ok(Some(sha.to_string()));
                }
            }
        }
        Ok(None)
    }

    /// Fetches the branch's head commit alone into `local`.
    async fn fetch_head(&self, branch: &str, local: &str) -> Result<(), GitError> {
        let done = self
            .run(
                &[
                    "fetch".into(),
                    "--quiet".into(),
                    "--no-tags".into(),
                    "--no-write-fetch-head".into(),
                    "--depth=1".into(),
                    "--".into(),
                    self.remote.url.clone(),
                    format!("+refs/heads/{branch}:{local}"),
                ],
                None,
                true,
                64 * 1024,
            )
            .await?;
        if done.ok {
            return Ok(());
        }
        if done.stderr.contains("couldn't find remote ref") {
            return Err(GitError::NoBranch {
                branch: branch.to_string(),
            });
        }
        Err(GitError::Unreachable {
            detail: done.stderr,
        })
    }

    /// The bytes of `path` in the tree of `rev`, if it holds a regular file
    /// there of at most [`MAX_TOTAL_BYTES`].
    async fn blob_at(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let listed = self
            .run(
                &[
                    "ls-tree".into(),
                    "-l".into(),
                    "-z".into(),
                    "--full-tree".into(),
                    rev.to_string(),
                    "--".into(),
                    path.to_string(),
                ],
                None,
                false,
                64 * 1024,
            )
            .await?;
        if !listed.ok {
            return Ok(None);
        }
        let entries = parse_ls_tree(&listed.stdout)?;
        let Some(entry) = entries.iter().find(|e| {
            e.path == path
                && e.kind == "blob"
                && matches!(e.mode.as_str(), "100644" | "100755")
                && e.size.is_some_and(|s| s <= MAX_TOTAL_BYTES)
        }) else {
            return Ok(None);
        };
        let read = self
            .run(
                &["cat-file".into(), "--batch".into()],
                Some(format!("{}\n", entry.oid).into_bytes()),
                false,
                entry.size.unwrap_or(0) + 1024,
            )
            .await?;
        if !read.ok {
            return Ok(None);
        }
        Ok(parse_batch(&read.stdout, &[entry])?.into_iter().next())
    }

    /// `rev` resolved to an object id.
    async fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        let done = self
            .run(
                &[
                    "rev-parse".into(),
                    "--verify".into(),
                    "--quiet".into(),
                    rev.to_string(),
                ],
                None,
                false,
                1024,
            )
            .await?;
        let sha = String::from_utf8_lossy(&done.stdout).trim().to_string();
        if !done.ok || !is_object_id(&sha) {
            return Err(failed(format!("{rev} does not resolve: {}", done.stderr)));
        }
        Ok(sha)
    }
}

fn set_private(path: &Path) -> Result<(), GitError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(failed)
}

/// Kills the process group git leads (git, its remote helpers, ssh).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        if pid > 0 {
            // SAFETY: killpg only sends a signal; the group is the one git
            // was started in (process_group(0) made it its leader).
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
}

/// Reads all of `reader`, keeping at most `max` bytes; whether all fit.
async fn read_bounded<R: AsyncRead + Unpin>(
    reader: Option<R>,
    max: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), true));
    };
    let mut kept = Vec::new();
    let mut complete = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len());
        if n > room {
            complete = false;
        }
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    Ok((kept, complete))
}

/// 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The version git reports (`git version 2.39.5`).
pub async fn git_version() -> Result<String, GitError> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(LOCAL_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(GitError::Timeout(LOCAL_TIMEOUT.as_secs())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(GitError::NotInstalled)
        }
        Ok(Err(e)) => return Err(failed(e)),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A name or e-mail address for a commit line: no angle brackets, no
/// control characters.
fn check_person(what: &str, s: &str) -> Result<(), GitError> {
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err(GitError::Invalid(format!(
            "the commit's {what} must be 1 to 256 characters without '<', '>' or control characters"
        )));
    }
    Ok(())
}

/// A path written by a push: safe anywhere, and plain enough for
/// fast-import's unquoted form.
fn check_push_path(path: &str) -> Result<(), GitError> {
    check_tree_path(path).map_err(|e| GitError::Invalid(format!("{path:?}: {e}")))?;
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(GitError::Invalid(format!(
            "{path:?}: a pushed path holds ASCII letters, digits, '.', '_', '-' and '/' only"
        )));
    }
    Ok(())
}

/// A file whose bytes differ on every write though it says the same (a
/// sealed file, under a fresh nonce each time): when `same` says the
/// branch's copy holds what the new one does, the branch's copy is kept,
/// so pushing the same snapshot twice commits nothing.
pub struct Keep<'a> {
    pub path: &'a str,
    pub same: &'a (dyn Fn(&[u8]) -> bool + Sync),
}

/// The `git fast-import` stream of one commit holding exactly `files`
/// (those in `kept` with the branch's bytes).
fn import_stream(
    files: &BTreeMap<String, Vec<u8>>,
    kept: &BTreeMap<String, Vec<u8>>,
    commit: &Commit<'_>,
    parent: Option<&str>,
) -> Vec<u8> {
    let total: usize = files.values().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total + files.len() * 96 + 512);
    let time = commit.time.max(0);
    out.extend_from_slice(format!("commit {NEW_REF}\n").as_bytes());
    out.extend_from_slice(
        format!(
            "author {} <{}> {time} +0000\n",
            commit.author_name, commit.author_email
        )
        .as_bytes(),
    );
    out.extend_from_slice(
        format!("committer Redwall <redwall@localhost> {time} +0000\n").as_bytes(),
    );
    out.extend_from_slice(format!("data {}\n", commit.message.len()).as_bytes());
    out.extend_from_slice(commit.message.as_bytes());
    out.push(b'\n');
    if let Some(parent) = parent {
        out.extend_from_slice(format!("from {parent}\n").as_bytes());
    }
    out.extend_from_slice(b"deleteall\n");
    for (path, bytes) in files {
        let bytes = kept.get(path).unwrap_or(bytes);
        out.extend_from_slice(format!("M 100644 inline {path}\ndata {}\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.push(b'\n');
    }
    out.extend_from_slice(b"done\n");
    out
}

/// Makes `branch` of the remote hold exactly `files`, as one commit on top
/// of its head (or as its first commit). Nothing is pushed when the files
/// are already those of its head (see [`Keep`] for files that say the same
/// in other bytes).
pub async fn push_files(
    remote: &Remote,
    branch: &str,
    files: &BTreeMap<String, Vec<u8>>,
    commit: &Commit<'_>,
    keep: &[Keep<'_>],
) -> Result<Pushed, GitError> {
    check_branch(branch).map_err(|e| GitError::Invalid(e.to_string()))?;
    check_person("author name", commit.author_name)?;
    check_person("author e-mail", commit.author_email)?;
    if commit.message.contains('\0') || commit.message.len() > 64 * 1024 {
        return Err(GitError::Invalid(
            "the commit message is longer than 64 KiB or holds a NUL".into(),
        ));
    }
    if files.len() > MAX_FILES {
        return Err(GitError::Invalid(format!(
            "a push holds at most {MAX_FILES} files"
        )));
    }
    let total = files.values().map(Vec::len).sum::<usize>();
    if total > MAX_TOTAL_BYTES {
        return Err(GitError::Invalid("a push holds at most 32 MiB".into()));
    }
    for path in files.keys() {
        check_push_path(path)?;
    }
    let session = Session::open(remote).await?;
    let parent = match session.remote_head(branch).await? {
        None => None,
        Some(_) => {
            session.fetch_head(branch, BASE_REF).await?;
            Some(session.rev_parse(&format!("{BASE_REF}^{{commit}}")).await?)
        }
    };
    let mut kept = BTreeMap::new();
    if parent.is_some() {
        for k in keep.iter().filter(|k| files.contains_key(k.path)) {
            if let Some(old) = session.blob_at(BASE_REF, k.path).await? {
                if (k.same)(&old) {
                    kept.insert(k.path.to_string(), old);
                }
            }
        }
    }
    let stream = import_stream(files, &kept, commit, parent.as_deref());
    let imported = session
        .run(
            &[
                "fast-import".into(),
                "--quiet".into(),
                "--date-format=raw".into(),
                "--done".into(),
            ],
            Some(stream),
            false,
            64 * 1024,
        )
        .await?;
    if !imported.ok {
        return Err(failed(format!("fast-import: {}", imported.stderr)));
    }
    let new = session.rev_parse(&format!("{NEW_REF}^{{commit}}")).await?;
    if let Some(parent) = &parent {
        let old_tree = session.rev_parse(&format!("{parent}^{{tree}}")).await?;
        let new_tree = session.rev_parse(&format!("{new}^{{tree}}")).await?;
        if old_tree == new_tree {
            return Ok(Pushed {
                commit: parent.clone(),
                changed: false,
            });
        }
    }
    let pushed = session
        .run(
            &[
                "push".into(),
                "--quiet".into(),
                "--no-verify".into(),
                "--".into(),
                remote.url.clone(),
                format!("{new}:refs/heads/{branch}"),
            ],
            None,
            true,
            64 * 1024,
        )
        .await?;
    if !pushed.ok {
        let s = &pushed.stderr;
        if s.contains("[rejected]")
            || s.contains("[remote rejected]")
            || s.contains("non-fast-forward")
            || s.contains("fetch first")
        {
            return Err(GitError::Rejected {
                branch: branch.to_string(),
                detail: pushed.stderr,
            });
        }
        return Err(GitError::Unreachable {
            detail: pushed.stderr,
        });
    }
    Ok(Pushed {
        commit: new,
        changed: true,
    })
}

/// One entry of `git ls-tree -r -l -z`.
struct Entry {
    mode: String,
    kind: String,
    oid: String,
    size: Option<usize>,
    path: String,
}

fn parse_ls_tree(out: &[u8]) -> Result<Vec<Entry>, GitError> {
    let mut entries = Vec::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let tab = record
            .iter()
            .position(|b| *b == b'\t')
            .ok_or_else(|| failed("ls-tree: an entry without a path"))?;
        let head = std::str::from_utf8(&record[..tab]).map_err(failed)?;
        let path = std::str::from_utf8(&record[tab + 1..])
            .map_err(|_| GitError::Tree("a path is not UTF-8".into()))?;
        let mut parts = head.split_whitespace();
        let (Some(mode), Some(kind), Some(oid), Some(size)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(failed(format!("ls-tree: unexpected entry {head:?}")));
        };
        entries.push(Entry {
            mode: mode.to_string(),
            kind: kind.to_string(),
            oid: oid.to_string(),
            size: size.parse().ok(),
            path: path.to_string(),
        });
        if entries.len() > MAX_FILES {
            return Err(GitError::Tree(format!("more than {MAX_FILES} files")));
        }
    }
    Ok(entries)
}

/// Parses `git cat-file --batch` output for `wanted`, in order.
fn parse_batch(out: &[u8], wanted: &[&Entry]) -> Result<Vec<Vec<u8>>, GitError> {
    let mut rest = out;
    let mut blobs = Vec::with_capacity(wanted.len());
    for entry in wanted {
        let nl = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| failed("cat-file: a header is cut off"))?;
        let header = std::str::from_utf8(&rest[..nl]).map_err(failed)?;
        let mut parts = header.split(' ');
        let (Some(oid), Some("blob"), Some(size)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(failed(format!("cat-file: unexpected header {header:?}")));
        };
        let size: usize = size.parse().map_err(failed)?;
        if oid != entry.oid || Some(size) != entry.size {
            return Err(failed("cat-file: an object other than asked for"));
        }
        let start = nl + 1;
        let end = start
            .checked_add(size)
            .filter(|end| end < &rest.len())
            .ok_or_else(|| failed("cat-file: an object is cut off"))?;
        blobs.push(rest[start..end].to_vec());
        rest = &rest[end + 1..];
    }
    Ok(blobs)
}

/// The files at the head of `branch`, and that commit's id.
pub async fn fetch_files(
    remote: &Remote,
    branch: &str,
) -> Result<(String, BTreeMap<String, Vec<u8>>), GitError> {
    check_branch(branch).map_err(|e| GitError::Invalid(e.to_string()))?;
    let session = Session::open(remote).await?;
    if session.remote_head(branch).await?.is_none() {
        return Err(GitError::NoBranch {
            branch: branch.to_string(),
        });
    }
    session.fetch_head(branch, BASE_REF).await?;
    let head = session.rev_parse(&format!("{BASE_REF}^{{commit}}")).await?;
    let listed = session
        .run(
            &[
                "ls-tree".into(),
                "-r".into(),
                "-l".into(),
                "-z".into(),
                "--full-tree".into(),
                head.clone(),
            ],
            None,
            false,
            (MAX_FILES + 1) * 4300,
        )
        .await?;
    if !listed.ok {
        return Err(failed(format!("ls-tree: {}", listed.stderr)));
    }
    let entries = parse_ls_tree(&listed.stdout)?;
    let mut total: usize = 0;
    for e in &entries {
        match (e.mode.as_str(), e.kind.as_str()) {
            ("120000", _) => {
                return Err(GitError::Tree(format!("{:?} is a symbolic link", e.path)))
            }
            ("160000", _) | (_, "commit") => {
                return Err(GitError::Tree(format!("{:?} is a submodule", e.path)))
            }
            ("100644" | "100755", "blob") => {}
            _ => {
                return Err(GitError::Tree(format!(
                    "{:?} is not a regular file (mode {})",
                    e.path, e.mode
                )))
            }
        }
        check_tree_path(&e.path)
            .map_err(|reason| GitError::Tree(format!("{:?}: {reason}", e.path)))?;
        let size = e
            .size
            .ok_or_else(|| failed(format!("ls-tree: no size for {:?}", e.path)))?;
        total = total.saturating_add(size);
        if total > MAX_TOTAL_BYTES {
            return Err(GitError::Tree(format!(
                "more than {} MiB",
                MAX_TOTAL_BYTES / (1024 * 1024)
            )));
        }
    }
    let wanted: Vec<&Entry> = entries.iter().collect();
    let mut input = Vec::with_capacity(wanted.len() * 65);
    for e in &wanted {
        input.extend_from_slice(e.oid.as_bytes());
        input.push(b'\n');
    }
    let read = session
        .run(
            &["cat-file".into(), "--batch".into()],
            Some(input),
            false,
            total + wanted.len() * 100 + 1024,
        )
        .await?;
    if !read.ok {
        return Err(failed(format!("cat-file: {}", read.stderr)));
    }
    let blobs = parse_batch(&read.stdout, &wanted)?;
    let files = wanted
        .iter()
        .zip(blobs)
        .map(|(e, bytes)| (e.path.clone(), bytes))
        .collect();
    Ok((head, files))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_and_goes_with_https_only() {
        let r = Remote::new("https://git.example.com/a.git", Some("ghp_secret")).unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("ghp_secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(Remote::new("ssh://git@h/a.git", Some("t")).is_err());
        assert!(Remote::new("https://h/a.git", Some("a\r\nX-Evil: 1")).is_err());
        assert!(Remote::new("https://h/a.git", Some("")).is_err());
        assert!(Remote::new("-uhack", None).is_err());
        assert!(Remote::new("ext::sh -c id", None).is_err());
    }

    #[test]
    fn commit_people_and_paths_are_plain() {
        assert!(check_person("name", "olivia").is_ok());
        assert!(check_person("name", "o <x@y>").is_err());
        assert!(check_person("name", "o\nfrom 0000").is_err());
        assert!(check_person("name", "").is_err());
        assert!(check_push_path("tabs/a-b/flow.json").is_ok());
        for bad in [
            "../x",
            "/x",
            "a b",
            "a\nM 100644 inline x",
            ".git/hooks/x",
            "\"q",
        ] {
            assert!(check_push_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn git_answers_are_parsed_strictly() {
        let oid = "a".repeat(40);
        let out = format!("100644 blob {oid}       5\tx/y.json\0120000 blob {oid}      3\tlink\0");
        let entries = parse_ls_tree(out.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].size, Some(5));
        assert_eq!(entries[1].mode, "120000");
        let batch = format!("{oid} blob 5\nhello\n");
        let blobs = parse_batch(batch.as_bytes(), &[&entries[0]]).unwrap();
        assert_eq!(blobs, vec![b"hello".to_vec()]);
        assert!(parse_batch(format!("{oid} blob 5\nhel").as_bytes(), &[&entries[0]]).is_err());
        assert!(parse_batch(format!("{oid} missing\n").as_bytes(), &[&entries[0]]).is_err());
        assert!(is_object_id(&oid));
        assert!(!is_object_id("-abc"));
    }
}
