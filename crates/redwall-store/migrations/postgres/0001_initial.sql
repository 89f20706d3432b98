-- Redwall initial schema (PostgreSQL). Keep in step with ../sqlite/0001_initial.sql.
-- Types: ids TEXT, times BIGINT microseconds since the Unix epoch,
-- booleans BIGINT 0/1 (the sqlx Any driver maps these uniformly), binary BYTEA, JSON TEXT.

CREATE TABLE users (
    id                  TEXT   NOT NULL PRIMARY KEY,
    username            TEXT   NOT NULL,
    username_key        TEXT   NOT NULL,
    password_hash       TEXT,
    is_admin            BIGINT NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    suspended           BIGINT NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
    mfa_enabled         BIGINT NOT NULL DEFAULT 0 CHECK (mfa_enabled IN (0, 1)),
    mfa_secret_sealed   BYTEA,
    mfa_pending_sealed  BYTEA,
    mfa_last_step       BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    password_changed_at BIGINT
);
CREATE UNIQUE INDEX users_username_key ON users (username_key);

CREATE TABLE recovery_codes (
    user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_digest BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    PRIMARY KEY (user_id, code_digest)
);

-- At most one first-run setup token at a time.
CREATE TABLE setup_token (
    id           BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    token_digest BYTEA  NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE TABLE sessions (
    id                TEXT   NOT NULL PRIMARY KEY,
    token_digest      BYTEA  NOT NULL,
    user_id           TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at        BIGINT NOT NULL,
    last_seen_at      BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    client_ip         TEXT,
    user_agent        TEXT,
    csrf_token_digest BYTEA  NOT NULL,
    mfa_verified      BIGINT NOT NULL DEFAULT 0 CHECK (mfa_verified IN (0, 1))
);
CREATE UNIQUE INDEX sessions_token_digest ON sessions (token_digest);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_last_seen_at ON sessions (last_seen_at);

CREATE TABLE api_tokens (
    id             TEXT   NOT NULL PRIMARY KEY,
    user_id        TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           TEXT   NOT NULL,
    token_digest   BYTEA  NOT NULL,
    display_prefix TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    team_id        TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    last_used_at   BIGINT
);
CREATE UNIQUE INDEX api_tokens_token_digest ON api_tokens (token_digest);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

CREATE TABLE settings (
    key        TEXT   NOT NULL PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Append-only, HMAC hash-chained audit log. seq is the chain position.
CREATE TABLE audit_log (
    seq        BIGINT NOT NULL PRIMARY KEY,
    id         TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    actor_id   TEXT,
    actor_name TEXT,
    client_ip  TEXT,
    user_agent TEXT,
    event      TEXT   NOT NULL,
    target     TEXT,
    outcome    TEXT   NOT NULL,
    details    TEXT   NOT NULL,
    team_id    TEXT,
    prev_hash  BYTEA  NOT NULL,
    hash       BYTEA  NOT NULL
);
CREATE UNIQUE INDEX audit_log_id ON audit_log (id);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_event ON audit_log (event, seq);
CREATE INDEX audit_log_actor_id ON audit_log (actor_id, seq);
CREATE INDEX audit_log_actor_name ON audit_log (actor_name, seq);
CREATE INDEX audit_log_team_id ON audit_log (team_id, seq);

-- Refuse edits and deletions through the ordinary SQL path. (Someone with
-- owner rights can drop these; the hash chain is what detects that.)
CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
