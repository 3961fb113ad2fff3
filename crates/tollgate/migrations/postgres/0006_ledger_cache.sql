-- The response cache (SPEC §9), per request: `cache` says what it did
-- (`hit`, `miss`, `skip`; NULL when it did not apply, as every older row
-- reads), and `cache_saved` what a hit saved: the nano-USD the stored call
-- cost when it was made (0 otherwise). A nullable column, and one with a
-- constant default, are both added without rewriting the table.
ALTER TABLE ledger ADD COLUMN cache TEXT;
ALTER TABLE ledger ADD COLUMN cache_saved BIGINT NOT NULL DEFAULT 0;
