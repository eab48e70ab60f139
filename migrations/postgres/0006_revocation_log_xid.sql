-- The transaction that wrote each log row. Readers sweep the rows of the
-- transactions below their snapshot's xmin (all of which have ended), so a
-- revocation is delivered however late its COMMIT lands, not only while its
-- skipped id is still asked for (crates/tessera-domain/src/reconcile.rs).
-- Rows older than this migration take its transaction's id: they are final.
ALTER TABLE revocation_log ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX revocation_log_xid ON revocation_log (xid);
