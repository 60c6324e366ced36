//! The connection a login runs over, up to the stream features SASL starts from: which servers
//! to try (the account's `host:port` or `xmpps://host:port`, or a domain's SRV records), TCP,
//! TLS (direct, or STARTTLS), and whether going on without TLS is allowed (`require_tls`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tokio_xmpp::parsers::starttls::{Nonza as StartTls, Request as StartTlsRequest};
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, Timeouts, XmppStream, XmppStreamElement,
};
use tracing::debug;

use super::dns::{Dns, Endpoint};
use super::login::{open_stream, Stream};
use super::Target;
use crate::connectors::net::invalid;
use crate::connectors::net::UpstreamPolicy;
use crate::connectors::{tls, ConnectorError, RequireTls};

/// ALPN protocol of XMPP client streams over direct TLS (XEP-0368).
const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// The longest wait for one server's TCP connection while others are left to try: a server
/// that drops packets must not use up the whole login deadline.
const CONNECT_TIMEOUT_BEFORE_NEXT: Duration = Duration::from_secs(5);
/// What the refusal of a server without STARTTLS says, when TLS is required.
const STARTTLS_MISSING: &str =
    "the server did not offer STARTTLS and TLS is required (require_tls)";

/// How to reach the servers: shared by every login of the connector.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    /// Liveness timeouts of every stream opened.
    pub(super) timeouts: Timeouts,
    /// What STARTTLS trusts: the roots and the crypto provider (ring).
    pub(super) starttls: Arc<ClientConfig>,
    /// The same for direct TLS, offering ALPN `xmpp-client`.
    pub(super) direct_tls: Arc<ClientConfig>,
    pub(super) require_tls: RequireTls,
    pub(super) dns: Dns,
    /// Where no connection may go.
    pub(super) upstream: UpstreamPolicy,
}

/// Where to connect, as the account says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// `host:port` or `xmpps://host:port`: that server only, no SRV lookup.
    Fixed(Endpoint),
    /// A domain (the server field's, or the JID's when it is empty): its SRV records.
    Srv(String),
}

impl Route {
    /// Whether the account names a loopback server (the only case where `auto` lets a login go
    /// on without TLS); never decided from what DNS answers.
    fn names_loopback(&self) -> bool {
        let host = match self {
            Route::Fixed(endpoint) => endpoint.host.as_str(),
            Route::Srv(domain) => domain.as_str(),
        };
        host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// A connection ready for SASL.
pub(super) struct Opened {
    pub(super) features: StreamFeatures,
    pub(super) stream: Stream,
    pub(super) encrypted: bool,
    /// The peer is on loopback, where SASL PLAIN may go in the clear.
    pub(super) loopback: bool,
}

impl Transport {
    /// Tries the route's servers in turn until one gives a stream fit for login. Nothing is
    /// sent but the stream header (and STARTTLS) before this returns, so a server that fails
    /// here has seen no credentials.
    pub(super) async fn open(&self, target: &Target) -> Result<Opened, ConnectorError> {
        let endpoints = match &target.route {
            Route::Fixed(endpoint) => vec![endpoint.clone()],
            Route::Srv(domain) => self.dns.endpoints(domain).await?,
        };
        let mut failures = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let last = index + 1 == endpoints.len();
            match self.open_at(endpoint, target, last).await {
                Ok(opened) => return Ok(opened),
                // The domain or the account is wrong: no other server will do better.
                Err(e @ ConnectorError::InvalidAccount(_)) => return Err(e),
                Err(e) => {
                    debug!(%endpoint, error = %e, "xmpp server not usable; trying the next");
                    failures.push((endpoint, e));
                }
            }
        }
        if failures.len() <= 1 {
            return Err(failures.pop().map_or_else(
                || ConnectorError::Unreachable("no server to connect to".to_owned()),
                |(_, only)| only,
            ));
        }
        let tried = failures
            .iter()
            .map(|(endpoint, e)| format!("{endpoint}: {}", reason(e)))
            .collect::<Vec<_>>()
            .join("; ");
        Err(ConnectorError::Unreachable(format!(
            "no server of {} could be used: {tried}",
            target.jid.domain()
        )))
    }

    async fn open_at(
        &self,
        endpoint: &Endpoint,
        target: &Target,
        last: bool,
    ) -> Result<Opened, ConnectorError> {
        let tcp = self.connect(endpoint, last).await?;
        // Stanzas are small and latency matters more than packet count.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!("cannot disable Nagle's algorithm: {e}");
        }
        let loopback = tcp.peer_addr().is_ok_and(|peer| peer.ip().is_loopback());
        let domain = target.jid.domain().as_str();

        if endpoint.direct_tls {
            // TLS first, for the JID's domain (SNI and certificate), whatever host this is.
            let tls = tls::handshake(tcp, domain, &self.direct_tls).await?;
            let (features, stream) = open_stream(tls, &target.jid, self.timeouts).await?;
            debug!(%domain, %endpoint, "xmpp stream over direct TLS");
            return Ok(Opened {
                features,
                stream: stream.box_stream(),
                encrypted: true,
                loopback,
            });
        }

        let (features, stream) = open_stream(tcp, &target.jid, self.timeouts).await?;
        // Offered means used, required or not; once offered there is no way back to plain TCP.
        if features.can_starttls() {
            let tls = start_tls(stream, target, &self.starttls).await?;
            // TLS starts a new stream, with new features (now with SASL mechanisms).
            let (features, stream) = open_stream(tls, &target.jid, self.timeouts).await?;
            debug!(%domain, %endpoint, "xmpp stream encrypted");
            return Ok(Opened {
                features,
                stream: stream.box_stream(),
                encrypted: true,
                loopback,
            });
        }
        if self.tls_required(&target.route, loopback) {
            return Err(ConnectorError::Unreachable(STARTTLS_MISSING.to_owned()));
        }
        debug!(%domain, %endpoint, "xmpp stream not encrypted: the server offers no STARTTLS");
        Ok(Opened {
            features,
            stream: stream.box_stream(),
            encrypted: false,
            loopback,
        })
    }

