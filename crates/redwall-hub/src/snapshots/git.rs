//! Snapshots in the team's git repository, in a pull-request style: a
//! snapshot is pushed to one branch (for review), and what is merged into
//! another is pulled back as a new snapshot (deployed afterwards like any
//! other, by a rollback to it).
//!
//! The repository sees the layout of `redwall_git::layout`: one directory
//! per tab, function bodies as `.js` files, and the credentials only sealed
//! by the master key (purpose `git-credentials`, bound to the team), so a
//! credentials file opens in this team of this hub only, and a pull of one
//! sealed elsewhere is refused. Without a credentials file, a pull keeps the
//! instance's current credentials.
//!
//! Settings are per team: the repository URL (checked by
//! `redwall_git::check`: no options, no transport helpers), the push and
//! pull branches (different ones), and an optional HTTPS token sealed by
//! the master key, never returned. A token is kept only while the URL stays
//! the same, so changing the URL never sends an old token to a new host.

use std::collections::BTreeMap;

use base64::Engine as _;
use redwall_git::{Commit, GitError, Keep, LayoutExtra, Remote, Source};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::snapshot_rules::SnapshotKind;
use redwall_store::{GitSettingsRow, Instance, SnapshotSummary};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{Content, NewSnapshot};
use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

/// The master-key purpose that seals HTTPS tokens.
const TOKEN_PURPOSE: &str = "git-token";
/// The master-key purpose that seals credentials written to a repository.
const CREDENTIALS_PURPOSE: &str = "git-credentials";

fn token_aad(team_id: &str) -> Vec<u8> {
    format!("git-settings/{team_id}/token").into_bytes()
}

fn credentials_aad(team_id: &str) -> Vec<u8> {
    format!("redwall-git-credentials/v1/team/{team_id}").into_bytes()
}

/// Allows `file://` repositories in this process (tests; an operator sets
/// `REDWALL_GIT_ALLOW_FILE_URLS=1` instead). Off by default: a repository
/// on the server's own disk is not any one team's.
pub fn allow_file_repositories(yes: bool) {
    redwall_git::allow_file_urls(yes);
}

/// What to do with the stored token.
pub enum TokenChange<'a> {
    /// Keep it (dropped anyway if the URL changes).
    Keep,
    Set(&'a str),
    Clear,
}

/// New git settings for a team.
pub struct GitSettingsInput<'a> {
    pub repository_url: &'a str,
    pub push_branch: &'a str,
    pub pull_branch: &'a str,
    pub token: TokenChange<'a>,
}

/// A team's git settings as they may be shown: never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GitSettings {
    pub repository_url: String,
    pub push_branch: String,
    pub pull_branch: String,
    pub has_token: bool,
    pub updated_by: Option<String>,
    pub updated_at: i64,
}

fn settings_of(row: &GitSettingsRow) -> GitSettings {
    GitSettings {
        repository_url: row.repository_url.clone(),
        push_branch: row.push_branch.clone(),
        pull_branch: row.pull_branch.clone(),
        has_token: row.sealed_token.is_some(),
        updated_by: row.updated_by.clone(),
        updated_at: row.updated_at,
    }
}

/// A snapshot pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GitPushed {
    pub snapshot_id: String,
    pub repository_url: String,
    pub branch: String,
    /// The branch's head now.
    pub commit: String,
    /// False when the branch already held exactly this snapshot.
    pub changed: bool,
}

/// Where a pulled snapshot's credentials came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PulledCredentials {
    /// The repository's `credentials.sealed`, sealed by this hub for this team.
    Sealed,
    /// The repository has none: the instance's current ones.
    KeptFromInstance,
}

/// A branch pulled as a new snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitPulled {
    pub snapshot: SnapshotSummary,
    pub repository_url: String,
    pub branch: String,
    pub commit: String,
    pub credentials: PulledCredentials,
}

