//! XMPP connector: logs a bare JID into its server, reads the roster and reports contacts'
//! presence and roster pushes.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_xmpp::connect::AsyncReadAndWrite;
use tokio_xmpp::error::{AuthError, Error as XmppError};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::bind::{BindQuery, BindResponse};
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Show, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Item, Roster, Subscription};
use tokio_xmpp::parsers::sasl::DefinedCondition as SaslCondition;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::parsers::starttls::{Nonza as StartTls, Request as StartTlsRequest};
use tokio_xmpp::parsers::stream_error::{DefinedCondition as StreamCondition, ReceivedStreamError};
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    initiate_stream, FallibleStreamElement, PendingFeaturesRecv, ReadError, RecvFeaturesError,
    StreamHeader, Timeouts, XmppStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;
use tracing::{debug, warn};

use super::net::{invalid, parse_host_port, require_protocol};
use super::task::{self, Outgoing, TaskControl};
use super::tls;
use super::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, ExtraRootsError,
    IncomingMessage, LiveSession, RosterEntry,
};
use crate::domain::ids::{Handle, Protocol};
use crate::secret::Secret;

/// The XML stream over a buffered TCP connection, inside TLS or not.
type Stream = XmppStream<Box<dyn AsyncReadAndWrite + Send>>;

/// Events a session may queue before the consumer reads them; beyond that the session waits
/// (and stops reading the socket) rather than dropping presence updates.
const EVENT_QUEUE: usize = 64;
/// Silence after which the session pings the server, and how long it then waits for any answer
/// before it declares the connection dead: a dead TCP peer is otherwise never noticed.
const STREAM_TIMEOUTS: Timeouts = Timeouts {
    read_timeout: Duration::from_secs(60),
    response_timeout: Duration::from_secs(30),
};
/// How long a closing session waits for the server to acknowledge the end of the stream.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// Upper bound for [`SessionControl::close`]: the goodbye plus a blocked socket write.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The SASL mechanisms tokio-xmpp implements, minus ANONYMOUS: it would "succeed" as a throwaway
/// guest on servers that offer it, which is never what a bound account means.
const SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"];
/// Socket buffers of one stream. tokio's default is 8 KiB each way, per idle account; stanzas
/// are mostly far smaller, and a larger one is simply read or written in several turns.
const STREAM_READ_BUFFER: usize = 2048;
const STREAM_WRITE_BUFFER: usize = 1024;
/// Messages that may wait for the session task to send them.
const OUTBOX_QUEUE: usize = 16;
const BIND_ID: &str = "switchboard-bind";
const ROSTER_ID: &str = "switchboard-roster";

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
        let (control, inbox) = TaskControl::new("xmpp", OUTBOX_QUEUE, CLOSE_TIMEOUT);
        let session = Session {
            stream,
            own: target.jid,
            events: events_tx,
            stop: inbox.stop,
            outbox: inbox.requests,
            roster: roster.clone(),
            presence: HashMap::new(),
            pings: 0,
        };
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

/// What a successful login hands to the session.
struct LoggedIn {
    stream: Stream,
    roster: Vec<RosterEntry>,
    /// Stanzas that arrived while waiting for the bind and roster answers.
    backlog: VecDeque<Stanza>,
}

