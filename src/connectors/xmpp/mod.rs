//! XMPP connector: logs a bare JID into its server, reads the roster and reports contacts'
//! presence, roster pushes, vCard profiles and direct messages, with a catch-up from the
//! account's message archive at login.
//!
//! It drives tokio-xmpp's XML stream layer itself instead of using `tokio_xmpp::Client`: that
//! client reconnects on its own, hides SASL failures (a wrong password is retried for ever, even
//! after the client is dropped) and never reports a lost connection. Here a login either
//! succeeds or fails with a clear [`ConnectorError`], and a lost connection ends the session
//! with [`ConnectorEvent::Disconnected`]; reconnecting is the caller's decision.
//!
//! The transport is TCP to the configured `host:port` (no DNS SRV lookup). Whenever the server
//! offers STARTTLS, required or not, the connection is upgraded before any login: the certificate
//! must chain to the public web PKI roots (webpki-roots) or to extra roots the connector was
//! configured with ([`XmppConnector::with_extra_roots`]), and must be valid for the JID's domain,
//! not the host connected to (RFC 6120 §13.7.2.1). A failed upgrade ends the login with
//! [`ConnectorError::Unreachable`]; it never falls back to plain TCP. A server that does not
//! offer STARTTLS (or whose offer an attacker on the path stripped) is logged into in the clear,
//! where SASL PLAIN (the password itself on the wire) is refused except on loopback; SCRAM never
//! sends the password.
//!
//! Roster: an answer to our roster request without a readable `<query/>` (RFC 6121 allows one
//! for roster versioning, but we send no version, so it tells nothing), or a refusal, is
//! [`Roster::Absent`](super::Roster::Absent): an empty list would make every contact depart.
//! Pushes then show only part of the list, so they are not reported as
//! [`ConnectorEvent::RosterChanged`].
//!
//! Contacts' vCards: after login, and for each contact a roster push adds, the session asks the
//! contact's bare JID for its vCard (XEP-0054 `vcard-temp`, which Prosody's mod_vcard and
//! mod_vcard_legacy and ejabberd's mod_vcard answer) and reports what it says for same-person
//! matching as [`ConnectorEvent::Profiles`]: a nickname (`NICKNAME`, else `FN`, else the parts
//! of `N`) and e-mail addresses; never a verified address, since the contact writes its own
//! vCard. At most a few requests are out at once, each with a timeout, while presence and
//! messages go on; profiles are reported in batches, only for contacts whose vCard holds
//! something. An error, an empty vCard or no answer in time is no profile, never a session
//! error. Each contact is asked once per session (again if it leaves the roster and comes
//! back). XEP-0054 has no change notification, so a vCard edited during the session is seen at
//! the next login — unless the contact's presence announces a new avatar hash (XEP-0153, which
//! Prosody's mod_vcard_legacy and ejabberd's mod_vcard_xupdate add to their users' presence):
//! then the vCard is fetched again and reported even if it is now empty, as it replaces what
//! was reported before. vCard4 over PEP (XEP-0292) is not asked for separately: Prosody's
//! mod_vcard_legacy answers XEP-0054 requests from the vCard4 node, so such profiles arrive
//! from Prosody; a profile published only as vCard4 on another server is not seen.
//!
//! Messages. One-to-one `chat` and `normal` messages with a body are reported; group chat,
//! headlines, errors and body-less notifications are not. An outgoing message carries
//! Switchboard's id as its stanza `id` and as an XEP-0359 `<origin-id>`, the same on every
//! attempt, and that id is [`Sent::network_id`](super::Sent::network_id). An incoming message's
//! id must not depend on how it arrives: it is the id our own server's archive gave it (the
//! XEP-0359 `<stanza-id>` stamped `by` our bare JID, which Prosody's and ejabberd's mod_mam add
//! to what they archive and deliver, and which an archive query gives as the result id), else
//! the sender's origin-id, else the stanza `id` (which offline storage keeps). Its date is the
//! earliest XEP-0203 `<delay>` stamp (offline storage, archive), else the time it arrived.
//!
//! Catch-up at login (`archive.rs`): after the initial presence, beside presence and messages,
//! the session asks disco#info of our bare JID whether the account has a message archive
//! (XEP-0313, `urn:xmpp:mam:2`). If so, and the login brought a cursor
//! ([`AccountLogin::message_cursor`](super::AccountLogin::message_cursor), an archive id), the
//! messages archived after it are fetched and reported, oldest first, 50 a page, at most 20
//! pages (1000 messages) per login; our own outgoing messages in the archive are skipped.
//! [`ConnectorEvent::MessageCursor`] follows each page. Without a cursor (a first login)
//! nothing of the past is fetched: the newest archive id becomes the cursor (`""`, "the
//! archive's start", for an empty archive). Once caught up, every live message our archive
//! stamped is followed by its id as the cursor (Switchboard stores such runs of events
//! together, so this costs one cursor write per batch). A message that offline storage
//! delivers after login and the archive also holds is reported once, with the archive's id
//! both ways. No archive, an error or no answer within 15 s: no catch-up and a debug log, never
//! a failed login; a catch-up that stops early (error, timeout, the page limit) reports no more
//! cursors in that session, so the next login goes on from where it stopped. A cursor the
//! archive no longer holds (expired) restarts from the archive's start.
//!
//! Limits. Without an archive there are no cursors, and what arrived while no session was
//! online is only what the server's offline storage delivers after the initial presence (if it
//! has one; a server with neither bounces or drops such messages). Messages sent to another
//! resource of the account (a full JID other than ours) reach only that resource: without
//! message carbons (XEP-0280, not requested) they are not seen live, and a later live cursor
//! passes them, so the catch-up does not bring them either. Archives expire messages (Prosody
//! after a week by default): after a longer absence the oldest are gone.

