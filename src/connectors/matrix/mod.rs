//! Matrix connector: logs an MXID into its homeserver over the client-server API, reads the
//! direct-message contacts from `m.direct`, and reports their presence and messages from `/sync`.
//!
//! A thin client (reqwest + serde) rather than matrix-sdk, which takes minutes and gigabytes to
//! build. The price: no end-to-end encryption. Encrypted events (`m.room.encrypted`) cannot be
//! read and are skipped (logged at debug level); messages we send are plain `m.text`, also into
//! rooms that have encryption turned on.
//!
//! - Server: the homeserver's base URL (`https://matrix.example.org`, or `http://127.0.0.1:8008`;
//!   plain `http` only to loopback, since the password and token would cross the network in
//!   the clear). No `.well-known` discovery.
//! - Handle: the full user id, `@alice:example.org` (lower case).
//! - Credential: a password logs in (`m.login.password`, device name "Switchboard") and the
//!   access token comes back as [`LiveSession::session_credential`]: the token itself, verbatim
//!   (the device id is not needed; the server knows it from the token). Later logins pass it as
//!   [`Credential::Session`], checked with `/account/whoami` against the handle. `close()`
//!   never logs the token out: it is what the next login uses.
//! - Contacts: the users in the account's `m.direct` account data (user id → DM rooms), named
//!   by their member event in one of those rooms, else their profile. Every change of `m.direct`
//!   or of those names is reported as [`ConnectorEvent::RosterChanged`]. An account without
//!   `m.direct` after the first sync is [`Roster::Absent`](super::Roster::Absent): its clients
//!   may just never have written one, which is no sign that contacts are gone; an `m.direct`
//!   that lists nobody is an empty roster.
//! - An invite to a room marked `is_direct` from a contact (in `m.direct`, or among the
//!   contacts Switchboard holds for the account) is accepted and the room added to `m.direct`:
//!   that is how someone starts a DM with us. A stranger's is a message request: reported as an
//!   [`Invitation`](super::Invitation) (once per session; its id is the room's), and left
//!   pending until the user accepts it ([`SessionControl::accept`](super::SessionControl::accept)),
//!   which joins the room, adds it to `m.direct` (the inviter becomes a contact) and reports the
//!   messages already in it (up to 400). Other invites are left alone.
//! - Messages: `m.text` and `m.notice` events (not edits) from others in a DM room with them,
//!   reported in the order they were sent, with the event id as
//!   [`IncomingMessage::id`](super::IncomingMessage::id) and `origin_server_ts` as `sent_at`.
//!   Sending goes to the newest DM room both sides are in; without one, a new DM room is
//!   created, the contact invited, and `m.direct` updated. A sent message's
//!   [`Sent::network_id`](super::Sent::network_id) is its event id.
//! - Retries: the transaction id of a message is `switchboard.<OutgoingMessage::id>`, so a
//!   retry of the same message is one event, with the same event id in the answer. Synapse
//!   (1.163) recognises it by user, device, room and transaction id, for 24 hours (a table it
//!   keeps across restarts): from any session of the same access token (its device), and only
//!   in the same room. A new device — a password login makes one — or a new DM room in between
//!   makes the retry a new event.
//! - Message cursor: the `/sync` position (`next_batch`) up to which every message was
//!   reported, as [`ConnectorEvent::MessageCursor`]: after the first sync, at once after every
//!   sync that brought messages, else at most once a minute when it moved (it only spares the
//!   next login some history with nothing to report). A login with a cursor starts from it:
//!   its first `/sync` (`since` the cursor, `full_state` for the whole state, 20 timeline events
//!   per room) reports what arrived while away; a DM room whose timeline is `limited` has a gap,
//!   fetched back with `/rooms/{room}/messages` (backwards from `prev_batch` to the cursor, pages
//!   of 40, at most 10 pages: beyond 400 messages in one room's gap, the older ones are not
//!   reported). Gaps in later syncs (over 50 events in one long poll) are fetched back the same
//!   way. A gap that cannot be fetched (after one retry) holds the cursor back for the rest of
//!   the session, so the next login fetches it again. Without a cursor (a first login) history
//!   is not reported; a cursor the server refuses (4xx, e.g. one from before a server reset)
//!   logs in the same way, with a debug log line.
//! - Presence: ours is set online at login (and by every `/sync`), offline at `close()`.
//!   Contacts' presence comes from `/sync` (the server only shares it between users who share a
//!   room): `online` → Online, `unavailable` → Away, `offline` → Offline, `status_msg` → status.
//! - The session task long-polls `/sync` (30 s). A failed one is retried three times, 1, 2 and
//!   3 s apart (or as a 429 says), then the session ends with [`ConnectorEvent::Disconnected`];
//!   a revoked access token ends it at once.

