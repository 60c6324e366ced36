-- The events table no longer sends a notification at every insert. A NOTIFY takes a lock that
-- PostgreSQL holds until the transaction's commit is on disk, so every writer of events waited
-- for every other one's flush: no group commit. Measured on this project's 2-core machine with
-- fsync on, 32 clients inserting single rows: 6,700-8,600 rows/s into a table without the
-- trigger, 190-370 rows/s into one with it.
--
-- Runners are woken in-process by the node that commits (src/projections/progress.rs), and
-- poll every 200 ms for commits of other nodes; subscribers still hear of every change through
-- `switchboard_views`, sent by the projections at their own (asynchronous) commits.
DROP TRIGGER events_notify ON events;
DROP FUNCTION events_notify();
