//! Nostr connector: logs a key pair into one relay, reads the follow list as the roster, reports
//! contacts' user statuses as presence and their kind-0 profiles (with NIP-05 checked), and
//! exchanges NIP-17 private messages.
//!
//! Account: the handle is the public key (`npub1…` or 64 hex digits, reported as lower-case hex,
//! see [`normalize_handle`]), the password is the secret key (`nsec1…` or hex), the server is the
//! relay's `ws://` or `wss://` URL. A secret key that does not belong to the handle is refused
//! before any traffic ([`ConnectorError::AuthFailed`]).
//!
//! Login: websocket, NIP-42 `AUTH` answer to the relay's challenge, then proof that the relay
//! takes our writes: our own NIP-38 status ("online", with a NIP-40 expiration, refreshed while
//! the session lasts, cleared on close) must be accepted with `OK true`. A relay that refuses it
//! (or our queries) with an access prefix (`restricted:`, `auth-required:`, `blocked:`) fails
//! the login with `AuthFailed`. Then the latest follow list (kind 3) is the roster. A relay
//! without one may just not have it (yet), so that is [`Roster::Absent`], not an empty roster,
//! which only a follow list without `p` tags is.
//!
//! Presence mapping (NIP-38, kind 30315 with `d` = `general`): a contact's newest status with a
//! non-empty content that has not expired (NIP-40 `expiration`) is [`Availability::Online`] with
//! the content as status text; an empty content, an expired status or none at all is
//! [`Availability::Offline`]. Nostr has no away/busy levels.
//!
//! Profiles (kind-0 metadata): the session subscribes to the contacts' kind-0 events beside their
//! statuses, and again whenever the follow list changes, so new follows' profiles are read too.
//! The newest event per contact counts (on a tie, the lowest id). Its `display_name`, else its
//! `name` (trimmed, cut at 256 characters, empty meaning none) is the nickname; Nostr has no
//! e-mail field. The content is untrusted JSON: unreadable content is ignored (debug log) and
//! leaves the profile as it was. Profiles are reported as [`ConnectorEvent::Profiles`] in
//! batches, changed ones only, each at most once while the contact stays in the follow list:
//! the stored ones after their EOSE, later ones as they come. A batch waits up to a second for
//! NIP-05 checks still running, then goes without them (they follow in a later batch).
//!
//! NIP-05: a `nip05` of `local@domain` (a bare `domain` means `_@domain`; case is ignored) is
//! checked with `GET https://<domain>/.well-known/nostr.json?name=<local>`; only if that lists
//! the contact's key under `names[<local>]` does `local@domain`, in lower case, become the
//! profile's `verified_address`. Otherwise the profile has none. `_@domain` is the domain's own
//! identifier, not anyone's account (no JID has `_` for a user), so it gives no address and is
//! not asked. Requests are https only, the certificate checked against the same roots as
//! wss:// relays; redirects are not followed (NIP-05 forbids it); 5 s to connect, 10 s in all;
//! at most 64 KiB read. Each identifier is asked once per session, failures included, at most
//! four at a time, in tasks of their own, so a slow domain holds up neither presence nor
//! messages; a failure is a debug log and an unverified profile, never a session error. Each
//! check is a request to a domain the contact chose, made from the server: single-label names
//! (`localhost`, intranet hosts) and IPv4 addresses are not asked. The
//! [`ConnectorOptions::nip05_resolve`] option (`SWITCHBOARD_NIP05_RESOLVE`) dials chosen domains
//! at a fixed address instead (still https, certificate checked for the domain): how the tests
//! reach their server on loopback.
//!
//! Messages: NIP-17 (a kind 14 rumor, sealed and gift-wrapped with NIP-59). Each message goes to
//! the recipient and, as NIP-17 asks, a copy to ourselves for our other clients. The rumor is
//! dated [`OutgoingMessage::created_at`](super::OutgoingMessage::created_at), not the time of
//! sending: its id is the hash of author, date, kind, tags and content, so a retry of the same
//! message (new gift wraps, new random wrap dates) carries the same rumor id, and a receiver
//! that keeps one message per rumor id sees it once. That id is [`Sent::network_id`], answered
//! once the relay took the recipient's wrap (a `duplicate:` answer counts as taken).
//!
//! Received gift wraps are unwrapped; our own copies and group messages are not reported. The id
//! reported ([`IncomingMessage::id`]) is the rumor id as computed from the rumor, never the one
//! the sender wrote in it. Each message is reported once per session; across sessions, by rumor
//! id, the app keeps one.
//!
//! Catch-up ([`AccountLogin::message_cursor`], [`ConnectorEvent::MessageCursor`]): the cursor is
//! unix seconds as text. At login the relay is asked for the gift wraps to us stored from
//! [`MESSAGE_MARGIN`] before the cursor on, less two days and an hour, as NIP-59 back-dates wraps
//! at random by up to two days. Of those, the messages whose rumor is dated at or after the
//! cursor less [`MESSAGE_MARGIN`] are reported, oldest rumor first, after the relay's EOSE;
//! then a `MessageCursor`. The margin covers messages in flight when the last session ended and
//! senders whose clocks are a little behind; messages near the cursor are reported again rather
//! than lost (the app keeps one per rumor id). Without a cursor (a first login) only what is
//! dated from [`MESSAGE_MARGIN`] before the session start is reported: nothing old. Messages
//! that arrive live are reported whatever their date, each followed by a `MessageCursor`.
//! The cursor reported is the session start, moved on to each reported message's rumor date,
//! never back and never past our clock (a sender whose clock is ahead must not make the next
//! login skip what arrives meanwhile): once the stored messages are in, everything the relay
//! holds up to then has been reported. A cursor ahead of our clock counts as now; an unreadable
//! one as the oldest allowed.
//!
//! Limits: a login reaches back at most [`CATCH_UP_LIMIT`] (7 days) whatever the cursor, so the
//! relay query stays bounded: after a longer absence the older messages are not reported, nor
//! are messages the relay pruned, nor those beyond the number of results the relay returns for
//! one query (nostr-relay: 6000; a busy account's two days of back-dating, our own copies
//! included, count against it). A message whose sender's clock was more than
//! [`MESSAGE_MARGIN`] behind and that reached the relay only after our session ended, dated
//! before the cursor, is not reported.
//!
//! The relay connection is driven here rather than by nostr-sdk's relay pool, which reconnects
//! on its own and waits for an `OK` to `AUTH` that nostr-relay never sends; a lost connection
//! ends the session with [`ConnectorEvent::Disconnected`] and reconnecting is the caller's call.
//! Protocol types, keys and encryption come from the `nostr` crate, the core of nostr-sdk.

