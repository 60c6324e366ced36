-- Catch-up readers read events below the oldest transaction holding a writing lock on `events`
-- (src/projections/horizon.rs). That is safe only if a transaction takes that lock before it
-- gets its transaction id, i.e. if rows of `events` are the first rows it writes: an INSERT
-- locks the table when it is planned and gets the id when it writes its first row. A
-- transaction that wrote elsewhere first already has an id, older than writers the reader may
-- have passed; its events could be skipped for ever. Refuse it, loudly.
CREATE FUNCTION events_first_write() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
    own xid8 := pg_current_xact_id_if_assigned();
BEGIN
    IF own IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events WHERE tx_id = own) THEN
        RAISE EXCEPTION 'events must be the first rows a transaction writes'
            USING HINT = 'write events in a transaction of their own, before any other table';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_first_write
    BEFORE INSERT
    ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION events_first_write();
