-- Rollups of the ledger (issue 16): per UTC hour and per UTC day, per
-- (team, key, model), the sums `/admin/spend` and budget re-seeding need.
-- A month of spend then reads ~30 daily rows per (team, key, model) instead
-- of every request of the month; only the partial hours at a window's edges
-- are read from raw rows, so totals stay exact (see `store::rollup`).
--
-- Maintained off the request path, inside the ledger writer's batch
-- transaction, by a statement trigger over the rows the INSERT really
-- inserted (its transition table): a retried batch that `ON CONFLICT DO
-- NOTHING` skips adds nothing, and a rollup is never ahead of or behind
-- the rows it sums, whoever inserts them (the writer, a journal replay,
-- a bulk COPY). The ledger is append-only: nothing updates or deletes its
-- rows, so inserts are all the rollups have to follow.
CREATE TABLE ledger_hourly (
    bucket             TIMESTAMPTZ NOT NULL,
    team               TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           BIGINT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost               BIGINT NOT NULL,
    cache_hits         BIGINT NOT NULL,
    cache_saved        BIGINT NOT NULL,
    PRIMARY KEY (bucket, team, key_id, model)
);
CREATE INDEX ledger_hourly_team ON ledger_hourly (team, bucket);
CREATE INDEX ledger_hourly_key ON ledger_hourly (key_id, bucket);

-- The same columns, primary key and (team, key) indexes.
CREATE TABLE ledger_daily (LIKE ledger_hourly INCLUDING ALL);

-- Rows are summed in primary-key order so that concurrent writers (one per
-- gateway replica) lock the rollup rows they share in the same order and
-- wait for each other instead of deadlocking.
CREATE FUNCTION ledger_rollup() RETURNS trigger AS $$
BEGIN
    INSERT INTO ledger_hourly
    SELECT date_trunc('hour', ts, 'UTC'), team, key_id, model, COUNT(*), SUM(prompt_tokens),
           SUM(completion_tokens), SUM(cost), COUNT(*) FILTER (WHERE cache = 'hit'), SUM(cache_saved)
    FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (bucket, team, key_id, model) DO UPDATE SET
        requests = ledger_hourly.requests + excluded.requests,
        prompt_tokens = ledger_hourly.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = ledger_hourly.completion_tokens + excluded.completion_tokens,
        cost = ledger_hourly.cost + excluded.cost,
        cache_hits = ledger_hourly.cache_hits + excluded.cache_hits,
        cache_saved = ledger_hourly.cache_saved + excluded.cache_saved;
    INSERT INTO ledger_daily
    SELECT date_trunc('day', ts, 'UTC'), team, key_id, model, COUNT(*), SUM(prompt_tokens),
           SUM(completion_tokens), SUM(cost), COUNT(*) FILTER (WHERE cache = 'hit'), SUM(cache_saved)
    FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (bucket, team, key_id, model) DO UPDATE SET
        requests = ledger_daily.requests + excluded.requests,
        prompt_tokens = ledger_daily.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = ledger_daily.completion_tokens + excluded.completion_tokens,
        cost = ledger_daily.cost + excluded.cost,
        cache_hits = ledger_daily.cache_hits + excluded.cache_hits,
        cache_saved = ledger_daily.cache_saved + excluded.cache_saved;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_rollup AFTER INSERT ON ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_rollup();

-- Backfill: the rows written before this migration, summed once.
INSERT INTO ledger_hourly
SELECT date_trunc('hour', ts, 'UTC'), team, key_id, model, COUNT(*), SUM(prompt_tokens),
       SUM(completion_tokens), SUM(cost), COUNT(*) FILTER (WHERE cache = 'hit'), SUM(cache_saved)
FROM ledger GROUP BY 1, 2, 3, 4;
INSERT INTO ledger_daily
SELECT date_trunc('day', bucket, 'UTC'), team, key_id, model, SUM(requests), SUM(prompt_tokens),
       SUM(completion_tokens), SUM(cost), SUM(cache_hits), SUM(cache_saved)
FROM ledger_hourly GROUP BY 1, 2, 3, 4;
