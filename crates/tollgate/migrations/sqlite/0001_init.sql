-- Timestamps are INTEGER milliseconds since the Unix epoch, UTC: they sort and
-- compare as numbers. Money is INTEGER nano-USD. Lists and metadata are JSON text.

CREATE TABLE teams (
    id          TEXT PRIMARY KEY NOT NULL,
    policies    TEXT NOT NULL,
    budget      INTEGER,
    period      TEXT,
    models      TEXT,
    created_at  INTEGER NOT NULL
);

-- No foreign key to teams: keys may belong to teams defined in the config file,
-- which are not stored.
CREATE TABLE keys (
    id                    TEXT PRIMARY KEY NOT NULL,
    team                  TEXT NOT NULL,
    name                  TEXT,
    secret_hash           TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    previous_secret_hash  TEXT,
    previous_expires_at   INTEGER,
    models                TEXT,
    policies              TEXT NOT NULL,
    budget                INTEGER,
    period                TEXT,
    requests_per_minute   INTEGER,
    tokens_per_minute     INTEGER,
    expires_at            INTEGER,
    revoked_at            INTEGER,
    suspended_at          INTEGER,
    metadata              TEXT NOT NULL,
    created_at            INTEGER NOT NULL
);

CREATE INDEX keys_team_created ON keys (team, created_at);
CREATE INDEX keys_created ON keys (created_at);

CREATE TABLE ledger (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    ts                 INTEGER NOT NULL,
    request_id         TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    team               TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT NOT NULL,
    status             INTEGER NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost               INTEGER NOT NULL,
    latency_ms         INTEGER NOT NULL,
    error_code         TEXT
);

CREATE UNIQUE INDEX ledger_request_id ON ledger (request_id);
CREATE INDEX ledger_ts ON ledger (ts);
CREATE INDEX ledger_team_ts ON ledger (team, ts);
CREATE INDEX ledger_key_ts ON ledger (key_id, ts);

CREATE TABLE settings (
    name   TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);
