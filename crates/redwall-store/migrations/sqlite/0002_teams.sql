-- Teams, memberships with roles, invitations; team-limited tokens.
-- Keep in step with ../postgres/0002_teams.sql.

CREATE TABLE teams (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    require_mfa   INTEGER NOT NULL DEFAULT 0 CHECK (require_mfa IN (0, 1)),
    -- JSON array of CIDR ranges; empty means any address.
    allowed_cidrs TEXT    NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE memberships (
    team_id   TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id   TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role      TEXT    NOT NULL CHECK (role IN ('owner', 'member', 'viewer', 'dashboard')),
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX memberships_user_id ON memberships (user_id);

CREATE TABLE invitations (
    id         TEXT    NOT NULL PRIMARY KEY,
    team_id    TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    invitee_id TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'member', 'viewer', 'dashboard')),
    invited_by TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
-- One open invitation per person and team.
CREATE UNIQUE INDEX invitations_team_invitee ON invitations (team_id, invitee_id);
CREATE INDEX invitations_invitee_id ON invitations (invitee_id);

-- A token may be limited to one team and to a list of permission names (JSON array).
ALTER TABLE api_tokens ADD COLUMN permissions TEXT;
CREATE INDEX api_tokens_team_id ON api_tokens (team_id);
