-- The statements of one Tessera `Refresh` (sessions.rs: rotate), along one
-- chain per client: generation :g replaces generation :g - 1. Run with
-- -D g=0 after setup.sql created each client's family and first token.
\set g :g + 1
\set p :g - 1
BEGIN;
SELECT f.family_id FROM families f JOIN refresh_tokens t ON t.family_id = f.family_id
  WHERE t.token_hash = sha256(('c' || :client_id || 'g' || :p)::bytea) FOR UPDATE OF f;
SELECT f.family_id, f.subject, f.audience, f.scope, f.client_id,
       f.idle_expires_at, f.absolute_expires_at, f.subject_version, f.revoked_at,
       f.extra_claims, t.generation, t.consumed_at, t.successor_hash,
       COALESCE((SELECT v.version FROM subjects v WHERE v.subject = f.subject), 0) AS current_version,
       CAST(CASE WHEN s.token_hash IS NOT NULL AND s.consumed_at IS NULL THEN 1 ELSE 0 END AS BIGINT) AS successor_current
  FROM refresh_tokens t
  JOIN families f ON f.family_id = t.family_id
  LEFT JOIN refresh_tokens s ON s.token_hash = t.successor_hash
  WHERE t.token_hash = sha256(('c' || :client_id || 'g' || :p)::bytea);
INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at)
  VALUES (sha256(('c' || :client_id || 'g' || :g)::bytea), 'fc-' || :client_id, :g, 1800000000);
UPDATE refresh_tokens SET consumed_at = 1800000000, successor_hash = sha256(('c' || :client_id || 'g' || :g)::bytea)
  WHERE token_hash = sha256(('c' || :client_id || 'g' || :p)::bytea);
UPDATE families SET last_used_at = 1800000000, idle_expires_at = 1801209600 WHERE family_id = 'fc-' || :client_id;
END;
