-- One family and its generation-0 token per pgbench client (ids 0..:clients-1).
INSERT INTO families (family_id, subject, audience, scope, client_id, created_at, last_used_at, idle_expires_at, absolute_expires_at, subject_version)
  SELECT 'fc-' || c, 'bench-chain-' || c, 'bench-api', 'read write', 'bench', 1800000000, 1800000000, 1801209600, 1802592000, 0
  FROM generate_series(0, :clients - 1) AS c;
INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at)
  SELECT sha256(('c' || c || 'g0')::bytea), 'fc-' || c, 0, 1800000000
  FROM generate_series(0, :clients - 1) AS c;
