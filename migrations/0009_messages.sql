-- Direct messages, in and out. They are observations of the outside world, not decisions of the
-- user, so they live here and not in the user's event stream: command cost and replay time stay
-- independent of how much people talk. What the user decides about chat (a routing preference)
-- is an event; what was said is a row.
--
-- A message belongs to the contact it was exchanged with (one handle on one account); a
-- conversation with a person is the messages of all the person's contacts, so binding, unbinding
-- and undo regroup conversations without touching a row. Contact ids are stable across unbinding
-- and binding again, so an account bound again continues its conversations.
CREATE TABLE messages
(
    -- Global order of insertion: conversation paging (newest first).
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              uuid        NOT NULL UNIQUE,
    user_id         uuid        NOT NULL,
    contact_id      uuid        NOT NULL,
    account_id      uuid        NOT NULL,
    protocol        text        NOT NULL,
    -- The contact's handle, also for a stranger that is no contact (yet).
    handle          text        NOT NULL,
    direction       text        NOT NULL CHECK (direction IN ('IN', 'OUT')),
    body            text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('RECEIVED', 'QUEUED', 'SENT', 'FAILED')),
    -- The network's id of the message: de-duplicates what a network delivers twice (incoming);
    -- the id sent with it (outgoing: XMPP stanza id, Matrix transaction id, Nostr event id).
    network_id      text,
    -- The sender's idempotency key (outgoing): the same send twice is one message.
    client_id       text,
    -- Outgoing: sent to a person (meta-contact or contact id) without `via`, so the outbox may
    -- route it again to another of the person's contacts while it waits.
    addressed_to    uuid,
    auto_route      boolean     NOT NULL DEFAULT false,
    route_reason    text,
    failure         text,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    -- Incoming: when the sender sent it, as the network says; outgoing: when it went out.
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Per user, in commit order (see message_streams), renewed by every state change:
    -- subscriptions read every message changed after the last number they delivered, none
    -- skipped (a message that changed twice between two reads is read once, as it is now).
    change          bigint      NOT NULL
);

CREATE INDEX messages_conversation ON messages (user_id, contact_id, position DESC);
CREATE UNIQUE INDEX messages_client_id ON messages (user_id, client_id) WHERE client_id IS NOT NULL;
CREATE UNIQUE INDEX messages_network_id ON messages (account_id, network_id)
    WHERE direction = 'IN' AND network_id IS NOT NULL;
CREATE INDEX messages_changes ON messages (user_id, change);
CREATE INDEX messages_outbox ON messages (user_id, next_attempt_at) WHERE state = 'QUEUED';

-- The last change number of each user's messages. Taking the next one locks the user's row
-- until commit, so change numbers of one user commit in order.
CREATE TABLE message_streams
(
    user_id uuid PRIMARY KEY,
    last    bigint NOT NULL
);

-- How far the user has read each contact's messages (a position in `messages`).
CREATE TABLE conversation_reads
(
    user_id    uuid   NOT NULL,
    contact_id uuid   NOT NULL,
    read_up_to bigint NOT NULL,
    PRIMARY KEY (user_id, contact_id)
);

-- Where each account's messages were last read up to, as its connector said (opaque): the next
-- login fetches what the network kept after it.
CREATE TABLE message_cursors
(
    account_id uuid PRIMARY KEY,
    cursor     text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