mod api;
mod session;
mod task;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;
use tracing::debug;

use super::net::UpstreamPolicy;
use super::net::{invalid, require_protocol};
use super::task::{Request, TaskControl};
use super::tls;
#[cfg(doc)]
use super::ConnectorEvent;
use super::{AccountLogin, Connector, ConnectorError, Credential, ExtraRootsError, LiveSession};
use crate::domain::ids::{Handle, Protocol};
use crate::secret::Secret;
use api::{Api, ApiError};
use session::Session;
use task::CLOSE_TIMEOUT;

/// Events a session may queue before the consumer reads them; beyond that it waits.
const EVENT_QUEUE: usize = 64;
/// Messages that may wait for the session task to send them.
const OUTBOX_QUEUE: usize = 16;
/// How long a TCP (and TLS) connection to the homeserver may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs Matrix accounts in; one instance serves every account.
#[derive(Debug, Clone)]
pub struct MatrixConnector {
    /// What HTTPS trusts: the public web PKI roots, plus any extra ones.
    tls: Arc<ClientConfig>,
    /// Where no connection may go.
    upstream: UpstreamPolicy,
    /// The HTTP clients every session shares (for servers off loopback, and on it), made at
    /// first use: a client of its own per session cost an idle account about 40 KiB.
    clients: Arc<[OnceLock<reqwest::Client>; 2]>,
}

/// Trusts the public web PKI roots only.
impl Default for MatrixConnector {
    fn default() -> Self {
        Self {
            tls: tls::client_config(tls::public_roots()),
            upstream: UpstreamPolicy::default(),
            clients: Arc::default(),
        }
    }
}

impl MatrixConnector {
    /// Trusts the public web PKI roots plus every certificate in `pem` (one or more
    /// `CERTIFICATE` blocks; other blocks are ignored), e.g. a private CA's.
    pub fn with_extra_roots(pem: &[u8]) -> Result<Self, ExtraRootsError> {
        Ok(Self {
            tls: tls::client_config(tls::roots_with(pem)?),
            ..Self::default()
        })
    }

    /// Never connects to the networks `upstream` denies.
    pub fn with_upstream(mut self, upstream: UpstreamPolicy) -> Self {
        self.upstream = upstream;
        self.clients = Arc::default();
        self
    }

    /// The HTTP client for `target`, shared by every session of this connector. A session's
    /// requests end with it: its long poll's connection closes when the poll is dropped, and
    /// an idle connection left in the pool carries nothing of the account (the access token
    /// goes with each request).
    fn http_client(&self, target: &Target) -> Result<reqwest::Client, ConnectorError> {
        self.upstream.check_url(&target.base)?;
        let slot = &self.clients[usize::from(target.loopback)];
        if let Some(client) = slot.get() {
            return Ok(client.clone());
        }
        let client = self.build_client(target.loopback)?;
        Ok(slot.get_or_init(|| client).clone())
    }

