-- Each team's git repository for snapshots: where they are pushed (for
-- review) and pulled from (once reviewed). Keep in step with the other
-- backend's 0013_git_settings.sql.
--
-- sealed_token is an HTTPS token sealed by the master key (purpose
-- "git-token", bound to the team): never stored or shown in the clear.
CREATE TABLE git_settings (
    team_id        TEXT    NOT NULL PRIMARY KEY REFERENCES teams (id) ON DELETE CASCADE,
    repository_url TEXT    NOT NULL,
    push_branch    TEXT    NOT NULL,
    pull_branch    TEXT    NOT NULL,
    sealed_token   BLOB,
    updated_by     TEXT,
    updated_at     INTEGER NOT NULL
);
