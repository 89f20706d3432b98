//! Which repository URLs and branch names Redwall hands to git.
//!
//! git reads a URL starting with `-` as an option (`-uhack` once ran a
//! command through `--upload-pack`), `<transport>::<address>` as a remote
//! helper (`ext::sh -c ...` runs a command), and a host starting with `-`
//! as an option of ssh. Only four plain schemes are accepted, each with a
//! strict authority; `file://` (repositories on Redwall's own machine, which
//! an Owner of any team could otherwise read and write) only where the
//! operator allowed it: `REDWALL_GIT_ALLOW_FILE_URLS=1`, or
//! [`allow_file_urls`] (tests).

use std::sync::atomic::{AtomicBool, Ordering};

/// The longest repository URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The longest branch name accepted.
pub const MAX_BRANCH_LEN: usize = 200;
/// The environment variable that allows `file://` repositories.
pub const ALLOW_FILE_URLS_ENV: &str = "REDWALL_GIT_ALLOW_FILE_URLS";

static FILE_URLS: AtomicBool = AtomicBool::new(false);

/// Allows (or no longer allows) `file://` repositories in this process.
pub fn allow_file_urls(yes: bool) {
    FILE_URLS.store(yes, Ordering::SeqCst);
}

/// Whether `file://` repositories are allowed: by [`allow_file_urls`] or by
/// `REDWALL_GIT_ALLOW_FILE_URLS=1`.
pub fn file_urls_allowed() -> bool {
    FILE_URLS.load(Ordering::SeqCst)
        || std::env::var_os(ALLOW_FILE_URLS_ENV).is_some_and(|v| v == "1")
}

/// How git reaches the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Ssh,
    Git,
    File,
}

impl Scheme {
    /// git's name of the protocol (`protocol.<name>.allow`).
    pub fn protocol(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Ssh => "ssh",
            Scheme::Git => "git",
            Scheme::File => "file",
        }
    }
}

/// Why a URL or branch is refused, said for the person who typed it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(message: impl Into<String>) -> Refusal {
    Refusal(message.into())
}