async fn log_in(
    target: &Target,
    secret: &Secret,
    timeouts: Timeouts,
    tls: &Arc<ClientConfig>,
) -> Result<LoggedIn, ConnectorError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            ConnectorError::Unreachable(format!("cannot connect to {}: {e}", target.server))
        })?;
    // Stanzas are small and latency matters more than packet count.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("cannot disable Nagle's algorithm: {e}");
    }
    let loopback = tcp.peer_addr().is_ok_and(|peer| peer.ip().is_loopback());
    let (features, stream) = open_stream(tcp, &target.jid, timeouts).await?;

    // Offered means used, required or not; once offered there is no way back to plain TCP.
    let (features, stream, encrypted) = if features.can_starttls() {
        let tls_stream = start_tls(stream, target, tls).await?;
        // TLS starts a new stream, with new features (now with SASL mechanisms).
        let (features, stream) = open_stream(tls_stream, &target.jid, timeouts).await?;
        debug!(domain = %target.jid.domain(), "xmpp stream encrypted");
        (features, stream.box_stream(), true)
    } else {
        (features, stream.box_stream(), false)
    };

    // PLAIN puts the password itself on the wire: only inside TLS, or on loopback.
    let mechanisms = usable_mechanisms(&features.sasl_mechanisms, encrypted || loopback);
    if mechanisms.is_empty() {
        let reason = if features.sasl_mechanisms.contains("PLAIN") {
            "the server only offers PLAIN login, which would send the password unencrypted"
        } else {
            "the server offers no password login this connector supports"
        };
        return Err(ConnectorError::Protocol(reason.to_owned()));
    }
    let username = target.jid.node().map_or("", |node| node.as_str());
    let credentials = sasl::common::Credentials::default()
        .with_username(username)
        .with_password(secret.expose());
    let authenticated = tokio_xmpp::client_login(stream, mechanisms, credentials)
        .await
        .map_err(auth_error)?;

    // SASL success resets the stream; the new one offers resource binding.
    let pending = authenticated
        .send_header(stream_header(&target.jid))
        .await
        .map_err(login_io_error)?;
    let (features, mut stream) = receive_features(pending, &target.jid).await?;
    if features.bind.is_none() {
        return Err(ConnectorError::Protocol(
            "the server offers no resource binding".to_owned(),
        ));
    }

    let mut backlog = VecDeque::new();
    let bind = BindQuery::new(Some(new_resource()));
    send_stanza(&mut stream, Iq::from_set(BIND_ID, bind).into())
        .await
        .map_err(login_io_error)?;
    let bound: BindResponse = parse_result(
        await_answer(&mut stream, BIND_ID, &mut backlog).await?,
        "resource binding",
    )?
    .ok_or_else(|| ConnectorError::Protocol("empty answer to resource binding".to_owned()))?;
    debug!(jid = %bound.jid, "xmpp resource bound");

    let query = Roster {
        ver: None,
        items: Vec::new(),
    };
    send_stanza(&mut stream, Iq::from_get(ROSTER_ID, query).into())
        .await
        .map_err(login_io_error)?;
    let roster: Option<Roster> = parse_result(
        await_answer(&mut stream, ROSTER_ID, &mut backlog).await?,
        "the roster request",
    )?;
    let roster = roster
        .map(|roster| roster.items.iter().filter_map(roster_entry).collect())
        .unwrap_or_default();

    // Initial presence last: only now does the server send contacts' presence to us.
    send_stanza(&mut stream, Presence::available().into())
        .await
        .map_err(login_io_error)?;
    Ok(LoggedIn {
        stream,
        roster,
        backlog,
    })
}

/// The offered SASL mechanisms tokio-xmpp may choose from (it prefers SCRAM-SHA-256, then
/// SCRAM-SHA-1, then PLAIN).
fn usable_mechanisms(offered: &BTreeSet<String>, plain_allowed: bool) -> BTreeSet<String> {
    offered
        .iter()
        .filter(|mechanism| SASL_MECHANISMS.contains(&mechanism.as_str()))
        .filter(|mechanism| plain_allowed || mechanism.as_str() != "PLAIN")
        .cloned()
        .collect()
}

/// A resource of our own, so several Switchboard sessions of one account do not kick each other.
fn new_resource() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("switchboard-{}", &id[..12])
}

fn stream_header(jid: &BareJid) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(jid.domain().as_str().into()),
        from: None,
        id: None,
    }
}

