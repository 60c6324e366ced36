//! Protocol connectors: one small trait, a registry keyed by protocol, one module per network.
//!
//! A connector logs one bound account into its own server and reports what it sees there
//! (roster, presence, direct messages) as normalised [`ConnectorEvent`]s; the session's
//! [`SessionControl`] sends messages, changes the watch list and logs out. Everything
//! protocol-specific stays in the protocol's module; the rest of Switchboard only sees this
//! file's types.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::domain::ids::{Handle, Protocol};
use crate::domain::matching::Profile;
use crate::secret::Secret;

/// Connectors report presence in the domain's terms: it is part of their contract.
pub use crate::domain::presence::Availability;

#[cfg(feature = "irc")]
pub mod irc;
#[cfg(feature = "matrix")]
pub mod matrix;
#[cfg(any(feature = "xmpp", feature = "irc", feature = "matrix"))]
pub mod net;
#[cfg(feature = "nostr")]
pub mod nostr;
#[cfg(any(
    feature = "xmpp",
    feature = "irc",
    feature = "matrix",
    feature = "nostr"
))]
mod task;
#[cfg(any(
    feature = "xmpp",
    feature = "irc",
    feature = "matrix",
    feature = "nostr"
))]
mod tls;
#[cfg(feature = "xmpp")]
pub mod xmpp;

pub mod pacer;
pub mod supervisor;

/// Where and as whom to log in. The secret never leaves this struct in clear except towards
/// the protocol's own server.
#[derive(Clone)]
pub struct AccountLogin {
    pub protocol: Protocol,
    /// `host:port`, or a URL for protocols that use one.
    pub server: String,
    /// The user's own id on that network (for XMPP a bare JID).
    pub handle: Handle,
    pub credential: Credential,
    /// The contacts Switchboard holds for this account. On networks whose server keeps no
    /// contact list ([`RosterSource::Local`]) these are the handles to watch; the XMPP
    /// connector follows their presence while the server's roster cannot be read; others
    /// ignore it.
    pub contacts: Vec<RosterEntry>,
    /// Where the account's messages were last read up to, as the connector last reported it
    /// ([`ConnectorEvent::MessageCursor`]): messages after it that the network kept are fetched
    /// at login. `None`: never read (a first login fetches none of the past).
    pub message_cursor: Option<String>,
}

impl fmt::Debug for AccountLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountLogin")
            .field("protocol", &self.protocol)
            .field("server", &self.server)
            .field("handle", &self.handle)
            .field("credential", &self.credential)
            .field("contacts", &self.contacts.len())
            .finish()
    }
}

/// What proves the account to its server. Neither form ever appears in logs or errors.
#[derive(Clone)]
pub enum Credential {
    /// The password the user gave.
    Password(Secret),
    /// A session token the connector got in exchange for the password earlier
    /// ([`LiveSession::session_credential`]), e.g. a Matrix access token.
    Session(Secret),
}

impl Credential {
    /// The password, or [`ConnectorError::InvalidAccount`] for networks that only take one.
    pub fn password(&self) -> Result<&Secret, ConnectorError> {
        match self {
            Credential::Password(secret) => Ok(secret),
            Credential::Session(_) => Err(ConnectorError::InvalidAccount(
                "this network logs in with a password, not a session token".to_owned(),
            )),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Password([redacted])",
            Credential::Session(_) => "Session([redacted])",
        })
    }
}

/// One contact as the upstream server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    /// The contact's id on that network, normalised (bare JID in lower case for XMPP).
    pub handle: Handle,
    /// The name the user gave the contact upstream, if any.
    pub display_name: Option<String>,
}

/// Profile data of one contact, as its network offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactProfile {
    pub handle: Handle,
    pub profile: Profile,
}

/// An account's contact list as its server gave it at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roster {
    /// The whole list: a contact missing from it is gone upstream.
    Complete(Vec<RosterEntry>),
    /// The list could not be read (the reason is safe to log): an answer without payload, a
    /// relay that has not got the list yet. Nothing can be concluded from it, so nothing is
    /// removed because of it.
    Absent(String),
}

impl Roster {
    /// The contacts read; none when the list is absent.
    pub fn entries(&self) -> &[RosterEntry] {
        match self {
            Roster::Complete(entries) => entries,
            Roster::Absent(_) => &[],
        }
    }
}

/// Where an account's contact list lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterSource {
    /// The server keeps it (XMPP roster, Matrix `m.direct`, Nostr follow list): Switchboard
    /// imports it at login and follows its changes.
    Server,
    /// The network has none (IRC): the contacts are the handles the user adds in Switchboard,
    /// which the connector watches ([`AccountLogin::contacts`], [`SessionControl::watch`]).
    Local,
}

/// A direct (one-to-one) message received from a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The sender's handle, normalised like roster handles.
    pub from: Handle,
    pub body: String,
    /// When the sender sent it, if the network says; otherwise when it arrived.
    pub sent_at: DateTime<Utc>,
    /// The network's own id of the message, where it has one (Matrix event id, Nostr rumor
    /// id, XMPP stanza id): lets a caller drop a message a reconnection delivers twice.
    pub id: Option<String>,
}

