-- A team created over the admin API may opt out of the response cache
-- (SPEC §9 `cache: false`), as a config team can.
ALTER TABLE teams ADD COLUMN cache BOOLEAN NOT NULL DEFAULT 1;