mod cursor;
mod profile;
mod relay;
mod session;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use nostr::{
    ClientMessage, Event, EventBuilder, Filter, Keys, Kind, PublicKey, SecretKey, SubscriptionId,
    Tag, Timestamp,
};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use super::net::UpstreamPolicy;
use super::task::TaskControl;
use super::tls;
use super::{
    AccountLogin, Connector, ConnectorError, ConnectorOptions, ExtraRootsError, LiveSession,
    Roster, RosterEntry,
};
#[cfg(doc)]
use super::{Availability, ConnectorEvent, IncomingMessage, Sent};
use crate::domain::ids::{Handle, Protocol};
pub use cursor::{CATCH_UP_LIMIT, MESSAGE_MARGIN};
use profile::Nip05Client;
use relay::{FromRelay, RelayAddress, Socket};
use session::{Session, CLOSE_TIMEOUT, OUTBOX_QUEUE};

/// Events a session may queue before the consumer reads them; beyond that the session waits.
const EVENT_QUEUE: usize = 64;
/// How long to wait right after connecting for a NIP-42 challenge before writing anything:
/// relays that require login send it at once, and a write before the answer would be refused.
const CHALLENGE_WAIT: Duration = Duration::from_millis(1500);
/// How long our own status lives on the relay if the session dies without clearing it.
const STATUS_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The content of our own status while the session lasts.
const ONLINE_STATUS: &str = "online";

const SUB_FOLLOWS: &str = "follows";
const SUB_STATUS: &str = "status";
const SUB_MESSAGES: &str = "messages";
const SUB_PROFILES: &str = "profiles";

