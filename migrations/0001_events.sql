-- The event store: postgres-es's table plus what a safe catch-up reader needs.
-- postgres-es names its columns in its INSERT, so the extra columns fill themselves.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        jsonb                        NOT NULL,
    metadata       jsonb                        NOT NULL,
    -- Global order of insertion; unique, but NOT a safe commit order on its own.
    position       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- The writing transaction: readers order by (tx_id, position) and only read transactions
    -- older than their snapshot's xmin, so nothing that commits late is skipped.
    tx_id          xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    -- The writing transaction's timestamp: every event of one command shares it.
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_commit_order ON events (tx_id, position);

-- Wakes catch-up readers; the notification is delivered when the writing transaction commits.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('switchboard_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify
    AFTER INSERT
    ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION events_notify();

-- Events are forever.
CREATE FUNCTION events_immutable() RETURNS trigger LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'events are immutable';
END
$$;

CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE
    ON events
    FOR EACH ROW
EXECUTE FUNCTION events_immutable();
