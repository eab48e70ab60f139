-- Tessera's durable state. Times are seconds since the Unix epoch (BIGINT),
-- so one schema serves Postgres and SQLite with the same queries.

-- Signing keys: public JWK in clear, private key sealed (AEAD) under a KEK.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    algorithm      TEXT NOT NULL,
    state          TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private BYTEA NOT NULL,
    kek_id         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    -- pending keys: when the schedule lets them sign
    activates_at   BIGINT,
    activated_at   BIGINT,
    -- when the key stopped signing (retiring) and left the JWKS (retired,
    -- compromised)
    retiring_at    BIGINT,
    retired_at     BIGINT
);
-- At most one key signs at a time, whatever number of instances race to
-- create the first one.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

-- Named locks: every change to the key set first updates its row, which
-- serialises key changes across instances (a row lock on Postgres, the
-- write lock on SQLite), so each rotation step happens exactly once.
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    counter BIGINT NOT NULL
);
INSERT INTO leases (name, counter) VALUES ('signing_keys', 0);

-- Subject versions: every token carries `ver`; tokens below the current
-- version are revoked.
CREATE TABLE subjects (
    subject TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Refresh-token families: one per login (`sid`).
CREATE TABLE families (
    family_id           TEXT PRIMARY KEY,
    subject             TEXT NOT NULL,
    audience            TEXT NOT NULL,
    scope               TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    -- the subject version at login: a family below the current version was
    -- revoked with its subject, whenever its row was written
    subject_version     BIGINT NOT NULL,
    revoked_at          BIGINT
);
CREATE INDEX families_subject ON families (subject);
CREATE INDEX families_idle_expires_at ON families (idle_expires_at);
CREATE INDEX families_revoked_at ON families (revoked_at);

-- Refresh tokens: only the SHA-256 of each token is stored.
CREATE TABLE refresh_tokens (
    token_hash     BYTEA PRIMARY KEY,
    family_id      TEXT NOT NULL REFERENCES families (family_id) ON DELETE CASCADE,
    generation     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    consumed_at    BIGINT,
    successor_hash BYTEA
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Revoked token ids, kept until the token would have expired (plus skew).
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- Purpose tokens (email verification, password reset): redeemable once.
-- The binding (e.g. an email address) is kept only as its SHA-256.
CREATE TABLE purpose_tokens (
    jti          TEXT PRIMARY KEY,
    subject      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    binding_hash BYTEA,
    expires_at   BIGINT NOT NULL,
    redeemed_at  BIGINT
);
CREATE INDEX purpose_tokens_expires_at ON purpose_tokens (expires_at);

-- Service secrets other than signing keys (the refresh-successor HMAC key),
-- sealed under the KEK like private keys, so a KEK change never changes them.
CREATE TABLE secrets (
    name   TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL,
    kek_id TEXT NOT NULL
);
