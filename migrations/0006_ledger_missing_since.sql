-- When the source first answered 404/410 while fal still guaranteed the file (before
-- expires_at): such a file is retried for FALBACK_MISSING_RETRY_SECONDS from then before
-- it counts as gone. NULL: the source has not gone missing (or the copy was made).
ALTER TABLE ledger ADD COLUMN missing_since timestamptz;
