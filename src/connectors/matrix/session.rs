//! A logged-in Matrix account as the syncs so far described it: `m.direct`, memberships,
//! presence; and what a sync brings that the session task must act on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use tracing::{debug, warn};

use super::api::{first_sync_filter, Api, ApiError, Event, SyncResponse};
use crate::connectors::{Availability, IncomingMessage, Roster, RosterEntry};
use crate::domain::ids::{Handle, Protocol};

/// Events per room and sync. A first sync without a message cursor only needs room state (its
/// history is not reported); one from a cursor carries the full state of every room too, so its
/// timelines are kept short, the rest of a DM room's gap being fetched back page by page. Later
/// syncs carry what happened during one long poll, rarely more than a few.
const FIRST_SYNC_TIMELINE: u32 = 1;
pub(super) const CATCH_UP_TIMELINE: u32 = 20;
pub(super) const SYNC_TIMELINE: u32 = 50;
/// Messages per `/messages` page when a DM room's gap is fetched back, and pages at most per
/// room and sync: messages beyond those 400 in one gap are not reported.
pub(super) const GAP_PAGE: u32 = 40;
pub(super) const GAP_PAGES: usize = 10;

/// One member of a room, from its `m.room.member` state.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) membership: String,
    pub(super) display_name: Option<String>,
}

/// The account's state as the syncs so far described it.
pub(super) struct Session {
    pub(super) api: Api,
    /// Our user id, as the server spells it.
    pub(super) own: String,
    /// The `/sync` position to continue from.
    pub(super) since: String,
    /// `m.direct` as last read or written: user id → DM room ids, oldest first.
    pub(super) direct: BTreeMap<String, Vec<String>>,
    /// `direct` is the server's whole `m.direct` (read, or written by us): until then the
    /// contacts are unknown, and `direct` holds at most rooms we added ourselves.
    direct_known: bool,
    /// `direct` the other way round, for the lookups of every message and member event.
    direct_index: DirectIndex,
    /// Something the contacts are made of changed since they were last computed.
    roster_dirty: bool,
    /// Rooms we are joined to.
    pub(super) joined: HashSet<String>,
    /// Room id → user id → membership, for the rooms we are joined to.
    pub(super) members: HashMap<String, HashMap<String, Member>>,
    /// Profile display names looked up for contacts without a member event to name them.
    pub(super) profiles: HashMap<String, Option<String>>,
    /// The contacts as last computed, in handle order; `None` while `m.direct` is unknown.
    roster: Option<Vec<RosterEntry>>,
    /// The same contacts, for lookups.
    contacts: HashSet<Handle>,
    /// Latest presence by user id (lower case), of anyone the server told us about.
    pub(super) seen: HashMap<String, (Availability, Option<String>)>,
    /// What the first sync brought (DM invites, and messages since the cursor if there was
    /// one), acted on once the session runs.
    pub(super) first: News,
    /// Makes the first sync's filter unique to the session (see [`first_sync_filter`]).
    session_key: String,
    /// Lower-case user ids Switchboard holds as the account's contacts (a request the user
    /// accepted among them): their invitations are joined without asking.
    known: HashSet<String>,
}

/// `m.direct` looked up the other way round.
#[derive(Default)]
struct DirectIndex {
    /// Lower-case user id → the keys of `m.direct` that spell it (in key order).
    spellings: HashMap<String, Vec<String>>,
    /// Room id → lower-case user ids it is a DM room with.
    by_room: HashMap<String, HashSet<String>>,
}

impl DirectIndex {
    fn of(direct: &BTreeMap<String, Vec<String>>) -> Self {
        let mut index = Self::default();
        for (user, rooms) in direct {
            index.add_user(user);
            for room in rooms {
                index.add_room(user, room);
            }
        }
        index
    }

    fn add_user(&mut self, user: &str) {
        let spellings = self.spellings.entry(user.to_lowercase()).or_default();
        if !spellings.iter().any(|known| known == user) {
            spellings.push(user.to_owned());
        }
    }

    fn add_room(&mut self, user: &str, room: &str) {
        self.by_room
            .entry(room.to_owned())
            .or_default()
            .insert(user.to_lowercase());
    }
}

/// An invitation to a room marked as a DM.
pub(super) struct Invite {
    pub(super) room: String,
    pub(super) inviter: String,
    /// What the inviter said with it.
    pub(super) reason: Option<String>,
}