/// Checks a repository URL; the scheme it uses.
pub fn check_url(url: &str, allow_file: bool) -> Result<Scheme, Refusal> {
    if url.is_empty() {
        return Err(refuse("the repository URL is empty"));
    }
    if url.len() > MAX_URL_LEN {
        return Err(refuse(format!(
            "the repository URL is longer than {MAX_URL_LEN} characters"
        )));
    }
    if url.starts_with('-') {
        return Err(refuse("a repository URL must not start with '-'"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(
            "a repository URL holds printable ASCII only: no spaces or control characters",
        ));
    }
    if url.contains(['#', '\\', '"', '\'', '`', '<', '>', '{', '}', '|', '^']) {
        return Err(refuse(
            "the repository URL holds a character git URLs do not use",
        ));
    }
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        (Scheme::Ssh, rest)
    } else if let Some(rest) = url.strip_prefix("git://") {
        (Scheme::Git, rest)
    } else if let Some(rest) = url.strip_prefix("file://") {
        (Scheme::File, rest)
    } else {
        return Err(refuse(
            "the repository URL must start with https://, ssh:// or git:// (file:// where the operator allows it)",
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if path.split('/').any(|segment| segment == "..") {
        return Err(refuse("the repository path must not contain '..'"));
    }
    match scheme {
        Scheme::File => {
            if !allow_file {
                return Err(refuse(
                    "file:// repositories are not allowed on this server (REDWALL_GIT_ALLOW_FILE_URLS)",
                ));
            }
            if !authority.is_empty() {
                return Err(refuse(
                    "a file:// URL names a local path: file:///path/to/repo",
                ));
            }
            if path.len() < 2 || path.contains("//") {
                return Err(refuse("a file:// URL needs an absolute path"));
            }
            if path.contains('?') {
                return Err(refuse("the repository URL must not hold a query"));
            }
        }
        Scheme::Https | Scheme::Ssh | Scheme::Git => {
            let host = match authority.rsplit_once('@') {
                Some((user, host)) => {
                    if scheme != Scheme::Ssh {
                        return Err(refuse(
                            "give no user or password in the URL: an HTTPS token is set apart (and stored sealed)",
                        ));
                    }
                    if !valid_ssh_user(user) {
                        return Err(refuse(
                            "the ssh user holds letters, digits, '.', '_' and '-' only, and does not start with '-'",
                        ));
                    }
                    host
                }
                None => authority,
            };
            check_host(host)?;
            if path.len() < 2 {
                return Err(refuse("the repository URL names no repository path"));
            }
            if path.contains('?') {
                return Err(refuse("the repository URL must not hold a query"));
            }
        }
    }
    Ok(scheme)
}

fn valid_ssh_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `host`, `host:port` or `[v6]:port`; never starting with `-`.
fn check_host(authority: &str) -> Result<(), Refusal> {
    let bad = || refuse("the repository URL names no valid host");
    if authority.is_empty() || authority.starts_with('-') {
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']').ok_or_else(bad)?;
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        match after {
            "" => (inside, None),
            p => (inside, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if !authority.starts_with('[') {
        let labels_ok = host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !labels_ok || host.len() > 253 {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(refuse(
                "the repository URL's port is not a number from 1 to 65535",
            ));
        }
    }
    Ok(())
}

/// Checks a branch name (what `git check-ref-format --branch` accepts, and
/// stricter: ASCII letters, digits, `.`, `_`, `-` and `/`).
pub fn check_branch(branch: &str) -> Result<(), Refusal> {
    let named = |why: &str| refuse(format!("invalid branch name: {why}"));
    if branch.is_empty() {
        return Err(named("it is empty"));
    }
    if branch.len() > MAX_BRANCH_LEN {
        return Err(named("longer than 200 characters"));
    }
    if !branch
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(named(
            "use ASCII letters, digits, '.', '_', '-' and '/' only",
        ));
    }
    if branch.starts_with('-') {
        return Err(named("it must not start with '-'"));
    }
    if branch == "HEAD" || branch.starts_with("refs/") {
        return Err(named("give the branch's short name (main, review/flows)"));
    }
    if branch.ends_with('/') || branch.ends_with('.') || branch.contains("..") {
        return Err(named("no '..', and no '/' or '.' at its end"));
    }
    for component in branch.split('/') {
        if component.is_empty() {
            return Err(named("no empty components ('//' or a leading '/')"));
        }
        if component.starts_with('.') || component.ends_with(".lock") {
            return Err(named("no component may start with '.' or end with '.lock'"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_of_four_schemes_pass() {
        assert_eq!(
            check_url("https://git.example.com/plant/flows.git", false),
            Ok(Scheme::Https)
        );
        assert_eq!(
            check_url("https://git.example.com:8443/a/b", false),
            Ok(Scheme::Https)
        );
        assert_eq!(
            check_url("ssh://git@git.example.com/plant/flows.git", false),
            Ok(Scheme::Ssh)
        );
        assert_eq!(
            check_url("ssh://git@[::1]:2222/flows.git", false),
            Ok(Scheme::Ssh)
        );
        assert_eq!(
            check_url("git://127.0.0.1/flows.git", false),
            Ok(Scheme::Git)
        );
        assert_eq!(
            check_url("file:///srv/git/flows.git", true),
            Ok(Scheme::File)
        );
    }

    #[test]
    fn options_helpers_and_hidden_credentials_are_refused() {
        for url in [
            "",
            "-uhack",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::17",
            "git@github.com:plant/flows.git",
            "http://git.example.com/a.git",
            "HTTPS://git.example.com/a.git",
            "/srv/git/flows.git",
            "file:///srv/git/flows.git",
            "https://user:secret@git.example.com/a.git",
            "https://token@git.example.com/a.git",
            "git://user@host/a.git",
            "ssh://-oProxyCommand=touch%20x/a",
            "ssh://git@-oProxyCommand=x/a",
            "ssh://-git@host/a",
            "https://-host/a",
            "https://host",
            "https://host/",
            "https://host:0/a",
            "https://host:99999/a",
            "https://host:x/a",
            "https://ho st/a",
            "https://host/a b",
            "https://host/a\nb",
            "https://host/a#frag",
            "https://host/a?upload-pack=x",
            "https://host/../etc",
            "https://host/a/../../b",
            "https://[zz]/a",
            "https://hóst/a",
        ] {
            assert!(check_url(url, false).is_err(), "{url:?} passed");
        }
        for url in [
            "file://host/srv/a",
            "file://",
            "file:///",
            "file:///srv/../etc",
            "file:////srv",
        ] {
            assert!(check_url(url, true).is_err(), "{url:?} passed");
        }
        let long = format!("https://host/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long, false).is_err());
    }

    #[test]
    fn branch_names_follow_git_and_stay_plain() {
        for good in ["main", "review/flows", "release-1.2", "a_b", "x/y/z"] {
            assert!(check_branch(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-f",
            "--force",
            "HEAD",
            "refs/heads/main",
            "a..b",
            "a/",
            "/a",
            "a//b",
            ".hidden",
            "a/.b",
            "a.lock",
            "a.",
            "a b",
            "a:b",
            "+main",
            "a@{1}",
            "a~1",
            "a^",
            "a*",
            "a?",
            "a[b",
            "ünï",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?} passed");
        }
        assert!(check_branch(&"a".repeat(MAX_BRANCH_LEN + 1)).is_err());
    }
}
