-- Sessions a user can list and revoke: each gets an id that is not its token, and where it
-- was opened from. Expired ones are swept by their expiry.
ALTER TABLE sessions ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE sessions ADD COLUMN address text;
ALTER TABLE sessions ADD COLUMN user_agent text;

CREATE UNIQUE INDEX sessions_id ON sessions (id);
CREATE INDEX sessions_expiry ON sessions (expires_at);
