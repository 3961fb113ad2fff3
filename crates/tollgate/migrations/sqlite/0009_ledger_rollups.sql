-- Rollups of the ledger (issue 16): per UTC hour and per UTC day, per
-- (team, key, model), the sums `/admin/spend` and budget re-seeding need;
-- only the partial hours at a window's edges are read from raw rows, so
-- totals stay exact (see `store::rollup`). `bucket` is the bucket's start
-- in Unix milliseconds, like `ledger.ts`.
--
-- Maintained by a trigger in the ledger writer's batch transaction. SQLite
-- fires AFTER INSERT only for rows really inserted, so a retried batch
-- that `ON CONFLICT DO NOTHING` skips adds nothing. The ledger is
-- append-only: inserts are all the rollups have to follow.
CREATE TABLE ledger_hourly (
    bucket             INTEGER NOT NULL,
    team               TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           INTEGER NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost               INTEGER NOT NULL,
    cache_hits         INTEGER NOT NULL,
    cache_saved        INTEGER NOT NULL,
    PRIMARY KEY (bucket, team, key_id, model)
) WITHOUT ROWID;
CREATE INDEX ledger_hourly_team ON ledger_hourly (team, bucket);
CREATE INDEX ledger_hourly_key ON ledger_hourly (key_id, bucket);

CREATE TABLE ledger_daily (
    bucket             INTEGER NOT NULL,
    team               TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           INTEGER NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost               INTEGER NOT NULL,
    cache_hits         INTEGER NOT NULL,
    cache_saved        INTEGER NOT NULL,
    PRIMARY KEY (bucket, team, key_id, model)
) WITHOUT ROWID;
CREATE INDEX ledger_daily_team ON ledger_daily (team, bucket);
CREATE INDEX ledger_daily_key ON ledger_daily (key_id, bucket);

CREATE TRIGGER ledger_rollup AFTER INSERT ON ledger
BEGIN
    INSERT INTO ledger_hourly VALUES (
        (NEW.ts / 3600000) * 3600000, NEW.team, NEW.key_id, NEW.model, 1, NEW.prompt_tokens,
        NEW.completion_tokens, NEW.cost, NEW.cache IS 'hit', NEW.cache_saved)
    ON CONFLICT (bucket, team, key_id, model) DO UPDATE SET
        requests = requests + 1,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cost = cost + excluded.cost,
        cache_hits = cache_hits + excluded.cache_hits,
        cache_saved = cache_saved + excluded.cache_saved;
    INSERT INTO ledger_daily VALUES (
        (NEW.ts / 86400000) * 86400000, NEW.team, NEW.key_id, NEW.model, 1, NEW.prompt_tokens,
        NEW.completion_tokens, NEW.cost, NEW.cache IS 'hit', NEW.cache_saved)
    ON CONFLICT (bucket, team, key_id, model) DO UPDATE SET
        requests = requests + 1,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cost = cost + excluded.cost,
        cache_hits = cache_hits + excluded.cache_hits,
        cache_saved = cache_saved + excluded.cache_saved;
END;

-- Backfill: the rows written before this migration, summed once.
INSERT INTO ledger_hourly
SELECT (ts / 3600000) * 3600000, team, key_id, model, COUNT(*), SUM(prompt_tokens),
       SUM(completion_tokens), SUM(cost), SUM(cache IS 'hit'), SUM(cache_saved)
FROM ledger WHERE true GROUP BY 1, 2, 3, 4;
INSERT INTO ledger_daily
SELECT (bucket / 86400000) * 86400000, team, key_id, model, SUM(requests), SUM(prompt_tokens),
       SUM(completion_tokens), SUM(cost), SUM(cache_hits), SUM(cache_saved)
FROM ledger_hourly WHERE true GROUP BY 1, 2, 3, 4;