/// What one sync brought that needs acting on, beyond the state it updated.
#[derive(Default)]
pub(super) struct News {
    pub(super) invites: Vec<Invite>,
    /// In the order they were sent.
    pub(super) messages: Vec<IncomingMessage>,
    /// DM rooms whose timeline left events out: their messages are still to be fetched.
    pub(super) gaps: Vec<Gap>,
    /// Users (lower-case ids) whose presence the sync brought.
    pub(super) presence: Vec<String>,
}

/// Events a sync left out of a DM room's timeline (it was `limited`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Gap {
    pub(super) room: String,
    /// Where the gap ends: just before the timeline's first event.
    pub(super) from: String,
    /// Where it starts: the position the sync continued from, up to which everything was seen.
    pub(super) to: String,
}

impl Session {
    /// Reads the account's current state with a first `/sync`. From a message `cursor` (a
    /// sync position an earlier session reported) it brings the messages since then too, kept
    /// in [`Session::first`]; without one, or from one the server refuses, history is not
    /// reported.
    pub(super) async fn start(
        api: Api,
        own: String,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut session = Self::new(api, own);
        if let Some(cursor) = cursor {
            let filter = first_sync_filter(CATCH_UP_TIMELINE, &session.session_key);
            match session
                .api
                .sync(Some(cursor), &filter, Duration::ZERO, true)
                .await
            {
                Ok(first) => {
                    session.since = cursor.to_owned();
                    session.first = session.absorb(first, true);
                    session.refresh_roster().await;
                    return Ok(session);
                }
                // A position from before a server reset, or garbage: start afresh. Should the
                // access token be the problem, the sync below says so.
                Err(e @ ApiError::Status { status, .. })
                    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS =>
                {
                    debug!("the server refuses the message cursor, reading no history: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        let filter = first_sync_filter(FIRST_SYNC_TIMELINE, &session.session_key);
        let first = session
            .api
            .sync(None, &filter, Duration::ZERO, false)
            .await?;
        session.first = session.absorb(first, false);
        session.refresh_roster().await;
        Ok(session)
    }

    fn new(api: Api, own: String) -> Self {
        Self {
            api,
            own,
            since: String::new(),
            direct: BTreeMap::new(),
            direct_known: false,
            direct_index: DirectIndex::default(),
            roster_dirty: true,
            joined: HashSet::new(),
            members: HashMap::new(),
            profiles: HashMap::new(),
            roster: None,
            contacts: HashSet::new(),
            seen: HashMap::new(),
            first: News::default(),
            session_key: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            known: HashSet::new(),
        }
    }

    /// The contacts as the connector reports them at login.
    pub(super) fn roster(&self) -> Roster {
        match &self.roster {
            Some(entries) => Roster::Complete(entries.clone()),
            None => Roster::Absent("the account has no m.direct account data".to_owned()),
        }
    }

    /// The contacts, in handle order (none while `m.direct` is unknown).
    pub(super) fn contacts(&self) -> &[RosterEntry] {
        self.roster.as_deref().unwrap_or_default()
    }

    pub(super) fn is_contact(&self, handle: &Handle) -> bool {
        self.contacts.contains(handle)
    }

    /// Adds `user` to the users whose invitations are joined without asking.
    pub(super) fn know(&mut self, user: &str) {
        self.known.insert(user.to_lowercase());
    }

    /// `user` is a contact, upstream or in Switchboard: an invitation from them is welcome.
    pub(super) fn knows(&self, user: &str) -> bool {
        let user = user.to_lowercase();
        self.known.contains(&user) || self.direct_index.spellings.contains_key(&user)
    }

    /// Recomputes the contacts if something they are made of changed. Returns them when they
    /// differ from before, or are known for the first time (an empty list included).
    pub(super) async fn refresh_roster(&mut self) -> Option<Vec<RosterEntry>> {
        if !self.roster_dirty || !self.direct_known {
            return None;
        }
        // Stays dirty while a profile look-up fails, to be tried again after the next sync.
        self.roster_dirty = !self.look_up_missing_names().await;
        let roster = self.compute_roster();
        if self.roster.as_ref() == Some(&roster) {
            return None;
        }
        self.contacts = roster.iter().map(|entry| entry.handle.clone()).collect();
        self.roster = Some(roster.clone());
        Some(roster)
    }

    /// Replaces our copy of `m.direct` with the server's.
    fn set_direct(&mut self, direct: BTreeMap<String, Vec<String>>) {
        self.direct_index = DirectIndex::of(&direct);
        self.direct = direct;
        self.direct_known = true;
        self.roster_dirty = true;
    }

    /// Takes in one sync: `m.direct`, memberships, presence; returns the DM invites and, when
    /// `deliver`, the new messages from others in DM rooms and the gaps in those rooms.
    pub(super) fn absorb(&mut self, sync: SyncResponse, deliver: bool) -> News {
        let since = std::mem::replace(&mut self.since, sync.next_batch);
        // Account data first: a message below may arrive in a DM room that it just added.
        for event in &sync.account_data.events {
            if event.kind == "m.direct" {
                self.set_direct(parse_direct(&event.content));
            }
        }
        for (room, left) in sync.rooms.leave {
            debug!(%room, events = left.timeline.events.len(), "left a room");
            self.joined.remove(&room);
            // Its member events may have named a contact.
            if self.members.remove(&room).is_some() && self.direct_index.by_room.contains_key(&room)
            {
                self.roster_dirty = true;
            }
        }
        let mut timeline = Vec::new();
        let mut gaps = Vec::new();
        for (room, joined) in sync.rooms.join {
            self.joined.insert(room.clone());
            let members = self.members.entry(room.clone()).or_default();
            for event in joined.state.events.iter().chain(&joined.timeline.events) {
                if let Some((user, member)) = member_of(event) {
                    // A contact's member event may rename them.
                    if self
                        .direct_index
                        .spellings
                        .contains_key(&user.to_lowercase())
                    {
                        self.roster_dirty = true;
                    }
                    members.insert(user, member);
                }
            }
            if deliver {
                let gap = joined
                    .timeline
                    .prev_batch
                    .filter(|_| joined.timeline.limited && !since.is_empty())
                    .filter(|_| self.direct_index.by_room.contains_key(&room));
                if let Some(from) = gap {
                    gaps.push(Gap {
                        room: room.clone(),
                        from,
                        to: since.clone(),
                    });
                }
                timeline.extend(
                    joined
                        .timeline
                        .events
                        .into_iter()
                        .map(|e| (room.clone(), e)),
                );
            }
        }
        let mut news = News {
            gaps,
            ..News::default()
        };
        for (room, invited) in sync.rooms.invite {
            let ours = invited.invite_state.events.iter().find(|event| {
                event.kind == "m.room.member"
                    && event.state_key.as_deref() == Some(self.own.as_str())
            });
            let Some(event) = ours else { continue };
            let is_direct = event.content.get("is_direct") == Some(&Value::Bool(true));
            let membership = event.content.get("membership").and_then(Value::as_str);
            if membership != Some("invite") {
                continue;
            }
            if !is_direct || event.sender.is_empty() || self.is_own(&event.sender) {
                debug!(%room, inviter = %event.sender, "leaving a non-DM invite alone");
                continue;
            }
            let reason = event
                .content
                .get("reason")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned);
            news.invites.push(Invite {
                room,
                inviter: event.sender.clone(),
                reason,
            });
        }
        for event in &sync.presence.events {
            if event.kind == "m.presence" && !event.sender.is_empty() {
                let user = event.sender.to_lowercase();
                self.seen.insert(user.clone(), presence_of(&event.content));
                news.presence.push(user);
            }
        }
        for (room, event) in timeline {
            if let Some(message) = self.message_in(&room, &event) {
                news.messages.push(message);
            }
        }
        news.messages.sort_by_key(|message| message.sent_at);
        news
    }

    /// The messages from the other side in a DM room's gap, oldest first: at most
    /// [`GAP_PAGES`] pages back from its end, stopping at its start.
    pub(super) async fn fetch_gap(&self, gap: &Gap) -> Result<Vec<IncomingMessage>, ApiError> {
        self.fetch_back(&gap.room, Some(gap.from.clone()), Some(&gap.to))
            .await
    }

    /// The messages from the other side in a DM room we just joined, oldest first: at most
    /// [`GAP_PAGES`] pages back from now.
    pub(super) async fn fetch_history(&self, room: &str) -> Result<Vec<IncomingMessage>, ApiError> {
        self.fetch_back(room, None, None).await
    }

    /// Reads `room` backwards from `from` (default: its end) to `to` (default: its start), at
    /// most [`GAP_PAGES`] pages; the messages from the other side, oldest first.
    async fn fetch_back(
        &self,
        room: &str,
        mut from: Option<String>,
        to: Option<&str>,
    ) -> Result<Vec<IncomingMessage>, ApiError> {
        let mut messages = Vec::new();
        for _ in 0..GAP_PAGES {
            let page = self
                .api
                .messages_before(room, from.as_deref(), to, GAP_PAGE)
                .await?;
            let done = page.chunk.is_empty();
            messages.extend(
                page.chunk
                    .iter()
                    .filter_map(|event| self.message_in(room, event)),
            );
            match page.end {
                Some(end) if !done && from.as_ref() != Some(&end) => from = Some(end),
                _ => {
                    messages.reverse();
                    return Ok(messages);
                }
            }
        }
        warn!(%room, pages = GAP_PAGES, "a DM room's history is too long: its older messages are not reported");
        messages.reverse();
        Ok(messages)
    }

    /// A text message from the other side of a DM, as an [`IncomingMessage`].
    fn message_in(&self, room: &str, event: &Event) -> Option<IncomingMessage> {
        if event.kind != "m.room.message" && event.kind != "m.room.encrypted" {
            return None;
        }
        if self.is_own(&event.sender) || !self.is_dm_with(room, &event.sender) {
            return None;
        }
        if event.kind == "m.room.encrypted" {
            debug!(%room, sender = %event.sender, "skipping an end-to-end encrypted message: this connector cannot decrypt");
            return None;
        }
        let content = &event.content;
        let msgtype = content.get("msgtype").and_then(Value::as_str);
        if !matches!(msgtype, Some("m.text" | "m.notice")) {
            debug!(%room, ?msgtype, "skipping a message that is not text");
            return None;
        }
        // An edit repeats the whole text with a "* " prefix: the original was reported already.
        let relation = content
            .pointer("/m.relates_to/rel_type")
            .and_then(Value::as_str);
        if relation == Some("m.replace") {
            return None;
        }
        let body = content.get("body").and_then(Value::as_str)?;
        let from = Handle::parse(Protocol::Matrix, &event.sender).ok()?;
        let sent_at = event
            .origin_server_ts
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        Some(IncomingMessage {
            from,
            body: body.to_owned(),
            sent_at,
            id: event.event_id.clone(),
        })
    }

    pub(super) fn is_own(&self, user: &str) -> bool {
        user.eq_ignore_ascii_case(&self.own)
    }

    /// `room` is one of the DM rooms `m.direct` lists for `user`.
    fn is_dm_with(&self, room: &str, user: &str) -> bool {
        self.direct_index
            .by_room
            .get(room)
            .is_some_and(|users| users.contains(&user.to_lowercase()))
    }

    /// The newest DM room with `user` that we are in and they are in or invited to.
    pub(super) fn dm_room_with(&self, user: &str) -> Option<String> {
        let rooms: Vec<&String> = self
            .direct_index
            .spellings
            .get(&user.to_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|who| self.direct.get(who))
            .flatten()
            .collect();
        rooms
            .into_iter()
            .rev()
            .find(|room| {
                self.joined.contains(*room)
                    && self.members.get(*room).is_some_and(|members| {
                        members.iter().any(|(who, member)| {
                            who.eq_ignore_ascii_case(user)
                                && matches!(member.membership.as_str(), "join" | "invite")
                        })
                    })
            })
            .cloned()
    }

    /// Adds DM rooms (user id, room id) to `m.direct`, on top of the server's current copy:
    /// another client of the account may have changed it since our last sync, and writing ours
    /// would undo that. Our copy has the additions even if the write fails. Without a copy of
    /// the server's (it could not be read, and no sync brought it) nothing is written: ours
    /// holds only our additions, and writing it would drop every other DM room.
    pub(super) async fn add_direct_rooms(
        &mut self,
        additions: &[(String, String)],
    ) -> Result<(), ApiError> {
        let unreadable = match self.api.direct(&self.own).await {
            Ok(content) => {
                self.set_direct(parse_direct(&content));
                None
            }
            Err(e) if e.is(StatusCode::NOT_FOUND, "M_NOT_FOUND") => {
                self.set_direct(BTreeMap::new());
                None
            }
            Err(e) if e.is_unknown_token() => return Err(e),
            Err(e) => Some(e),
        };
        for (user, room) in additions {
            self.add_direct(user, room);
        }
        match unreadable {
            Some(e) if !self.direct_known => Err(e),
            Some(e) => {
                debug!("cannot read m.direct, extending our copy: {e}");
                self.api.set_direct(&self.own, &self.direct).await
            }
            None => self.api.set_direct(&self.own, &self.direct).await,
        }
    }

    /// Adds `room` to `m.direct` under `user` (the existing spelling of their id if any).
    fn add_direct(&mut self, user: &str, room: &str) {
        let key = self
            .direct_index
            .spellings
            .get(&user.to_lowercase())
            .and_then(|spellings| spellings.first())
            .cloned()
            .unwrap_or_else(|| user.to_owned());
        self.direct_index.add_user(&key);
        self.direct_index.add_room(&key, room);
        let rooms = self.direct.entry(key).or_default();
        if !rooms.iter().any(|r| r == room) {
            rooms.push(room.to_owned());
            self.roster_dirty = true;
        }
    }

    /// The contacts: every other user in `m.direct`, named by their member event in the
    /// newest DM room that has one, else by their profile.
    fn compute_roster(&self) -> Vec<RosterEntry> {
        let mut entries: BTreeMap<Handle, Option<String>> = BTreeMap::new();
        for (user, rooms) in &self.direct {
            if self.is_own(user) || !user.starts_with('@') {
                continue;
            }
            let Ok(handle) = Handle::parse(Protocol::Matrix, user) else {
                warn!(%user, "skipping an unusable user id in m.direct");
                continue;
            };
            let name = self
                .member_name(user, rooms)
                .or_else(|| self.profiles.get(user).cloned().flatten());
            let slot = entries.entry(handle).or_default();
            if slot.is_none() {
                *slot = name;
            }
        }
        entries
            .into_iter()
            .map(|(handle, display_name)| RosterEntry {
                handle,
                display_name,
            })
            .collect()
    }

    fn member_name(&self, user: &str, rooms: &[String]) -> Option<String> {
        rooms.iter().rev().find_map(|room| {
            self.members
                .get(room)?
                .get(user)?
                .display_name
                .as_deref()
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
        })
    }

    /// Looks up the profile names of contacts no member event names, once per session; false
    /// if a look-up failed for a reason that may pass.
    async fn look_up_missing_names(&mut self) -> bool {
        let missing: Vec<String> = self
            .direct
            .iter()
            .filter(|(user, rooms)| {
                !self.is_own(user)
                    && user.starts_with('@')
                    && !self.profiles.contains_key(*user)
                    && self.member_name(user, rooms).is_none()
            })
            .map(|(user, _)| user.clone())
            .collect();
        let mut all_done = true;
        for user in missing {
            match self.api.display_name(&user).await {
                Ok(name) => {
                    let name = name
                        .map(|name| name.trim().to_owned())
                        .filter(|name| !name.is_empty());
                    self.profiles.insert(user, name);
                }
                Err(e @ ApiError::Status { .. }) if !e.is_transient() => {
                    debug!(%user, "no profile: {e}");
                    self.profiles.insert(user, None);
                }
                Err(e) => {
                    debug!(%user, "profile look-up failed: {e}");
                    all_done = false;
                }
            }
        }
        all_done
    }
}

/// `m.direct` content: user id → room ids; anything malformed is skipped.
fn parse_direct(content: &Value) -> BTreeMap<String, Vec<String>> {
    let Some(map) = content.as_object() else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(user, rooms)| {
            let rooms: Vec<String> = rooms
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            Some((user.clone(), rooms))
        })
        .collect()
}

/// A member state event as (user id, membership).
fn member_of(event: &Event) -> Option<(String, Member)> {
    if event.kind != "m.room.member" {
        return None;
    }
    let user = event.state_key.clone()?;
    let membership = event.content.get("membership")?.as_str()?.to_owned();
    let display_name = event
        .content
        .get("displayname")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((
        user,
        Member {
            membership,
            display_name,
        },
    ))
}

/// An `m.presence` content as availability and status text.
fn presence_of(content: &Value) -> (Availability, Option<String>) {
    let availability = match content.get("presence").and_then(Value::as_str) {
        Some("online") => Availability::Online,
        Some("unavailable") => Availability::Away,
        // MSC3026, not yet in a stable spec release.
        Some("busy" | "org.matrix.msc3026.busy") => Availability::DoNotDisturb,
        _ => Availability::Offline,
    };
    let status = content
        .get("status_msg")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|status| !status.is_empty())
        .map(str::to_owned);
    (availability, status)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn presence_maps_to_availability() {
        let of = |content: Value| presence_of(&content);
        assert_eq!(
            of(json!({"presence": "online"})),
            (Availability::Online, None)
        );
        assert_eq!(
            of(json!({"presence": "unavailable", "status_msg": " lunch "})),
            (Availability::Away, Some("lunch".to_owned()))
        );
        assert_eq!(
            of(json!({"presence": "offline", "status_msg": ""})),
            (Availability::Offline, None)
        );
        assert_eq!(
            of(json!({"presence": "org.matrix.msc3026.busy"})),
            (Availability::DoNotDisturb, None)
        );
        assert_eq!(of(json!({})), (Availability::Offline, None));
    }

    #[test]
    fn malformed_direct_entries_are_skipped() {
        let direct = parse_direct(&json!({
            "@ben:localhost": ["!a:localhost", 7, "!b:localhost"],
            "@cid:localhost": "!c:localhost",
        }));
        assert_eq!(direct.len(), 1);
        assert_eq!(
            direct["@ben:localhost"],
            ["!a:localhost".to_owned(), "!b:localhost".to_owned()]
        );
        assert!(parse_direct(&json!([1, 2])).is_empty());
    }

    fn session_with_direct(direct: Value) -> Session {
        let base = reqwest::Url::parse("http://127.0.0.1:1").unwrap();
        let mut session = Session::new(
            Api::new(reqwest::Client::new(), base),
            "@pia:localhost".to_owned(),
        );
        session.set_direct(parse_direct(&direct));
        session
    }

    fn sync(value: Value) -> SyncResponse {
        serde_json::from_value(value).unwrap()
    }

    #[tokio::test]
    async fn no_m_direct_is_an_absent_roster_and_an_empty_one_a_complete_one() {
        let base = reqwest::Url::parse("http://127.0.0.1:1").unwrap();
        let mut session = Session::new(
            Api::new(reqwest::Client::new(), base),
            "@pia:localhost".to_owned(),
        );
        session.absorb(sync(json!({"next_batch": "s1"})), false);
        assert_eq!(session.refresh_roster().await, None);
        assert!(matches!(session.roster(), Roster::Absent(_)));

        // The first m.direct is news even when it lists nobody; the same again is not.
        let empty = json!({"next_batch": "s2", "account_data": {"events": [
            {"type": "m.direct", "content": {}},
        ]}});
        session.absorb(sync(empty.clone()), true);
        assert_eq!(session.refresh_roster().await, Some(Vec::new()));
        assert_eq!(session.roster(), Roster::Complete(Vec::new()));
        session.absorb(sync(empty), true);
        assert_eq!(session.refresh_roster().await, None);
    }

    #[test]
    fn only_new_text_from_the_dm_partner_is_a_message() {
        let text = |sender: &str, body: &str| {
            json!({"type": "m.room.message", "sender": sender,
                   "content": {"msgtype": "m.text", "body": body}})
        };
        let answer = json!({
            "next_batch": "s2",
            "rooms": {
                "join": {
                    "!dm:localhost": {"timeline": {"events": [
                        {"type": "m.room.message", "sender": "@quin:localhost",
                         "origin_server_ts": 1_700_000_000_000_i64,
                         "content": {"msgtype": "m.text", "body": "hi"}},
                        text("@pia:localhost", "our own echo"),
                        {"type": "m.room.encrypted", "sender": "@quin:localhost",
                         "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                        {"type": "m.room.message", "sender": "@quin:localhost",
                         "content": {"msgtype": "m.image", "body": "cat.png"}},
                        {"type": "m.room.message", "sender": "@quin:localhost",
                         "content": {"msgtype": "m.text", "body": "* hi!",
                                     "m.relates_to": {"rel_type": "m.replace", "event_id": "$1"}}},
                        {"type": "m.room.message", "sender": "@quin:localhost",
                         "origin_server_ts": 1_700_000_001_000_i64,
                         "content": {"msgtype": "m.notice", "body": "a notice"}},
                        text("@rae:localhost", "not Pia's DM partner here"),
                    ]}},
                    "!group:localhost": {"timeline": {"events": [
                        text("@quin:localhost", "in a group room"),
                    ]}},
                },
                "invite": {
                    "!new:localhost": {"invite_state": {"events": [
                        {"type": "m.room.member", "sender": "@sam:localhost",
                         "state_key": "@pia:localhost",
                         "content": {"membership": "invite", "is_direct": true}},
                    ]}},
                    "!club:localhost": {"invite_state": {"events": [
                        {"type": "m.room.member", "sender": "@sam:localhost",
                         "state_key": "@pia:localhost", "content": {"membership": "invite"}},
                    ]}},
                },
            },
        });
        let direct = json!({"@quin:localhost": ["!dm:localhost"]});

        let mut session = session_with_direct(direct.clone());
        let news = session.absorb(sync(answer.clone()), true);
        let bodies: Vec<&str> = news.messages.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["hi", "a notice"]);
        assert_eq!(news.messages[0].from.as_str(), "@quin:localhost");
        assert_eq!(
            news.messages[0].sent_at.timestamp_millis(),
            1_700_000_000_000
        );
        let invites: Vec<(&str, &str)> = news
            .invites
            .iter()
            .map(|i| (i.room.as_str(), i.inviter.as_str()))
            .collect();
        assert_eq!(invites, [("!new:localhost", "@sam:localhost")]);
        assert_eq!(session.since, "s2");

        // The first sync's history is state only.
        let mut session = session_with_direct(direct);
        assert!(session.absorb(sync(answer), false).messages.is_empty());
    }

