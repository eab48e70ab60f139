-- The extra claims given at Issue (allowlisted names only) belong to the
-- session: kept with the family as a JSON object (text), so every access
-- token that Refresh mints carries them too. NULL for a family opened
-- before this migration, or with no extra claims: it refreshes with none.
ALTER TABLE families ADD COLUMN extra_claims TEXT;
