-- Every Daraja callback PenPay accepted, verbatim, written before it is
-- processed. Daraja delivers each callback once and never again, so this is
-- the only record of what M-Pesa said if processing fails or is disputed;
-- operators read it when they resolve a transaction. Append-only.
CREATE TABLE raw_callbacks (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN (
                        'stk', 'b2c_result', 'b2c_timeout',
                        'b2c_status_result', 'b2c_status_timeout')),
    transaction_id  uuid        NOT NULL,
    source          text        NOT NULL,
    received_at     timestamptz NOT NULL,
    body            bytea       NOT NULL
);
CREATE INDEX raw_callbacks_by_transaction ON raw_callbacks (transaction_id, id);
