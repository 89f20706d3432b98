-- Retention: the only way entries leave the log is a prune (see
-- redwall-store/src/retention.rs). A prune appends a checkpoint entry
-- (event 'audit.pruned', chained like any other, naming the last pruned
-- entry's seq and hash), then writes a permit naming that checkpoint, deletes
-- the entries up to it, and removes the permit, all in one transaction.
--
-- The triggers below keep "nobody can quietly edit the log" true:
-- * UPDATE stays refused, always.
-- * A permit can only be written for a checkpoint entry that is the head of
--   the log and names exactly the permit's `through_seq`.
-- * DELETE is refused unless a permit covers the row AND its checkpoint is
--   still the head of the log, so a permit left behind is void as soon as
--   anything else is appended, and only a prefix of the log can go.
-- Whoever can drop triggers can still delete rows; `audit verify` then names
-- the gap, and a checkpoint written without the chain key does not verify.
CREATE TABLE audit_prune_permit (
    through_seq    INTEGER NOT NULL,
    checkpoint_seq INTEGER NOT NULL
);

CREATE TRIGGER audit_prune_permit_checked BEFORE INSERT ON audit_prune_permit
WHEN NOT EXISTS (
    SELECT 1 FROM audit_log c
    WHERE c.seq = NEW.checkpoint_seq
      AND c.seq = (SELECT max(seq) FROM audit_log)
      AND c.event = 'audit.pruned'
      AND NEW.through_seq < NEW.checkpoint_seq
      AND json_extract(c.details, '$.through_seq') = NEW.through_seq
)
BEGIN
    SELECT RAISE(ABORT, 'a prune needs its checkpoint entry at the head of the audit log');
END;

CREATE TRIGGER audit_prune_permit_no_update BEFORE UPDATE ON audit_prune_permit
BEGIN
    SELECT RAISE(ABORT, 'audit prune permits cannot be changed');
END;

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (
    SELECT 1 FROM audit_prune_permit p
    WHERE OLD.seq <= p.through_seq
      AND p.checkpoint_seq = (SELECT max(seq) FROM audit_log)
)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
