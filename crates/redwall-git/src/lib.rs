//! Snapshots in a git repository, laid out for review.
//!
//! - [`layout`] (pure, no I/O) turns a snapshot's flows into files and back,
//!   exactly: one directory per tab and per subflow, function bodies as `.js`
//!   files, config nodes in `global/config.json`, and the credentials only
//!   as the opaque sealed text the caller hands over. Reading a tree back
//!   refuses unsafe paths and bounds the number and size of files.
//! - [`check`] (pure) decides which repository URLs and branch names are
//!   acceptable: `https://`, `ssh://`, `git://` and (only when allowed)
//!   `file://`; never an option (`-u...`) or a transport helper (`ext::`).
//! - [`repo`] drives the `git` command line: no shell, arguments as a
//!   vector, the environment cleared, no hooks, no prompts, no user or
//!   system configuration, a timeout, in a private temporary directory
//!   that is removed afterwards. It pushes a tree of files as one commit
//!   on a branch and reads the tree at a branch's head.
//!
//! The crate never sees credentials in the clear: the hub seals them first.

pub mod check;
pub mod layout;
pub mod repo;

pub use check::{allow_file_urls, check_branch, check_url, file_urls_allowed, Scheme};
pub use layout::{from_files, to_files, LayoutError, LayoutExtra, Source};
pub use repo::{
    check_token, fetch_files, git_version, push_files, Commit, GitError, Keep, Pushed, Remote,
};

/// At most this many files are read from a tree.
pub const MAX_FILES: usize = 10_000;
/// At most this many bytes, all files together, are read from a tree.
pub const MAX_TOTAL_BYTES: usize = 32 * 1024 * 1024;
