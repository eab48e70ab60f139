-- The caller that issued each purpose token: only it may redeem it. NULL
-- for tokens issued without a callers file, or before this column: bound
-- to no caller.
ALTER TABLE purpose_tokens ADD COLUMN owner TEXT;