/// What a pulled tree makes.
struct Pulled {
    content: Content,
    credentials: Map<String, Value>,
    /// The snapshot id the manifest names.
    claimed_source: Option<String>,
    from: PulledCredentials,
}

fn invalid_settings(message: impl Into<String>) -> HubError {
    HubError::invalid("invalid_git_settings", message)
}

fn not_configured() -> HubError {
    HubError::conflict(
        "git_not_configured",
        "the team has no git repository: an Owner sets one first (PUT /api/v1/teams/{team}/git)",
    )
}

/// A git failure as the hub answers it; what git said goes to the log only.
fn git_refusal(e: &GitError) -> HubError {
    let message = e.to_string();
    match e {
        GitError::Invalid(_) => invalid_settings(message),
        GitError::NotInstalled => HubError::unavailable("git_unavailable", message),
        GitError::Unreachable { .. } => HubError::conflict("git_unreachable", message),
        GitError::NoBranch { .. } => HubError::conflict("git_branch_missing", message),
        GitError::Rejected { .. } => HubError::conflict("git_push_rejected", message),
        GitError::Tree(_) => HubError::invalid("git_tree_refused", message),
        GitError::Timeout(_) => HubError::conflict("git_timeout", message),
        GitError::Failed { detail } => HubError::internal(format!("git: {detail}")),
    }
}

/// A name and address for a commit from a Redwall username.
fn author_of(username: &str) -> (String, String) {
    let name: String = username
        .chars()
        .map(|c| {
            if c.is_control() || c == '<' || c == '>' {
                '_'
            } else {
                c
            }
        })
        .take(100)
        .collect();
    let local: String = username
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let name = if name.trim().is_empty() {
        "redwall".to_string()
    } else {
        name
    };
    let local = if local.is_empty() {
        "redwall".to_string()
    } else {
        local
    };
    (name, format!("{local}@redwall.invalid"))
}

impl Hub {
    /// The team's git settings, if it has any (never the token).
    pub async fn git_settings(&self, team_id: &str) -> HubResult<Option<GitSettings>> {
        Ok(self
            .store
            .git_settings(team_id)
            .await?
            .as_ref()
            .map(settings_of))
    }