    fn build_client(&self, loopback: bool) -> Result<reqwest::Client, ConnectorError> {
        let mut builder = reqwest::Client::builder()
            .dns_resolver(Arc::new(self.upstream.clone()))
            .use_preconfigured_tls((*self.tls).clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("Switchboard/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if loopback {
            // An HTTP proxy from the environment cannot reach our own loopback.
            builder = builder.no_proxy();
        }
        builder
            .build()
            .map_err(|e| ConnectorError::Protocol(format!("HTTP client set-up failed: {e}")))
    }
}

#[async_trait]
impl Connector for MatrixConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Matrix
    }

    async fn connect(
        &self,
        login: &AccountLogin,
        timeout: Duration,
    ) -> Result<LiveSession, ConnectorError> {
        let target = Target::parse(login)?;
        let api = Api::new(self.http_client(&target)?, target.base.clone());
        // One deadline for the whole login: authentication, presence and the first sync.
        let (session, session_credential) =
            tokio::time::timeout(timeout, log_in(api, &target, login))
                .await
                .map_err(|_| ConnectorError::Unreachable("timed out".to_owned()))??;
        debug!(server = %target.base, handle = %login.handle, "matrix session online");

        let roster = session.roster();
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        // Dropping the control (with the LiveSession) stops the session just like a close.
        let (control, inbox) = TaskControl::<Request>::new("matrix", OUTBOX_QUEUE, CLOSE_TIMEOUT);
        control.attach(tokio::spawn(session.run(
            events_tx,
            inbox.stop,
            inbox.requests,
        )));
        Ok(LiveSession {
            roster,
            events,
            control: Arc::new(control),
            session_credential,
        })
    }
}

/// Where and as whom to log in, validated before any network traffic.
struct Target {
    base: Url,
    /// The handle, `@local:domain` in lower case.
    user: String,
    /// The server is on this machine: plain HTTP is acceptable, proxies are not.
    loopback: bool,
}

impl Target {
    fn parse(login: &AccountLogin) -> Result<Self, ConnectorError> {
        require_protocol(login, Protocol::Matrix)?;
        let user = parse_user_id(&login.handle).ok_or_else(|| {
            invalid("the handle must be a Matrix user id such as @alice:example.org")
        })?;
        let (base, loopback) = parse_base_url(&login.server)?;
        Ok(Self {
            base,
            user,
            loopback,
        })
    }
}

/// `@local:domain` with both parts present; the domain may carry a port.
fn parse_user_id(handle: &Handle) -> Option<String> {
    let id = handle.as_str();
    let (local, domain) = id.strip_prefix('@')?.split_once(':')?;
    let local_ok = !local.is_empty()
        && !local
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '@');
    let domain_ok = !domain.is_empty()
        && !domain
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'));
    (local_ok && domain_ok).then(|| id.to_owned())
}

/// An `http(s)://host[:port][/path]` base URL; plain HTTP only to loopback.
fn parse_base_url(server: &str) -> Result<(Url, bool), ConnectorError> {
    let bad = || invalid("the server must be the homeserver's URL, such as https://matrix.org");
    let url = Url::parse(server.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" && !loopback {
        return Err(invalid(
            "plain http would send the password and access token unencrypted: use https",
        ));
    }
    Ok((url, loopback))
}

/// Authenticates, sets our presence and reads the first sync.
async fn log_in(
    api: Api,
    target: &Target,
    login: &AccountLogin,
) -> Result<(Session, Option<Secret>), ConnectorError> {
    let credential = &login.credential;
    let (api, user_id, session_credential) = match credential {
        Credential::Password(password) => {
            let answer = api
                .login_password(&target.user, password)
                .await
                .map_err(|e| login_error(e, "login"))?;
            let token = Secret::new(answer.access_token);
            (api.with_token(token.clone()), answer.user_id, Some(token))
        }
        Credential::Session(token) => {
            let api = api.with_token(token.clone());
            let who = api
                .whoami()
                .await
                .map_err(|e| login_error(e, "the token check"))?;
            (api, who.user_id, None)
        }
    };
    if !user_id.eq_ignore_ascii_case(&target.user) {
        return Err(match credential {
            // The server says the token is someone else's: wrong credentials for this account.
            Credential::Session(_) => {
                debug!(%user_id, expected = %target.user, "the session token belongs to another user");
                ConnectorError::AuthFailed
            }
            Credential::Password(_) => invalid(format!(
                "the server logged in {user_id}, not {}",
                target.user
            )),
        });
    }
    if let Err(e) = api
        .set_presence(&user_id, "online", Duration::from_secs(10))
        .await
    {
        // The first /sync sets it online too; a server with presence off refuses this.
        debug!("cannot set presence online: {e}");
    }
    let mut session = Session::start(api, user_id, login.message_cursor.as_deref())
        .await
        .map_err(|e| login_error(e, "the first sync"))?;
    for contact in &login.contacts {
        session.know(contact.handle.as_str());
    }
    Ok((session, session_credential))
}

