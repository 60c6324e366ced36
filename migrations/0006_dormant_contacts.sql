-- A contact that leaves the roster (removed upstream, its account unbound, removed by hand) stays
-- in contact_view with why and since when: its meta-contact membership is kept, dormant, for its
-- return. NULL: on the list.
ALTER TABLE contact_view
    ADD COLUMN departed_reason text,
    ADD COLUMN departed_at     timestamptz;
