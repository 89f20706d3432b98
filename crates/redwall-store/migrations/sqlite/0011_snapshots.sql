-- Signed snapshots of an instance's flows, and their deployments.
-- Keep in step with the other backend's 0011_snapshots.sql.
--
-- A snapshot row is written once and never changed (a trigger refuses
-- UPDATE): content is the canonical JSON of the flows, the names of the
-- environment variables, the options and the module list; credentials are
-- sealed under a data key of their own, itself sealed by the master key;
-- statement is the canonical JSON the hub signed (ids, kind, note, the
-- SHA-256 of content and credentials), signature its Ed25519 signature by
-- signing_key. Loading one checks all of it, so a changed byte is refused.
CREATE TABLE snapshots (
    id                 TEXT    NOT NULL PRIMARY KEY,
    team_id            TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    -- No foreign key: the source instance may go; its snapshots stay its
    -- team's (and a cascade would have to update an immutable row).
    instance_id        TEXT,
    kind               TEXT    NOT NULL,
    note               TEXT    NOT NULL DEFAULT '',
    content_sha256     TEXT    NOT NULL,
    flows_sha256       TEXT    NOT NULL,
    content            TEXT    NOT NULL,
    sealed_data_key    BLOB    NOT NULL,
    sealed_credentials BLOB    NOT NULL,
    statement          TEXT    NOT NULL,
    signature          BLOB    NOT NULL,
    signing_key        TEXT    NOT NULL,
    created_by         TEXT,
    created_at         INTEGER NOT NULL
);
CREATE INDEX snapshots_team_created ON snapshots (team_id, created_at);
CREATE INDEX snapshots_instance_created ON snapshots (instance_id, created_at);

-- The hub's Ed25519 keys: the private half sealed by the master key. One
-- row per key; replicas race to create the first with a fixed id.
CREATE TABLE signing_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    public_key   TEXT    NOT NULL UNIQUE,
    sealed_key   BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
);

-- What each instance runs: the snapshot last deployed to it or taken from
-- its editor. No foreign key: a pruned snapshot is never one in use.
ALTER TABLE instances ADD COLUMN running_snapshot_id TEXT;

-- Each deployment of a snapshot to an instance (a rollback, its undoing),
-- with its progress, so the console and CLI can follow it.
CREATE TABLE deployments (
    id                   TEXT    NOT NULL PRIMARY KEY,
    team_id              TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    instance_id          TEXT    NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    snapshot_id          TEXT    NOT NULL,
    previous_snapshot_id TEXT,
    reason               TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    step                 TEXT    NOT NULL DEFAULT '',
    error                TEXT,
    requested_by         TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX deployments_instance_created ON deployments (instance_id, created_at);

CREATE TRIGGER snapshots_immutable BEFORE UPDATE ON snapshots
BEGIN
    SELECT RAISE(ABORT, 'snapshots are immutable');
END;
