-- The caller that obtained each refresh-token family (its id in the
-- callers file): a refresh by any other caller is refused (RFC 6749 §6,
-- RFC 9700 §4.14). NULL for families opened without a callers file, or
-- before this column: bound to no caller.
ALTER TABLE families ADD COLUMN owner TEXT;
