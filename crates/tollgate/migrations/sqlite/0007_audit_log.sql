-- The audit log (SPEC §10): one row per admin mutation, from the API, the
-- CLI (through the API), the console (`/ui`) and reloads. `ts` is integer
-- milliseconds since the epoch like every other time here; `change` is the
-- request's fields as JSON text, never a secret. Append-only: the triggers
-- refuse any UPDATE or DELETE, whoever issues it.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    status  INTEGER NOT NULL,
    change  TEXT NOT NULL
);

CREATE INDEX audit_log_ts ON audit_log (ts);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