/// Upgrades the connection: `<starttls/>`, the server's `<proceed/>`, then the TLS handshake.
/// Every failure is [`ConnectorError::Unreachable`], and the connection is dropped: never go on
/// in the clear. A JID domain that cannot be a certificate name (e.g. a non-ASCII one, which
/// would need IDNA) is [`ConnectorError::InvalidAccount`], found before the STARTTLS request.
async fn start_tls(
    mut stream: XmppStream<BufStream<TcpStream>>,
    target: &Target,
    tls: &Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, ConnectorError> {
    let domain = target.jid.domain().as_str();
    let failed = |why: String| {
        ConnectorError::Unreachable(format!("TLS handshake with {domain} failed: {why}"))
    };
    // The certificate must name the JID's domain, whatever host we connected to.
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|_| invalid(format!("{domain} is not a name a certificate can be for")))?;
    stream
        .send(&XmppStreamElement::Starttls(StartTls::Request(
            StartTlsRequest,
        )))
        .await
        .map_err(|e| failed(e.to_string()))?;
    loop {
        match stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Starttls(answer)))) => {
                match answer {
                    StartTls::Proceed(_) => break,
                    _ => return Err(failed("the server refused to start TLS".to_owned())),
                }
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::HardError(e))) => return Err(failed(e.to_string())),
            Some(Ok(other)) => {
                return Err(failed(format!("unexpected answer to STARTTLS: {other:?}")))
            }
            Some(Err(ReadError::ParseError(e))) => {
                return Err(failed(format!("unreadable answer to STARTTLS: {e}")))
            }
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(failed("the server closed the stream".to_owned()))
            }
        }
    }
    // The server says nothing more until our ClientHello, so no read-ahead is lost here.
    let tcp = stream.into_inner().into_inner();
    TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| failed(super::tls::failure(&e)))
}

/// Opens an XML stream to `jid`'s domain over `io` and reads the server's stream features.
async fn open_stream<Io: AsyncRead + AsyncWrite + Unpin>(
    io: Io,
    jid: &BareJid,
    timeouts: Timeouts,
) -> Result<(StreamFeatures, XmppStream<BufStream<Io>>), ConnectorError> {
    let pending = initiate_stream(
        BufStream::with_capacity(STREAM_READ_BUFFER, STREAM_WRITE_BUFFER, io),
        ns::JABBER_CLIENT,
        stream_header(jid),
        timeouts,
    )
    .await
    .map_err(login_io_error)?;
    receive_features(pending, jid).await
}

async fn receive_features<Io: AsyncBufRead + AsyncWrite + Unpin>(
    pending: PendingFeaturesRecv<Io>,
    jid: &BareJid,
) -> Result<(StreamFeatures, XmppStream<Io>), ConnectorError> {
    pending.recv_features().await.map_err(|e| match e {
        RecvFeaturesError::Io(e) => login_io_error(e),
        RecvFeaturesError::StreamError(e) => login_stream_error(&e, jid),
    })
}

fn login_stream_error(error: &ReceivedStreamError, jid: &BareJid) -> ConnectorError {
    match error.0.condition {
        StreamCondition::HostUnknown => invalid(format!(
            "the server does not host the domain {}",
            jid.domain()
        )),
        _ => ConnectorError::Protocol(error.to_string()),
    }
}

fn login_io_error(error: io::Error) -> ConnectorError {
    match error.kind() {
        io::ErrorKind::InvalidData => {
            ConnectorError::Protocol(format!("the server does not speak XMPP: {error}"))
        }
        _ => ConnectorError::Unreachable(format!("connection failed during login: {error}")),
    }
}

fn auth_error(error: XmppError) -> ConnectorError {
    match error {
        XmppError::Auth(AuthError::Fail(condition)) => match condition {
            SaslCondition::NotAuthorized
            | SaslCondition::AccountDisabled
            | SaslCondition::CredentialsExpired
            | SaslCondition::InvalidAuthzid => ConnectorError::AuthFailed,
            SaslCondition::TemporaryAuthFailure => ConnectorError::Unreachable(
                "the server cannot check credentials right now".to_owned(),
            ),
            SaslCondition::EncryptionRequired | SaslCondition::MechanismTooWeak => {
                ConnectorError::Protocol(
                    "the server requires an encrypted connection for login".to_owned(),
                )
            }
            other => ConnectorError::Protocol(format!("login refused: {other:?}")),
        },
        // A local SASL failure, such as a challenge the mechanism cannot parse.
        XmppError::Auth(_) => ConnectorError::Protocol("the SASL exchange failed".to_owned()),
        XmppError::Io(e) => login_io_error(e),
        XmppError::Disconnected => {
            ConnectorError::Unreachable("the server closed the connection during login".to_owned())
        }
        other => ConnectorError::Protocol(other.to_string()),
    }
}

