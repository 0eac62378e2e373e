-- The ledger of record: accounts, linked groups (the commit markers) and
-- transfers, which are immutable once written.

CREATE TABLE IF NOT EXISTS ledger_accounts (
    code     text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,62}$'),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Target of the transfers' composite foreign keys: an account holds one currency.
    UNIQUE (code, currency)
);

-- One row per linked group, written in the same transaction as its transfers
-- (committed = true), or by recovery to fence a group that never committed
-- (committed = false). Whoever inserts first decides; see
-- penpay/actors/ledger/store.py.
CREATE TABLE IF NOT EXISTS ledger_groups (
    group_id   uuid        PRIMARY KEY,
    committed  boolean     NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ledger_transfers (
    seq            bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             uuid    PRIMARY KEY,
    debit_account  text    NOT NULL,
    credit_account text    NOT NULL,
    amount_cents   bigint  NOT NULL CHECK (amount_cents > 0),
    currency       text    NOT NULL,
    kind           text    NOT NULL
                   CHECK (kind IN ('posted', 'pending', 'post_pending', 'void_pending')),
    pending_id     uuid    REFERENCES ledger_transfers (id),
    transaction_id text,
    code           text    NOT NULL,
    timestamp_ms   bigint  NOT NULL,
    linked_group   uuid    NOT NULL REFERENCES ledger_groups (group_id),
    CHECK (debit_account <> credit_account),
    CHECK ((kind IN ('post_pending', 'void_pending')) = (pending_id IS NOT NULL)),
    FOREIGN KEY (debit_account, currency) REFERENCES ledger_accounts (code, currency),
    FOREIGN KEY (credit_account, currency) REFERENCES ledger_accounts (code, currency)
);

-- A pending transfer is posted or voided at most once.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_transfers_one_resolution
    ON ledger_transfers (pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_transfers_by_debit ON ledger_transfers (debit_account, seq);
CREATE INDEX IF NOT EXISTS ledger_transfers_by_credit ON ledger_transfers (credit_account, seq);

CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

DROP TRIGGER IF EXISTS ledger_transfers_append_only ON ledger_transfers;
CREATE TRIGGER ledger_transfers_append_only
    BEFORE UPDATE OR DELETE ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
DROP TRIGGER IF EXISTS ledger_transfers_no_truncate ON ledger_transfers;
CREATE TRIGGER ledger_transfers_no_truncate
    BEFORE TRUNCATE ON ledger_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
DROP TRIGGER IF EXISTS ledger_groups_append_only ON ledger_groups;
CREATE TRIGGER ledger_groups_append_only
    BEFORE UPDATE OR DELETE ON ledger_groups
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

-- One group-commit batch in one statement. Groups are g_ids (1-based index);
-- transfers are flattened with t_grp naming their group. Returns per group:
--   'duplicate': an id or a pending resolution is already stored, or an
--                earlier group of the batch uses it; nothing written;
--   'committed': its marker and every row are written (now, or before);
--   'aborted':   recovery fenced it first; nothing written.
-- The writer is the only inserter of transfers, so the duplicate checks are
-- exact; the unique indexes remain the backstop.
CREATE OR REPLACE FUNCTION ledger_commit_batch(
    g_ids uuid[], t_grp int[], t_id uuid[], t_debit text[], t_credit text[],
    t_amount bigint[], t_currency text[], t_kind text[], t_pending uuid[],
    t_txn text[], t_code text[], t_ts bigint[]
) RETURNS TABLE (idx int, outcome text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_dup     int[];
    v_claimed uuid[];
BEGIN
    SELECT coalesce(array_agg(DISTINCT w.grp), '{}') INTO v_dup
      FROM (SELECT t.grp, t.id, t.pending_id,
                   min(t.grp) OVER (PARTITION BY t.id) AS first_id_grp,
                   min(t.grp) OVER (PARTITION BY t.pending_id) AS first_pending_grp
              FROM unnest(t_grp, t_id, t_pending) AS t(grp, id, pending_id)) w
     WHERE w.first_id_grp < w.grp
        OR (w.pending_id IS NOT NULL AND w.first_pending_grp < w.grp)
        OR EXISTS (SELECT 1 FROM ledger_transfers x WHERE x.id = w.id)
        OR (w.pending_id IS NOT NULL
            AND EXISTS (SELECT 1 FROM ledger_transfers x WHERE x.pending_id = w.pending_id));

    WITH claimed AS (
        INSERT INTO ledger_groups (group_id, committed)
        SELECT g.id, true
          FROM unnest(g_ids) WITH ORDINALITY AS g(id, idx)
         WHERE g.idx <> ALL (v_dup)
        ON CONFLICT (group_id) DO NOTHING
        RETURNING group_id
    )
    SELECT coalesce(array_agg(c.group_id), '{}') INTO v_claimed FROM claimed c;

    INSERT INTO ledger_transfers (id, debit_account, credit_account, amount_cents, currency,
                                  kind, pending_id, transaction_id, code, timestamp_ms,
                                  linked_group)
    SELECT t.id, t.debit, t.credit, t.amount, t.currency, t.kind, t.pending_id, t.txn,
           t.code, t.ts, g.id
      FROM unnest(t_grp, t_id, t_debit, t_credit, t_amount, t_currency, t_kind, t_pending,
                  t_txn, t_code, t_ts)
               WITH ORDINALITY AS t(grp, id, debit, credit, amount, currency, kind,
                                    pending_id, txn, code, ts, ord)
      JOIN unnest(g_ids) WITH ORDINALITY AS g(id, idx) ON g.idx = t.grp
     WHERE g.id = ANY (v_claimed)
     ORDER BY t.ord;

    RETURN QUERY
    SELECT g.idx::int,
           CASE WHEN g.idx = ANY (v_dup) THEN 'duplicate'
                WHEN g.id = ANY (v_claimed) THEN 'committed'
                WHEN (SELECT c.committed FROM ledger_groups c WHERE c.group_id = g.id)
                     THEN 'committed'
                ELSE 'aborted' END
      FROM unnest(g_ids) WITH ORDINALITY AS g(id, idx);
END
$$;

-- Recovery's half of the decision: fence every group not decided yet as
-- aborted (waiting for an in-flight writer's commit if there is one), then
-- report what each group is. Two statements, so the second sees the commit
-- the first waited for.
CREATE OR REPLACE FUNCTION ledger_resolve_groups(p_ids uuid[])
RETURNS TABLE (group_id uuid, committed boolean)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO ledger_groups (group_id, committed)
    SELECT DISTINCT r.id, false FROM unnest(p_ids) AS r(id)
    ON CONFLICT DO NOTHING;
    RETURN QUERY SELECT g.group_id, g.committed FROM ledger_groups g
                  WHERE g.group_id = ANY (p_ids);
END
$$;
