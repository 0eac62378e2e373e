-- The transactions read model: one row per deposit or withdrawal, kept up to
-- date from the transaction actors' status changes. It is not the source of
-- truth for money (the journal and the ledger are); it answers the list and
-- lookup routes, the daily caps, and maps an Idempotency-Key to the
-- transaction it created (so a retried request finds it again).
CREATE TABLE transactions (
    id               uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL,
    type             text        NOT NULL CHECK (type IN ('deposit', 'withdrawal')),
    idempotency_key  text        NOT NULL,
    status           text        NOT NULL,
    usd_cents        bigint      NOT NULL CHECK (usd_cents > 0),
    kes_cents        bigint      NOT NULL CHECK (kes_cents > 0),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    view             jsonb       NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX transactions_by_user ON transactions (user_id, created_at DESC, id DESC);
CREATE INDEX transactions_by_status ON transactions (status, created_at DESC);
