-- A rebuild drops a view's secondary indexes and builds them once at its end, instead of
-- updating them row by row (B-tree and GIN upkeep was a fifth of a history rebuild's time).
-- Their definitions wait here meanwhile, as pg_indexes gave them, so a rebuild that is cut
-- short loses none: the next start, or the next rebuild's end, makes them again.
CREATE TABLE projection_deferred_indexes
(
    name       text PRIMARY KEY,
    projection text NOT NULL,
    definition text NOT NULL
);