/// A failed login step as a [`ConnectorError`]: refusals of the credentials are
/// `AuthFailed`, no answer is `Unreachable`, anything else a protocol error.
fn login_error(error: ApiError, step: &str) -> ConnectorError {
    if error.is(StatusCode::FORBIDDEN, "M_FORBIDDEN")
        || error.is(StatusCode::FORBIDDEN, "M_USER_DEACTIVATED")
        || error.is_unknown_token()
    {
        return ConnectorError::AuthFailed;
    }
    match &error {
        ApiError::Network(reason) => ConnectorError::Unreachable(reason.clone()),
        ApiError::Status { status, .. } if error.is_transient() => {
            ConnectorError::Unreachable(format!(
                "the server could not serve the {step} (HTTP {})",
                status.as_u16()
            ))
        }
        ApiError::Status { .. } => ConnectorError::Protocol(format!("{step} failed: {error}")),
        ApiError::Decode(_) => ConnectorError::Protocol(format!(
            "{step}: the server does not answer like a Matrix homeserver ({error})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As parsed where the domain accepts it, else as stored data could still hold it: the
    /// connector checks its own input either way.
    fn handle(raw: &str) -> Handle {
        Handle::parse(Protocol::Matrix, raw).unwrap_or_else(|_| Handle::from_stored(raw))
    }

    #[test]
    fn handles_are_full_user_ids() {
        assert_eq!(
            parse_user_id(&handle("@Alice:Example.org")).as_deref(),
            Some("@alice:example.org")
        );
        assert_eq!(
            parse_user_id(&handle("@bob:localhost:8448")).as_deref(),
            Some("@bob:localhost:8448")
        );
        for bad in [
            "alice",
            "alice:example.org",
            "@alice",
            "@:example.org",
            "@alice:",
        ] {
            assert_eq!(parse_user_id(&handle(bad)), None, "{bad}");
        }
    }

    #[test]
    fn servers_are_https_urls_or_loopback_http() {
        let (url, loopback) = parse_base_url("https://matrix.example.org").unwrap();
        assert_eq!(url.as_str(), "https://matrix.example.org/");
        assert!(!loopback);
        assert!(parse_base_url(" http://127.0.0.1:8008/ ").unwrap().1);
        assert!(parse_base_url("http://localhost:8008").unwrap().1);
        assert!(parse_base_url("http://[::1]:8008").unwrap().1);
        assert!(parse_base_url("https://example.org/matrix/").is_ok());
        for bad in [
            "",
            "matrix.org",
            "127.0.0.1:8008",
            "ftp://matrix.org",
            "http://matrix.org",
            "https://user:pw@matrix.org",
            "https://matrix.org/?x=1",
            "https://matrix.org/#x",
        ] {
            assert!(
                matches!(parse_base_url(bad), Err(ConnectorError::InvalidAccount(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusals_of_credentials_are_auth_failures() {
        let status = |status: u16, errcode: &str| ApiError::Status {
            status: StatusCode::from_u16(status).unwrap(),
            errcode: errcode.to_owned(),
            message: String::new(),
            retry_after: None,
        };
        for refused in [
            status(403, "M_FORBIDDEN"),
            status(403, "M_USER_DEACTIVATED"),
            status(401, "M_UNKNOWN_TOKEN"),
        ] {
            assert!(matches!(
                login_error(refused, "login"),
                ConnectorError::AuthFailed
            ));
        }
        assert!(matches!(
            login_error(status(502, ""), "login"),
            ConnectorError::Unreachable(_)
        ));
        assert!(matches!(
            login_error(status(429, "M_LIMIT_EXCEEDED"), "login"),
            ConnectorError::Unreachable(_)
        ));
        assert!(matches!(
            login_error(status(404, "M_UNRECOGNIZED"), "login"),
            ConnectorError::Protocol(_)
        ));
        assert!(matches!(
            login_error(ApiError::Network("cannot connect".to_owned()), "login"),
            ConnectorError::Unreachable(_)
        ));
    }
}