/// The `d` tag of the NIP-38 status that stands for presence.
const GENERAL_STATUS: &str = "general";

/// The canonical form of a Nostr handle (`npub1…`, 64 hex digits in any case, or `nostr:npub1…`):
/// the public key in lower-case hex, which is what the connector reports. `None` if it is not a
/// public key.
pub fn normalize_handle(raw: &str) -> Option<String> {
    PublicKey::parse(raw.trim()).ok().map(|key| key.to_hex())
}

/// The handle the connector reports for `key`.
fn handle_of(key: &PublicKey) -> Option<Handle> {
    Handle::parse(Protocol::Nostr, &key.to_hex()).ok()
}

pub struct NostrConnector {
    /// What wss:// relays' and NIP-05 domains' certificates must chain to.
    tls: Arc<ClientConfig>,
    /// Checks contacts' NIP-05 identifiers; `None` if no HTTP client could be made (logged).
    nip05: Option<Nip05Client>,
    /// Where no connection may go (relays, and contacts' NIP-05 domains).
    upstream: UpstreamPolicy,
}

/// Trusts the public web PKI roots only.
impl Default for NostrConnector {
    fn default() -> Self {
        Self::new(
            tls::client_config(tls::public_roots()),
            &[],
            UpstreamPolicy::default(),
        )
    }
}

impl NostrConnector {
    fn new(
        tls: Arc<ClientConfig>,
        nip05_resolve: &[(String, SocketAddr)],
        upstream: UpstreamPolicy,
    ) -> Self {
        let nip05 = Nip05Client::new(&tls, nip05_resolve, &upstream);
        Self {
            tls,
            nip05,
            upstream,
        }
    }

    /// Trusts the public web PKI roots plus every certificate in `pem` (one or more
    /// `CERTIFICATE` blocks), e.g. a private CA's, for wss:// relays and NIP-05 domains.
    pub fn with_extra_roots(pem: &[u8]) -> Result<Self, ExtraRootsError> {
        Ok(Self::new(
            tls::client_config(tls::roots_with(pem)?),
            &[],
            UpstreamPolicy::default(),
        ))
    }

    /// Set up with the server-wide connector options: extra roots, and the NIP-05 domains to
    /// dial at a fixed address ([`ConnectorOptions::nip05_resolve`]).
    pub fn with_options(options: &ConnectorOptions) -> Result<Self, ExtraRootsError> {
        let roots = match &options.extra_roots_pem {
            Some(pem) => tls::roots_with(pem)?,
            None => tls::public_roots(),
        };
        Ok(Self::new(
            tls::client_config(roots),
            &options.nip05_resolve,
            options.upstream.clone(),
        ))
    }
}

#[async_trait]
impl Connector for NostrConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Nostr
    }

    async fn connect(
        &self,
        login: &AccountLogin,
        timeout: Duration,
    ) -> Result<LiveSession, ConnectorError> {
        let address = RelayAddress::parse(&login.server)?;
        let own = PublicKey::parse(login.handle.as_str().trim()).map_err(|_| {
            ConnectorError::InvalidAccount(
                "a Nostr handle is a public key: npub1… or 64 hex digits".to_owned(),
            )
        })?;
        // A secret key that is not one (or not this account's) is a wrong password.
        let secret = SecretKey::parse(login.credential.password()?.expose().trim())
            .map_err(|_| ConnectorError::AuthFailed)?;
        let keys = Keys::new(secret);
        if keys.public_key() != own {
            return Err(ConnectorError::AuthFailed);
        }
        let tls = Arc::clone(&self.tls);

        let resume = cursor::Resume::new(login.message_cursor.as_deref(), Timestamp::now());
        let logged_in = tokio::time::timeout(
            timeout,
            log_in(&address, &keys, &tls, &self.upstream, resume.wraps_since()),
        )
        .await
        .map_err(|_| ConnectorError::Unreachable("timed out".to_owned()))??;
        debug!(relay = %address.url, handle = %login.handle, "nostr session online");

        let roster = match &logged_in.follow_list {
            Some(_) => Roster::Complete(logged_in.roster.clone()),
            None => {
                Roster::Absent("the relay has no follow list (kind 3) of the account".to_owned())
            }
        };
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (control, inbox) = TaskControl::new("nostr", OUTBOX_QUEUE, CLOSE_TIMEOUT);
        let session = Session::new(
            logged_in,
            keys,
            events_tx,
            inbox.stop,
            inbox.requests,
            resume,
            self.nip05.clone(),
        );
        control.attach(tokio::spawn(session.run()));
        Ok(LiveSession {
            roster,
            events,
            control: Arc::new(control),
            session_credential: None,
        })
    }
}

