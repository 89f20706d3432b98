-- The hub replicas and how another replica reaches each one: a request for
-- an instance on an agent that lands on a replica without that agent's
-- connection is relayed to the replica holding it (agents.connected_node),
-- over TLS pinned to the certificate recorded here. Keep in step with the
-- other backend's 0018_hub_nodes.sql.
CREATE TABLE hub_nodes (
    node        TEXT    NOT NULL PRIMARY KEY,
    relay_url   TEXT    NOT NULL,
    cert_sha256 TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL
);
