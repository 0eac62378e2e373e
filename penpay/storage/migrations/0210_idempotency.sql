-- Idempotency keys (reliability.md §1.5): a replay window for clients and a
-- lease so two copies of one request never run at once. Scoped per principal.
-- Rows are kept at least 24 h; the reaper deletes finished ones after 72 h.

CREATE TABLE IF NOT EXISTS idempotency_keys (
    principal_id     uuid        NOT NULL,
    idem_key         text        NOT NULL CHECK (char_length(idem_key) BETWEEN 8 AND 255),
    request_method   text        NOT NULL,
    route            text        NOT NULL,
    fingerprint      bytea       NOT NULL,
    locked_until     timestamptz NULL,
    response_status  int         NULL,
    response_body    bytea       NULL,
    response_headers jsonb       NULL,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz NULL,
    PRIMARY KEY (principal_id, idem_key)
);

CREATE INDEX IF NOT EXISTS idempotency_keys_finished_idx
    ON idempotency_keys (finished_at) WHERE finished_at IS NOT NULL;
