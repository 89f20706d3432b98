-- Snapshots deployed to remote agents. Keep in step with the other
-- backend's 0015_agent_deployments.sql.
--
-- An agent registers an X25519 key at enrolment (the hub seals snapshots'
-- credentials for it); agents enrolled before have none and must enrol
-- again before they can take a snapshot.
ALTER TABLE agents ADD COLUMN encryption_key TEXT NOT NULL DEFAULT '';

-- A deployment goes to an instance or to an agent, never both; an agent's
-- is carried out by a command (command_id) that any hub may hand it.
-- SQLite cannot drop a NOT NULL, so the table is rebuilt.
CREATE TABLE deployments_new (
    id                   TEXT    NOT NULL PRIMARY KEY,
    team_id              TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    instance_id          TEXT    REFERENCES instances (id) ON DELETE CASCADE,
    agent_id             TEXT    REFERENCES agents (id) ON DELETE CASCADE,
    command_id           TEXT,
    snapshot_id          TEXT    NOT NULL,
    previous_snapshot_id TEXT,
    reason               TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    step                 TEXT    NOT NULL DEFAULT '',
    error                TEXT,
    requested_by         TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    schedule             TEXT    NOT NULL DEFAULT '{}',
    promotion_id         TEXT,
    CHECK ((instance_id IS NULL) <> (agent_id IS NULL))
);
INSERT INTO deployments_new (id, team_id, instance_id, snapshot_id, previous_snapshot_id,
    reason, status, step, error, requested_by, created_at, updated_at, schedule, promotion_id)
SELECT id, team_id, instance_id, snapshot_id, previous_snapshot_id,
    reason, status, step, error, requested_by, created_at, updated_at, schedule, promotion_id
FROM deployments;
DROP TABLE deployments;
ALTER TABLE deployments_new RENAME TO deployments;
CREATE INDEX deployments_instance_created ON deployments (instance_id, created_at);
CREATE INDEX deployments_agent_created ON deployments (agent_id, created_at);
CREATE INDEX deployments_status ON deployments (status);
CREATE INDEX deployments_command ON deployments (command_id);
CREATE INDEX deployments_promotion ON deployments (promotion_id);
