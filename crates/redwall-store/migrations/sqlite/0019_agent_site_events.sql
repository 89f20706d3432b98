-- What agents report of their sites. Keep in step with the other
-- backend's 0019_agent_site_events.sql.
--
-- The figures of the agent's MQTT store-and-forward and journals, as its
-- last heartbeat gave them (JSON).
ALTER TABLE agents ADD COLUMN site_report TEXT;

-- How far each of an agent's journals (audit, log) was stored: the
-- journal's epoch and its highest sequence number, so a batch resent after
-- a lost answer is never stored twice.
CREATE TABLE agent_event_streams (
    agent_id TEXT   NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    stream   TEXT   NOT NULL,
    epoch    TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (agent_id, stream)
);

-- The site's log lines (the agent's and its Node-RED's), the newest few
-- thousand per agent. Times are microseconds: when the site wrote the line
-- (its clock) and when the hub stored it.
CREATE TABLE agent_logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id    TEXT   NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    source      TEXT   NOT NULL,
    line        TEXT   NOT NULL
);
CREATE INDEX agent_logs_agent_id ON agent_logs (agent_id, id);
