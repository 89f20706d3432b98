-- Remote agents: Node-RED hosts that only dial out. Keep in step with the
-- other backend's 0014_agents.sql.
--
-- An agent enrols once with a one-time provisioning token (stored as its
-- SHA-256 digest only) and the Ed25519 public key it generated itself;
-- afterwards it proves itself by signing the hub's challenges, so nothing
-- secret of the agent is stored here. last_seen_at is the last heartbeat
-- (any hub replica writes it), disconnected_at the last goodbye: online
-- and offline read the same from every replica.
CREATE TABLE agent_tokens (
    id            TEXT    NOT NULL PRIMARY KEY,
    team_id       TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    token_digest  BYTEA   NOT NULL UNIQUE,
    agent_group   TEXT,
    created_by    TEXT,
    created_at    BIGINT    NOT NULL,
    expires_at    BIGINT    NOT NULL,
    used_at       BIGINT,
    used_by_agent TEXT
);
CREATE INDEX agent_tokens_team_id ON agent_tokens (team_id);

CREATE TABLE agents (
    id              TEXT    NOT NULL PRIMARY KEY,
    team_id         TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    agent_group     TEXT,
    public_key      TEXT    NOT NULL UNIQUE,
    platform        TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    enrolled_by     TEXT,
    created_at      BIGINT    NOT NULL,
    last_seen_at    BIGINT,
    disconnected_at BIGINT,
    connected_node  TEXT,
    node_red        TEXT    NOT NULL DEFAULT 'none',
    running_snapshot TEXT,
    revoked_at      BIGINT,
    UNIQUE (team_id, name)
);
CREATE INDEX agents_team_id ON agents (team_id);

-- Commands for an agent, whichever hub holds its connection: the hub that
-- takes one stores it and announces it (PostgreSQL NOTIFY); the hub with
-- the connection sends what is pending, also when the agent reconnects.
CREATE TABLE agent_commands (
    id         TEXT    NOT NULL PRIMARY KEY,
    agent_id   TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    team_id    TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    command    TEXT    NOT NULL,
    created_by TEXT,
    created_at BIGINT    NOT NULL,
    sent_at    BIGINT,
    done_at    BIGINT,
    ok         BIGINT,
    message    TEXT
);
CREATE INDEX agent_commands_agent_id ON agent_commands (agent_id, created_at);
