-- The statements of one Tessera `Issue` (crates/tessera-storage/src/sql/
-- sessions.rs: subject_version, then open_family), with fresh ids per call.
\set n random(1, 1000000000000)
SELECT version FROM subjects WHERE subject = 'bench-user-' || :n;
BEGIN;
INSERT INTO families (family_id, subject, audience, scope, client_id, created_at, last_used_at, idle_expires_at, absolute_expires_at, subject_version, extra_claims)
  VALUES ('fi-' || :client_id || '-' || :n, 'bench-user-' || :n, 'bench-api', 'read write', 'bench', 1800000000, 1800000000, 1801209600, 1802592000, 0, '{"tenant":"bench"}');
INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at)
  VALUES (sha256(('ti-' || :client_id || '-' || :n)::bytea), 'fi-' || :client_id || '-' || :n, 0, 1800000000);
END;
