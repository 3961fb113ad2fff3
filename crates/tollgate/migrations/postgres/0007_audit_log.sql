-- The audit log (SPEC §10): one row per admin mutation, from the API, the
-- CLI (through the API), the console (`/ui`) and reloads. `change` is the
-- request's fields as JSON text (like the other JSON columns, so both
-- engines share one codec), never a secret. Append-only: the trigger
-- refuses any UPDATE or DELETE, whoever issues it.
CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts      TIMESTAMPTZ NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    status  INTEGER NOT NULL,
    change  TEXT NOT NULL
);

CREATE INDEX audit_log_ts ON audit_log (ts);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
