-- The log. Positions are assigned by the appender while it holds a transaction-level advisory
-- lock, so they are gap-free and in commit order even with several writer processes. Data and
-- metadata are TEXT, not jsonb: jsonb reorders keys and the hash covers the exact text.
CREATE TABLE events (
    position        BIGINT  PRIMARY KEY CHECK (position > 0),
    stream_id       TEXT    COLLATE "C" NOT NULL,
    stream_version  BIGINT  NOT NULL CHECK (stream_version > 0),
    event_id        UUID    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version > 0),
    data            TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at_us  BIGINT  NOT NULL,
    prev_hash       BYTEA   NOT NULL,
    hash            BYTEA   NOT NULL
);

CREATE UNIQUE INDEX events_stream_version ON events (stream_id, stream_version);
CREATE UNIQUE INDEX events_event_id ON events (event_id);

-- Append-only, enforced by the database as well as by the API.
CREATE FUNCTION giamsat_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'giamsat events are append-only';
END
$$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION giamsat_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION giamsat_events_append_only();

-- Named consumer checkpoints: the last position a consumer has fully handled.
CREATE TABLE checkpoints (
    name            TEXT    PRIMARY KEY,
    position        BIGINT  NOT NULL CHECK (position >= 0),
    updated_at_us   BIGINT  NOT NULL
);