async fn send_stanza(stream: &mut Stream, stanza: Stanza) -> io::Result<()> {
    stream.send(&XmppStreamElement::Stanza(stanza)).await
}

/// Reads until the answer to the IQ `id` arrives; other stanzas are kept for the session.
async fn await_answer(
    stream: &mut Stream,
    id: &str,
    backlog: &mut VecDeque<Stanza>,
) -> Result<Iq, ConnectorError> {
    loop {
        let element = match stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(element))) => element,
            Some(Ok(FallibleStreamElement::Err(e))) => {
                debug!("ignoring an unparsable element during login: {e}");
                continue;
            }
            Some(Err(ReadError::ParseError(e))) => {
                debug!("ignoring an unparsable element during login: {e}");
                continue;
            }
            // The login deadline bounds the wait; nothing to do here.
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::HardError(e))) => return Err(login_io_error(e)),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(ConnectorError::Unreachable(
                    "the server closed the stream during login".to_owned(),
                ))
            }
        };
        match element {
            XmppStreamElement::Stanza(Stanza::Iq(iq @ (Iq::Result { .. } | Iq::Error { .. })))
                if iq.id() == id =>
            {
                return Ok(iq)
            }
            XmppStreamElement::Stanza(other) => backlog.push_back(other),
            XmppStreamElement::StreamError(e) => {
                return Err(ConnectorError::Protocol(e.to_string()))
            }
            other => debug!("ignoring {other:?} during login"),
        }
    }
}

/// The typed payload of an IQ result, or the error the server gave for `what`.
fn parse_result<T: TryFrom<Element>>(iq: Iq, what: &str) -> Result<Option<T>, ConnectorError> {
    match iq {
        Iq::Result { payload: None, .. } => Ok(None),
        Iq::Result {
            payload: Some(payload),
            ..
        } => T::try_from(payload)
            .map(Some)
            .map_err(|_| ConnectorError::Protocol(format!("unreadable answer to {what}"))),
        Iq::Error { error, .. } => Err(ConnectorError::Protocol(format!(
            "the server refused {what}: {:?}",
            error.defined_condition
        ))),
        Iq::Get { .. } | Iq::Set { .. } => Err(ConnectorError::Protocol(format!(
            "unexpected request in answer to {what}"
        ))),
    }
}

/// A roster item as Switchboard sees it; `None` for removals and unusable JIDs.
fn roster_entry(item: &Item) -> Option<RosterEntry> {
    if item.subscription == Subscription::Remove {
        return None;
    }
    let handle = match Handle::parse(Protocol::Xmpp, item.jid.as_str()) {
        Ok(handle) => handle,
        Err(e) => {
            warn!(jid = %item.jid, "skipping a roster item: {e}");
            return None;
        }
    };
    let display_name = item
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    Some(RosterEntry {
        handle,
        display_name,
    })
}

fn availability(show: Option<&Show>) -> Availability {
    match show {
        None => Availability::Online,
        Some(Show::Chat) => Availability::Chat,
        Some(Show::Away) => Availability::Away,
        Some(Show::Xa) => Availability::ExtendedAway,
        Some(Show::Dnd) => Availability::DoNotDisturb,
    }
}

