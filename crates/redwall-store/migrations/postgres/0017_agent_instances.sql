-- An instance whose Node-RED runs on a remote agent instead of this hub:
-- the hub keeps its name, keys, route rules and API keys, and the proxy
-- reaches it through the agent's tunnel. One agent runs at most one
-- instance. Keep in step with the other backend's 0017_agent_instances.sql.
ALTER TABLE instances ADD COLUMN agent_id TEXT REFERENCES agents (id);
CREATE UNIQUE INDEX instances_agent_id ON instances (agent_id) WHERE agent_id IS NOT NULL;
