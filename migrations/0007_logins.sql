-- One row per login: its id (the login request's id, which the reconciliation events of that
-- login carry as their request id) and time. The login report is read from these and the
-- history; a login that changes nothing writes this row and no event.
CREATE TABLE logins
(
    login_id uuid PRIMARY KEY,
    user_id  uuid        NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX logins_user ON logins (user_id, at DESC);
