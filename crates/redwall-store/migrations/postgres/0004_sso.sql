-- Single sign-on: which external identity (provider + stable subject) is
-- which Redwall user. Keep in step with ../sqlite/0004_sso.sql.

CREATE TABLE external_identities (
    provider      TEXT    NOT NULL,
    -- OIDC: the issuer's `sub`; LDAP: the entry's DN or a configured
    -- immutable attribute (entryUUID, objectGUID). Never a display name.
    subject       TEXT    NOT NULL,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX external_identities_user_id ON external_identities (user_id);
