-- Deploy targets beyond one instance, deploy windows and pipelines.
-- Keep in step with the other backend's 0012_pipelines.sql.

-- A named group of the team's instances: a deploy target.
CREATE TABLE instance_groups (
    id         TEXT    NOT NULL PRIMARY KEY,
    team_id    TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (team_id, name)
);
CREATE TABLE instance_group_members (
    group_id    TEXT NOT NULL REFERENCES instance_groups (id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, instance_id)
);

-- Ordered stages, each a target (JSON, checked by
-- redwall_policy::pipeline_rules before it is written).
CREATE TABLE pipelines (
    id         TEXT    NOT NULL PRIMARY KEY,
    team_id    TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    stages     TEXT    NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (team_id, name)
);

-- A snapshot promoted into a stage: awaiting approval, then deployed.
CREATE TABLE promotions (
    id           TEXT    NOT NULL PRIMARY KEY,
    team_id      TEXT    NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    pipeline_id  TEXT    NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    stage        BIGINT NOT NULL,
    snapshot_id  TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    promoted_by  TEXT    NOT NULL,
    approved_by  TEXT,
    schedule     TEXT    NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX promotions_pipeline ON promotions (pipeline_id, created_at);

-- A deployment may wait for its window ("waiting", with its schedule as
-- redwall_policy::deploy_window::DeployWindow JSON) and may belong to a
-- promotion.
ALTER TABLE deployments ADD COLUMN schedule TEXT NOT NULL DEFAULT '{}';
ALTER TABLE deployments ADD COLUMN promotion_id TEXT;
CREATE INDEX deployments_status ON deployments (status);
