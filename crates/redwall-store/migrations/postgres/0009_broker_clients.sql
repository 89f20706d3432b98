-- The team MQTT broker's clients: devices and scripts outside Redwall, and
-- (with instance_id) each instance's own identity. The secret is stored as
-- its SHA-256 digest only; rules are the client's ordered topic rules as
-- JSON, validated by redwall_policy::mqtt_acl before they are written.
-- Keep in step with the other backend's 0009_broker_clients.sql.
CREATE TABLE broker_clients (
    id            TEXT    NOT NULL PRIMARY KEY,
    team_id       TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    instance_id   TEXT    REFERENCES instances (id) ON DELETE CASCADE,
    secret_digest BYTEA    NOT NULL UNIQUE,
    rules         TEXT    NOT NULL DEFAULT '[]',
    created_by    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (team_id, name)
);
CREATE INDEX broker_clients_team_id ON broker_clients (team_id);
