-- A resend of a group that already committed answers 'committed', not
-- 'duplicate'. When the acknowledgement of a COMMIT is lost, the writer
-- cannot know the batch landed and sends it again; its own rows then look
-- like duplicates, and a 'duplicate' answer made the ledger release the
-- holds of transfers that were in fact committed. Only the final CASE
-- differs from 0100.
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
           CASE WHEN g.id = ANY (v_claimed) THEN 'committed'
                WHEN coalesce((SELECT c.committed FROM ledger_groups c
                                WHERE c.group_id = g.id), false)
                     THEN 'committed'
                WHEN g.idx = ANY (v_dup) THEN 'duplicate'
                ELSE 'aborted' END
      FROM unnest(g_ids) WITH ORDINALITY AS g(id, idx);
END
$$;
