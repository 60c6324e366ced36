//! The relay connection: a websocket (ws:// or wss://) and the few NIP-01/NIP-42 messages the
//! connector uses, parsed leniently (nostr-relay answers a refused write with an `OK` that names
//! no event id, which a strict parser drops).

use std::sync::Arc;

use nostr::{ClientMessage, Event, Url};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::ClientConfig;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::super::ConnectorError;
use crate::connectors::net::UpstreamPolicy;

/// Any byte stream a websocket can run over: TCP, or TLS over TCP.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub(super) type Socket = WebSocketStream<Box<dyn Io>>;

/// A relay address, validated before any network traffic.
#[derive(Debug, Clone)]
pub(super) struct RelayAddress {
    /// Exactly as the user gave it (trimmed): NIP-42 relays compare the AUTH event's `relay`
    /// tag with their own URL as a string, so it must not be normalised.
    pub url: String,
    host: String,
    port: u16,
    tls: bool,
}

impl RelayAddress {
    pub fn parse(server: &str) -> Result<Self, ConnectorError> {
        let invalid = |why: &str| {
            ConnectorError::InvalidAccount(format!(
                "the relay must be a ws:// or wss:// URL such as wss://relay.example.org ({why})"
            ))
        };
        let url = server.trim();
        let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            other => return Err(invalid(&format!("scheme {other}"))),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("no user or password in the URL"));
        }
        // An IPv6 literal comes bracketed, as in the URL; the socket wants it bare.
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
            _ => return Err(invalid("no host")),
        }
        .to_owned();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| invalid("no port"))?;
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            tls,
        })
    }
}

/// The websocket's read buffer. tungstenite's default, 128 KiB, is zero-filled on the first
/// read, so it was resident for every idle session; relay messages are mostly far smaller, and
/// a larger frame (a gift wrap, up to the relay's limit) grows the buffer as it arrives.
const READ_BUFFER: usize = 4096;

/// Opens the websocket; every failure is [`ConnectorError::Unreachable`].
pub(super) async fn open(
    address: &RelayAddress,
    tls: &Arc<ClientConfig>,
    upstream: &UpstreamPolicy,
) -> Result<Socket, ConnectorError> {
    let tcp = upstream.connect(&address.host, address.port).await?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if address.tls {
        Box::new(super::super::tls::handshake(tcp, &address.host, tls).await?)
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(address.url.as_str(), io, Some(config))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) => ConnectorError::Unreachable(format!(
                    "{} is not a websocket relay (HTTP {})",
                    address.url,
                    response.status()
                )),
                other => ConnectorError::Unreachable(format!(
                    "websocket handshake with {} failed: {other}",
                    address.url
                )),
            })?;
    Ok(socket)
}

/// What the relay says, as far as the connector cares.
#[derive(Debug)]
pub(super) enum FromRelay {
    /// NIP-42 challenge.
    Auth(String),
    /// A stored or live event for one of our subscriptions, signature checked.
    Event {
        subscription: String,
        event: Box<Event>,
    },
    /// End of stored events: what follows on this subscription is live.
    Eose(String),
    /// The answer to a write. `id` is empty when the relay did not say which write.
    Ok {
        id: String,
        accepted: bool,
        reason: String,
    },
    Closed {
        subscription: String,
        reason: String,
    },
    Notice(String),
}

/// Parses one text frame; `None` for anything unknown or malformed (logged).
pub(super) fn parse(text: &str) -> Option<FromRelay> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            debug!("ignoring a relay frame that is not JSON: {e}");
            return None;
        }
    };
    let items = value.as_array()?;
    let string = |i: usize| items.get(i).and_then(Value::as_str).map(str::to_owned);
    let parsed = match items.first()?.as_str()? {
        "AUTH" => FromRelay::Auth(string(1)?),
        "EVENT" => {
            let subscription = string(1)?;
            let event = match serde_json::from_value::<Event>(items.get(2)?.clone()) {
                Ok(event) => event,
                Err(e) => {
                    debug!("ignoring an unreadable event: {e}");
                    return None;
                }
            };
            // The relay is not trusted to have checked: a forged status or follow list would
            // otherwise pass for the contact's.
            if let Err(e) = event.verify() {
                debug!(id = %event.id, "ignoring an event with a bad id or signature: {e}");
                return None;
            }
            FromRelay::Event {
                subscription,
                event: Box::new(event),
            }
        }
        "EOSE" => FromRelay::Eose(string(1)?),
        "OK" => FromRelay::Ok {
            id: string(1).unwrap_or_default(),
            accepted: items.get(2)?.as_bool()?,
            reason: string(3).unwrap_or_default(),
        },
        "CLOSED" => FromRelay::Closed {
            subscription: string(1)?,
            reason: string(2).unwrap_or_default(),
        },
        "NOTICE" => FromRelay::Notice(string(1).unwrap_or_default()),
        _ => return None,
    };
    Some(parsed)
}

/// A client message as a websocket frame.
pub(super) fn frame(message: ClientMessage<'_>) -> Message {
    Message::text(message.as_value().to_string())
}

/// The text of an event as a websocket frame (for `EVENT`).
pub(super) fn event_frame(event: &Event) -> Message {
    frame(ClientMessage::event(event.clone()))
}

/// Whether a refusal's machine-readable prefix (NIP-01) says the relay does not let us in or
/// does not let us write: then the account cannot be used there.
pub(super) fn is_access_refusal(reason: &str) -> bool {
    ["auth-required:", "restricted:", "blocked:"]
        .iter()
        .any(|prefix| reason.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses_are_ws_urls_kept_verbatim() {
        let plain = RelayAddress::parse(" ws://127.0.0.1:7777 ").unwrap();
        assert_eq!(plain.url, "ws://127.0.0.1:7777");
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls),
            ("127.0.0.1", 7777, false)
        );
        let tls = RelayAddress::parse("wss://relay.example.org/nostr").unwrap();
        assert_eq!(
            (tls.host.as_str(), tls.port, tls.tls),
            ("relay.example.org", 443, true)
        );
        assert_eq!(tls.url, "wss://relay.example.org/nostr");
        for bad in [
            "relay.example.org",
            "https://relay.example.org",
            "ws://",
            "wss://user:pw@relay.example.org",
        ] {
            assert!(
                matches!(
                    RelayAddress::parse(bad),
                    Err(ConnectorError::InvalidAccount(_))
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn relay_messages_parse_leniently() {
        assert!(matches!(parse(r#"["AUTH","abc"]"#), Some(FromRelay::Auth(c)) if c == "abc"));
        assert!(matches!(
            parse(r#"["OK","",false,"restricted: permission denied"]"#),
            Some(FromRelay::Ok { id, accepted: false, reason })
                if id.is_empty() && is_access_refusal(&reason)
        ));
        assert!(matches!(parse(r#"["EOSE","s"]"#), Some(FromRelay::Eose(s)) if s == "s"));
        assert!(matches!(parse(r#"["NOTICE","hi"]"#), Some(FromRelay::Notice(n)) if n == "hi"));
        assert!(parse("not json").is_none());
        assert!(parse(r#"["EVENT","s",{"id":"00"}]"#).is_none());
        assert!(!is_access_refusal("duplicate: exists"));
    }
}
