-- Timestamps are timestamptz (UTC). Money is BIGINT nano-USD. Lists and
-- metadata are JSON text, as on SQLite, so both engines share one codec.

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    policies    TEXT NOT NULL,
    budget      BIGINT,
    period      TEXT,
    models      TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

-- No foreign key to teams: keys may belong to teams defined in the config file,
-- which are not stored.
CREATE TABLE keys (
    id                    TEXT PRIMARY KEY,
    team                  TEXT NOT NULL,
    name                  TEXT,
    secret_hash           TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    previous_secret_hash  TEXT,
    previous_expires_at   TIMESTAMPTZ,
    models                TEXT,
    policies              TEXT NOT NULL,
    budget                BIGINT,
    period                TEXT,
    requests_per_minute   BIGINT,
    tokens_per_minute     BIGINT,
    expires_at            TIMESTAMPTZ,
    revoked_at            TIMESTAMPTZ,
    suspended_at          TIMESTAMPTZ,
    metadata              TEXT NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL
);

CREATE INDEX keys_team_created ON keys (team, created_at);
CREATE INDEX keys_created ON keys (created_at);

CREATE TABLE ledger (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts                 TIMESTAMPTZ NOT NULL,
    request_id         TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    team               TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT NOT NULL,
    status             INTEGER NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost               BIGINT NOT NULL,
    latency_ms         BIGINT NOT NULL,
    error_code         TEXT
);

CREATE UNIQUE INDEX ledger_request_id ON ledger (request_id);
-- INCLUDE (cost) lets spend_since, which rebuilds budget counters at start,
-- answer from the index alone.
CREATE INDEX ledger_ts ON ledger (ts);
CREATE INDEX ledger_team_ts ON ledger (team, ts) INCLUDE (cost);
CREATE INDEX ledger_key_ts ON ledger (key_id, ts) INCLUDE (cost);

CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