/// The status text to show: the one without a language tag, else English, else any.
fn status_text(statuses: &BTreeMap<Lang, String>) -> Option<String> {
    let in_lang = |wanted: &str| {
        statuses
            .iter()
            .find_map(|(lang, text)| (lang.as_str() == wanted).then_some(text))
    };
    in_lang("")
        .or_else(|| in_lang("en"))
        .or_else(|| statuses.values().next())
        .map(|text| text.trim())
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// One contact's presence across its resources; the most available resource wins.
#[derive(Default)]
struct ContactPresence {
    /// By resource (empty for presence from the bare JID): availability, priority, status.
    resources: BTreeMap<String, (Availability, i8, Option<String>)>,
    /// Status text of the last unavailable presence, shown while the contact is offline.
    offline_status: Option<String>,
    /// What was last reported, to report only changes.
    reported: Option<(Availability, Option<String>)>,
}

impl ContactPresence {
    fn summary(&self) -> (Availability, Option<String>) {
        self.resources
            .values()
            .max_by_key(|(availability, priority, _)| (*availability, *priority))
            .map(|(availability, _, status)| (*availability, status.clone()))
            .unwrap_or((Availability::Offline, self.offline_status.clone()))
    }
}

/// Why a session ends.
enum End {
    /// Closed or dropped by Switchboard: say goodbye, report nothing.
    Local,
    /// Lost upstream: report the reason.
    Remote(String),
}

/// A logged-in connection, run by one task.
struct Session {
    stream: Stream,
    own: BareJid,
    events: mpsc::Sender<ConnectorEvent>,
    /// Receives on close; yields `None` once the control side is dropped. Either way: stop.
    stop: mpsc::Receiver<()>,
    /// Messages to send, each with where to say how it went.
    outbox: mpsc::Receiver<Outgoing>,
    roster: Vec<RosterEntry>,
    presence: HashMap<Handle, ContactPresence>,
    pings: u64,
}

impl Session {
    async fn run(mut self, backlog: VecDeque<Stanza>) {
        let mut end = Ok(());
        for stanza in backlog {
            end = self.handle_stanza(stanza).await;
            if end.is_err() {
                break;
            }
        }
        if end.is_ok() {
            end = self.report_silent_contacts().await;
        }
        while end.is_ok() {
            end = tokio::select! {
                _ = self.stop.recv() => Err(End::Local),
                _ = self.events.closed() => Err(End::Local),
                Some(outgoing) = self.outbox.recv() => self.send_message(outgoing).await,
                item = self.stream.next() => self.handle_item(item).await,
            };
        }
        match end {
            Err(End::Remote(reason)) => {
                debug!(%reason, "xmpp session lost");
                // Best effort: the receiver may be gone or the stop may come first.
                let _ = self.emit(ConnectorEvent::Disconnected { reason }).await;
            }
            Err(End::Local) | Ok(()) => self.say_goodbye().await,
        }
    }

    async fn handle_item(
        &mut self,
        item: Option<Result<FallibleStreamElement, ReadError>>,
    ) -> Result<(), End> {
        match item {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(stanza)))) => {
                self.handle_stanza(stanza).await
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                // For instance `conflict` when another client took our resource. The server
                // closes the stream right after; close ours too.
                self.close_stream().await;
                Err(End::Remote(e.to_string()))
            }
            Some(Ok(FallibleStreamElement::Ok(other))) => {
                debug!("ignoring {other:?}");
                Ok(())
            }
            Some(Ok(FallibleStreamElement::Err(e))) => {
                debug!("ignoring an unparsable element: {e}");
                Ok(())
            }
            Some(Err(ReadError::ParseError(e))) => {
                debug!("ignoring an unparsable element: {e}");
                Ok(())
            }
            Some(Err(ReadError::SoftTimeout)) => {
                // Any answer, even an error, resets the read timer; none means a dead link.
                self.pings += 1;
                let ping = Iq::from_get(format!("switchboard-ping-{}", self.pings), Ping);
                self.send(ping.into()).await
            }
            Some(Err(ReadError::StreamFooterReceived)) => {
                self.close_stream().await;
                Err(End::Remote("the server closed the stream".to_owned()))
            }
            Some(Err(ReadError::HardError(e))) => {
                Err(End::Remote(format!("the connection failed: {e}")))
            }
            None => Err(End::Remote("the connection was closed".to_owned())),
        }
    }

    async fn handle_stanza(&mut self, stanza: Stanza) -> Result<(), End> {
        match stanza {
            Stanza::Presence(presence) => self.handle_presence(presence).await,
            Stanza::Iq(iq) => self.handle_iq(iq).await,
            Stanza::Message(message) => self.handle_message(message).await,
        }
    }

    /// One-to-one messages with a body become [`ConnectorEvent::Message`]; group chat,
    /// headlines, errors and body-less notifications (chat states, receipts) are not ours.
    async fn handle_message(&mut self, message: Message) -> Result<(), End> {
        if !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
            return Ok(());
        }
        let Some(from) = message.from.as_ref().map(Jid::to_bare) else {
            return Ok(());
        };
        let Ok(handle) = Handle::parse(Protocol::Xmpp, from.as_str()) else {
            return Ok(());
        };
        let Some((_, body)) = message.get_best_body_cloned(vec![]) else {
            return Ok(());
        };
        // Offline storage replays old messages with a delay stamp: keep their real time.
        let sent_at = message
            .payloads
            .iter()
            .find(|p| p.is("delay", ns::DELAY))
            .and_then(|p| Delay::try_from(p.clone()).ok())
            .map(|d| d.stamp.0.with_timezone(&chrono::Utc))
            .unwrap_or_else(chrono::Utc::now);
        let id = message.id.as_ref().map(|id| id.0.clone());
        self.emit(ConnectorEvent::Message(IncomingMessage {
            from: handle,
            body,
            sent_at,
            id,
        }))
        .await
    }

    /// Sends one chat message and tells the sender how it went. Only a broken connection ends
    /// the session; a bad recipient is the sender's problem.
    async fn send_message(&mut self, outgoing: Outgoing) -> Result<(), End> {
        let Outgoing { to, body, done } = outgoing;
        let to = match BareJid::new(to.as_str()) {
            Ok(jid) => jid,
            Err(e) => {
                let _ = done.send(Err(ConnectorError::Refused(format!("bad JID: {e}"))));
                return Ok(());
            }
        };
        let message = Message::chat(Some(Jid::from(to))).with_body(Lang::default(), body);
        let sent = self.send(message.into()).await;
        let _ = done.send(match &sent {
            Ok(()) => Ok(()),
            Err(_) => Err(ConnectorError::Closed),
        });
        sent
    }

    async fn handle_presence(&mut self, presence: Presence) -> Result<(), End> {
        // Presence without `from` comes from our own account.
        let Some(from) = presence.from.as_ref() else {
            return Ok(());
        };
        let bare = from.to_bare();
        if bare == self.own {
            return Ok(());
        }
        let Ok(handle) = Handle::parse(Protocol::Xmpp, bare.as_str()) else {
            return Ok(());
        };
        // Only contacts: directed presence from strangers or rooms is not ours to report.
        if !self.roster.iter().any(|entry| entry.handle == handle) {
            debug!(%bare, "ignoring presence from outside the roster");
            return Ok(());
        }
        let resource = from.resource().map_or("", |r| r.as_str()).to_owned();
        let contact = self.presence.entry(handle.clone()).or_default();
        match presence.type_ {
            PresenceType::None => {
                let entry = (
                    availability(presence.show.as_ref()),
                    presence.priority.0,
                    status_text(&presence.statuses),
                );
                contact.resources.insert(resource, entry);
            }
            PresenceType::Unavailable => {
                // Unavailable from the bare JID means every resource is gone.
                if resource.is_empty() {
                    contact.resources.clear();
                } else {
                    contact.resources.remove(&resource);
                }
                contact.offline_status = status_text(&presence.statuses);
            }
            // The contact's server could not be reached: treat as offline.
            PresenceType::Error => {
                contact.resources.clear();
                contact.offline_status = None;
            }
            // Subscription requests and probes: not reported by this connector yet.
            _ => return Ok(()),
        }
        let summary = contact.summary();
        if contact.reported.as_ref() == Some(&summary) {
            return Ok(());
        }
        contact.reported = Some(summary.clone());
        let (availability, status) = summary;
        self.emit(ConnectorEvent::Presence {
            handle,
            availability,
            status,
        })
        .await
    }

    async fn handle_iq(&mut self, iq: Iq) -> Result<(), End> {
        match iq {
            Iq::Set {
                from, id, payload, ..
            } if payload.is("query", ns::ROSTER) => {
                // RFC 6121 §2.1.6: only our own account may push roster changes.
                if !self.is_own_account(from.as_ref()) {
                    warn!(?from, "ignoring a roster push from a foreign JID");
                    return self
                        .send(error_reply(from, id, DefinedCondition::Forbidden))
                        .await;
                }
                match Roster::try_from(payload) {
                    Ok(push) => {
                        self.send(result_reply(from, id)).await?;
                        self.apply_roster_push(&push.items);
                        self.emit(ConnectorEvent::RosterChanged(self.roster.clone()))
                            .await?;
                        self.report_silent_contacts().await
                    }
                    Err(_) => {
                        self.send(error_reply(from, id, DefinedCondition::BadRequest))
                            .await
                    }
                }
            }
            Iq::Get {
                from, id, payload, ..
            } if payload.is("ping", ns::PING) => self.send(result_reply(from, id)).await,
            // Every request needs an answer (RFC 6120 §8.2.3); we offer nothing else.
            Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => {
                self.send(error_reply(from, id, DefinedCondition::ServiceUnavailable))
                    .await
            }
            // Answers to our keepalive pings; they have done their job by arriving.
            Iq::Result { .. } | Iq::Error { .. } => Ok(()),
        }
    }

    /// Reports every contact in the roster that no presence has been reported for yet as
    /// offline: right after login, and for contacts a roster push adds. A contact is offline
    /// until its presence says otherwise (RFC 6121 §4.3), but servers differ in whether they say
    /// so: for an offline contact we are subscribed to, the server only SHOULD answer our
    /// login's presence probe with `unavailable` (§4.3.2; Prosody does, ejabberd does not), and
    /// for a contact without a subscription nothing is ever sent. Reporting it here gives every
    /// contact a presence on every server; one that is online follows within moments.
    async fn report_silent_contacts(&mut self) -> Result<(), End> {
        let own = Handle::parse(Protocol::Xmpp, self.own.as_str()).ok();
        let silent: Vec<Handle> = self
            .roster
            .iter()
            .map(|entry| &entry.handle)
            .filter(|handle| Some(*handle) != own.as_ref())
            .filter(|handle| {
                self.presence
                    .get(*handle)
                    .is_none_or(|contact| contact.reported.is_none())
            })
            .cloned()
            .collect();
        for handle in silent {
            let contact = self.presence.entry(handle.clone()).or_default();
            let (availability, status) = contact.summary();
            contact.reported = Some((availability, status.clone()));
            self.emit(ConnectorEvent::Presence {
                handle,
                availability,
                status,
            })
            .await?;
        }
        Ok(())
    }

    fn is_own_account(&self, from: Option<&Jid>) -> bool {
        from.is_none_or(|from| from.to_bare() == self.own)
    }

    fn apply_roster_push(&mut self, items: &[Item]) {
        for item in items {
            let Ok(handle) = Handle::parse(Protocol::Xmpp, item.jid.as_str()) else {
                continue;
            };
            let position = self.roster.iter().position(|entry| entry.handle == handle);
            match (roster_entry(item), position) {
                (Some(entry), Some(at)) => self.roster[at] = entry,
                (Some(entry), None) => self.roster.push(entry),
                (None, Some(at)) => {
                    self.roster.remove(at);
                    self.presence.remove(&handle);
                }
                (None, None) => {}
            }
        }
    }

    /// Answers the server's end of the stream with ours; the outcome no longer matters.
    async fn close_stream(&mut self) {
        let footer = <Stream as SinkExt<&XmppStreamElement>>::close(&mut self.stream);
        let _ = tokio::time::timeout(GOODBYE_GRACE, footer).await;
    }

    async fn send(&mut self, stanza: Stanza) -> Result<(), End> {
        send_stanza(&mut self.stream, stanza)
            .await
            .map_err(|e| End::Remote(format!("the connection failed: {e}")))
    }

    /// Queues an event; gives up when Switchboard stops the session or stops listening.
    async fn emit(&mut self, event: ConnectorEvent) -> Result<(), End> {
        task::emit(&self.events, &mut self.stop, event)
            .await
            .map_err(|task::Stopped| End::Local)
    }

    /// Logs out cleanly: unavailable presence, stream footer, then a short wait for the
    /// server's footer so it has processed both before the socket goes.
    async fn say_goodbye(mut self) {
        let goodbye = async {
            send_stanza(&mut self.stream, Presence::unavailable().into()).await?;
            self.stream.shutdown().await?;
            while let Some(item) = self.stream.next().await {
                if let Err(ReadError::StreamFooterReceived | ReadError::HardError(_)) = item {
                    break;
                }
            }
            io::Result::Ok(())
        };
        match tokio::time::timeout(GOODBYE_GRACE, goodbye).await {
            Ok(Ok(())) => debug!("xmpp session closed"),
            Ok(Err(e)) => debug!("xmpp session closed uncleanly: {e}"),
            Err(_) => debug!("xmpp server did not acknowledge the logout in time"),
        }
    }
}

