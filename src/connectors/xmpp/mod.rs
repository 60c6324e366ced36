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
//! Transport (`transport.rs`, `dns.rs`). The account's server says where to connect:
//! - empty: the JID's domain, found through DNS as below;
//! - a domain (`example.org`, no port): that domain's DNS SRV records, `_xmpps-client._tcp`
//!   (direct TLS, XEP-0368) and `_xmpp-client._tcp` (STARTTLS, RFC 6120 §3.2) mixed into one
//!   RFC 2782 order (priority, then a weighted draw), each target tried in turn; without
//!   records, the domain's own addresses on port 5222. A record with target "." alone says
//!   there is no service. The DNS server is the system's (resolv.conf) unless the connector was
//!   given one ([`ConnectorOptions::dns_server`]), which then also gives the targets' addresses;
//! - `host:port` (IPv6 in brackets): that server only, no SRV, resolved by the system;
//! - `xmpps://host:port`: the same over direct TLS.
//!
//! Trying the next server happens for failures before SASL (connection, TLS, stream, TLS
//! required but missing): no server is given credentials unless it is the one logged into. A
//! server that drops packets is given up after 5 s while others are left; the whole login
//! stays within its deadline.
//!
//! TLS. Direct TLS starts TLS on connecting, with ALPN `xmpp-client`. Otherwise, whenever the
//! server offers STARTTLS, required or not, the connection is upgraded before any login. Either
//! way the certificate must chain to the public web PKI roots (webpki-roots) or to extra roots
//! the connector was configured with ([`XmppConnector::with_extra_roots`]), and must be valid
//! for the JID's domain (also the SNI name), not the host connected to (RFC 6120 §13.7.2.1). A
//! failed handshake ends that attempt with [`ConnectorError::Unreachable`]; it never falls back
//! to plain TCP. A server that does not offer STARTTLS (or whose offer an attacker on the path
//! stripped) is refused when TLS is required ([`RequireTls`]; by default it is, except with a
//! server the account names as loopback — `localhost`, `127.0.0.1`, `[::1]` — that is on
//! loopback indeed: DNS answers never make it optional), with [`ConnectorError::Unreachable`]
//! saying so and nothing but the stream header sent. Where it is not required, the login goes on in the clear, where SASL PLAIN (the
//! password itself on the wire) is refused except on loopback; SCRAM never sends the password.
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
mod dns;
mod login;
mod session;
mod stanza;
mod transport;
mod vcard;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_rustls::rustls::RootCertStore;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::xmlstream::Timeouts;
use tracing::debug;

use super::net::{invalid, parse_host_port, require_protocol};
use super::task::{Request, TaskControl};
use super::tls;
use super::{
    AccountLogin, Connector, ConnectorError, ConnectorOptions, ExtraRootsError, LiveSession,
};
#[cfg(doc)]
use super::{ConnectorEvent, RequireTls};
use crate::domain::ids::Protocol;
use dns::{Dns, Endpoint};
use login::{log_in, LoggedIn};
use session::{Session, CLOSE_TIMEOUT};
use transport::{Route, Transport};

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

/// The forms of the account's server field, for refusals.
const SERVER_FORMS: &str = "the server must be empty (the JID's domain, found through DNS), a \
    domain (its DNS SRV records), host:port, or xmpps://host:port for direct TLS (IPv6 addresses \
    in brackets)";

/// Logs XMPP accounts in; one instance serves every account.
#[derive(Debug, Clone)]
pub struct XmppConnector {
    transport: Transport,
}

/// Trusts the public web PKI roots only; the other options at their defaults.
impl Default for XmppConnector {
    fn default() -> Self {
        Self::new(tls::public_roots(), &ConnectorOptions::default())
    }
}

impl XmppConnector {
    /// Trusts the public web PKI roots plus every certificate in `pem` (one or more
    /// `CERTIFICATE` blocks; other blocks are ignored), e.g. a private CA's.
    pub fn with_extra_roots(pem: &[u8]) -> Result<Self, ExtraRootsError> {
        Ok(Self::new(
            tls::roots_with(pem)?,
            &ConnectorOptions::default(),
        ))
    }

