-- Third-party secrets, encrypted (XChaCha20-Poly1305 under the master key, the account id as
-- associated data). Kept out of the event history so they can really be destroyed.
CREATE TABLE credentials
(
    account_id uuid PRIMARY KEY,
    user_id    uuid        NOT NULL,
    nonce      bytea       NOT NULL,
    ciphertext bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX credentials_user ON credentials (user_id);

-- Bearer tokens of logged-in clients; only a SHA-256 of each token is stored.
CREATE TABLE sessions
(
    token_hash bytea PRIMARY KEY,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_id);
