//! A logged-in Nostr session: one task owns the relay socket and turns what the relay sends
//! into [`ConnectorEvent`]s, sends messages for the control side, keeps our status fresh and
//! clears it on close.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use nostr::nips::nip59::UnwrappedGift;
use nostr::{
    ClientMessage, Event, EventBuilder, EventId, Filter, Keys, Kind, PublicKey, SubscriptionId,
    Timestamp, UnsignedEvent,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

use super::cursor::{Cursor, Resume};
use super::profile::{Nip05Client, ProfileBook};
use super::relay::{self, FromRelay, Socket};
use super::{
    handle_of, roster_of, status_event, LoggedIn, GENERAL_STATUS, ONLINE_STATUS, STATUS_LIFETIME,
    SUB_FOLLOWS, SUB_MESSAGES, SUB_PROFILES, SUB_STATUS,
};
use crate::connectors::task::{self, Outgoing};
use crate::connectors::{
    Availability, ConnectorError, ConnectorEvent, IncomingMessage, OutgoingMessage, RosterEntry,
    Sent,
};
use crate::domain::ids::Handle;

/// How often the session looks at its clocks (expired statuses, unanswered writes, pings).
const TICK: Duration = Duration::from_secs(1);
/// Our status is published again this often, well within its lifetime.
const STATUS_REFRESH: Duration = Duration::from_secs(STATUS_LIFETIME.as_secs() / 2);
/// A websocket ping this often keeps the relay talking.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Nothing at all from the relay for this long (pings unanswered): the connection is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(75);
/// How long a message may wait for the relay's `OK`.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long close() waits for the relay to take the cleared status.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// How long close() waits for the whole session task.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const OUTBOX_QUEUE: usize = 16;

/// A contact's newest NIP-38 general status.
struct Status {
    at: Timestamp,
    content: String,
    expires: Option<Timestamp>,
}

impl Status {
    fn of(event: &Event) -> Self {
        Self {
            at: event.created_at,
            content: event.content.trim().to_owned(),
            expires: event.tags.expiration().copied(),
        }
    }
}

/// The presence a contact's status stands for at `now` (see the module documentation).
fn presence(status: Option<&Status>, now: Timestamp) -> (Availability, Option<String>) {
    match status {
        Some(status) if !status.content.is_empty() && status.expires.is_none_or(|at| at > now) => {
            (Availability::Online, Some(status.content.clone()))
        }
        _ => (Availability::Offline, None),
    }
}

/// The NIP-17 rumor of a message, dated when the user sent it rather than now: its id is a hash
/// of the date among the rest, so a retry of the same message carries the same rumor, which
/// receivers keep once whatever number of gift wraps brought it.
fn rumor(
    own: PublicKey,
    recipient: PublicKey,
    body: String,
    created_at: DateTime<Utc>,
) -> UnsignedEvent {
    let created_at = Timestamp::from_secs(u64::try_from(created_at.timestamp()).unwrap_or(0));
    EventBuilder::private_msg_rumor(recipient, body)
        .custom_created_at(created_at)
        .build(own)
}

/// A write waiting for the relay's `OK`.
struct PendingWrite {
    id: EventId,
    sent: Instant,
    /// Where to say how it went; `None` for writes nobody waits for (status, self copies).
    done: Option<oneshot::Sender<Result<Sent, ConnectorError>>>,
    /// The id of the rumor a gift wrap carries: the message's network id.
    rumor: Option<EventId>,
}

/// Why the session ended.
enum End {
    /// close() or the LiveSession dropped: log out politely, report nothing.
    Local,
    /// The relay or the network ended it: report it.
    Remote(String),
}

pub(super) struct Session {
    socket: Socket,
    keys: Keys,
    own: PublicKey,
    events: mpsc::Sender<ConnectorEvent>,
    /// Receives on close; yields `None` once the control side is dropped. Either way: stop.
    stop: mpsc::Receiver<()>,
    outbox: mpsc::Receiver<Box<Outgoing>>,
    /// Stored messages whose rumors are dated before this were reported by an earlier session
    /// (or are older than a first login reports).
    report_from: Timestamp,
    /// What has been reported as read so far.
    cursor: Cursor,
    /// Stored messages found at login, reported sorted by rumor date at the EOSE.
    stored: Vec<(Timestamp, IncomingMessage)>,
    /// The newest follow list seen; `None` while the relay has none (the roster is unknown).
    follow_list: Option<Box<Event>>,
    /// The contacts in follow-list order: what [`ConnectorEvent::RosterChanged`] reports.
    roster: Vec<RosterEntry>,
    /// The same contacts by key, for everything that looks one up.
    contacts: HashMap<PublicKey, Handle>,
    statuses: HashMap<PublicKey, Status>,
    /// When contacts' statuses expire, soonest first: a tick looks at those due only.
    expiries: BTreeSet<(Timestamp, PublicKey)>,
    /// What was last reported per contact; absent until reported once.
    reported: HashMap<PublicKey, (Availability, Option<String>)>,
    /// Stored statuses are still coming (until the status subscription's EOSE).
    statuses_loading: bool,
    /// The contacts' kind-0 profiles, their NIP-05 checks and what was reported of them.
    profiles: ProfileBook,
    /// Past the messages subscription's EOSE: what comes now was sent during the session.
    messages_live: bool,
    writes: VecDeque<PendingWrite>,
    seen_wraps: HashSet<EventId>,
    seen_messages: HashSet<EventId>,
    status_at: Timestamp,
    next_status: Instant,
    last_heard: Instant,
    last_ping: Instant,
    backlog: Vec<FromRelay>,
}

impl Session {
    pub(super) fn new(
        logged_in: LoggedIn,
        keys: Keys,
        events: mpsc::Sender<ConnectorEvent>,
        stop: mpsc::Receiver<()>,
        outbox: mpsc::Receiver<Box<Outgoing>>,
        resume: Resume,
        nip05: Option<Nip05Client>,
    ) -> Self {
        let now = Instant::now();
        let own = keys.public_key();
        let mut session = Self {
            socket: logged_in.socket,
            keys,
            own,
            events,
            stop,
            outbox,
            report_from: resume.report_from,
            cursor: Cursor::new(resume.started),
            stored: Vec::new(),
            follow_list: logged_in.follow_list,
            roster: Vec::new(),
            contacts: HashMap::new(),
            statuses: HashMap::new(),
            expiries: BTreeSet::new(),
            reported: HashMap::new(),
            statuses_loading: false,
            profiles: ProfileBook::new(nip05),
            messages_live: false,
            writes: VecDeque::new(),
            seen_wraps: HashSet::new(),
            seen_messages: HashSet::new(),
            status_at: logged_in.status_at,
            next_status: now + STATUS_REFRESH,
            last_heard: now,
            last_ping: now,
            backlog: logged_in.backlog,
        };
        session.set_roster(logged_in.roster);
        session
    }

    pub(super) async fn run(mut self) {
        let mut end = self.subscribe_contacts().await;
        for message in std::mem::take(&mut self.backlog) {
            if end.is_err() {
                break;
            }
            end = self.handle(message).await;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while end.is_ok() {
            end = tokio::select! {
                _ = self.stop.recv() => Err(End::Local),
                _ = self.events.closed() => Err(End::Local),
                Some(outgoing) = self.outbox.recv() => self.send_message(*outgoing).await,
                frame = self.socket.next() => self.handle_frame(frame).await,
                checked = self.profiles.next_checked() => {
                    self.profiles.on_checked(checked);
                    self.report_profiles().await
                }
                _ = tick.tick() => self.on_tick().await,
            };
        }
        // Nobody waits for these any more.
        for write in self.writes.drain(..) {
            if let Some(done) = write.done {
                let _ = done.send(Err(ConnectorError::Closed));
            }
        }
        match end {
            Err(End::Remote(reason)) => {
                debug!(%reason, "nostr session lost");
                let _ = self.socket.close(None).await;
                // Best effort: the receiver may be gone or the stop may come first.
                let _ = self.emit(ConnectorEvent::Disconnected { reason }).await;
            }
            Err(End::Local) | Ok(()) => self.say_goodbye().await,
        }
    }

    async fn handle_frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), End> {
        self.last_heard = Instant::now();
        match frame {
            Some(Ok(Message::Text(text))) => match relay::parse(text.as_str()) {
                Some(message) => self.handle(message).await,
                None => Ok(()),
            },
            Some(Ok(Message::Close(frame))) => Err(End::Remote(match frame {
                Some(frame) if !frame.reason.is_empty() => {
                    format!("the relay closed the connection: {}", frame.reason)
                }
                _ => "the relay closed the connection".to_owned(),
            })),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(End::Remote(format!("the connection failed: {e}"))),
            None => Err(End::Remote("the connection was closed".to_owned())),
        }
    }

    async fn handle(&mut self, message: FromRelay) -> Result<(), End> {
        match message {
            FromRelay::Event {
                subscription,
                event,
            } => match subscription.as_str() {
                SUB_FOLLOWS => self.on_follow_list(event).await,
                SUB_STATUS => self.on_status(&event).await,
                SUB_MESSAGES => self.on_gift_wrap(&event).await,
                SUB_PROFILES => self.on_metadata(&event).await,
                _ => Ok(()),
            },
            FromRelay::Eose(subscription) if subscription == SUB_STATUS => {
                self.statuses_loading = false;
                self.report_all().await
            }
            FromRelay::Eose(subscription) if subscription == SUB_PROFILES => {
                self.profiles.loading = false;
                self.report_profiles().await
            }
            FromRelay::Eose(subscription) if subscription == SUB_MESSAGES => {
                self.report_stored().await
            }
            FromRelay::Ok {
                id,
                accepted,
                reason,
            } => {
                self.on_ok(&id, accepted, reason);
                Ok(())
            }
            FromRelay::Closed {
                subscription,
                reason,
            } => Err(End::Remote(format!(
                "the relay ended our {subscription} subscription: {reason}"
            ))),
            FromRelay::Auth(_) => {
                // A second challenge on a live connection: we are logged in already, and
                // nostr-relay only sends one. Logged for the curious.
                debug!("ignoring a repeated AUTH challenge");
                Ok(())
            }
            FromRelay::Notice(text) => {
                debug!(notice = %text, "relay notice");
                Ok(())
            }
            FromRelay::Eose(_) => Ok(()),
        }
    }

    /// Settles the oldest write the `OK` can be for: by id, or the oldest one when the relay
    /// does not say (nostr-relay's refusals; it answers in order).
    fn on_ok(&mut self, id: &str, accepted: bool, reason: String) {
        let position = if id.is_empty() {
            (!self.writes.is_empty()).then_some(0)
        } else {
            self.writes.iter().position(|write| write.id.to_hex() == id)
        };
        let Some(write) = position.and_then(|i| self.writes.remove(i)) else {
            return;
        };
        let outcome = if accepted || reason.starts_with("duplicate:") {
            Ok(Sent {
                network_id: write.rumor.map(|id| id.to_hex()),
            })
        } else {
            warn!(%reason, "the relay refused a write");
            Err(ConnectorError::Refused(reason))
        };
        if let Some(done) = write.done {
            let _ = done.send(outcome);
        }
    }

    async fn on_follow_list(&mut self, event: Box<Event>) -> Result<(), End> {
        let newer = self
            .follow_list
            .as_ref()
            .is_none_or(|current| event.created_at > current.created_at);
        if event.kind != Kind::ContactList || event.pubkey != self.own || !newer {
            return Ok(());
        }
        let roster = roster_of(&event, &self.own);
        // The first list after none is news even when empty: the roster was unknown till now.
        let known = self.follow_list.replace(event).is_some();
        if known && roster == self.roster {
            return Ok(());
        }
        self.set_roster(roster.clone());
        self.emit(ConnectorEvent::RosterChanged(roster)).await?;
        // New contacts' statuses and profiles: asked again; statuses reported (Offline
        // included) at the EOSE, profiles once read and checked.
        self.subscribe_contacts().await
    }

    fn set_roster(&mut self, roster: Vec<RosterEntry>) {
        self.contacts = roster
            .iter()
            .filter_map(|entry| {
                PublicKey::from_hex(entry.handle.as_str())
                    .ok()
                    .map(|key| (key, entry.handle.clone()))
            })
            .collect();
        self.statuses
            .retain(|key, _| self.contacts.contains_key(key));
        self.expiries
            .retain(|(_, key)| self.contacts.contains_key(key));
        self.reported
            .retain(|key, _| self.contacts.contains_key(key));
        self.profiles.retain(&self.contacts);
        self.roster = roster;
    }

    /// (Re)subscribes to what the contacts publish: statuses and profiles.
    async fn subscribe_contacts(&mut self) -> Result<(), End> {
        self.subscribe_statuses().await?;
        self.subscribe_profiles().await
    }

    /// (Re)subscribes to the contacts' statuses; the relay replaces a subscription of the same
    /// id. Without contacts there is nothing to ask (an empty author list may mean "anyone").
    async fn subscribe_statuses(&mut self) -> Result<(), End> {
        if self.contacts.is_empty() {
            self.statuses_loading = false;
            let close = ClientMessage::close(SubscriptionId::new(SUB_STATUS));
            return self.send(relay::frame(close)).await;
        }
        let filter = Filter::new()
            .kind(Kind::UserStatus)
            .authors(self.contacts.keys().copied())
            .identifier(GENERAL_STATUS);
        self.statuses_loading = true;
        let request = ClientMessage::req(SubscriptionId::new(SUB_STATUS), vec![filter]);
        self.send(relay::frame(request)).await
    }

    /// (Re)subscribes to the contacts' kind-0 metadata, like [`Self::subscribe_statuses`].
    async fn subscribe_profiles(&mut self) -> Result<(), End> {
        if self.contacts.is_empty() {
            self.profiles.loading = false;
            let close = ClientMessage::close(SubscriptionId::new(SUB_PROFILES));
            return self.send(relay::frame(close)).await;
        }
        let filter = Filter::new()
            .kind(Kind::Metadata)
            .authors(self.contacts.keys().copied());
        self.profiles.loading = true;
        let request = ClientMessage::req(SubscriptionId::new(SUB_PROFILES), vec![filter]);
        self.send(relay::frame(request)).await
    }

    async fn on_metadata(&mut self, event: &Event) -> Result<(), End> {
        if !self.contacts.contains_key(&event.pubkey) {
            return Ok(());
        }
        self.profiles.on_metadata(event);
        self.report_profiles().await
    }

    /// Reports the profiles that are ready and changed, in one event.
    async fn report_profiles(&mut self) -> Result<(), End> {
        match self.profiles.batch(&self.contacts) {
            Some(batch) => self.emit(ConnectorEvent::Profiles(batch)).await,
            None => Ok(()),
        }
    }

    async fn on_status(&mut self, event: &Event) -> Result<(), End> {
        if event.kind != Kind::UserStatus
            || event.tags.identifier() != Some(GENERAL_STATUS)
            || !self.contacts.contains_key(&event.pubkey)
        {
            return Ok(());
        }
        // Equal dates: the later arrival wins (the relay sends live events in order).
        if self
            .statuses
            .get(&event.pubkey)
            .is_some_and(|current| current.at > event.created_at)
        {
            return Ok(());
        }
        let status = Status::of(event);
        let expires = status.expires;
        if let Some(Status {
            expires: Some(at), ..
        }) = self.statuses.insert(event.pubkey, status)
        {
            self.expiries.remove(&(at, event.pubkey));
        }
        if let Some(at) = expires {
            self.expiries.insert((at, event.pubkey));
        }
        if self.statuses_loading {
            return Ok(());
        }
        self.report(event.pubkey).await
    }

    /// Reports every contact whose presence differs from what was last reported (all of them
    /// the first time): once the stored statuses are in.
    async fn report_all(&mut self) -> Result<(), End> {
        let keys: Vec<PublicKey> = self
            .roster
            .iter()
            .filter_map(|entry| PublicKey::from_hex(entry.handle.as_str()).ok())
            .collect();
        for key in keys {
            self.report(key).await?;
        }
        Ok(())
    }

    /// Reports the contacts whose status expired since the last look.
    async fn report_expired(&mut self) -> Result<(), End> {
        let now = Timestamp::now();
        while let Some(&(at, key)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            self.report(key).await?;
        }
        Ok(())
    }

    /// Reports one contact's presence if it differs from what was last reported.
    async fn report(&mut self, key: PublicKey) -> Result<(), End> {
        let Some(handle) = self.contacts.get(&key) else {
            return Ok(());
        };
        let current = presence(self.statuses.get(&key), Timestamp::now());
        if self.reported.get(&key) == Some(&current) {
            return Ok(());
        }
        let handle = handle.clone();
        self.reported.insert(key, current.clone());
        let (availability, status) = current;
        self.emit(ConnectorEvent::Presence {
            handle,
            availability,
            status,
        })
        .await
    }

    async fn on_gift_wrap(&mut self, event: &Event) -> Result<(), End> {
        if event.kind != Kind::GiftWrap || !self.seen_wraps.insert(event.id) {
            return Ok(());
        }
        let gift = match UnwrappedGift::from_gift_wrap(&self.keys, event).await {
            Ok(gift) => gift,
            Err(e) => {
                debug!(id = %event.id, "ignoring a gift wrap we cannot open: {e}");
                return Ok(());
            }
        };
        let mut rumor = gift.rumor;
        if rumor.kind != Kind::PrivateDirectMessage || gift.sender == self.own {
            return Ok(());
        }
        // One-to-one only: a rumor addressed to more than us is a group message.
        let recipients: Vec<&PublicKey> = rumor.tags.public_keys().collect();
        if recipients != [&self.own] {
            return Ok(());
        }
        // Stored messages from before the point to resume from were for an earlier session to
        // report. Live ones are new whatever the sender's clock says.
        if !self.messages_live && rumor.created_at < self.report_from {
            return Ok(());
        }
        // The id is the hash of the rumor, not what the sender wrote in it: a sender must not
        // pass its message off as another one (the app keeps one message per id).
        rumor.id = None;
        let rumor_id = rumor.id();
        if !self.seen_messages.insert(rumor_id) {
            return Ok(());
        }
        let Some(from) = handle_of(&gift.sender) else {
            return Ok(());
        };
        let sent_at = i64::try_from(rumor.created_at.as_secs())
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .unwrap_or_else(Utc::now);
        let message = IncomingMessage {
            from,
            body: rumor.content,
            sent_at,
            id: Some(rumor_id.to_hex()),
        };
        if !self.messages_live {
            self.stored.push((rumor.created_at, message));
            return Ok(());
        }
        self.emit(ConnectorEvent::Message(message)).await?;
        self.cursor.reported(rumor.created_at, Timestamp::now());
        self.emit(ConnectorEvent::MessageCursor(self.cursor.text()))
            .await
    }

    /// At the end of the stored messages: reports them oldest rumor first (the relay sends
    /// them by wrap date, which is random), then the cursor; what comes next is live.
    async fn report_stored(&mut self) -> Result<(), End> {
        self.messages_live = true;
        let mut stored = std::mem::take(&mut self.stored);
        // Stable: rumors of the same second keep the relay's order.
        stored.sort_by_key(|(at, _)| *at);
        for (at, message) in stored {
            self.emit(ConnectorEvent::Message(message)).await?;
            self.cursor.reported(at, Timestamp::now());
        }
        self.emit(ConnectorEvent::MessageCursor(self.cursor.text()))
            .await
    }

    async fn send_message(&mut self, outgoing: Outgoing) -> Result<(), End> {
        let Outgoing { message, done } = outgoing;
        let OutgoingMessage {
            to,
            body,
            created_at,
            ..
        } = message;
        let Ok(recipient) = PublicKey::parse(to.as_str().trim()) else {
            let _ = done.send(Err(ConnectorError::Refused(format!(
                "{to} is not a Nostr public key"
            ))));
            return Ok(());
        };
        let mut rumor = rumor(self.own, recipient, body, created_at);
        let rumor_id = rumor.id();
        let wrap = |receiver: PublicKey| {
            let rumor = rumor.clone();
            let keys = &self.keys;
            async move { EventBuilder::gift_wrap(keys, &receiver, rumor, []).await }
        };
        let (to_them, to_us) = match (wrap(recipient).await, wrap(self.own).await) {
            (Ok(them), Ok(us)) => (them, us),
            (Err(e), _) | (_, Err(e)) => {
                let _ = done.send(Err(ConnectorError::Protocol(format!(
                    "cannot wrap the message: {e}"
                ))));
                return Ok(());
            }
        };
        self.write(&to_them, Some(done), Some(rumor_id)).await?;
        // Our own copy (NIP-17), so the user's other clients see what was sent.
        self.write(&to_us, None, Some(rumor_id)).await
    }

    async fn write(
        &mut self,
        event: &Event,
        done: Option<oneshot::Sender<Result<Sent, ConnectorError>>>,
        rumor: Option<EventId>,
    ) -> Result<(), End> {
        self.writes.push_back(PendingWrite {
            id: event.id,
            sent: Instant::now(),
            done,
            rumor,
        });
        self.send(relay::event_frame(event)).await
    }

    async fn on_tick(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if now.duration_since(self.last_heard) > SILENCE_LIMIT {
            return Err(End::Remote("the relay stopped answering".to_owned()));
        }
        if now.duration_since(self.last_ping) >= PING_INTERVAL {
            self.last_ping = now;
            self.send(Message::Ping(Vec::new().into())).await?;
        }
        while self
            .writes
            .front()
            .is_some_and(|write| now.duration_since(write.sent) > WRITE_TIMEOUT)
        {
            if let Some(done) = self.writes.pop_front().and_then(|write| write.done) {
                let _ = done.send(Err(ConnectorError::Unreachable(
                    "the relay did not confirm the message in time".to_owned(),
                )));
            }
        }
        if now >= self.next_status {
            self.next_status = now + STATUS_REFRESH;
            self.publish_status(ONLINE_STATUS).await?;
        }
        if !self.statuses_loading {
            self.report_expired().await?;
        }
        // Profiles that waited long enough for checks still running.
        self.report_profiles().await
    }

    /// Publishes our status, dated after the previous one: the relay keeps only the newest
    /// per second, and a tie would leave it to chance which one stays.
    async fn publish_status(&mut self, content: &str) -> Result<(), End> {
        let at = Timestamp::now().max(self.status_at + 1u64);
        self.status_at = at;
        match status_event(&self.keys, content, at) {
            Ok(event) => self.write(&event, None, None).await,
            Err(e) => {
                warn!("cannot publish our status: {e}");
                Ok(())
            }
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        self.socket
            .send(message)
            .await
            .map_err(|e| End::Remote(format!("the connection failed: {e}")))
    }

    /// Queues an event; gives up when Switchboard stops the session or stops listening.
    async fn emit(&mut self, event: ConnectorEvent) -> Result<(), End> {
        task::emit(&self.events, &mut self.stop, event)
            .await
            .map_err(|task::Stopped| End::Local)
    }

    /// Logs out: clears our status (waiting briefly for the relay to take it, so contacts see
    /// us go at once rather than at its expiry), then closes the websocket.
    async fn say_goodbye(mut self) {
        let goodbye = async {
            let at = Timestamp::now().max(self.status_at + 1u64);
            let Ok(event) = status_event(&self.keys, "", at) else {
                return;
            };
            if self.socket.send(relay::event_frame(&event)).await.is_err() {
                return;
            }
            let id = event.id.to_hex();
            while let Some(frame) = self.socket.next().await {
                let Ok(Message::Text(text)) = frame else {
                    if matches!(frame, Ok(Message::Close(_)) | Err(_)) {
                        return;
                    }
                    continue;
                };
                if let Some(FromRelay::Ok { id: answered, .. }) = relay::parse(text.as_str()) {
                    if answered == id || answered.is_empty() {
                        break;
                    }
                }
            }
            let _ = self.socket.close(None).await;
        };
        if tokio::time::timeout(GOODBYE_GRACE, goodbye).await.is_err() {
            debug!("the relay did not take our cleared status in time");
        }
        debug!("nostr session closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(content: &str, expires: Option<u64>) -> Status {
        Status {
            at: Timestamp::from_secs(100),
            content: content.to_owned(),
            expires: expires.map(Timestamp::from_secs),
        }
    }

    #[test]
    fn statuses_map_to_presence() {
        let now = Timestamp::from_secs(200);
        assert_eq!(
            presence(Some(&status("hiking", None)), now),
            (Availability::Online, Some("hiking".to_owned()))
        );
        assert_eq!(
            presence(Some(&status("hiking", Some(300))), now),
            (Availability::Online, Some("hiking".to_owned()))
        );
        assert_eq!(
            presence(Some(&status("hiking", Some(200))), now),
            (Availability::Offline, None)
        );
        assert_eq!(
            presence(Some(&status("", None)), now),
            (Availability::Offline, None)
        );
        assert_eq!(presence(None, now), (Availability::Offline, None));
    }

    #[test]
    fn a_message_sent_again_has_the_same_rumor_id() {
        let key =
            |seed: u8| Keys::new(nostr::SecretKey::from_slice(&[seed; 32]).unwrap()).public_key();
        let (own, to) = (key(1), key(2));
        let sent = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut first = rumor(own, to, "hi".to_owned(), sent);
        let mut again = rumor(own, to, "hi".to_owned(), sent);
        assert_eq!(first.created_at, Timestamp::from_secs(1_700_000_000));
        assert_eq!(first.id(), again.id());
        let mut later = rumor(
            own,
            to,
            "hi".to_owned(),
            sent + chrono::Duration::seconds(1),
        );
        assert_ne!(first.id(), later.id());
    }
}
