//! The task of a logged-in Matrix session: long-polls `/sync`, reports what changed, sends
//! messages; and the control side that stops it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::api::{sync_filter, ApiError, SyncResponse, SYNC_POLL};
use super::session::{Gap, Invite, Member, News, Session, SYNC_TIMELINE};
use crate::connectors::task::{self, Acceptance, Outgoing, Request};
use crate::connectors::{
    Availability, ConnectorError, ConnectorEvent, IncomingMessage, Invitation, OutgoingMessage,
    Sent,
};
use crate::domain::ids::{Handle, Protocol};

/// Failed `/sync`s in a row retried before the session reports itself disconnected.
const SYNC_RETRIES: u32 = 3;
/// How long a closing session tries to set its presence offline.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// Upper bound for [`SessionControl::close`]: the goodbye plus a request in flight.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often at most a sync that brought no message moves the reported message cursor on (one
/// that brought messages reports it at once). It only spares the next login some history that
/// holds nothing to report, so there is no need to have Switchboard store it after every sync.
const CURSOR_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before a gap whose fetch failed is fetched once more.
const GAP_RETRY_PAUSE: Duration = Duration::from_secs(1);

type PendingSync = Pin<Box<dyn Future<Output = Result<SyncResponse, ApiError>> + Send>>;

impl Session {
    pub(super) async fn run(
        self,
        events: mpsc::Sender<ConnectorEvent>,
        stop: mpsc::Receiver<()>,
        requests: mpsc::Receiver<Box<Request>>,
    ) {
        Live {
            session: self,
            events,
            stop,
            requests,
            invited: HashSet::new(),
            fetched: HashSet::new(),
            filter: sync_filter(SYNC_TIMELINE),
            reported: HashMap::new(),
            cursor: Cursor::default(),
        }
        .run()
        .await;
    }
}

/// Why a session ends.
enum End {
    /// Closed or dropped by Switchboard: say goodbye, report nothing.
    Local,
    /// Lost upstream: report the reason.
    Remote(String),
}

/// What woke the session task.
enum Wake {
    Stop,
    Asked(Request),
    Synced(Result<SyncResponse, ApiError>),
}

/// A running session: the state plus its channels.
struct Live {
    session: Session,
    events: mpsc::Sender<ConnectorEvent>,
    /// Receives on close; yields `None` once the control side is dropped. Either way: stop.
    stop: mpsc::Receiver<()>,
    requests: mpsc::Receiver<Box<Request>>,
    /// Strangers' invitations reported in this session (room ids): reported once each.
    invited: HashSet<String>,
    /// Ids of messages reported from the history of rooms joined on the user's acceptance,
    /// which the next syncs bring again: not reported twice.
    fetched: HashSet<String>,
    filter: String,
    /// What was last reported per contact, to report only changes.
    reported: HashMap<Handle, (Availability, Option<String>)>,
    cursor: Cursor,
}

/// The message cursor as reported: the `/sync` position up to which every message was.
#[derive(Default)]
struct Cursor {
    reported: Option<String>,
    at: Option<Instant>,
    /// A gap could not be fetched: messages before the current position are missing, so the
    /// cursor stays where it was for the rest of the session, and the next login fetches them
    /// (with the messages after them again, which Switchboard keeps once by id).
    stuck: bool,
}

impl Live {
    async fn run(mut self) {
        let end = self.serve().await;
        match end {
            End::Remote(reason) => {
                debug!(%reason, "matrix session lost");
                // Best effort: the receiver may be gone or the stop may come first.
                let _ = self.emit(ConnectorEvent::Disconnected { reason }).await;
            }
            End::Local => self.say_goodbye().await,
        }
    }

