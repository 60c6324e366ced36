-- Failed (and, for registrations, all) attempts per key (a user name, a client address, or
-- both), for the exponential delay of the next attempt. Shared by all nodes.
CREATE TABLE throttle
(
    key             text PRIMARY KEY,
    attempts        integer     NOT NULL,
    last_attempt_at timestamptz NOT NULL,
    blocked_until   timestamptz NOT NULL
);
