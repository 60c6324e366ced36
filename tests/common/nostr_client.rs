//! The other side of a Nostr test: the test identities of scripts/servers/nostr.sh, a raw
//! websocket client that logs in with NIP-42 and speaks NIP-01 JSON (only signing and NIP-59
//! wrapping come from the `nostr` crate), and an HTTPS server for NIP-05 identifiers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nostr::nips::nip44;
use nostr::nips::nip59::UnwrappedGift;
use nostr::{
    Event, EventBuilder, JsonUtil, Keys, Kind, PublicKey, SecretKey, Tag, Timestamp, UnsignedEvent,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::env;

/// How long the peer waits for the relay's next message.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The test relay's URL, exactly as it expects it in NIP-42 AUTH.
pub fn relay() -> String {
    env("SWITCHBOARD_TEST_NOSTR_RELAY")
}

/// One test identity from the key file: `name secret_hex public_hex nsec npub`.
pub struct Identity {
    pub keys: Keys,
    pub nsec: String,
    pub npub: String,
}

impl Identity {
    pub fn secret_hex(&self) -> String {
        self.keys.secret_key().to_secret_hex()
    }
}

pub fn identity(name: &str) -> Identity {
    let path = env("SWITCHBOARD_TEST_NOSTR_KEYS");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&name) {
            let keys = Keys::new(SecretKey::from_hex(fields[1]).unwrap());
            assert_eq!(keys.public_key().to_hex(), fields[2], "{path}: {name}");
            return Identity {
                keys,
                nsec: fields[3].to_owned(),
                npub: fields[4].to_owned(),
            };
        }
    }
    panic!("{name} is not in {path}");
}

/// A test identity's public key in lower-case hex (the handle the connector reports).
pub fn hex(name: &str) -> String {
    identity(name).keys.public_key().to_hex()
}

/// `ann` → `Ann`: the petname the seeded follow lists give each identity.
pub fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A follow list of `name`'s with these contacts (petnames capitalised), dated `at`.
pub fn follow_list_of(name: &str, contacts: &[&str], at: Timestamp) -> Event {
    let tags = contacts
        .iter()
        .map(|contact| Tag::parse(["p", &hex(contact), "", &capitalised(contact)]).unwrap())
        .collect::<Vec<_>>();
    EventBuilder::new(Kind::ContactList, "")
        .tags(tags)
        .custom_created_at(at)
        .sign_with_keys(&identity(name).keys)
        .unwrap()
}

/// A raw websocket client, logged in with NIP-42.
pub struct Peer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub keys: Keys,
    subscriptions: u32,
}