    #[test]
    fn a_limited_timeline_in_a_dm_room_is_a_gap_back_to_the_last_position() {
        let limited = |prev: &str| json!({"limited": true, "prev_batch": prev, "events": []});
        let answer = json!({
            "next_batch": "s9",
            "rooms": {"join": {
                "!dm:localhost": {"timeline": limited("p-dm")},
                "!group:localhost": {"timeline": limited("p-group")},
                "!quiet:localhost": {"timeline": {"limited": false, "prev_batch": "p-q", "events": []}},
            }},
        });
        let direct = json!({"@quin:localhost": ["!dm:localhost", "!quiet:localhost"]});
        let mut session = session_with_direct(direct.clone());
        session.since = "s5".to_owned();
        let news = session.absorb(sync(answer.clone()), true);
        assert_eq!(
            news.gaps,
            [Gap {
                room: "!dm:localhost".to_owned(),
                from: "p-dm".to_owned(),
                to: "s5".to_owned(),
            }]
        );
        assert_eq!(session.since, "s9");

        // History of a first sync without a cursor is not fetched back.
        let mut session = session_with_direct(direct);
        assert!(session.absorb(sync(answer), false).gaps.is_empty());
    }

    #[test]
    fn contacts_are_named_by_member_events_then_profiles() {
        let mut session = session_with_direct(json!({
            "@quin:localhost": ["!old:localhost", "!dm:localhost"],
            "@Sam:localhost": ["!gone:localhost"],
            "@pia:localhost": ["!notes:localhost"],
            "not-a-user": ["!x:localhost"],
        }));
        session.absorb(
            sync(json!({
                "next_batch": "s1",
                "rooms": {"join": {"!dm:localhost": {"state": {"events": [
                    {"type": "m.room.member", "sender": "@quin:localhost",
                     "state_key": "@quin:localhost",
                     "content": {"membership": "join", "displayname": " Quin "}},
                ]}}}},
            })),
            false,
        );
        session
            .profiles
            .insert("@Sam:localhost".to_owned(), Some("Sam".to_owned()));
        let roster = session.compute_roster();
        let names: Vec<(&str, Option<&str>)> = roster
            .iter()
            .map(|e| (e.handle.as_str(), e.display_name.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("@quin:localhost", Some("Quin")),
                ("@sam:localhost", Some("Sam"))
            ]
        );
        assert_eq!(
            session.dm_room_with("@QUIN:localhost").as_deref(),
            Some("!dm:localhost")
        );
        assert_eq!(session.dm_room_with("@sam:localhost"), None);
    }
}
