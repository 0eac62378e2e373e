-- E-mail uniqueness on the stored value itself, not on lower(email).
--
-- PostgreSQL's lower() and Python's str.lower() disagree (final sigma,
-- dotted capital I), so case is folded in Python only
-- (penpay.storage.identity.normalize_email) and lookups compare
-- email = $1; this index serves them and keeps e-mails unique. Every stored
-- row already equals lower(email) (CHECK in 0200), so rows unique under the
-- old expression index are unique here too, and the old index is redundant.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_unique ON users (email);
DROP INDEX IF EXISTS users_email_key;
ALTER INDEX users_email_unique RENAME TO users_email_key;
