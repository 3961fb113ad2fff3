-- What `mode: shadow` policies would have rejected, per request: a JSON list
-- of `policy:code` strings (`["trial-cap:budget_exceeded"]`), NULL when none
-- did, as text like the other lists so both engines share one codec. A
-- nullable column without a default is added without rewriting the table, and
-- every row from before this migration reads as NULL: none.
ALTER TABLE ledger ADD COLUMN would_reject TEXT;
