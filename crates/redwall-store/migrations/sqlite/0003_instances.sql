-- Managed Node-RED instances, their environment, route policies and API keys.
-- Keep in step with ../postgres/0003_instances.sql.

CREATE TABLE instances (
    id            TEXT    NOT NULL PRIMARY KEY,
    -- The team-independent name used in host names ({name}.{instances_domain})
    -- and path prefixes (/i/{name}/), so unique across the platform.
    name          TEXT    NOT NULL UNIQUE,
    team_id       TEXT    NOT NULL REFERENCES teams (id) ON DELETE RESTRICT,
    port          INTEGER NOT NULL UNIQUE,
    -- What Redwall keeps it at: 'running' instances are started at Redwall start.
    desired_state TEXT    NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    -- JSON: palette install and function external modules (Owner-set).
    options       TEXT    NOT NULL DEFAULT '{}',
    -- JSON: the ordered route rules for the flows' own endpoints.
    routes        TEXT    NOT NULL DEFAULT '[]',
    -- Sealed (AES-256-GCM) admin, endpoint and credential secrets.
    secrets       TEXT    NOT NULL,
    created_by    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX instances_team_id ON instances (team_id);

CREATE TABLE instance_env (
    instance_id TEXT    NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    secret      INTEGER NOT NULL CHECK (secret IN (0, 1)),
    -- Always sealed; a secret value is never returned by the API.
    value       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (instance_id, name)
);

CREATE TABLE instance_api_keys (
    id             TEXT    NOT NULL PRIMARY KEY,
    instance_id    TEXT    NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    key_digest     BLOB    NOT NULL UNIQUE,
    display_prefix TEXT    NOT NULL,
    path_prefix    TEXT,
    created_by     TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,
    last_used_at   INTEGER
);
CREATE INDEX instance_api_keys_instance_id ON instance_api_keys (instance_id);
