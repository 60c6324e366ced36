//! The session task of a logged-in account: presence, roster pushes, messages, the archive
//! catch-up, contacts' vCards, keepalive, logout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id as MessageId, Lang, Message};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Ask, Item, Roster as RosterQuery, Subscription};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::parsers::stanza_id::OriginId;
use tokio_xmpp::xmlstream::{FallibleStreamElement, ReadError, XmppStreamElement};
use tokio_xmpp::Stanza;
use tracing::{debug, warn};

use super::archive::{Archive, Step};
use super::login::{send_stanza, Stream};
use super::stanza::{
    archive_id, availability, chat_message, delay_stamp, error_reply, message_id, result_reply,
    roster_entry, status_text,
};
use super::vcard::{avatar_hash, VcardFetches};
use crate::connectors::task::{self, Acceptance, Outgoing, Request};
use crate::connectors::{
    AccountLogin, Availability, ConnectorError, ConnectorEvent, IncomingMessage, OutgoingMessage,
    Roster, RosterEntry, Sent,
};
use crate::domain::ids::{Handle, Protocol};

/// How long a closing session waits for the server to acknowledge the end of the stream.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// Upper bound for [`SessionControl::close`]: the goodbye plus a blocked socket write.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One contact's presence across its resources; the most available resource wins.
#[derive(Default)]
struct ContactPresence {
    /// By resource (empty for presence from the bare JID): availability, priority, status.
    resources: BTreeMap<String, (Availability, i8, Option<String>)>,
    /// Status text of the last unavailable presence, shown while the contact is offline.
    offline_status: Option<String>,
    /// What was last reported, to report only changes.
    reported: Option<(Availability, Option<String>)>,
    /// The avatar hash its presence last announced (XEP-0153; empty for "no avatar"): a new
    /// one means a new vCard to fetch.
    avatar: Option<Box<str>>,
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

/// The roster in the server's order, indexed by handle: a presence or a pushed item finds its
/// contact in O(1), an addition or removal costs O(log n); only a whole list to report walks it.
#[derive(Default)]
struct Contacts {
    /// Handle → (place in `order`, name).
    by_handle: HashMap<Handle, (u64, Option<String>)>,
    /// The handles in the order the server listed them, later additions last.
    order: BTreeMap<u64, Handle>,
    next_place: u64,
}

impl Contacts {
    fn new(entries: Vec<RosterEntry>) -> Self {
        let mut contacts = Self::default();
        for entry in entries {
            contacts.upsert(entry);
        }
        contacts
    }

    fn contains(&self, handle: &Handle) -> bool {
        self.by_handle.contains_key(handle)
    }

    /// Adds a contact at the end, or renames it in place; true if it was new.
    fn upsert(&mut self, entry: RosterEntry) -> bool {
        if let Some((_, name)) = self.by_handle.get_mut(&entry.handle) {
            *name = entry.display_name;
            return false;
        }
        let place = self.next_place;
        self.next_place += 1;
        self.order.insert(place, entry.handle.clone());
        self.by_handle
            .insert(entry.handle, (place, entry.display_name));
        true
    }

    /// True if it was a contact.
    fn remove(&mut self, handle: &Handle) -> bool {
        match self.by_handle.remove(handle) {
            Some((place, _)) => {
                self.order.remove(&place);
                true
            }
            None => false,
        }
    }

    fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.order.values()
    }

