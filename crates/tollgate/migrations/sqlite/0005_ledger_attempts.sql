-- How many attempts at providers a request took (SPEC §8: retries on a
-- target and fallbacks to the next ones all count; 0 when it never reached
-- a provider). Rows from before this migration read as 0: not recorded.
-- A constant default adds the column without rewriting the table.
ALTER TABLE ledger ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
