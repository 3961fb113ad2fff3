-- The response cache (SPEC §9), per request: `cache` says what it did
-- (`hit`, `miss`, `skip`; NULL when it did not apply, as every older row
-- reads), and `cache_saved` what a hit saved: the nano-USD the stored call
-- cost when it was made (0 otherwise).
ALTER TABLE ledger ADD COLUMN cache TEXT;
ALTER TABLE ledger ADD COLUMN cache_saved INTEGER NOT NULL DEFAULT 0;
-- `/admin/spend` sums them too: the covering indexes of 0002 carry them, so
-- team and key groups still read the index alone.
DROP INDEX ledger_team_ts_cover;
DROP INDEX ledger_key_ts_cover;
CREATE INDEX ledger_team_ts_cover ON ledger (team, ts, cost, prompt_tokens, completion_tokens, cache, cache_saved);
CREATE INDEX ledger_key_ts_cover ON ledger (key_id, ts, cost, prompt_tokens, completion_tokens, cache, cache_saved);