    /// The whole list, in order.
    fn entries(&self) -> Vec<RosterEntry> {
        self.order
            .values()
            .map(|handle| RosterEntry {
                handle: handle.clone(),
                display_name: self.by_handle[handle].1.clone(),
            })
            .collect()
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
pub(super) struct Session {
    stream: Stream,
    own: BareJid,
    events: mpsc::Sender<ConnectorEvent>,
    /// Receives on close; yields `None` once the control side is dropped. Either way: stop.
    stop: mpsc::Receiver<()>,
    /// Messages to send and requests to accept, each with where to say how it went.
    requests: mpsc::Receiver<Box<Request>>,
    /// The contacts known: the whole roster when `roster_complete`, else the contacts
    /// Switchboard holds for the account (so their presence is still seen) and those pushed
    /// since login.
    roster: Contacts,
    /// The login read the roster. Without it a push shows part of the list only, which must
    /// not be reported as the whole list.
    roster_complete: bool,
    presence: HashMap<Handle, ContactPresence>,
    vcards: VcardFetches,
    archive: Archive,
    pings: u64,
}

impl Session {
    pub(super) fn new(
        stream: Stream,
        own: BareJid,
        events: mpsc::Sender<ConnectorEvent>,
        stop: mpsc::Receiver<()>,
        requests: mpsc::Receiver<Box<Request>>,
        roster: Roster,
        login: &AccountLogin,
    ) -> Self {
        let (roster, roster_complete) = match roster {
            Roster::Complete(entries) => (Contacts::new(entries), true),
            Roster::Absent(_) => (Contacts::new(login.contacts.clone()), false),
        };
        let archive = Archive::new(own.clone(), login.message_cursor.clone());
        Self {
            stream,
            own,
            events,
            stop,
            requests,
            roster,
            roster_complete,
            presence: HashMap::new(),
            vcards: VcardFetches::default(),
            archive,
            pings: 0,
        }
    }

    /// The session until it ends. Every step is boxed: the task then keeps only this loop's
    /// state while idle, not the largest step's (heaptrack: an idle session's task cell was
    /// about 10.7 KiB, the size of its deepest step; a boxed step costs one allocation while
    /// it runs).
    pub(super) async fn run(mut self, backlog: VecDeque<Stanza>) {
        let mut end = Ok(());
        for stanza in backlog {
            end = Box::pin(self.handle_stanza(stanza)).await;
            if end.is_err() {
                break;
            }
        }
        if end.is_ok() {
            let everyone: Vec<Handle> = self.roster.handles().cloned().collect();
            end = Box::pin(self.report_silent_contacts(&everyone)).await;
            self.fetch_vcards(everyone);
        }
        if end.is_ok() {
            let disco = self.archive.start(Instant::now());
            end = Box::pin(self.send(disco.into())).await;
        }
        while end.is_ok() {
            self.archive.expire(Instant::now());
            end = Box::pin(self.pump_vcards()).await;
            if end.is_err() {
                break;
            }
            let wakeup = [self.vcards.next_wakeup(), self.archive.next_wakeup()]
                .into_iter()
                .flatten()
                .min();
            end = tokio::select! {
                _ = self.stop.recv() => Err(End::Local),
                _ = self.events.closed() => Err(End::Local),
                Some(request) = self.requests.recv() => match *request {
                    Request::Send(outgoing) => Box::pin(self.send_message(outgoing)).await,
                    Request::Accept(acceptance) => Box::pin(self.accept(acceptance)).await,
                },
                item = self.stream.next() => Box::pin(self.handle_item(item)).await,
                // A vCard or archive answer overdue or a batch of profiles due: the next turn
                // sees to it.
                () = async {
                    match wakeup {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Ok(()),
            };
        }
        match end {
            Err(End::Remote(reason)) => {
                debug!(%reason, "xmpp session lost");
                // Best effort: the receiver may be gone or the stop may come first.
                let _ = Box::pin(self.emit(ConnectorEvent::Disconnected { reason })).await;
            }
            Err(End::Local) | Ok(()) => Box::pin(self.say_goodbye()).await,
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
    /// Results of our archive query go to the catch-up. A message our archive gave an id is
    /// followed by that id as the cursor, once the catch-up allows it.
    async fn handle_message(&mut self, message: Message) -> Result<(), End> {
        if let Some(step) = self.archive.result(&message) {
            return match step {
                Some(step) => self.take_archive_step(step).await,
                None => Ok(()),
            };
        }
        if let Some((_, from, body)) = chat_message(&message) {
            let id = message_id(&message, &self.own);
            if id.as_deref().is_none_or(|id| self.archive.first_sight(id)) {
                // Offline storage replays old messages with a delay stamp: keep their real time.
                let sent_at = delay_stamp(&message.payloads).unwrap_or_else(chrono::Utc::now);
                self.emit(ConnectorEvent::Message(IncomingMessage {
                    from,
                    body,
                    sent_at,
                    id,
                }))
                .await?;
            }
        }
        // Whatever it was, the archive has it: everything up to it has been seen.
        match archive_id(&message, &self.own) {
            Some(cursor) if self.archive.live_cursors() => {
                self.emit(ConnectorEvent::MessageCursor(cursor)).await
            }
            _ => Ok(()),
        }
    }

    async fn take_archive_step(&mut self, step: Step) -> Result<(), End> {
        match step {
            Step::Send(iq) => self.send((*iq).into()).await,
            Step::Report(message) => self.emit(ConnectorEvent::Message(message)).await,
            Step::Cursor(cursor) => self.emit(ConnectorEvent::MessageCursor(cursor)).await,
        }
    }

    /// Sends one chat message and tells the sender how it went. Only a broken connection ends
    /// the session; a bad recipient is the sender's problem.
    async fn send_message(&mut self, outgoing: Outgoing) -> Result<(), End> {
        let Outgoing { message, done } = outgoing;
        let OutgoingMessage { to, body, id, .. } = message;
        let to = match BareJid::new(to.as_str()) {
            Ok(jid) => jid,
            Err(e) => {
                let _ = done.send(Err(ConnectorError::Refused(format!("bad JID: {e}"))));
                return Ok(());
            }
        };
        // Switchboard's id, the same on every attempt, as the stanza id and the origin-id
        // (XEP-0359), which the recipient's archive and offline storage keep.
        let mut message = Message::chat(Some(Jid::from(to)))
            .with_body(Lang::default(), body)
            .with_payload(OriginId { id: id.clone() });
        message.id = Some(MessageId(id.clone()));
        let sent = self.send(message.into()).await;
        let _ = done.send(match &sent {
            Ok(()) => Ok(Sent {
                network_id: Some(id),
            }),
            Err(_) => Err(ConnectorError::Closed),
        });
        sent
    }

    /// The user accepted a message request from `from`: adds them to the roster and shares
    /// presence both ways (asks for theirs, approves our own to them). The server pushes the
    /// new roster item, which reports the change.
    async fn accept(&mut self, acceptance: Acceptance) -> Result<(), End> {
        let Acceptance { from, done, .. } = acceptance;
        let jid = match BareJid::new(from.as_str()) {
            Ok(jid) => jid,
            Err(e) => {
                let _ = done.send(Err(ConnectorError::Refused(format!("bad JID: {e}"))));
                return Ok(());
            }
        };
        let item = Item {
            jid: jid.clone(),
            name: None,
            subscription: Subscription::None,
            ask: Ask::None,
            groups: Vec::new(),
            approved: None,
        };
        let add = Iq::from_set(
            format!("switchboard-accept-{}", uuid::Uuid::new_v4().simple()),
            RosterQuery {
                ver: None,
                items: vec![item],
            },
        );
        let mut sent = self.send(add.into()).await;
        for kind in [PresenceType::Subscribe, PresenceType::Subscribed] {
            if sent.is_ok() {
                sent = self
                    .send(Presence::new(kind).with_to(jid.clone()).into())
                    .await;
            }
        }
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
        if !self.roster.contains(&handle) {
            debug!(%bare, "ignoring presence from outside the roster");
            return Ok(());
        }
        let resource = from.resource().map_or("", |r| r.as_str()).to_owned();
        let contact = self.presence.entry(handle.clone()).or_default();
        match presence.type_ {
            PresenceType::None => {
                if let Some(hash) = avatar_hash(&presence.payloads) {
                    // The first hash seen goes with the vCard fetched after login.
                    let changed = contact.avatar.as_deref().is_some_and(|seen| *seen != hash);
                    contact.avatar = Some(hash.into_boxed_str());
                    if changed {
                        debug!(%handle, "avatar changed: fetching the vCard again");
                        self.vcards.refresh(handle.clone());
                    }
                }
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
                match RosterQuery::try_from(payload) {
                    Ok(push) => {
                        self.send(result_reply(from, id)).await?;
                        let added = self.apply_roster_push(&push.items);
                        if self.roster_complete {
                            self.emit(ConnectorEvent::RosterChanged(self.roster.entries()))
                                .await?;
                        } else {
                            debug!("roster push while the roster is unknown: not reported");
                        }
                        self.report_silent_contacts(&added).await?;
                        self.fetch_vcards(added);
                        Ok(())
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
            // Archive and vCard answers are taken; the rest answer our keepalive pings, which
            // have done their job by arriving.
            Iq::Result { .. } | Iq::Error { .. } => {
                let now = Instant::now();
                if let Some(steps) = self.archive.answer(&iq, now) {
                    for step in steps {
                        self.take_archive_step(step).await?;
                    }
                } else {
                    self.vcards.answer(iq, now);
                }
                Ok(())
            }
        }
    }

    /// Reports the `contacts` that no presence has been reported for yet as offline: the whole
    /// roster right after login, and the contacts a roster push adds. A contact is offline
    /// until its presence says otherwise (RFC 6121 §4.3), but servers differ in whether they say
    /// so: for an offline contact we are subscribed to, the server only SHOULD answer our
    /// login's presence probe with `unavailable` (§4.3.2; Prosody does, ejabberd does not), and
    /// for a contact without a subscription nothing is ever sent. Reporting it here gives every
    /// contact a presence on every server; one that is online follows within moments.
    async fn report_silent_contacts(&mut self, contacts: &[Handle]) -> Result<(), End> {
        let own = self.own_handle();
        for handle in contacts {
            let silent = Some(handle) != own.as_ref()
                && self
                    .presence
                    .get(handle)
                    .is_none_or(|contact| contact.reported.is_none());
            if !silent {
                continue;
            }
            let contact = self.presence.entry(handle.clone()).or_default();
            let (availability, status) = contact.summary();
            contact.reported = Some((availability, status.clone()));
            self.emit(ConnectorEvent::Presence {
                handle: handle.clone(),
                availability,
                status,
            })
            .await?;
        }
        Ok(())
    }

    /// Queues the first vCard fetch of contacts new to this session: the roster at login, the
    /// contacts a push adds. Not our own account's, should it be on its roster.
    fn fetch_vcards(&mut self, contacts: Vec<Handle>) {
        let own = self.own_handle();
        self.vcards.fetch(
            contacts
                .into_iter()
                .filter(|handle| Some(handle) != own.as_ref()),
        );
    }

    /// Sends the vCard requests there is room for, and reports the profiles that are due.
    async fn pump_vcards(&mut self) -> Result<(), End> {
        let now = Instant::now();
        self.vcards.expire(now);
        while let Some(request) = self.vcards.next_request(now) {
            self.send(request.into()).await?;
        }
        match self.vcards.take_batch(now) {
            Some(batch) => self.emit(ConnectorEvent::Profiles(batch)).await,
            None => Ok(()),
        }
    }

    fn own_handle(&self) -> Option<Handle> {
        Handle::parse(Protocol::Xmpp, self.own.as_str()).ok()
    }

    fn is_own_account(&self, from: Option<&Jid>) -> bool {
        from.is_none_or(|from| from.to_bare() == self.own)
    }

    /// Applies a roster push; returns the contacts it added.
    fn apply_roster_push(&mut self, items: &[Item]) -> Vec<Handle> {
        let mut added = Vec::new();
        for item in items {
            let Ok(handle) = Handle::parse(Protocol::Xmpp, item.jid.as_str()) else {
                continue;
            };
            match roster_entry(item) {
                Some(entry) => {
                    if self.roster.upsert(entry) {
                        added.push(handle);
                    }
                }
                None => {
                    if self.roster.remove(&handle) {
                        self.presence.remove(&handle);
                        self.vcards.forget(&handle);
                    }
                }
            }
        }
        added
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_keep_the_server_order_and_are_found_by_handle() {
        let entry = |jid: &str, name: Option<&str>| RosterEntry {
            handle: Handle::parse(Protocol::Xmpp, jid).unwrap(),
            display_name: name.map(str::to_owned),
        };
        let mut contacts = Contacts::new(vec![
            entry("cid@example.org", None),
            entry("ben@example.org", Some("Ben")),
            entry("cid@example.org", Some("Cid")),
        ]);
        assert_eq!(
            contacts.entries(),
            [
                entry("cid@example.org", Some("Cid")),
                entry("ben@example.org", Some("Ben"))
            ]
        );
        assert!(contacts.upsert(entry("ann@example.org", None)));
        assert!(!contacts.upsert(entry("ben@example.org", Some("Benny"))));
        assert!(contacts.remove(&entry("cid@example.org", None).handle));
        assert!(!contacts.remove(&entry("cid@example.org", None).handle));
        assert!(contacts.contains(&entry("ann@example.org", None).handle));
        assert!(!contacts.contains(&entry("cid@example.org", None).handle));
        assert_eq!(
            contacts.entries(),
            [
                entry("ben@example.org", Some("Benny")),
                entry("ann@example.org", None)
            ]
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
}
