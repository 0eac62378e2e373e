-- Which claim holds a key's lease. A copy of a request whose lease ran out
-- and was taken over must not release or complete the new holder's claim:
-- release and complete name the lease they hold, and touch the row only if
-- it is still theirs.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS lease int NOT NULL DEFAULT 1;
