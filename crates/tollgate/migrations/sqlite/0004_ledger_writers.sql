-- One row per ledger writer (a gateway process): the number of the last of
-- its rows that is durable here, updated in the same transaction as the
-- rows, and when the writer was last heard from (milliseconds since the
-- epoch, SQLite's clock). A budget counter rebuilt from the ledger reads
-- these in the same snapshot as the spend, so each gateway knows exactly
-- which of its rows the rebuilt counter already holds (issue 10, hole 6).
CREATE TABLE ledger_writers (
    writer   TEXT PRIMARY KEY NOT NULL,
    seq      INTEGER NOT NULL,
    seen_at  INTEGER NOT NULL
);
