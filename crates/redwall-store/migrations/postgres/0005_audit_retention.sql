-- Retention: the only way entries leave the log is a prune (see
-- redwall-store/src/retention.rs). A prune appends a checkpoint entry
-- (event 'audit.pruned', chained like any other, naming the last pruned
-- entry's seq and hash), then writes a permit naming that checkpoint, deletes
-- the entries up to it, and removes the permit, all in one transaction.
--
-- The triggers below keep "nobody can quietly edit the log" true:
-- * UPDATE and TRUNCATE stay refused, always.
-- * A permit can only be written for a checkpoint entry that is the head of
--   the log and names exactly the permit's `through_seq`, and must be gone
--   again when its transaction commits (a deferred constraint trigger).
-- * DELETE is refused unless a permit covers the row AND its checkpoint is
--   still the head of the log, so only a prefix of the log can go.
-- Whoever owns the tables can still drop triggers; `audit verify` then names
-- the gap, and a checkpoint written without the chain key does not verify.
CREATE TABLE audit_prune_permit (
    through_seq    BIGINT NOT NULL,
    checkpoint_seq BIGINT NOT NULL
);

CREATE FUNCTION audit_prune_permit_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.through_seq < NEW.checkpoint_seq AND EXISTS (
        SELECT 1 FROM audit_log c
        WHERE c.seq = NEW.checkpoint_seq
          AND c.seq = (SELECT max(seq) FROM audit_log)
          AND c.event = 'audit.pruned'
          AND (c.details::jsonb ->> 'through_seq') = NEW.through_seq::text
    ) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'a prune needs its checkpoint entry at the head of the audit log';
END;
$$;
CREATE TRIGGER audit_prune_permit_checked BEFORE INSERT OR UPDATE ON audit_prune_permit
    FOR EACH ROW EXECUTE FUNCTION audit_prune_permit_check();

CREATE FUNCTION audit_prune_permit_gone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_prune_permit) THEN
        RAISE EXCEPTION 'an audit prune permit must not outlive its transaction';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER audit_prune_permit_same_transaction
    AFTER INSERT ON audit_prune_permit
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION audit_prune_permit_gone();

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM audit_prune_permit p
        WHERE OLD.seq <= p.through_seq
          AND p.checkpoint_seq = (SELECT max(seq) FROM audit_log)
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