/// What a successful login hands to the session.
pub(super) struct LoggedIn {
    socket: Socket,
    /// The contacts in `follow_list`; none without one.
    roster: Vec<RosterEntry>,
    /// The follow list the roster came from, if the relay has one.
    follow_list: Option<Box<Event>>,
    /// When our "online" status was dated; later ones must be newer.
    status_at: Timestamp,
    /// Relay messages that arrived during login and belong to the session (stored messages).
    backlog: Vec<FromRelay>,
}

/// Where the login stands.
#[derive(Default)]
struct LoginState {
    status_accepted: bool,
    follows_done: bool,
    /// The stored messages are in (the backlog): what follows is live.
    messages_done: bool,
    /// A challenge answered: a later `auth-required:` means the relay did not take our login.
    answered_challenge: bool,
    /// Refused for want of login before any challenge came: resend once one comes.
    awaiting_challenge: bool,
}

/// Logs in: AUTH, our status accepted, the follow list and the stored messages (gift wraps dated
/// from `since` on) read. Bounded by the caller's timeout.
async fn log_in(
    address: &RelayAddress,
    keys: &Keys,
    tls: &Arc<ClientConfig>,
    upstream: &UpstreamPolicy,
    since: Timestamp,
) -> Result<LoggedIn, ConnectorError> {
    let mut socket = relay::open(address, tls, upstream).await?;
    let mut state = LoginState::default();
    let mut backlog = Vec::new();

    // Relays that require login challenge at once; answer before any write or query.
    match tokio::time::timeout(CHALLENGE_WAIT, next_message(&mut socket)).await {
        Ok(Some(FromRelay::Auth(challenge))) => {
            answer_challenge(&mut socket, address, keys, &challenge).await?;
            state.answered_challenge = true;
        }
        Ok(Some(other)) => backlog.push(other),
        Ok(None) => return Err(lost_during_login()),
        Err(_) => {}
    }

    let status_at = Timestamp::now();
    let status = status_event(keys, ONLINE_STATUS, status_at)?;
    let own = keys.public_key();
    // Queries first: a relay that keeps us out refuses a query at once, a write maybe only
    // after a throttle (nostr-relay: 2 s).
    send_login_requests(&mut socket, &own, &status, since).await?;

    let mut follow_list: Option<Box<Event>> = None;
    while !(state.status_accepted && state.follows_done && state.messages_done) {
        let Some(message) = next_message(&mut socket).await else {
            return Err(lost_during_login());
        };
        match message {
            FromRelay::Auth(challenge) => {
                answer_challenge(&mut socket, address, keys, &challenge).await?;
                state.answered_challenge = true;
                if std::mem::take(&mut state.awaiting_challenge) {
                    send_login_requests(&mut socket, &own, &status, since).await?;
                }
            }
            FromRelay::Ok {
                id,
                accepted,
                reason,
            } if id == status.id.to_hex() || (id.is_empty() && !accepted) => {
                // A second login within the same second publishes the very same status event:
                // the relay already holds it, which is as good as taking it (as in sessions).
                if accepted || reason.starts_with("duplicate:") {
                    state.status_accepted = true;
                } else {
                    refusal(&mut state, &reason)?;
                }
            }
            FromRelay::Event {
                subscription,
                event,
            } if subscription == SUB_FOLLOWS => {
                if event.kind == Kind::ContactList
                    && event.pubkey == own
                    && follow_list
                        .as_ref()
                        .is_none_or(|current| event.created_at > current.created_at)
                {
                    follow_list = Some(event);
                }
            }
            FromRelay::Eose(subscription) if subscription == SUB_FOLLOWS => {
                state.follows_done = true;
            }
            FromRelay::Eose(subscription) if subscription == SUB_MESSAGES => {
                state.messages_done = true;
                backlog.push(FromRelay::Eose(subscription));
            }
            FromRelay::Closed {
                subscription,
                reason,
            } if subscription == SUB_FOLLOWS || subscription == SUB_MESSAGES => {
                refusal(&mut state, &reason)?;
                if !state.awaiting_challenge {
                    return Err(ConnectorError::Refused(format!(
                        "the relay closed our query: {reason}"
                    )));
                }
            }
            FromRelay::Notice(text) => {
                // nostr-relay refuses a query (and a bad AUTH) with a NOTICE, not a CLOSED.
                debug!(notice = %text, "relay notice during login");
                if relay::is_access_refusal(&text) {
                    refusal(&mut state, &text)?;
                }
            }
            other => backlog.push(other),
        }
    }
    let roster = follow_list
        .as_deref()
        .map(|event| roster_of(event, &own))
        .unwrap_or_default();
    Ok(LoggedIn {
        socket,
        roster,
        follow_list,
        status_at,
        backlog,
    })
}