fn result_reply(to: Option<Jid>, id: String) -> Stanza {
    Iq::Result {
        from: None,
        to,
        id,
        payload: None,
    }
    .into()
}

fn error_reply(to: Option<Jid>, id: String, condition: DefinedCondition) -> Stanza {
    Iq::Error {
        from: None,
        to,
        id,
        error: StanzaError {
            type_: ErrorType::Cancel,
            by: None,
            defined_condition: condition,
            texts: BTreeMap::new(),
            other: None,
        },
        payload: None,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_login_only_where_allowed_and_never_anonymous() {
        let offered: BTreeSet<String> = ["ANONYMOUS", "PLAIN", "SCRAM-SHA-1", "X-OAUTH2"]
            .map(str::to_owned)
            .into();
        let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        assert_eq!(
            names(usable_mechanisms(&offered, true)),
            ["PLAIN", "SCRAM-SHA-1"]
        );
        assert_eq!(names(usable_mechanisms(&offered, false)), ["SCRAM-SHA-1"]);
    }

    #[test]
    fn show_maps_to_availability() {
        assert_eq!(availability(None), Availability::Online);
        assert_eq!(availability(Some(&Show::Chat)), Availability::Chat);
        assert_eq!(availability(Some(&Show::Away)), Availability::Away);
        assert_eq!(availability(Some(&Show::Xa)), Availability::ExtendedAway);
        assert_eq!(availability(Some(&Show::Dnd)), Availability::DoNotDisturb);
    }

    #[test]
    fn status_prefers_untagged_then_english() {
        let statuses = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(lang, text)| (Lang((*lang).to_owned()), (*text).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(status_text(&statuses(&[])), None);
        assert_eq!(status_text(&statuses(&[("", "  ")])), None);
        assert_eq!(
            status_text(&statuses(&[("de", "weg"), ("", " out ")])),
            Some("out".to_owned())
        );
        assert_eq!(
            status_text(&statuses(&[("de", "weg"), ("en", "away")])),
            Some("away".to_owned())
        );
        assert_eq!(
            status_text(&statuses(&[("de", "weg")])),
            Some("weg".to_owned())
        );
    }

    #[test]
    fn the_most_available_resource_wins() {
        let mut contact = ContactPresence::default();
        assert_eq!(contact.summary(), (Availability::Offline, None));
        contact.resources.insert(
            "phone".to_owned(),
            (Availability::Away, 0, Some("on the go".to_owned())),
        );
        contact
            .resources
            .insert("desk".to_owned(), (Availability::Online, -1, None));
        assert_eq!(contact.summary(), (Availability::Online, None));
        contact.resources.remove("desk");
        assert_eq!(
            contact.summary(),
            (Availability::Away, Some("on the go".to_owned()))
        );
        contact.resources.clear();
        contact.offline_status = Some("bye".to_owned());
        assert_eq!(
            contact.summary(),
            (Availability::Offline, Some("bye".to_owned()))
        );
    }

    #[test]
    fn roster_items_become_entries() {
        let item = |jid: &str, name: Option<&str>, subscription| Item {
            jid: BareJid::new(jid).unwrap(),
            name: name.map(str::to_owned),
            subscription,
            ask: Default::default(),
            groups: Vec::new(),
            approved: None,
        };
        assert_eq!(
            roster_entry(&item("Bob@Example.org", Some(" Bob "), Subscription::Both)),
            Some(RosterEntry {
                handle: Handle::parse(Protocol::Xmpp, "bob@example.org").unwrap(),
                display_name: Some("Bob".to_owned()),
            })
        );
        let unnamed = roster_entry(&item("carol@example.org", Some(""), Subscription::None));
        assert_eq!(unnamed.and_then(|entry| entry.display_name), None);
        assert_eq!(
            roster_entry(&item("dave@example.org", None, Subscription::Remove)),
            None
        );
    }
}
