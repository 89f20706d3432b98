-- Audit entries written in the same transaction as the change they record
-- (a `Change`), waiting for the audit writer to chain them into audit_log.
-- A change and its entry commit together, so a process killed between the
-- two can no longer leave an action without its entry: whatever is pending
-- is chained at the next append or start. Keep in step with the other
-- backend's 0008_audit_pending.sql.
CREATE TABLE audit_pending (
    pid        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor_id   TEXT,
    actor_name TEXT,
    client_ip  TEXT,
    user_agent TEXT,
    event      TEXT    NOT NULL,
    target     TEXT,
    outcome    TEXT    NOT NULL,
    details    TEXT    NOT NULL,
    team_id    TEXT
);
