-- Auditors: read-only accounts created from the command line, which may read any user's data.
-- Each of their reads is recorded in the user's own history (an AuditorRead event).
CREATE TABLE auditors
(
    id            uuid PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Auditors' bearer tokens, apart from users' so that no user query can ever match one.
CREATE TABLE auditor_sessions
(
    token_hash bytea PRIMARY KEY,
    id         uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    auditor_id uuid        NOT NULL REFERENCES auditors (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE INDEX auditor_sessions_expiry ON auditor_sessions (expires_at);