    async fn serve(&mut self) -> End {
        let first = std::mem::take(&mut self.session.first);
        // The first sync's invites, then every contact's presence once (offline until the
        // server says otherwise), then the messages since the cursor, and the new cursor.
        let first = async {
            let messages = self.fill_gaps(first.messages, first.gaps).await?;
            self.after_sync(first.invites, Vec::new(), Vec::new())
                .await?;
            self.report_all_presence().await?;
            self.after_sync(Vec::new(), messages, Vec::new()).await?;
            self.report_cursor(true).await
        };
        if let Err(end) = first.await {
            return end;
        }
        let mut failures = 0;
        let mut pending = self.next_sync(Duration::ZERO);
        loop {
            let wake = tokio::select! {
                _ = self.stop.recv() => Wake::Stop,
                _ = self.events.closed() => Wake::Stop,
                Some(request) = self.requests.recv() => Wake::Asked(*request),
                result = &mut pending => Wake::Synced(result),
            };
            let step = match wake {
                Wake::Stop => Err(End::Local),
                Wake::Asked(Request::Send(outgoing)) => self.send_message(outgoing).await,
                Wake::Asked(Request::Accept(acceptance)) => self.accept(acceptance).await,
                Wake::Synced(Ok(sync)) => {
                    failures = 0;
                    let news = self.session.absorb(sync, true);
                    let done = self.report_news(news).await;
                    pending = self.next_sync(Duration::ZERO);
                    done
                }
                Wake::Synced(Err(e)) if e.is_unknown_token() => Err(token_gone()),
                Wake::Synced(Err(e)) if e.is_transient() && failures < SYNC_RETRIES => {
                    failures += 1;
                    let pause = match &e {
                        ApiError::Status {
                            retry_after: Some(after),
                            ..
                        } => (*after).min(Duration::from_secs(30)),
                        _ => Duration::from_secs(u64::from(failures)),
                    };
                    debug!(attempt = failures, ?pause, "sync failed, retrying: {e}");
                    pending = self.next_sync(pause);
                    Ok(())
                }
                Wake::Synced(Err(e)) => Err(End::Remote(format!("sync failed: {e}"))),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// The next `/sync` from where the last one ended, after `pause`.
    fn next_sync(&self, pause: Duration) -> PendingSync {
        let api = self.session.api.clone();
        let since = self.session.since.clone();
        let filter = self.filter.clone();
        Box::pin(async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            api.sync(Some(&since), &filter, SYNC_POLL, false).await
        })
    }

    /// Acts on a sync and reports what it brought, messages of gaps included; then the
    /// cursor, at once if there were messages.
    async fn report_news(&mut self, news: News) -> Result<(), End> {
        let News {
            invites,
            messages,
            gaps,
            presence,
        } = news;
        let messages = self.fill_gaps(messages, gaps).await?;
        let any = !messages.is_empty();
        self.after_sync(invites, messages, presence).await?;
        self.report_cursor(any).await
    }

    /// `messages` with those of the `gaps` before them, in the order they were sent. A gap
    /// that cannot be fetched (after one retry) is left out, and holds the cursor back.
    async fn fill_gaps(
        &mut self,
        messages: Vec<IncomingMessage>,
        gaps: Vec<Gap>,
    ) -> Result<Vec<IncomingMessage>, End> {
        if gaps.is_empty() {
            return Ok(messages);
        }
        let mut all = Vec::new();
        for gap in &gaps {
            let mut fetched = self.session.fetch_gap(gap).await;
            if matches!(&fetched, Err(e) if e.is_transient()) {
                tokio::time::sleep(GAP_RETRY_PAUSE).await;
                fetched = self.session.fetch_gap(gap).await;
            }
            match fetched {
                Ok(found) => {
                    debug!(room = %gap.room, messages = found.len(), "fetched a gap back");
                    all.extend(found);
                }
                Err(e) if e.is_unknown_token() => return Err(token_gone()),
                Err(e) => {
                    warn!(room = %gap.room, "cannot fetch the messages of a gap: {e}");
                    self.cursor.stuck = true;
                }
            }
        }
        // The timelines' messages follow their gaps; a message is never reported twice.
        let known: std::collections::HashSet<String> =
            messages.iter().filter_map(|m| m.id.clone()).collect();
        all.retain(|m| m.id.as_ref().is_none_or(|id| !known.contains(id)));
        all.extend(messages);
        all.sort_by_key(|message| message.sent_at);
        Ok(all)
    }

    /// Reports the sync position as the message cursor if it moved, and either `now` or the
    /// last report is [`CURSOR_INTERVAL`] old.
    async fn report_cursor(&mut self, now: bool) -> Result<(), End> {
        let position = &self.session.since;
        if self.cursor.stuck
            || position.is_empty()
            || self.cursor.reported.as_ref() == Some(position)
        {
            return Ok(());
        }
        if !now
            && self
                .cursor
                .at
                .is_some_and(|at| at.elapsed() < CURSOR_INTERVAL)
        {
            return Ok(());
        }
        let position = position.clone();
        self.cursor.reported = Some(position.clone());
        self.cursor.at = Some(Instant::now());
        self.emit(ConnectorEvent::MessageCursor(position)).await
    }

    /// Accepts DM invites, then reports roster changes, the presence of the contacts among
    /// `presence` (lower-case user ids) and messages.
    async fn after_sync(
        &mut self,
        invites: Vec<Invite>,
        messages: Vec<IncomingMessage>,
        presence: Vec<String>,
    ) -> Result<(), End> {
        self.accept_invites(invites).await?;
        self.refresh_roster().await?;
        for user in presence {
            if let Ok(handle) = Handle::parse(Protocol::Matrix, &user) {
                self.report_presence(handle).await?;
            }
        }
        for message in messages {
            let again = message
                .id
                .as_ref()
                .is_some_and(|id| self.fetched.remove(id));
            if !again {
                self.emit(ConnectorEvent::Message(message)).await?;
            }
        }
        Ok(())
    }

    /// Joins the DM rooms contacts invited us to and lists them in `m.direct`. A stranger's
    /// invitation is reported instead, and left pending until the user accepts it.
    async fn accept_invites(&mut self, invites: Vec<Invite>) -> Result<(), End> {
        let mut welcome = Vec::new();
        for invite in invites {
            if self.session.knows(&invite.inviter) {
                welcome.push((invite.inviter, invite.room));
                continue;
            }
            if !self.invited.insert(invite.room.clone()) {
                continue;
            }
            let Ok(from) = Handle::parse(Protocol::Matrix, &invite.inviter.to_lowercase()) else {
                continue;
            };
            debug!(room = %invite.room, inviter = %invite.inviter, "a stranger invites us to a DM");
            self.emit(ConnectorEvent::Invitation(Invitation {
                from,
                id: invite.room,
                note: invite.reason,
                received_at: chrono::Utc::now(),
            }))
            .await?;
        }
        self.join_direct_rooms(welcome).await.map(|_| ())
    }

    /// Joins `(inviter, room)` DM rooms and lists the joined ones in `m.direct`; returns them.
    async fn join_direct_rooms(
        &mut self,
        rooms: Vec<(String, String)>,
    ) -> Result<Vec<String>, End> {
        let mut joined = Vec::new();
        for (inviter, room) in rooms {
            match self.session.api.join(&room).await {
                Ok(()) => {
                    debug!(%room, %inviter, "joined a DM room we were invited to");
                    self.session.joined.insert(room.clone());
                    joined.push((inviter, room));
                }
                Err(e) if e.is_unknown_token() => return Err(token_gone()),
                Err(e) => warn!(%room, %inviter, "cannot join a DM room we were invited to: {e}"),
            }
        }
        if joined.is_empty() {
            return Ok(Vec::new());
        }
        match self.session.add_direct_rooms(&joined).await {
            Ok(()) => {}
            Err(e) if e.is_unknown_token() => return Err(token_gone()),
            // Kept in our copy all the same, until a sync brings the server's.
            Err(e) => warn!("cannot update m.direct: {e}"),
        }
        Ok(joined.into_iter().map(|(_, room)| room).collect())
    }

    /// The user accepted a stranger's message request: joins the rooms of their invitations,
    /// lists them in `m.direct` (which makes them a contact) and reports what they wrote
    /// there before. Later invitations from them are joined without asking.
    async fn accept(&mut self, acceptance: Acceptance) -> Result<(), End> {
        let Acceptance {
            from,
            invitations,
            done,
        } = acceptance;
        self.session.know(from.as_str());
        let rooms: Vec<(String, String)> = invitations
            .into_iter()
            .filter(|room| room.starts_with('!'))
            .map(|room| (from.as_str().to_owned(), room))
            .collect();
        let asked = rooms.len();
        let joined = self.join_direct_rooms(rooms).await?;
        let _ = done.send(if asked > 0 && joined.is_empty() {
            Err(ConnectorError::Refused(
                "the invitation can no longer be joined".to_owned(),
            ))
        } else {
            Ok(())
        });
        for room in joined {
            match self.session.fetch_history(&room).await {
                Ok(messages) => {
                    for message in messages {
                        self.fetched.extend(message.id.clone());
                        self.emit(ConnectorEvent::Message(message)).await?;
                    }
                }
                Err(e) if e.is_unknown_token() => return Err(token_gone()),
                Err(e) => warn!(%room, "cannot read the messages of an accepted invitation: {e}"),
            }
        }
        self.refresh_roster().await
    }

    /// Reports the roster if it changed, and then the presence of contacts it added.
    async fn refresh_roster(&mut self) -> Result<(), End> {
        let Some(roster) = self.session.refresh_roster().await else {
            return Ok(());
        };
        self.emit(ConnectorEvent::RosterChanged(roster)).await?;
        let session = &self.session;
        self.reported.retain(|handle, _| session.is_contact(handle));
        self.report_all_presence().await
    }

    /// Reports every contact's presence that changed, or was never reported: contacts are
    /// offline until the server says otherwise.
    async fn report_all_presence(&mut self) -> Result<(), End> {
        let handles: Vec<Handle> = self
            .session
            .contacts()
            .iter()
            .map(|entry| entry.handle.clone())
            .collect();
        for handle in handles {
            self.report_presence(handle).await?;
        }
        Ok(())
    }

    /// Reports a contact's presence if it changed since last reported; others are not ours.
    async fn report_presence(&mut self, handle: Handle) -> Result<(), End> {
        if !self.session.is_contact(&handle) {
            return Ok(());
        }
        let now = self
            .session
            .seen
            .get(handle.as_str())
            .cloned()
            .unwrap_or((Availability::Offline, None));
        if self.reported.get(&handle) == Some(&now) {
            return Ok(());
        }
        self.reported.insert(handle.clone(), now.clone());
        let (availability, status) = now;
        self.emit(ConnectorEvent::Presence {
            handle,
            availability,
            status,
        })
        .await
    }

    /// Sends one message and tells the sender how it went; only a revoked token ends the
    /// session. A DM room created for it may add a contact, reported once the sender knows.
    async fn send_message(&mut self, outgoing: Outgoing) -> Result<(), End> {
        let Outgoing { message, done } = outgoing;
        let result = self.deliver(&message).await;
        let gone = matches!(result, Err(Failure::TokenGone));
        let _ = done.send(
            result
                .map(|event_id| Sent {
                    network_id: Some(event_id),
                })
                .map_err(|failure| match failure {
                    Failure::TokenGone => ConnectorError::Closed,
                    Failure::Error(e) => e,
                }),
        );
        if gone {
            return Err(token_gone());
        }
        self.refresh_roster().await
    }

    /// Sends `message` to the DM room with its addressee; returns the event's id. The
    /// transaction id is the message's own, so that the server keeps one event for every
    /// attempt it recognises as the same (see the module docs for which).
    async fn deliver(&mut self, message: &OutgoingMessage) -> Result<String, Failure> {
        let user = message.to.as_str();
        if !user.starts_with('@') || !user.contains(':') {
            return Err(ConnectorError::Refused(format!("{user} is not a Matrix user id")).into());
        }
        if self.session.is_own(user) {
            return Err(ConnectorError::Refused("cannot message oneself".to_owned()).into());
        }
        let room = match self.session.dm_room_with(user) {
            Some(room) => room,
            None => self.create_dm(user).await?,
        };
        let txn = transaction_id(&message.id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.session.api.send_text(&room, &txn, &message.body).await {
                Ok(event_id) => return Ok(event_id),
                // The transaction id makes the retry safe: the server keeps one copy.
                Err(e) if e.is_transient() && attempt < 2 => {
                    debug!("sending failed, retrying once: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(send_failure(e)),
            }
        }
    }

    /// A new DM room with `user`, invited, and listed in `m.direct`.
    async fn create_dm(&mut self, user: &str) -> Result<String, Failure> {
        // Synapse invites even user ids nobody has registered; the profile tells. Servers that
        // keep profiles private answer 403 instead, which is no reason not to try.
        match self.session.api.display_name(user).await {
            Err(e) if e.is(StatusCode::NOT_FOUND, "M_NOT_FOUND") => {
                return Err(ConnectorError::Refused(format!("{user} does not exist")).into())
            }
            Err(e) if e.is_unknown_token() => return Err(Failure::TokenGone),
            Ok(name) => {
                let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
                self.session.profiles.insert(user.to_owned(), name);
            }
            Err(e) => debug!(%user, "profile look-up failed: {e}"),
        }
        let room = self
            .session
            .api
            .create_dm(user)
            .await
            .map_err(send_failure)?;
        debug!(%room, %user, "created a DM room");
        let session = &mut self.session;
        session.joined.insert(room.clone());
        let members = session.members.entry(room.clone()).or_default();
        let member = |membership: &str| Member {
            membership: membership.to_owned(),
            display_name: None,
        };
        members.insert(session.own.clone(), member("join"));
        members.insert(user.to_owned(), member("invite"));
        match session
            .add_direct_rooms(&[(user.to_owned(), room.clone())])
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_unknown_token() => return Err(Failure::TokenGone),
            Err(e) => warn!("cannot update m.direct: {e}"),
        }
        Ok(room)
    }

    /// Queues an event; gives up when Switchboard stops the session or stops listening.
    async fn emit(&mut self, event: ConnectorEvent) -> Result<(), End> {
        task::emit(&self.events, &mut self.stop, event)
            .await
            .map_err(|task::Stopped| End::Local)
    }

    /// Sets our presence offline; the access token stays valid for the next login.
    async fn say_goodbye(&self) {
        let session = &self.session;
        match session
            .api
            .set_presence(&session.own, "offline", GOODBYE_GRACE)
            .await
        {
            Ok(()) => debug!("matrix session closed"),
            Err(e) => debug!("matrix session closed; presence not set offline: {e}"),
        }
    }
}

/// The transaction id of a message Switchboard sends: derived from its own id only.
fn transaction_id(message_id: &str) -> String {
    format!("switchboard.{message_id}")
}

fn token_gone() -> End {
    End::Remote("the server no longer accepts the access token (logged out?)".to_owned())
}

/// Why a message could not be sent.
enum Failure {
    /// The access token is no longer valid: the session is over.
    TokenGone,
    Error(ConnectorError),
}

impl From<ConnectorError> for Failure {
    fn from(error: ConnectorError) -> Self {
        Failure::Error(error)
    }
}

fn send_failure(error: ApiError) -> Failure {
    if error.is_unknown_token() {
        return Failure::TokenGone;
    }
    Failure::Error(match error {
        ApiError::Network(reason) => ConnectorError::Unreachable(reason),
        ApiError::Status { .. } if error.is_transient() => {
            ConnectorError::Unreachable(error.to_string())
        }
        ApiError::Status { .. } => ConnectorError::Refused(error.to_string()),
        ApiError::Decode(_) => ConnectorError::Protocol(error.to_string()),
    })
}
