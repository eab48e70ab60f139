-- The statements of one Tessera `Refresh` (sessions.rs: rotate), along one
-- chain per client: generation :g replaces generation :g - 1. Run with
-- -D g=0 after setup.sql created each client's family and first token.
\set g :g + 1
\set p :g - 1
BEGIN;
UPDATE families SET last_used_at = last_used_at
  WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = sha256(('c' || :client_id || 'g' || :p)::bytea));
SELECT f.family_id, f.subject, f.audience, f.scope, f.client_id, f.idle_expires_at,
       f.absolute_expires_at, f.revoked_at, t.consumed_at, t.successor_hash, t.generation,
       f.subject_version,
       COALESCE((SELECT s.version FROM subjects s WHERE s.subject = f.subject), 0)
  FROM refresh_tokens t JOIN families f ON f.family_id = t.family_id
  WHERE t.token_hash = sha256(('c' || :client_id || 'g' || :p)::bytea);
INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at)
  VALUES (sha256(('c' || :client_id || 'g' || :g)::bytea), 'fc-' || :client_id, :g, 1800000000);
UPDATE refresh_tokens SET consumed_at = 1800000000, successor_hash = sha256(('c' || :client_id || 'g' || :g)::bytea)
  WHERE token_hash = sha256(('c' || :client_id || 'g' || :p)::bytea);
UPDATE families SET last_used_at = 1800000000, idle_expires_at = 1801209600 WHERE family_id = 'fc-' || :client_id;
END;
