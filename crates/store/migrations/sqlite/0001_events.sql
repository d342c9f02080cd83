-- The log. Positions are assigned by the appender inside a BEGIN IMMEDIATE transaction, so they
-- are gap-free and in commit order. Data and metadata are the exact JSON text that was hashed.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY CHECK (position > 0),
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    event_id        BLOB    NOT NULL CHECK (length(event_id) = 16),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version > 0),
    data            TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at_us  INTEGER NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL
) STRICT;

CREATE UNIQUE INDEX events_stream_version ON events (stream_id, stream_version);
CREATE UNIQUE INDEX events_event_id ON events (event_id);

-- Append-only, enforced by the database as well as by the API.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'giamsat events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'giamsat events are append-only');
END;

-- Named consumer checkpoints: the last position a consumer has fully handled.
CREATE TABLE checkpoints (
    name            TEXT    PRIMARY KEY,
    position        INTEGER NOT NULL CHECK (position >= 0),
    updated_at_us   INTEGER NOT NULL
) STRICT;
