-- OpenID Connect: the login states already used, so a callback is accepted
-- once, on whichever replica it arrives. A row lives as long as the login
-- cookie that carried the state (then it could not come back anyway), and
-- rows are counted per client address so one client cannot fill the table
-- for everyone. Keep in step with ../sqlite/0005_oidc_states.sql.

CREATE TABLE oidc_used_states (
    -- A keyed digest of the state (the state itself is not kept).
    state_digest TEXT    NOT NULL PRIMARY KEY,
    -- The client's address (an IPv6 client's /64).
    client       TEXT    NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX oidc_used_states_client ON oidc_used_states (client, expires_at);
CREATE INDEX oidc_used_states_expires ON oidc_used_states (expires_at);
