//! The few client-server API calls the Matrix connector makes, and the wire types it reads.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::secret::Secret;

/// Requests other than the long poll; generous, since a homeserver under load can be slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may hold a `/sync` open when nothing happens.
pub(super) const SYNC_POLL: Duration = Duration::from_secs(30);
/// Extra wait on top of [`SYNC_POLL`] before a `/sync` counts as lost.
const SYNC_GRACE: Duration = Duration::from_secs(20);

/// Why a request failed. None of the variants carries the access token or a password.
#[derive(Debug)]
pub(super) enum ApiError {
    /// No answer: connection refused or reset, DNS, TLS, timeout.
    Network(String),
    /// The server answered with an error status; `errcode` is the Matrix error code if any.
    Status {
        status: StatusCode,
        errcode: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server answered 2xx with a body that is not what the API promises.
    Decode(String),
}

impl ApiError {
    pub(super) fn is(&self, code: StatusCode, errcode: &str) -> bool {
        matches!(self, ApiError::Status { status, errcode: e, .. } if *status == code && e == errcode)
    }

    /// Worth retrying: the network, a rate limit or a server-side failure.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            ApiError::Network(_) => true,
            ApiError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            ApiError::Decode(_) => false,
        }
    }

    /// The access token was logged out, expired or never existed.
    pub(super) fn is_unknown_token(&self) -> bool {
        self.is(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Network(reason) => f.write_str(reason),
            ApiError::Status {
                status,
                errcode,
                message,
                ..
            } => {
                write!(f, "HTTP {}", status.as_u16())?;
                if !errcode.is_empty() {
                    write!(f, " {errcode}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            ApiError::Decode(reason) => write!(f, "unexpected answer: {reason}"),
        }
    }
}

/// One homeserver, as one user once logged in. Cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub(super) struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<Secret>,
}

#[derive(Deserialize)]
pub(super) struct LoginResponse {
    pub user_id: String,
    pub access_token: String,
}

#[derive(Deserialize)]
pub(super) struct WhoAmI {
    pub user_id: String,
}

#[derive(Deserialize)]
struct RoomId {
    room_id: String,
}

#[derive(Deserialize)]
struct EventId {
    event_id: String,
}

#[derive(Deserialize)]
struct Displayname {
    #[serde(default)]
    displayname: Option<String>,
}

/// A `/sync` answer, reduced to what the connector reads; every part may be missing.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub account_data: Events,
    #[serde(default)]
    pub presence: Events,
    #[serde(default)]
    pub rooms: Rooms,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Events {
    #[serde(default)]
    pub events: Vec<Event>,
}

/// Any event: room, state, stripped state, presence or account data. Only the fields the
/// connector reads; content stays JSON until it is known what it is.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Event {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(default)]
    pub content: Value,
    #[serde(default)]
    pub origin_server_ts: Option<i64>,
    #[serde(default)]
    pub event_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Rooms {
    #[serde(default)]
    pub join: HashMap<String, JoinedRoom>,
    #[serde(default)]
    pub invite: HashMap<String, InvitedRoom>,
    #[serde(default)]
    pub leave: HashMap<String, JoinedRoom>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct JoinedRoom {
    #[serde(default)]
    pub state: Events,
    #[serde(default)]
    pub timeline: Timeline,
}

/// A room's new events in one sync, oldest first.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Timeline {
    #[serde(default)]
    pub events: Vec<Event>,
    /// More happened since the last sync than the filter's limit: the events between then and
    /// `events` are left out, and can be fetched back from `prev_batch`.
    #[serde(default)]
    pub limited: bool,
    #[serde(default)]
    pub prev_batch: Option<String>,
}

/// One page of `/rooms/{room}/messages`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct MessagesPage {
    /// In the direction asked for (backwards: newest first).
    #[serde(default)]
    pub chunk: Vec<Event>,
    /// Where the next page starts; none when there is no more.
    #[serde(default)]
    pub end: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct InvitedRoom {
    #[serde(default)]
    pub invite_state: Events,
}

/// The `/sync` filter: m.direct, presence, and in rooms only members and messages (encrypted
/// ones too, to say why they are skipped). `timeline_limit` caps the events per room and sync.
pub(super) fn sync_filter(timeline_limit: u32) -> String {
    sync_filter_value(timeline_limit).to_string()
}

/// The filter of a session's first `/sync`, made unique to the session by excluding a room
/// that cannot exist (`.invalid` is reserved). Synapse answers a request equal to one it
/// answered in the last two minutes (same user, device, filter, `since`) from a cache, so
/// a session started again soon after another (a quick re-login, a reconnection) would read
/// the state as the old session first saw it, then every change since again: contacts would
/// be renamed back and forth. A key of its own gets the state as it is now. A first sync from
/// a message cursor needs it too: a login that ends before a newer cursor is kept starts the
/// next one from the same cursor.
pub(super) fn first_sync_filter(timeline_limit: u32, session: &str) -> String {
    let mut filter = sync_filter_value(timeline_limit);
    filter["room"]["not_rooms"] = json!([format!("!switchboard-{session}:first-sync.invalid")]);
    filter.to_string()
}

fn sync_filter_value(timeline_limit: u32) -> serde_json::Value {
    json!({
        "account_data": { "types": ["m.direct"] },
        "presence": { "types": ["m.presence"] },
        "room": {
            "account_data": { "types": [] },
            "ephemeral": { "types": [] },
            "state": { "types": ["m.room.member"] },
            "timeline": {
                "types": ["m.room.message", "m.room.encrypted", "m.room.member"],
                "limit": timeline_limit,
            },
        },
    })
}

/// The room event filter of `/messages`: only what can be a message.
fn messages_filter() -> String {
    json!({ "types": ["m.room.message", "m.room.encrypted"] }).to_string()
}

impl Api {
    pub(super) fn new(http: reqwest::Client, base: Url) -> Self {
        Self {
            http,
            base,
            token: None,
        }
    }

    pub(super) fn with_token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    pub(super) async fn login_password(
        &self,
        user: &str,
        password: &Secret,
    ) -> Result<LoginResponse, ApiError> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password.expose(),
            "initial_device_display_name": "Switchboard",
        });
        self.call(Method::POST, &["login"], &[], Some(body), REQUEST_TIMEOUT)
            .await
    }

    pub(super) async fn whoami(&self) -> Result<WhoAmI, ApiError> {
        self.call(
            Method::GET,
            &["account", "whoami"],
            &[],
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `presence` is `online`, `unavailable` or `offline`.
    pub(super) async fn set_presence(
        &self,
        user: &str,
        presence: &str,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let body = json!({ "presence": presence });
        self.call::<Value>(
            Method::PUT,
            &["presence", user, "status"],
            &[],
            Some(body),
            timeout,
        )
        .await
        .map(drop)
    }

    /// A `/sync`; `wait` is how long the server may hold it open waiting for news. With
    /// `full_state`, a sync `since` a position still carries the whole state (every joined room
    /// with its members, all of `m.direct`, everyone's presence), as a first sync does, but
    /// only the events since then in the timelines.
    pub(super) async fn sync(
        &self,
        since: Option<&str>,
        filter: &str,
        wait: Duration,
        full_state: bool,
    ) -> Result<SyncResponse, ApiError> {
        let wait_ms = wait.as_millis().to_string();
        let mut query = vec![
            ("filter", filter),
            ("timeout", wait_ms.as_str()),
            ("set_presence", "online"),
        ];
        if let Some(since) = since {
            query.push(("since", since));
        }
        if full_state {
            query.push(("full_state", "true"));
        }
        self.call(Method::GET, &["sync"], &query, None, wait + SYNC_GRACE)
            .await
    }

    /// The `m.direct` account data as the server has it now.
    pub(super) async fn direct(&self, user: &str) -> Result<Value, ApiError> {
        self.call(
            Method::GET,
            &["user", user, "account_data", "m.direct"],
            &[],
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub(super) async fn set_direct(
        &self,
        user: &str,
        direct: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_value(direct).map_err(|e| ApiError::Decode(e.to_string()))?;
        self.call::<Value>(
            Method::PUT,
            &["user", user, "account_data", "m.direct"],
            &[],
            Some(body),
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// A new private room marked as a DM, with `invitee` invited; returns its id.
    pub(super) async fn create_dm(&self, invitee: &str) -> Result<String, ApiError> {
        let body = json!({
            "preset": "trusted_private_chat",
            "is_direct": true,
            "invite": [invitee],
        });
        let room: RoomId = self
            .call(
                Method::POST,
                &["createRoom"],
                &[],
                Some(body),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(room.room_id)
    }

    pub(super) async fn join(&self, room: &str) -> Result<(), ApiError> {
        self.call::<Value>(
            Method::POST,
            &["join", room],
            &[],
            Some(json!({})),
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Sends an `m.text` message; `txn` makes a retried request idempotent. Returns the
    /// event's id (the same one again for a retry the server recognises).
    pub(super) async fn send_text(
        &self,
        room: &str,
        txn: &str,
        body: &str,
    ) -> Result<String, ApiError> {
        let content = json!({ "msgtype": "m.text", "body": body });
        let sent: EventId = self
            .call(
                Method::PUT,
                &["rooms", room, "send", "m.room.message", txn],
                &[],
                Some(content),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(sent.event_id)
    }

    /// Up to `limit` message events of `room` from `from` backwards (newest first), stopping
    /// at `to` (a sync position) if given.
    pub(super) async fn messages_before(
        &self,
        room: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: u32,
    ) -> Result<MessagesPage, ApiError> {
        let limit = limit.to_string();
        let filter = messages_filter();
        let mut query = vec![
            ("dir", "b"),
            ("limit", limit.as_str()),
            ("filter", filter.as_str()),
        ];
        // Without `from`, the room's end (client-server API v1.3 and later).
        if let Some(from) = from {
            query.push(("from", from));
        }
        if let Some(to) = to {
            query.push(("to", to));
        }
        self.call(
            Method::GET,
            &["rooms", room, "messages"],
            &query,
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// The user's global display name, if the server shows one.
    pub(super) async fn display_name(&self, user: &str) -> Result<Option<String>, ApiError> {
        let answer: Displayname = self
            .call(
                Method::GET,
                &["profile", user, "displayname"],
                &[],
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(answer.displayname)
    }

    /// `/_matrix/client/v3/` + `path` (each segment percent-encoded), with the access token if
    /// there is one, and the answer's JSON as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ApiError::Decode("the server URL cannot take a path".to_owned()))?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(network_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(e.to_string()));
        }
        #[derive(Deserialize, Default)]
        struct MatrixError {
            #[serde(default)]
            errcode: String,
            #[serde(default)]
            error: String,
            #[serde(default)]
            retry_after_ms: Option<u64>,
        }
        let error: MatrixError = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(ApiError::Status {
            status,
            errcode: error.errcode,
            message: error.error.chars().take(200).collect(),
            retry_after: error.retry_after_ms.map(Duration::from_millis),
        })
    }
}

/// A transport failure in words; never headers or bodies.
fn network_error(error: reqwest::Error) -> ApiError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    // The innermost cause says what went wrong ("Connection refused", "invalid peer
    // certificate: UnknownIssuer"); the layers above it only say that a request failed. No URL:
    // it would bring the sync token and filter along.
    let error = error.without_url();
    let mut cause: &dyn std::error::Error = &error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    ApiError::Network(format!("{what}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sessions_first_sync_has_a_filter_of_its_own_that_selects_the_same() {
        let a: serde_json::Value = serde_json::from_str(&first_sync_filter(1, "aaa")).unwrap();
        let b: serde_json::Value = serde_json::from_str(&first_sync_filter(1, "bbb")).unwrap();
        assert_ne!(a, b, "Synapse would answer the second from its cache");
        let mut plain: serde_json::Value = serde_json::from_str(&sync_filter(1)).unwrap();
        plain["room"]["not_rooms"] = a["room"]["not_rooms"].clone();
        assert_eq!(a, plain, "only an impossible room is left out");
        let excluded = a["room"]["not_rooms"][0].as_str().unwrap();
        assert!(excluded.ends_with(".invalid"), "{excluded}");
    }
}