/// Decides what a refusal during login means: `AuthFailed` unless the relay may still ask us
/// to log in (then the refused requests are sent again after the answer).
fn refusal(state: &mut LoginState, reason: &str) -> Result<(), ConnectorError> {
    if reason.starts_with("auth-required:") && !state.answered_challenge {
        state.awaiting_challenge = true;
        return Ok(());
    }
    if relay::is_access_refusal(reason) || reason.starts_with("auth-required:") {
        debug!(%reason, "the relay refused the account");
        return Err(ConnectorError::AuthFailed);
    }
    Err(ConnectorError::Refused(reason.to_owned()))
}

fn lost_during_login() -> ConnectorError {
    ConnectorError::Unreachable("the relay closed the connection during login".to_owned())
}

async fn send_login_requests(
    socket: &mut Socket,
    own: &PublicKey,
    status: &Event,
    since: Timestamp,
) -> Result<(), ConnectorError> {
    let follows = Filter::new().kind(Kind::ContactList).author(*own).limit(1);
    let messages = Filter::new().kind(Kind::GiftWrap).pubkey(*own).since(since);
    for message in [
        relay::frame(ClientMessage::req(
            SubscriptionId::new(SUB_FOLLOWS),
            vec![follows],
        )),
        relay::frame(ClientMessage::req(
            SubscriptionId::new(SUB_MESSAGES),
            vec![messages],
        )),
        relay::event_frame(status),
    ] {
        send(socket, message).await?;
    }
    Ok(())
}

async fn answer_challenge(
    socket: &mut Socket,
    address: &RelayAddress,
    keys: &Keys,
    challenge: &str,
) -> Result<(), ConnectorError> {
    // Built by hand: the relay tag must be the URL exactly as the relay knows itself, which
    // nostr's RelayUrl could rewrite.
    let tags = [
        Tag::parse(["relay", address.url.as_str()]),
        Tag::parse(["challenge", challenge]),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| ConnectorError::Protocol(format!("cannot build the AUTH event: {e}")))?;
    let event = EventBuilder::new(Kind::Authentication, "")
        .tags(tags)
        .sign_with_keys(keys)
        .map_err(|e| ConnectorError::Protocol(format!("cannot sign the AUTH event: {e}")))?;
    send(socket, relay::frame(ClientMessage::auth(event))).await
}

async fn send(socket: &mut Socket, message: Message) -> Result<(), ConnectorError> {
    socket
        .send(message)
        .await
        .map_err(|e| ConnectorError::Unreachable(format!("the connection failed: {e}")))
}

