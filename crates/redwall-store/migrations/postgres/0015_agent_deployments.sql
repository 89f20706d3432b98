-- Snapshots deployed to remote agents. Keep in step with the other
-- backend's 0015_agent_deployments.sql.
--
-- An agent registers an X25519 key at enrolment (the hub seals snapshots'
-- credentials for it); agents enrolled before have none and must enrol
-- again before they can take a snapshot.
ALTER TABLE agents ADD COLUMN encryption_key TEXT NOT NULL DEFAULT '';

-- A deployment goes to an instance or to an agent, never both; an agent's
-- is carried out by a command (command_id) that any hub may hand it.
ALTER TABLE deployments ALTER COLUMN instance_id DROP NOT NULL;
ALTER TABLE deployments ADD COLUMN agent_id TEXT REFERENCES agents (id) ON DELETE CASCADE;
ALTER TABLE deployments ADD COLUMN command_id TEXT;
ALTER TABLE deployments ADD CONSTRAINT deployments_one_target
    CHECK ((instance_id IS NULL) <> (agent_id IS NULL));
CREATE INDEX deployments_agent_created ON deployments (agent_id, created_at);
CREATE INDEX deployments_command ON deployments (command_id);
CREATE INDEX deployments_promotion ON deployments (promotion_id);