/// A direct message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub to: Handle,
    pub body: String,
    /// Switchboard's id of the message, the same on every attempt: a network that keeps one
    /// copy per client-chosen id (XMPP origin-id, Matrix transaction id) sees a retry as the
    /// same message.
    pub id: String,
    /// When the user sent it (a Nostr rumor dated so keeps its id on a retry).
    pub created_at: DateTime<Utc>,
}

/// Someone who is no contact asks to talk (a Matrix invitation to a direct chat). Nothing is
/// joined or answered until the user accepts ([`SessionControl::accept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Who invites, normalised like roster handles.
    pub from: Handle,
    /// The network's id of the invitation (Matrix: the room's id): the same invitation
    /// reported again at every login is one, and accepting it names it.
    pub id: String,
    /// What the inviter said with it, if anything (Matrix: the invitation's `reason`).
    pub note: Option<String>,
    /// When it was seen (networks do not date every invitation).
    pub received_at: DateTime<Utc>,
}

/// A message the network took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// The network's own id of it, where it gives one (Matrix event id, Nostr rumor id).
    pub network_id: Option<String>,
}

/// What a live connection observed upstream after login.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorEvent {
    Presence {
        handle: Handle,
        availability: Availability,
        status: Option<String>,
    },
    RosterChanged(Vec<RosterEntry>),
    /// What the network says about some contacts beyond their names (XMPP vCard, Nostr kind-0
    /// metadata with a checked NIP-05 address), for same-person matching. Reported whenever
    /// it is read or changes; a contact missing from the list keeps what it had.
    Profiles(Vec<ContactProfile>),
    Message(IncomingMessage),
    /// A stranger's invitation to talk: a message request without a message yet.
    Invitation(Invitation),
    /// Every message up to here has been reported (opaque to Switchboard, which keeps it and
    /// hands it back as [`AccountLogin::message_cursor`] at the next login).
    MessageCursor(String),
    /// The connection dropped; the reason is safe to log (no secrets).
    Disconnected {
        reason: String,
    },
}

/// Why a connector could not log in. Messages never contain the secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The server refused the credentials.
    #[error("the server refused the credentials")]
    AuthFailed,
    /// The server could not be reached, or did not answer in time.
    #[error("the server is unreachable: {0}")]
    Unreachable(String),
    /// The account's settings cannot be used with this protocol (bad handle or server form).
    #[error("invalid account settings: {0}")]
    InvalidAccount(String),
    /// The server answered something the connector could not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no connector for protocol {0:?} in this build")]
    Unsupported(Protocol),
    /// The session is closed or lost: nothing can be sent through it.
    #[error("the connection is closed")]
    Closed,
    /// The server refused a message or a request; the reason is safe to show.
    #[error("the server refused: {0}")]
    Refused(String),
    /// Switchboard does not connect there (upstream policy): no connection was attempted.
    #[error("{0}")]
    Denied(String),
}

/// A logged-in connection. Dropping it, or calling [`LiveSession::disconnect`], logs out.
pub struct LiveSession {
    /// The roster as read right after login.
    pub roster: Roster,
    /// What the connection sees from now on (presence, roster pushes, messages, disconnection).
    pub events: mpsc::Receiver<ConnectorEvent>,
    /// Sends through the connection and stops it.
    pub control: Arc<dyn SessionControl>,
    /// A session token to keep in the credential vault in place of the password, for
    /// networks that hand one out at login; later logins get it as [`Credential::Session`].
    pub session_credential: Option<Secret>,
}

impl fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSession")
            .field("roster", &self.roster)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    pub async fn disconnect(self) {
        self.control.close().await;
    }
}

/// The control side of a live connection. Shared: sending does not wait for other senders.
#[async_trait]
pub trait SessionControl: Send + Sync {
    /// Logs out cleanly; idempotent. After it, the session emits nothing more.
    async fn close(&self);
    /// Sends a direct text message to `to`; returns once the server has it (or the network's
    /// equivalent of that). [`ConnectorError::Closed`] once the session has ended.
    async fn send_message(&self, message: &OutgoingMessage) -> Result<Sent, ConnectorError>;

    /// Sends `body` to `to` as a new message (a fresh id, dated now).
    async fn send_text(&self, to: &Handle, body: &str) -> Result<Sent, ConnectorError> {
        self.send_message(&OutgoingMessage {
            to: to.clone(),
            body: body.to_owned(),
            id: uuid::Uuid::now_v7().simple().to_string(),
            created_at: Utc::now(),
        })
        .await
    }
    /// Makes `from` a contact upstream because the user accepted their message request:
    /// accepts the `invitations` they sent (ids of [`ConnectorEvent::Invitation`]s) and adds
    /// them to the network's contact list, where it has one the user manages from here.
    /// Networks without either do nothing: the contact is Switchboard's.
    async fn accept(&self, from: &Handle, invitations: &[String]) -> Result<(), ConnectorError> {
        let _ = (from, invitations);
        Ok(())
    }
    /// [`RosterSource::Local`] networks: the contacts to watch from now on, replacing the
    /// earlier set; their presence is then reported as for roster contacts. Others ignore it.
    async fn watch(&self, contacts: &[RosterEntry]) -> Result<(), ConnectorError> {
        let _ = contacts;
        Ok(())
    }
}

