-- Redwall initial schema (SQLite). Keep in step with ../postgres/0001_initial.sql.
-- Types: ids TEXT, times INTEGER microseconds since the Unix epoch,
-- booleans INTEGER 0/1, binary BLOB, JSON TEXT.

CREATE TABLE users (
    id                  TEXT    NOT NULL PRIMARY KEY,
    username            TEXT    NOT NULL,
    username_key        TEXT    NOT NULL,
    password_hash       TEXT,
    is_admin            INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    suspended           INTEGER NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
    mfa_enabled         INTEGER NOT NULL DEFAULT 0 CHECK (mfa_enabled IN (0, 1)),
    mfa_secret_sealed   BLOB,
    mfa_pending_sealed  BLOB,
    mfa_last_step       INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    password_changed_at INTEGER
);
CREATE UNIQUE INDEX users_username_key ON users (username_key);

CREATE TABLE recovery_codes (
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_digest BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    PRIMARY KEY (user_id, code_digest)
);

-- At most one first-run setup token at a time.
CREATE TABLE setup_token (
    id           INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    token_digest BLOB    NOT NULL,
    expires_at   INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                TEXT    NOT NULL PRIMARY KEY,
    token_digest      BLOB    NOT NULL,
    user_id           TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at        INTEGER NOT NULL,
    last_seen_at      INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    client_ip         TEXT,
    user_agent        TEXT,
    csrf_token_digest BLOB    NOT NULL,
    mfa_verified      INTEGER NOT NULL DEFAULT 0 CHECK (mfa_verified IN (0, 1))
);
CREATE UNIQUE INDEX sessions_token_digest ON sessions (token_digest);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_last_seen_at ON sessions (last_seen_at);

CREATE TABLE api_tokens (
    id             TEXT    NOT NULL PRIMARY KEY,
    user_id        TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    token_digest   BLOB    NOT NULL,
    display_prefix TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    team_id        TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    last_used_at   INTEGER
);
CREATE UNIQUE INDEX api_tokens_token_digest ON api_tokens (token_digest);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

CREATE TABLE settings (
    key        TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Append-only, HMAC hash-chained audit log. seq is the chain position.
CREATE TABLE audit_log (
    seq        INTEGER NOT NULL PRIMARY KEY,
    id         TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    actor_id   TEXT,
    actor_name TEXT,
    client_ip  TEXT,
    user_agent TEXT,
    event      TEXT    NOT NULL,
    target     TEXT,
    outcome    TEXT    NOT NULL,
    details    TEXT    NOT NULL,
    team_id    TEXT,
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE UNIQUE INDEX audit_log_id ON audit_log (id);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_event ON audit_log (event, seq);
CREATE INDEX audit_log_actor_id ON audit_log (actor_id, seq);
CREATE INDEX audit_log_actor_name ON audit_log (actor_name, seq);
CREATE INDEX audit_log_team_id ON audit_log (team_id, seq);

-- Refuse edits and deletions through the ordinary SQL path. (Someone with raw
-- access to the file can drop these; the hash chain is what detects that.)
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
