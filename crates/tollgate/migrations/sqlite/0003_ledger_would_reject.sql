-- What `mode: shadow` policies would have rejected, per request: a JSON list
-- of `policy:code` strings (`["trial-cap:budget_exceeded"]`), NULL when none
-- did. NULL is also what every row from before this migration reads as, so
-- adding the column rewrites nothing and costs the common row nothing.
ALTER TABLE ledger ADD COLUMN would_reject TEXT;
