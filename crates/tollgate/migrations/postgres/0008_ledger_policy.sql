-- The enforcing policy that refused a request (budget, rate limit, loop
-- guard), so the console and the request log can name it beside the code.
ALTER TABLE ledger ADD COLUMN policy TEXT;