    fn tls_required(&self, route: &Route, peer_on_loopback: bool) -> bool {
        match self.require_tls {
            RequireTls::Always => true,
            RequireTls::Never => false,
            RequireTls::Auto => !(route.names_loopback() && peer_on_loopback),
        }
    }

    /// TCP to the endpoint's addresses in turn; bounded per server unless it is the `last`
    /// one, which has what remains of the login deadline.
    async fn connect(&self, endpoint: &Endpoint, last: bool) -> Result<TcpStream, ConnectorError> {
        let unreachable = |why: String| {
            ConnectorError::Unreachable(format!("cannot connect to {endpoint}: {why}"))
        };
        let connecting = async {
            let addresses: Vec<SocketAddr> = if endpoint.from_dns {
                self.dns.addresses(endpoint).await
            } else {
                tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                    .await
                    .map(Iterator::collect)
            }
            .map_err(|e| unreachable(e.to_string()))?;
            let addresses = self.upstream.filter(addresses)?;
            TcpStream::connect(&addresses[..])
                .await
                .map_err(|e| unreachable(e.to_string()))
        };
        if last {
            return connecting.await;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT_BEFORE_NEXT, connecting).await {
            Ok(connected) => connected,
            Err(_) => Err(unreachable("timed out".to_owned())),
        }
    }
}

/// A failure in a few words, for the list of servers tried.
fn reason(error: &ConnectorError) -> String {
    match error {
        ConnectorError::Unreachable(why) | ConnectorError::Protocol(why) => why.clone(),
        other => other.to_string(),
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
        .map_err(|e| failed(tls::failure(&e)))
}

/// The direct TLS configuration for these STARTTLS roots.
pub(super) fn direct_tls_config(starttls: &ClientConfig) -> Arc<ClientConfig> {
    tls::with_alpn(starttls, ALPN_XMPP_CLIENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(host: &str) -> Route {
        Route::Fixed(Endpoint {
            host: host.to_owned(),
            port: 5222,
            direct_tls: false,
            from_dns: false,
        })
    }

    #[test]
    fn only_loopback_names_count_as_loopback() {
        for name in ["localhost", "LOCALHOST.", "127.0.0.1", "127.1.2.3", "::1"] {
            assert!(fixed(name).names_loopback(), "{name}");
        }
        assert!(Route::Srv("localhost".to_owned()).names_loopback());
        for name in [
            "example.org",
            "localhost.example.org",
            "10.0.0.1",
            "::ffff:7f00:1",
        ] {
            assert!(!fixed(name).names_loopback(), "{name}");
        }
        assert!(!Route::Srv("example.org".to_owned()).names_loopback());
    }

    #[test]
    fn auto_requires_tls_unless_named_and_found_on_loopback() {
        let transport = |require_tls| Transport {
            timeouts: super::super::STREAM_TIMEOUTS,
            starttls: tls::client_config(tls::public_roots()),
            direct_tls: tls::client_config(tls::public_roots()),
            require_tls,
            dns: Dns::new(None),
            upstream: UpstreamPolicy::default(),
        };
        let auto = transport(RequireTls::Auto);
        assert!(!auto.tls_required(&fixed("127.0.0.1"), true));
        assert!(!auto.tls_required(&Route::Srv("localhost".to_owned()), true));
        // A loopback name that leads elsewhere, or a remote name that DNS points at loopback.
        assert!(auto.tls_required(&fixed("localhost"), false));
        assert!(auto.tls_required(&Route::Srv("example.org".to_owned()), true));
        assert!(auto.tls_required(&fixed("example.org"), false));
        assert!(transport(RequireTls::Always).tls_required(&fixed("127.0.0.1"), true));
        assert!(!transport(RequireTls::Never).tls_required(&fixed("example.org"), false));
    }
}