mod archive;
mod login;
mod session;
mod stanza;
mod vcard;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::xmlstream::Timeouts;
use tracing::debug;

use super::net::{invalid, parse_host_port, require_protocol};
use super::task::{Request, TaskControl};
use super::tls;
#[cfg(doc)]
use super::ConnectorEvent;
use super::{AccountLogin, Connector, ConnectorError, ExtraRootsError, LiveSession};
use crate::domain::ids::Protocol;
use login::{log_in, LoggedIn};
use session::{Session, CLOSE_TIMEOUT};

/// Events a session may queue before the consumer reads them; beyond that the session waits
/// (and stops reading the socket) rather than dropping presence updates.
const EVENT_QUEUE: usize = 64;
/// Silence after which the session pings the server, and how long it then waits for any answer
/// before it declares the connection dead: a dead TCP peer is otherwise never noticed.
const STREAM_TIMEOUTS: Timeouts = Timeouts {
    read_timeout: Duration::from_secs(60),
    response_timeout: Duration::from_secs(30),
};
/// Messages that may wait for the session task to send them.
const OUTBOX_QUEUE: usize = 16;

/// Logs XMPP accounts in; one instance serves every account.
#[derive(Debug, Clone)]
pub struct XmppConnector {
    /// Liveness timeouts of every stream this connector opens.
    timeouts: Timeouts,
    /// What STARTTLS trusts: the roots and the crypto provider (ring).
    tls: Arc<ClientConfig>,
}

/// Trusts the public web PKI roots only.
impl Default for XmppConnector {
    fn default() -> Self {
        Self::with_roots(tls::public_roots())
    }
}

impl XmppConnector {
    /// Trusts the public web PKI roots plus every certificate in `pem` (one or more
    /// `CERTIFICATE` blocks; other blocks are ignored), e.g. a private CA's.
    pub fn with_extra_roots(pem: &[u8]) -> Result<Self, ExtraRootsError> {
        Ok(Self::with_roots(tls::roots_with(pem)?))
    }

    fn with_roots(roots: RootCertStore) -> Self {
        Self {
            timeouts: STREAM_TIMEOUTS,
            tls: tls::client_config(roots),
        }
    }
}

#[async_trait]
impl Connector for XmppConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Xmpp
    }

    async fn connect(
        &self,
        login: &AccountLogin,
        timeout: Duration,
    ) -> Result<LiveSession, ConnectorError> {
        let target = Target::parse(login)?;
        // One deadline for the whole login: TCP connect, SASL, bind and roster.
        let logged_in = tokio::time::timeout(
            timeout,
            log_in(
                &target,
                login.credential.password()?,
                self.timeouts,
                &self.tls,
            ),
        )
        .await
        .map_err(|_| ConnectorError::Unreachable("timed out".to_owned()))??;
        debug!(server = %target.server, handle = %login.handle, "xmpp session online");

        let LoggedIn {
            stream,
            roster,
            backlog,
        } = logged_in;
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        // Dropping the control (with the LiveSession) stops the session just like a close.
        let (control, inbox) = TaskControl::<Request>::new("xmpp", OUTBOX_QUEUE, CLOSE_TIMEOUT);
        let session = Session::new(
            stream,
            target.jid,
            events_tx,
            inbox.stop,
            inbox.requests,
            roster.clone(),
            login,
        );
        control.attach(tokio::spawn(session.run(backlog)));
        Ok(LiveSession {
            roster,
            events,
            control: Arc::new(control),
            session_credential: None,
        })
    }
}

/// Where and as whom to log in, validated before any network traffic.
struct Target {
    host: String,
    port: u16,
    /// `host:port` as configured, for messages.
    server: String,
    jid: BareJid,
}

impl Target {
    fn parse(login: &AccountLogin) -> Result<Self, ConnectorError> {
        require_protocol(login, Protocol::Xmpp)?;
        let jid = BareJid::new(login.handle.as_str())
            .ok()
            .filter(|jid| jid.node().is_some())
            .ok_or_else(|| invalid("the handle must be a bare JID such as user@example.org"))?;
        let (host, port) = parse_host_port(&login.server)
            .ok_or_else(|| invalid("the server must be host:port (IPv6 addresses in brackets)"))?;
        Ok(Self {
            host,
            port,
            server: login.server.clone(),
            jid,
        })
    }
}