    /// Sets the team's repository, branches and token, with its audit entry.
    pub async fn set_git_settings(
        &self,
        who: Who<'_>,
        team_id: &str,
        input: GitSettingsInput<'_>,
        updated_by: Option<&str>,
    ) -> HubResult<GitSettings> {
        let scheme = redwall_git::check_url(input.repository_url, redwall_git::file_urls_allowed())
            .map_err(|e| invalid_settings(e.to_string()))?;
        for branch in [input.push_branch, input.pull_branch] {
            redwall_git::check_branch(branch).map_err(|e| invalid_settings(e.to_string()))?;
        }
        if input.push_branch == input.pull_branch {
            return Err(invalid_settings(
                "push and pull branches must differ: snapshots are pushed for review, and what was merged is pulled",
            ));
        }
        let previous = self.store.git_settings(team_id).await?;
        let same_url = previous
            .as_ref()
            .is_some_and(|p| p.repository_url == input.repository_url);
        let (sealed_token, token_change) = match input.token {
            TokenChange::Set(token) => {
                if scheme != redwall_git::Scheme::Https {
                    return Err(invalid_settings(
                        "a token is used with https:// repositories only",
                    ));
                }
                redwall_git::check_token(token).map_err(invalid_settings)?;
                let sealed = self
                    .keyring
                    .sealer(TOKEN_PURPOSE)
                    .seal(token.as_bytes(), &token_aad(team_id));
                (Some(sealed), "set")
            }
            TokenChange::Clear => (None, "cleared"),
            TokenChange::Keep => match previous.and_then(|p| p.sealed_token) {
                Some(sealed) if same_url && scheme == redwall_git::Scheme::Https => {
                    (Some(sealed), "kept")
                }
                Some(_) => (None, "dropped with the old URL"),
                None => (None, "none"),
            },
        };
        let row = GitSettingsRow {
            team_id: team_id.to_string(),
            repository_url: input.repository_url.to_string(),
            push_branch: input.push_branch.to_string(),
            pull_branch: input.pull_branch.to_string(),
            sealed_token,
            updated_by: updated_by.map(str::to_string),
            updated_at: self.now(),
        };
        let mut tx = self.begin().await?;
        tx.put_git_settings(&row).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::GitSettingsChanged,
                "git:settings".to_string(),
                json!({
                    "repository": row.repository_url,
                    "push_branch": row.push_branch,
                    "pull_branch": row.pull_branch,
                    "token": token_change,
                }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(settings_of(&row))
    }

    async fn require_git_settings(&self, team_id: &str) -> HubResult<GitSettingsRow> {
        self.store
            .git_settings(team_id)
            .await?
            .ok_or_else(not_configured)
    }

    /// The stored settings' remote, checked again (a URL stored before the
    /// rules tightened, or a `file://` no longer allowed, is refused).
    fn remote_of(&self, settings: &GitSettingsRow) -> HubResult<Remote> {
        let token = match &settings.sealed_token {
            None => None,
            Some(sealed) => Some(
                self.keyring
                    .sealer(TOKEN_PURPOSE)
                    .open(sealed, &token_aad(&settings.team_id))
                    .map_err(|_| HubError::internal("the team's git token does not open"))?,
            ),
        };
        let token = match &token {
            Some(plain) => Some(
                std::str::from_utf8(plain)
                    .map_err(|_| HubError::internal("the team's git token is not text"))?,
            ),
            None => None,
        };
        Remote::new(&settings.repository_url, token).map_err(|e| git_refusal(&e))
    }

    /// Records a git operation that failed (`what`, as it would have
    /// been recorded), then answers with its refusal.
    async fn git_failed(
        &self,
        who: Who<'_>,
        mut what: Event,
        refusal: HubError,
        git: Option<&GitError>,
    ) -> HubError {
        if let Some(detail) = git.and_then(GitError::detail) {
            tracing::warn!(team = ?what.team_id, detail, "git operation failed");
        }
        what.details["error"] = json!(refusal.code().unwrap_or("internal"));
        what.outcome = Outcome::Failure;
        if let Err(e) = self.record_event(who, what).await {
            return e;
        }
        refusal
    }

    /// Pushes the team's snapshot (checked whole) to the push branch, its
    /// credentials sealed for this team; audited with the commit.
    pub async fn push_snapshot_to_git(
        &self,
        who: Who<'_>,
        team_id: &str,
        snapshot_id: &str,
        author: &str,
    ) -> HubResult<GitPushed> {
        let settings = self.require_git_settings(team_id).await?;
        let remote = self.remote_of(&settings)?;
        let loaded = self.load_snapshot(who, team_id, snapshot_id).await?;
        let sealer = self.keyring.sealer(CREDENTIALS_PURPOSE);
        let aad = credentials_aad(team_id);
        let credentials_sealed = if loaded.credentials.is_empty() {
            None
        } else {
            let plain = zeroize::Zeroizing::new(
                serde_json::to_vec(&Value::Object(loaded.credentials.clone()))
                    .map_err(HubError::internal)?,
            );
            Some(base64::engine::general_purpose::STANDARD.encode(sealer.seal(&plain, &aad)))
        };
        let extra = LayoutExtra {
            source: Some(Source {
                snapshot_id: loaded.row.id.clone(),
                statement: loaded.row.statement.clone(),
                signature: hex::encode(&loaded.row.signature),
                signing_key: loaded.row.signing_key.clone(),
            }),
            env_names: loaded.content.env_names.clone(),
            modules: loaded.content.modules.clone(),
            credentials_sealed,
        };
        let files = redwall_git::to_files(&loaded.content.flows, &extra)
            .map_err(|e| HubError::conflict("flows_not_layable", e.to_string()))?;
        let instance = match &loaded.row.instance_id {
            Some(id) => self
                .team_instance(team_id, id)
                .await
                .map(|i| i.name)
                .unwrap_or_else(|_| id.clone()),
            None => "-".to_string(),
        };
        let mut message = format!(
            "Redwall snapshot {} of {instance} ({})\n\n",
            loaded.row.id, loaded.row.kind
        );
        if !loaded.row.note.is_empty() {
            message.push_str(&loaded.row.note);
            message.push_str("\n\n");
        }
        message.push_str(&format!(
            "Flows-SHA256: {}\nContent-SHA256: {}\nSigned-Statement: see redwall-snapshot.json\n",
            loaded.row.flows_sha256, loaded.row.content_sha256
        ));
        let (author_name, author_email) = author_of(author);
        let commit = Commit {
            message: &message,
            author_name: &author_name,
            author_email: &author_email,
            time: self.now().div_euclid(1_000_000),
        };
        // Sealed again under a new nonce, the same credentials would be a new
        // file on every push: the branch's copy stays when it holds them.
        let credentials = &loaded.credentials;
        let same = |old: &[u8]| -> bool {
            let Ok(text) = std::str::from_utf8(old) else {
                return false;
            };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text.trim()) else {
                return false;
            };
            let Ok(plain) = sealer.open(&bytes, &aad) else {
                return false;
            };
            matches!(
                serde_json::from_slice::<Value>(&plain),
                Ok(Value::Object(map)) if &map == credentials
            )
        };
        let keep = [Keep {
            path: redwall_git::layout::CREDENTIALS,
            same: &same,
        }];
        let target = format!("snapshot:{}", loaded.row.id);
        let details = json!({
            "snapshot": loaded.row.id,
            "repository": settings.repository_url,
            "branch": settings.push_branch,
        });
        let pushed =
            match redwall_git::push_files(&remote, &settings.push_branch, &files, &commit, &keep)
                .await
            {
                Ok(pushed) => pushed,
                Err(e) => {
                    let what = Event::in_team(team_id, AuditEvent::GitPushed, target, details);
                    return Err(self.git_failed(who, what, git_refusal(&e), Some(&e)).await);
                }
            };
        let mut details = details;
        details["commit"] = json!(pushed.commit);
        details["changed"] = json!(pushed.changed);
        let mut tx = self.begin().await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(team_id, AuditEvent::GitPushed, target, details),
        );
        self.commit(tx, 1).await?;
        Ok(GitPushed {
            snapshot_id: loaded.row.id,
            repository_url: settings.repository_url,
            branch: settings.push_branch,
            commit: pushed.commit,
            changed: pushed.changed,
        })
    }

    /// Pulls the pull branch's head as a new snapshot of the instance (kind
    /// imported, not deployed: a rollback to it deploys it).
    pub async fn pull_from_git(
        &self,
        who: Who<'_>,
        instance: &Instance,
        created_by: Option<&str>,
    ) -> HubResult<GitPulled> {
        let team_id = instance.team_id.as_str();
        let settings = self.require_git_settings(team_id).await?;
        let remote = self.remote_of(&settings)?;
        let target = format!("instance:{}", instance.name);
        let details = json!({
            "instance": instance.id,
            "repository": settings.repository_url,
            "branch": settings.pull_branch,
        });
        let (commit, files) = match redwall_git::fetch_files(&remote, &settings.pull_branch).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let what = Event::in_team(team_id, AuditEvent::GitPulled, target, details);
                return Err(self.git_failed(who, what, git_refusal(&e), Some(&e)).await);
            }
        };
        let mut details = details;
        details["commit"] = json!(commit);
        let pulled = match self.read_pulled(instance, &files).await {
            Ok(pulled) => pulled,
            Err(refusal) => {
                let what = Event::in_team(team_id, AuditEvent::GitPulled, target, details);
                return Err(self.git_failed(who, what, refusal, None).await);
            }
        };
        let short: String = commit.chars().take(12).collect();
        let note = format!("pulled from git branch {} at {short}", settings.pull_branch);
        let summary = self
            .store_snapshot(
                who,
                NewSnapshot {
                    team_id,
                    instance_id: Some(&instance.id),
                    kind: SnapshotKind::Imported,
                    note: &note,
                    created_by,
                    content: pulled.content,
                    credentials: pulled.credentials,
                    running: false,
                    audit_details: json!({
                        "git": {
                            "repository": settings.repository_url,
                            "branch": settings.pull_branch,
                            "commit": commit,
                            // What the files claim; not proof of anything.
                            "claimed_source": pulled.claimed_source,
                        },
                        "credentials": pulled.from,
                    }),
                    event: AuditEvent::GitPulled,
                },
            )
            .await?;
        Ok(GitPulled {
            snapshot: summary,
            repository_url: settings.repository_url,
            branch: settings.pull_branch,
            commit,
            credentials: pulled.from,
        })
    }

    /// The snapshot a pulled tree makes for the instance: its flows, the
    /// modules it names, the instance's own variable names and options, and
    /// credentials (only for nodes in the flows).
    async fn read_pulled(
        &self,
        instance: &Instance,
        files: &BTreeMap<String, Vec<u8>>,
    ) -> HubResult<Pulled> {
        let (flows, extra) = redwall_git::from_files(files)
            .map_err(|e| HubError::invalid("git_layout_invalid", e.to_string()))?;
        // The same rules as any import: ids present and unique.
        redwall_policy::flow_diff::diff_flows(&flows, &flows)?;
        let state = self.current_state(instance).await?;
        let (mut credentials, from) = match &extra.credentials_sealed {
            Some(text) => (
                self.open_git_credentials(&instance.team_id, text)?,
                PulledCredentials::Sealed,
            ),
            None => (state.credentials, PulledCredentials::KeptFromInstance),
        };
        let ids: std::collections::HashSet<&str> = flows
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| n.get("id").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        credentials.retain(|id, _| ids.contains(id.as_str()));
        let content = Content {
            flows,
            env_names: state.content.env_names,
            options: state.content.options,
            modules: extra.modules,
        };
        Ok(Pulled {
            content,
            credentials,
            claimed_source: extra.source.map(|s| s.snapshot_id),
            from,
        })
    }

    fn open_git_credentials(&self, team_id: &str, text: &str) -> HubResult<Map<String, Value>> {
        let foreign = || {
            HubError::invalid(
                "git_credentials_foreign",
                "the repository's credentials.sealed was sealed by another hub or for another team: refused (remove the file to keep the instance's credentials)",
            )
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| foreign())?;
        let plain = self
            .keyring
            .sealer(CREDENTIALS_PURPOSE)
            .open(&bytes, &credentials_aad(team_id))
            .map_err(|_| foreign())?;
        match serde_json::from_slice::<Value>(&plain) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(foreign()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commit_authors_are_plain() {
        assert_eq!(
            author_of("olivia"),
            ("olivia".to_string(), "olivia@redwall.invalid".to_string())
        );
        let (name, email) = author_of("ev<il>\n@x y");
        assert!(!name.contains(['<', '>', '\n']), "{name}");
        assert_eq!(email, "ev_il___x_y@redwall.invalid");
        assert_eq!(author_of("").0, "redwall");
    }

    #[test]
    fn git_failures_map_to_refusals_without_what_git_said() {
        let e = GitError::Unreachable {
            detail: "remote: secret internal page".into(),
        };
        let refusal = git_refusal(&e);
        assert_eq!(refusal.code(), Some("git_unreachable"));
        assert!(!refusal.to_string().contains("secret"));
        assert_eq!(
            git_refusal(&GitError::Invalid("x".into())).code(),
            Some("invalid_git_settings")
        );
        assert_eq!(
            git_refusal(&GitError::NoBranch { branch: "b".into() }).code(),
            Some("git_branch_missing")
        );
    }
}
