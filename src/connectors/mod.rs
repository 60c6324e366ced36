//! Protocol connectors: one small trait, a registry keyed by protocol, one module per network.
//!
//! A connector logs one bound account into its own server and reports what it sees there
//! (roster, presence) as normalised [`ConnectorEvent`]s. Everything protocol-specific stays in
//! the protocol's module; the rest of Switchboard only sees this file's types.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::domain::ids::{Handle, Protocol};
use crate::secret::Secret;

#[cfg(feature = "xmpp")]
pub mod xmpp;

/// Where and as whom to log in. The secret never leaves this struct in clear except towards
/// the protocol's own server.
#[derive(Clone)]
pub struct AccountLogin {
    pub protocol: Protocol,
    /// `host:port`, or a URL for protocols that use one.
    pub server: String,
    /// The user's own id on that network (for XMPP a bare JID).
    pub handle: Handle,
    pub secret: Secret,
}

impl fmt::Debug for AccountLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountLogin")
            .field("protocol", &self.protocol)
            .field("server", &self.server)
            .field("handle", &self.handle)
            .field("secret", &"[redacted]")
            .finish()
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

/// How available a contact is, ordered from least to most available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Availability {
    Offline,
    DoNotDisturb,
    ExtendedAway,
    Away,
    Online,
    Chat,
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
}

/// A logged-in connection. Dropping it, or calling [`LiveSession::disconnect`], logs out.
pub struct LiveSession {
    /// The roster as read right after login.
    pub roster: Vec<RosterEntry>,
    /// What the connection sees from now on (presence, roster pushes, disconnection).
    pub events: mpsc::Receiver<ConnectorEvent>,
    /// Stops the connection.
    pub shutdown: Box<dyn SessionControl>,
}

impl fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSession")
            .field("roster", &self.roster)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    pub async fn disconnect(mut self) {
        self.shutdown.close().await;
    }
}

/// The control side of a live connection.
#[async_trait]
pub trait SessionControl: Send + Sync {
    /// Logs out cleanly; idempotent.
    async fn close(&mut self);
}

/// One protocol's way of logging an account in.
#[async_trait]
pub trait Connector: Send + Sync {
    fn protocol(&self) -> Protocol;
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

/// Server-wide settings for the built-in connectors.
#[derive(Debug, Clone, Default)]
pub struct ConnectorOptions {
    /// PEM certificates to trust for TLS besides the public web PKI roots (e.g. a private CA's).
    pub extra_roots_pem: Option<Vec<u8>>,
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
        registry.register(Arc::new(match &options.extra_roots_pem {
            Some(pem) => xmpp::XmppConnector::with_extra_roots(pem)?,
            None => xmpp::XmppConnector::default(),
        }));
        #[cfg(not(feature = "xmpp"))]
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
