-- Where each projection has read up to, written in the same transaction as its view rows.
CREATE TABLE projection_checkpoints
(
    name       text PRIMARY KEY,
    tx_id      xid8        NOT NULL DEFAULT '0',
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_view
(
    user_id       uuid PRIMARY KEY,
    user_name     text        NOT NULL,
    registered_at timestamptz NOT NULL
);

CREATE TABLE account_view
(
    user_id    uuid        NOT NULL,
    account_id uuid        NOT NULL,
    protocol   text        NOT NULL,
    server     text        NOT NULL,
    handle     text        NOT NULL,
    bound_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, account_id)
);

CREATE TABLE meta_contact_view
(
    user_id         uuid        NOT NULL,
    meta_contact_id uuid        NOT NULL,
    name            text        NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (user_id, meta_contact_id)
);

CREATE TABLE contact_view
(
    user_id         uuid        NOT NULL,
    contact_id      uuid        NOT NULL,
    account_id      uuid        NOT NULL,
    protocol        text        NOT NULL,
    handle          text        NOT NULL,
    display_name    text,
    meta_contact_id uuid,
    is_new          boolean     NOT NULL,
    added_at        timestamptz NOT NULL,
    PRIMARY KEY (user_id, contact_id)
);

CREATE INDEX contact_view_meta ON contact_view (user_id, meta_contact_id);

-- The audit log: one row per event, with no secrets and no password hashes.
CREATE TABLE history_view
(
    position         bigint PRIMARY KEY,
    user_id          uuid        NOT NULL,
    sequence         bigint      NOT NULL,
    kind             text        NOT NULL,
    summary          text        NOT NULL,
    actor            text        NOT NULL,
    request_id       text,
    recorded_at      timestamptz NOT NULL,
    contact_ids      uuid[]      NOT NULL,
    meta_contact_ids uuid[]      NOT NULL,
    details          jsonb       NOT NULL
);

CREATE INDEX history_view_user ON history_view (user_id, position);
CREATE INDEX history_view_contacts ON history_view USING gin (contact_ids);

-- Projections write here in their own transaction; every node LISTENs and feeds its
-- subscriptions, so clients never see raw events.
CREATE FUNCTION notify_view_change(p_user uuid, p_view text) RETURNS void LANGUAGE sql AS
$$
SELECT pg_notify('switchboard_views', json_build_object('user_id', p_user, 'view', p_view)::text);
$$;
