-- Every revocation as it becomes durable, numbered, so each instance's
-- revocation view catches up from the store (the truth) by a cursor,
-- whatever happened to Redis. `value`: a jti's expiry; a family's
-- revocation time; a subject's new version; 0 for a key. Rows older than an
-- hour are purged: a view that far behind reloads in full.
CREATE TABLE revocation_log (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    target      TEXT NOT NULL,
    value       BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX revocation_log_recorded_at ON revocation_log (recorded_at);
