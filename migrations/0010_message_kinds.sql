-- What an incoming row is: a text message, or a stranger's invitation to talk (a Matrix
-- invitation to a direct chat), which makes a message request before anything they wrote can be
-- read. Its network_id is the invitation's (the room's id), so the invitation a network shows
-- again at every login is stored once.
ALTER TABLE messages
    ADD COLUMN kind text NOT NULL DEFAULT 'TEXT' CHECK (kind IN ('TEXT', 'INVITATION'));
