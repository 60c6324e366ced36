-- The login report reads a login's events by request id, and the departures by unbinding since
-- the login before by kind and time; `loginReportUpdated` does so on every change of the user's
-- views, so neither may scan the user's whole history. The kind index serves history(kinds:).
CREATE INDEX history_view_request ON history_view (user_id, request_id);
CREATE INDEX history_view_kind ON history_view (user_id, kind, recorded_at);