/// One protocol's way of logging an account in.
#[async_trait]
pub trait Connector: Send + Sync {
    fn protocol(&self) -> Protocol;
    /// Where the contact list of this network's accounts lives.
    fn roster_source(&self) -> RosterSource {
        RosterSource::Server
    }
    /// Logs in, reads the roster, and keeps the connection open. Must give up within `timeout`
    /// with [`ConnectorError::Unreachable`] (or `AuthFailed` when the server said so).
    async fn connect(
        &self,
        login: &AccountLogin,
        timeout: Duration,
    ) -> Result<LiveSession, ConnectorError>;
}

/// Extra trusted root certificates that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the extra CA certificates are not usable: {0}")]
pub struct ExtraRootsError(pub String);

/// When the XMPP connector refuses to log in over a connection without TLS
/// (`SWITCHBOARD_XMPP_REQUIRE_TLS`). TLS offered is used whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequireTls {
    /// Required, except with a server the account names as loopback (`localhost`, `127.0.0.1`,
    /// `[::1]`, or the domain `localhost`) that is on loopback indeed: never decided by what DNS
    /// answers.
    #[default]
    Auto,
    Always,
    Never,
}

impl std::str::FromStr for RequireTls {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err("must be auto, always or never".to_owned()),
        }
    }
}

/// Server-wide settings for the built-in connectors.
#[derive(Debug, Clone, Default)]
pub struct ConnectorOptions {
    /// PEM certificates to trust for TLS besides the public web PKI roots (e.g. a private CA's).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// NIP-05 domains (lower case) to fetch `/.well-known/nostr.json` from at a fixed address
    /// instead of the one DNS gives, like curl's `--resolve`: still over HTTPS, the certificate
    /// checked for the domain. For tests on loopback and split-horizon set-ups; empty, DNS.
    pub nip05_resolve: Vec<(String, SocketAddr)>,
    /// When XMPP logins without TLS are refused.
    pub xmpp_require_tls: RequireTls,
    /// The DNS server (`ip:port`, UDP then TCP) asked for XMPP's SRV records and the addresses
    /// of the hosts they name. `None`: the system's (`/etc/resolv.conf`).
    pub dns_server: Option<SocketAddr>,
    /// The networks no bound account may connect to.
    pub upstream: net::UpstreamPolicy,
}

/// The connectors this build has, by protocol.
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    connectors: HashMap<Protocol, Arc<dyn Connector>>,
}

impl ConnectorRegistry {
    /// Every connector compiled into this build, set up with `options`.
    pub fn with_builtin(options: &ConnectorOptions) -> Result<Self, ExtraRootsError> {
        #[allow(unused_mut)]
        let mut registry = Self::default();
        #[cfg(feature = "xmpp")]
        registry.register(Arc::new(xmpp::XmppConnector::with_options(options)?));
        #[cfg(feature = "irc")]
        registry.register(Arc::new(
            match &options.extra_roots_pem {
                Some(pem) => irc::IrcConnector::with_extra_roots(pem)?,
                None => irc::IrcConnector::default(),
            }
            .with_upstream(options.upstream.clone()),
        ));
        #[cfg(feature = "matrix")]
        registry.register(Arc::new(
            match &options.extra_roots_pem {
                Some(pem) => matrix::MatrixConnector::with_extra_roots(pem)?,
                None => matrix::MatrixConnector::default(),
            }
            .with_upstream(options.upstream.clone()),
        ));
        #[cfg(feature = "nostr")]
        registry.register(Arc::new(nostr::NostrConnector::with_options(options)?));
        #[cfg(not(any(
            feature = "xmpp",
            feature = "irc",
            feature = "matrix",
            feature = "nostr"
        )))]
        let _ = options;
        Ok(registry)
    }

    pub fn register(&mut self, connector: Arc<dyn Connector>) {
        self.connectors.insert(connector.protocol(), connector);
    }

    pub fn get(&self, protocol: Protocol) -> Result<Arc<dyn Connector>, ConnectorError> {
        self.connectors
            .get(&protocol)
            .cloned()
            .ok_or(ConnectorError::Unsupported(protocol))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The domain decides from the protocol whether an account's contacts come back with a new
    /// binding or with its first roster sync; the connectors must agree with it.
    #[test]
    fn every_connectors_roster_source_agrees_with_the_domain() {
        let registry = ConnectorRegistry::with_builtin(&ConnectorOptions::default()).unwrap();
        for protocol in [
            Protocol::Xmpp,
            Protocol::Irc,
            Protocol::Matrix,
            Protocol::Nostr,
        ] {
            if let Ok(connector) = registry.get(protocol) {
                assert_eq!(
                    connector.roster_source() == RosterSource::Server,
                    protocol.has_server_roster(),
                    "{protocol}"
                );
            }
        }
    }
}