    /// Set up as `options` say: extra roots, when TLS is required, the DNS server.
    pub fn with_options(options: &ConnectorOptions) -> Result<Self, ExtraRootsError> {
        let roots = match &options.extra_roots_pem {
            Some(pem) => tls::roots_with(pem)?,
            None => tls::public_roots(),
        };
        Ok(Self::new(roots, options))
    }

    fn new(roots: RootCertStore, options: &ConnectorOptions) -> Self {
        let starttls = tls::client_config(roots);
        Self {
            transport: Transport {
                timeouts: STREAM_TIMEOUTS,
                direct_tls: transport::direct_tls_config(&starttls),
                starttls,
                require_tls: options.xmpp_require_tls,
                dns: Dns::new(options.dns_server),
                upstream: options.upstream.clone(),
            },
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
        let password = login.credential.password()?;
        // One deadline for the whole login: DNS, TCP connect, TLS, SASL, bind and roster.
        let logged_in = tokio::time::timeout(timeout, async {
            let opened = self.transport.open(&target).await?;
            log_in(opened, &target, password).await
        })
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
    route: Route,
    /// The server as configured (the JID's domain when empty), for messages.
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
        let server = login.server.trim();
        let route =
            parse_route(server, jid.domain().as_str()).ok_or_else(|| invalid(SERVER_FORMS))?;
        Ok(Self {
            route,
            server: if server.is_empty() {
                jid.domain().to_string()
            } else {
                server.to_owned()
            },
            jid,
        })
    }
}

/// The server field's form (see the module docs); `None` if it has none of them.
fn parse_route(server: &str, jid_domain: &str) -> Option<Route> {
    let fixed = |(host, port), direct_tls| {
        Route::Fixed(Endpoint {
            host,
            port,
            direct_tls,
            from_dns: false,
        })
    };
    if server.is_empty() {
        return Some(Route::Srv(jid_domain.to_owned()));
    }
    if let Some((scheme, address)) = server.split_once("://") {
        return scheme
            .eq_ignore_ascii_case("xmpps")
            .then(|| parse_host_port(address))
            .flatten()
            .map(|address| fixed(address, true));
    }
    if let Some(address) = parse_host_port(server) {
        return Some(fixed(address, false));
    }
    // An address alone is no domain to look up, and `::1:5222` would be read as one.
    if server.parse::<IpAddr>().is_ok() {
        return None;
    }
    let domain = server.strip_suffix('.').unwrap_or(server);
    let plausible = domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    plausible.then(|| Route::Srv(domain.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(host: &str, port: u16, direct_tls: bool) -> Option<Route> {
        Some(Route::Fixed(Endpoint {
            host: host.to_owned(),
            port,
            direct_tls,
            from_dns: false,
        }))
    }

    #[test]
    fn the_server_field_names_a_server_or_a_domain_to_look_up() {
        let srv = |domain: &str| Some(Route::Srv(domain.to_owned()));
        assert_eq!(parse_route("", "example.org"), srv("example.org"));
        assert_eq!(parse_route("Example.ORG.", "x.test"), srv("example.org"));
        assert_eq!(
            parse_route("xmpp-1.example.org", "x.test"),
            srv("xmpp-1.example.org")
        );
        assert_eq!(parse_route("localhost", "x.test"), srv("localhost"));
        assert_eq!(
            parse_route("localhost:5222", "x.test"),
            fixed("localhost", 5222, false)
        );
        assert_eq!(
            parse_route("[::1]:5222", "x.test"),
            fixed("::1", 5222, false)
        );
        assert_eq!(
            parse_route("xmpps://xmpp.example.org:5223", "x.test"),
            fixed("xmpp.example.org", 5223, true)
        );
        assert_eq!(
            parse_route("XMPPS://[::1]:5223", "x.test"),
            fixed("::1", 5223, true)
        );
        for bad in [
            "localhost:",
            "localhost:0",
            "localhost:x",
            ":5222",
            "::1:5222",
            "127.0.0.1",
            "xmpps://host",
            "xmpps://",
            "xmpp://host:5222",
            "https://host:443",
            "user@example.org",
            "two words",
            "a..b",
            "-a.example",
            "a/b",
        ] {
            assert_eq!(parse_route(bad, "x.test"), None, "{bad}");
        }
    }
}