/// The next relay message we understand; `None` once the connection is gone.
async fn next_message(socket: &mut Socket) -> Option<FromRelay> {
    while let Some(frame) = socket.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                if let Some(message) = relay::parse(text.as_str()) {
                    return Some(message);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

/// Our NIP-38 general status: `content` empty clears it. It expires on its own should the
/// session die without clearing it.
fn status_event(keys: &Keys, content: &str, at: Timestamp) -> Result<Event, ConnectorError> {
    EventBuilder::new(Kind::UserStatus, content)
        .tags([
            Tag::identifier(GENERAL_STATUS),
            Tag::expiration(at + STATUS_LIFETIME),
        ])
        .custom_created_at(at)
        .sign_with_keys(keys)
        .map_err(|e| ConnectorError::Protocol(format!("cannot sign our status: {e}")))
}

/// The roster a follow list stands for: its `p` tags, once each, with the petname (4th field)
/// as the display name. Ourselves and malformed keys are left out.
fn roster_of(event: &Event, own: &PublicKey) -> Vec<RosterEntry> {
    let mut roster: Vec<RosterEntry> = Vec::new();
    let mut listed: HashSet<PublicKey> = HashSet::new();
    for tag in event.tags.iter() {
        let fields = tag.as_slice();
        if fields.first().map(String::as_str) != Some("p") {
            continue;
        }
        let Some(key) = fields.get(1).and_then(|raw| PublicKey::from_hex(raw).ok()) else {
            continue;
        };
        if key == *own || !listed.insert(key) {
            continue;
        }
        let Some(handle) = handle_of(&key) else {
            continue;
        };
        let display_name = fields
            .get(3)
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
            .map(str::to_owned);
        roster.push(RosterEntry {
            handle,
            display_name,
        });
    }
    roster
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> Keys {
        Keys::new(SecretKey::from_slice(&[seed; 32]).unwrap())
    }

    #[test]
    fn handles_normalize_to_lower_case_hex() {
        let key = keys(7).public_key();
        let hex = key.to_hex();
        assert_eq!(normalize_handle(&hex.to_uppercase()), Some(hex.clone()));
        let npub = nostr::ToBech32::to_bech32(&key).unwrap();
        assert_eq!(normalize_handle(&format!(" {npub} ")), Some(hex.clone()));
        assert_eq!(normalize_handle(&format!("nostr:{npub}")), Some(hex));
        assert_eq!(normalize_handle("alice@example.org"), None);
        assert_eq!(normalize_handle(&"0".repeat(63)), None);
    }

    #[test]
    fn the_follow_list_becomes_the_roster() {
        let own = keys(1);
        let (ben, cid) = (keys(2).public_key(), keys(3).public_key());
        let event = EventBuilder::new(Kind::ContactList, "")
            .tags([
                Tag::parse(["p", &ben.to_hex(), "", "Ben"]).unwrap(),
                Tag::parse(["p", &cid.to_hex()]).unwrap(),
                Tag::parse(["p", &ben.to_hex(), "", "Ben again"]).unwrap(),
                Tag::parse(["p", "not-a-key"]).unwrap(),
                Tag::parse(["t", "nostr"]).unwrap(),
            ])
            .sign_with_keys(&own)
            .unwrap();
        let roster = roster_of(&event, &own.public_key());
        assert_eq!(
            roster,
            vec![
                RosterEntry {
                    handle: handle_of(&ben).unwrap(),
                    display_name: Some("Ben".to_owned()),
                },
                RosterEntry {
                    handle: handle_of(&cid).unwrap(),
                    display_name: None,
                },
            ]
        );
    }

    #[test]
    fn our_status_is_general_and_expires() {
        let at = Timestamp::from_secs(1_700_000_000);
        let event = status_event(&keys(1), ONLINE_STATUS, at).unwrap();
        assert_eq!(event.kind, Kind::UserStatus);
        assert_eq!(event.tags.identifier(), Some(GENERAL_STATUS));
        assert_eq!(event.tags.expiration(), Some(&(at + STATUS_LIFETIME)));
        assert_eq!(event.created_at, at);
    }

    #[test]
    fn refusals_during_login() {
        let mut state = LoginState::default();
        assert!(refusal(&mut state, "auth-required: log in").is_ok());
        assert!(state.awaiting_challenge);
        state.answered_challenge = true;
        assert!(matches!(
            refusal(&mut state, "auth-required: log in"),
            Err(ConnectorError::AuthFailed)
        ));
        assert!(matches!(
            refusal(&mut state, "restricted: permission denied"),
            Err(ConnectorError::AuthFailed)
        ));
        assert!(matches!(
            refusal(&mut state, "invalid: too large"),
            Err(ConnectorError::Refused(_))
        ));
    }
}
