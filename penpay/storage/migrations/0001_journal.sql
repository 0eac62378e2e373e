-- Event journal, snapshots and the outbox cursor.
--
-- journal: one row per event. (persistence_id, sequence) is the primary key,
-- so two writers that both believe a stream is at sequence N can never both
-- commit event N+1. position is the global commit order the outbox follows.

CREATE TABLE IF NOT EXISTS journal (
    persistence_id text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    type           text        NOT NULL,
    version        int         NOT NULL CHECK (version > 0),
    payload        bytea       NOT NULL,
    position       bigint      NOT NULL CHECK (position > 0),
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (persistence_id, sequence)
);

CREATE UNIQUE INDEX IF NOT EXISTS journal_position_key ON journal (position);

-- The last position handed out. Its single row is locked (FOR UPDATE) by
-- every append batch until commit, so positions are assigned in commit order:
-- a transaction holding lower positions is visible before any with higher ones.
CREATE TABLE IF NOT EXISTS journal_head (
    id            int    PRIMARY KEY CHECK (id = 1),
    last_position bigint NOT NULL
);
INSERT INTO journal_head (id, last_position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS snapshots (
    persistence_id text        PRIMARY KEY,
    sequence       bigint      NOT NULL CHECK (sequence >= 0),
    version        int         NOT NULL,
    payload        bytea       NOT NULL,
    saved_at       timestamptz NOT NULL DEFAULT now()
);

-- Where each outbox relay has got to (at-least-once publication).
CREATE TABLE IF NOT EXISTS outbox_cursor (
    name     text   PRIMARY KEY,
    position bigint NOT NULL
);

-- One group-commit batch in one statement (and so one round trip and one
-- implicit transaction). Requests are (persistence id, expected sequence);
-- the events are flattened with e_req naming the 1-based request each belongs
-- to. The caller guarantees distinct persistence ids within a batch.
-- Returns, per request, the stream's sequence before the batch: a request won
-- iff actual = expected; losers write nothing and do not affect the others.
CREATE OR REPLACE FUNCTION journal_append_batch(
    p_ids text[], p_expected bigint[],
    e_req int[], e_types text[], e_versions int[], e_payloads bytea[]
) RETURNS TABLE (req int, actual bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_last  bigint;
    v_added bigint;
    v_actual bigint[];
BEGIN
    -- Serialises every writer until commit (see journal_head). Each later
    -- statement takes a fresh snapshot, so it sees every earlier batch.
    SELECT h.last_position INTO v_last FROM journal_head h WHERE h.id = 1 FOR UPDATE;

    SELECT array_agg(coalesce(
               (SELECT max(j.sequence) FROM journal j WHERE j.persistence_id = r.pid), 0)
           ORDER BY r.idx)
      INTO v_actual
      FROM unnest(p_ids) WITH ORDINALITY AS r(pid, idx);

    INSERT INTO journal (persistence_id, sequence, type, version, payload, position)
    SELECT w.pid,
           w.expected + row_number() OVER (PARTITION BY e.req ORDER BY e.ord),
           e.type, e.version, e.payload,
           v_last + row_number() OVER (ORDER BY e.ord)
      FROM unnest(e_req, e_types, e_versions, e_payloads)
               WITH ORDINALITY AS e(req, type, version, payload, ord)
      JOIN unnest(p_ids, p_expected, v_actual)
               WITH ORDINALITY AS w(pid, expected, actual, idx)
        ON w.idx = e.req AND w.actual = w.expected;
    GET DIAGNOSTICS v_added = ROW_COUNT;

    IF v_added > 0 THEN
        UPDATE journal_head SET last_position = v_last + v_added WHERE id = 1;
    END IF;

    RETURN QUERY SELECT a.idx::int, a.actual
                   FROM unnest(v_actual) WITH ORDINALITY AS a(actual, idx);
END
$$;
