-- An instance's egress policy: the exceptions an Owner opened to its
-- network isolation, as a JSON array of {cidr, protocol, ports}, validated by
-- redwall_policy::egress before it is written. '[]': the default (the outside
-- network only, nothing of the host). Keep in step with the other backend's
-- 0005_instance_egress.sql.
ALTER TABLE instances ADD COLUMN egress TEXT NOT NULL DEFAULT '[]';
