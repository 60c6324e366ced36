-- Live state: observations of the outside world, not history. Nothing here is an event; all of
-- it can be lost and is rebuilt by logging in again.

-- What a stored third-party secret is: the user's password, or a session token a network handed
-- out for it (e.g. a Matrix access token), kept instead of the password.
ALTER TABLE credentials ADD COLUMN kind text NOT NULL DEFAULT 'password'
    CHECK (kind IN ('password', 'session'));

-- Which node holds a user's live upstream connections, until when. A node renews its leases
-- while it runs; a lease that has expired is free for any node to take.
CREATE TABLE live_leases
(
    user_id    uuid PRIMARY KEY,
    node_id    uuid        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Each account's connection status, as reported by the node holding its user's lease.
CREATE TABLE account_status
(
    account_id    uuid PRIMARY KEY,
    user_id       uuid        NOT NULL,
    node_id       uuid        NOT NULL,
    state         text        NOT NULL,
    attempt       integer     NOT NULL DEFAULT 0,
    next_retry_at timestamptz,
    detail        text,
    since         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX account_status_user ON account_status (user_id);

-- The presence of each contact handle on each account, as last seen upstream. Valid only while
-- the account's status is ONLINE under a live lease (readers join on that).
CREATE TABLE presence
(
    account_id   uuid        NOT NULL,
    handle       text        NOT NULL,
    user_id      uuid        NOT NULL,
    availability text        NOT NULL,
    status       text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, handle)
);

CREATE INDEX presence_user ON presence (user_id);
