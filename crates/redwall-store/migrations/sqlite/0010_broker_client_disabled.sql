-- A broker client can be disabled (kept, with its rules, but refused at
-- login and disconnected) and enabled again. NULL: enabled.
-- Keep in step with the other backend's 0010_broker_client_disabled.sql.
ALTER TABLE broker_clients ADD COLUMN disabled_at INTEGER;
