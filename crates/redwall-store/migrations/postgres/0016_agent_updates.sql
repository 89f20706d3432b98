-- Agent builds the hub signs and offers, and their rollouts to a team's
-- agents in batches. Keep in step with the other backend's
-- 0016_agent_updates.sql.
--
-- A build is stored whole (agents fetch it from whichever hub holds their
-- connection), with the statement the hub signed about it.
CREATE TABLE agent_builds (
    id          TEXT    NOT NULL PRIMARY KEY,
    version     TEXT    NOT NULL,
    platform    TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    size        BIGINT NOT NULL,
    statement   TEXT    NOT NULL,
    signature   BYTEA    NOT NULL,
    body        BYTEA    NOT NULL,
    created_by  TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (platform, sha256)
);

-- A rollout of a build to the team's agents named by its target, batch by
-- batch: the next batch gets its commands once every agent of the one
-- before has answered; a failure stops the rollout.
CREATE TABLE agent_updates (
    id          TEXT    NOT NULL PRIMARY KEY,
    team_id     TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    build_id    TEXT    NOT NULL REFERENCES agent_builds (id) ON DELETE CASCADE,
    target      TEXT    NOT NULL,
    batch_size  BIGINT NOT NULL,
    status      TEXT    NOT NULL,
    error       TEXT,
    created_by  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX agent_updates_team ON agent_updates (team_id, created_at);
CREATE INDEX agent_updates_status ON agent_updates (status);

-- Which rollout an update command belongs to, and which build each agent
-- said it runs when it last connected.
ALTER TABLE agent_commands ADD COLUMN update_id TEXT;
CREATE INDEX agent_commands_update ON agent_commands (update_id);
ALTER TABLE agents ADD COLUMN build_sha256 TEXT;