impl Peer {
    pub async fn login(name: &str) -> Self {
        let url = relay();
        let keys = identity(name).keys;
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("the peer cannot reach {url}: {e}"));
        let challenge = next_json(&mut ws).await;
        assert_eq!(
            challenge[0], "AUTH",
            "expected a NIP-42 challenge: {challenge}"
        );
        let auth = EventBuilder::new(Kind::Authentication, "")
            .tags([
                Tag::parse(["relay", url.as_str()]).unwrap(),
                Tag::parse(["challenge", challenge[1].as_str().unwrap()]).unwrap(),
            ])
            .sign_with_keys(&keys)
            .unwrap();
        // nostr-relay answers AUTH with nothing; it handles our next messages after it.
        send_json(&mut ws, json!(["AUTH", auth])).await;
        Self {
            ws,
            keys,
            subscriptions: 0,
        }
    }

    /// Publishes and waits for the relay's `OK true`.
    pub async fn publish(&mut self, event: &Event) {
        send_json(&mut self.ws, json!(["EVENT", event])).await;
        loop {
            let answer = next_json(&mut self.ws).await;
            if answer[0] == "OK" && (answer[1] == event.id.to_hex() || answer[1] == "") {
                assert_eq!(answer[2], true, "the relay refused {event:?}: {answer}");
                return;
            }
        }
    }

    /// Stored events matching `filter`, up to the relay's EOSE.
    pub async fn query(&mut self, filter: Value) -> Vec<Event> {
        let id = self.subscribe(filter).await;
        let mut found = Vec::new();
        loop {
            let message = next_json(&mut self.ws).await;
            match message[0].as_str() {
                Some("EVENT") if message[1] == id => {
                    found.push(serde_json::from_value(message[2].clone()).unwrap())
                }
                Some("EOSE") if message[1] == id => break,
                Some("NOTICE" | "CLOSED") => panic!("the relay refused the query: {message}"),
                _ => {}
            }
        }
        send_json(&mut self.ws, json!(["CLOSE", id])).await;
        found
    }

    /// A date for new events: now, or the newest of those matching `filter` if that is later
    /// (an earlier run against the same relay may have dated its last events ahead). Events
    /// dated after it replace whatever such an earlier run left.
    pub async fn dated_after(&mut self, filter: Value) -> Timestamp {
        self.query(filter)
            .await
            .iter()
            .map(|event| event.created_at)
            .max()
            .map_or(Timestamp::now(), |newest| newest.max(Timestamp::now()))
    }

    pub async fn subscribe(&mut self, filter: Value) -> String {
        self.subscriptions += 1;
        let id = format!("peer-{}", self.subscriptions);
        send_json(&mut self.ws, json!(["REQ", id, filter])).await;
        id
    }

    /// The next event on any subscription that `wanted` accepts.
    pub async fn wait_event(&mut self, wanted: impl Fn(&Event) -> bool) -> Event {
        tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                let message = next_json(&mut self.ws).await;
                if message[0] == "EVENT" {
                    let event: Event = serde_json::from_value(message[2].clone()).unwrap();
                    if wanted(&event) {
                        return event;
                    }
                }
            }
        })
        .await
        .expect("the peer saw no matching event in time")
    }

    /// Publishes our NIP-38 general status, dated `at` (each test's statuses strictly later
    /// than the last: the relay keeps one per second).
    pub async fn set_status(&mut self, content: &str, at: Timestamp, expires: Option<Timestamp>) {
        let mut tags = vec![Tag::identifier("general")];
        tags.extend(expires.map(Tag::expiration));
        let event = EventBuilder::new(Kind::UserStatus, content)
            .tags(tags)
            .custom_created_at(at)
            .sign_with_keys(&self.keys)
            .unwrap();
        self.publish(&event).await;
    }

    /// Publishes kind-0 metadata with this content (any text: it need not be JSON), dated `at`.
    pub async fn set_profile(&mut self, content: &str, at: Timestamp) {
        let event = EventBuilder::new(Kind::Metadata, content)
            .custom_created_at(at)
            .sign_with_keys(&self.keys)
            .unwrap();
        self.publish(&event).await;
    }

    /// Sends a NIP-17 message to `to`, its rumor dated `at`.
    pub async fn send_message(&mut self, to: &PublicKey, body: &str, at: Timestamp) -> Event {
        let rumor = EventBuilder::private_msg_rumor(*to, body)
            .custom_created_at(at)
            .build(self.keys.public_key());
        let wrap = EventBuilder::gift_wrap(&self.keys, to, rumor, [])
            .await
            .unwrap();
        self.publish(&wrap).await;
        wrap
    }

    /// Sends a NIP-17 message to `to`, its rumor dated `at` and its gift wrap `wrap_at` (NIP-59
    /// back-dates wraps at random; this picks the date, e.g. two days back at the extreme).
    pub async fn send_message_wrapped_at(
        &mut self,
        to: &PublicKey,
        body: &str,
        at: Timestamp,
        wrap_at: Timestamp,
    ) -> Event {
        let rumor = EventBuilder::private_msg_rumor(*to, body)
            .custom_created_at(at)
            .build(self.keys.public_key());
        let seal = EventBuilder::seal(&self.keys, to, rumor)
            .await
            .unwrap()
            .sign_with_keys(&self.keys)
            .unwrap();
        let ephemeral = Keys::generate();
        let content = nip44::encrypt(
            ephemeral.secret_key(),
            to,
            seal.as_json(),
            nip44::Version::default(),
        )
        .unwrap();
        let wrap = EventBuilder::new(Kind::GiftWrap, content)
            .tag(Tag::public_key(*to))
            .custom_created_at(wrap_at)
            .sign_with_keys(&ephemeral)
            .unwrap();
        self.publish(&wrap).await;
        wrap
    }
}

/// The rumor a gift wrap to `keys` carries, its id computed from its content (not taken from
/// the sender's JSON); `None` if it is not for `keys`.
pub async fn rumor_of(keys: &Keys, wrap: &Event) -> Option<(PublicKey, UnsignedEvent)> {
    let gift = UnwrappedGift::from_gift_wrap(keys, wrap).await.ok()?;
    let mut rumor = gift.rumor;
    rumor.id = None;
    rumor.ensure_id();
    Some((gift.sender, rumor))
}

pub async fn send_json<S>(ws: &mut WebSocketStream<S>, value: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(value.to_string())).await.unwrap();
}

pub async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("the relay said nothing in time")
            .expect("the relay closed the connection")
            .expect("websocket error");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// A NIP-05 domain on loopback: HTTPS with the test certificate for "localhost", answering
/// `/.well-known/nostr.json?name=NAME` with the key it lists for NAME (none for names it does
/// not know), after that name's delay. It notes every name asked.
pub struct Nip05Server {
    pub address: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Nip05Server {
    /// Serves `names`: name → (public key hex, how long to wait before answering).
    pub async fn start(names: HashMap<&'static str, (String, Duration)>) -> Self {
        let read = |name: &str| {
            let path = env(name);
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        };
        let certificates = CertificateDer::pem_slice_iter(&read("SWITCHBOARD_TEST_NIP05_TLS_CERT"))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&read("SWITCHBOARD_TEST_NIP05_TLS_KEY")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let names = Arc::new(names);
        let noted = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, names, noted) =
                    (acceptor.clone(), Arc::clone(&names), Arc::clone(&noted));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request);
                    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let url = reqwest::Url::parse(&format!("https://localhost{target}")).unwrap();
                    let name = url
                        .query_pairs()
                        .find(|(key, _)| key == "name")
                        .map(|(_, value)| value.into_owned());
                    let (status, body) = match name {
                        Some(name) if url.path() == "/.well-known/nostr.json" => {
                            noted.lock().unwrap().push(name.clone());
                            let mut listed = serde_json::Map::new();
                            if let Some((key, delay)) = names.get(name.as_str()) {
                                tokio::time::sleep(*delay).await;
                                listed.insert(name, json!(key));
                            }
                            ("200 OK", json!({ "names": listed }).to_string())
                        }
                        _ => ("404 Not Found", String::new()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self { address, asked }
    }

    /// The names asked so far, sorted.
    pub fn asked(&self) -> Vec<String> {
        let mut asked = self.asked.lock().unwrap().clone();
        asked.sort();
        asked
    }
}
