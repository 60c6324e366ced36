//! GraphQL output and input types: thin mirrors of the application's views.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Json, SimpleObject, ID};
use chrono::{DateTime, Utc};

use std::sync::Arc;

use crate::app::{AccountView, PresenceMap, Switchboard};
use crate::connectors::supervisor::LinkState;
use crate::domain::ids::Handle;
use crate::domain::ids::{Protocol as DomainProtocol, UserId};
use crate::domain::presence::{self, Availability as DomainAvailability};
use crate::domain::user::UserEvent;
use crate::projections::contacts::{ContactEntry, ContactList as ListView, MetaContactEntry};
use crate::projections::history::HistoryEntry as HistoryView;
use crate::projections::live::AccountStatus as StatusView;
use crate::secret::Secret;

/// An IM network.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Xmpp,
    Irc,
    Matrix,
    Nostr,
}

impl From<Protocol> for DomainProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Xmpp => DomainProtocol::Xmpp,
            Protocol::Irc => DomainProtocol::Irc,
            Protocol::Matrix => DomainProtocol::Matrix,
            Protocol::Nostr => DomainProtocol::Nostr,
        }
    }
}

impl From<DomainProtocol> for Protocol {
    fn from(p: DomainProtocol) -> Self {
        match p {
            DomainProtocol::Xmpp => Protocol::Xmpp,
            DomainProtocol::Irc => Protocol::Irc,
            DomainProtocol::Matrix => Protocol::Matrix,
            DomainProtocol::Nostr => Protocol::Nostr,
        }
    }
}

/// Views store the protocol as its display name.
pub(super) fn protocol_of(name: &str) -> Protocol {
    match name {
        "IRC" => Protocol::Irc,
        "MATRIX" => Protocol::Matrix,
        "NOSTR" => Protocol::Nostr,
        _ => Protocol::Xmpp,
    }
}

/// A third-party account to bind. `secret` is its password, token or key: it is kept
/// encrypted in the credential vault and never shown again.
#[derive(InputObject)]
pub struct AccountInput {
    pub protocol: Protocol,
    /// Where to connect: `host:port`, or a URL for protocols that use one.
    pub server: String,
    /// The user's own id on that network (for XMPP a bare JID).
    pub handle: String,
    pub secret: String,
}

impl From<AccountInput> for crate::app::AccountInput {
    fn from(a: AccountInput) -> Self {
        Self {
            protocol: a.protocol.into(),
            server: a.server,
            handle: a.handle,
            secret: Secret::new(a.secret),
        }
    }
}

/// The Switchboard user.
#[derive(SimpleObject, Clone)]
pub struct User {
    pub id: ID,
    pub user_name: String,
}

impl User {
    pub fn new(id: UserId, user_name: String) -> Self {
        Self {
            id: ID(id.to_string()),
            user_name,
        }
    }
}

/// A bound third-party account. Its secret is never returned.
#[derive(SimpleObject, Clone, PartialEq)]
pub struct Account {
    pub id: ID,
    pub protocol: Protocol,
    pub server: String,
    pub handle: String,
    pub bound_at: DateTime<Utc>,
    /// Whether the account is online upstream right now (`status.state == ONLINE`).
    pub connected: bool,
    pub status: AccountStatus,
}

impl From<AccountView> for Account {
    fn from(a: AccountView) -> Self {
        Self {
            id: ID(a.account_id.to_string()),
            protocol: protocol_of(&a.protocol),
            server: a.server,
            handle: a.handle,
            bound_at: a.bound_at,
            connected: a.status.status.state == LinkState::Online,
            status: a.status.into(),
        }
    }
}

/// Where an account's upstream connection stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first login attempt is under way.
    Connecting,
    Online,
    /// The server refused the credentials; no retries until the next login.
    AuthFailed,
    /// The first attempts failed; retrying at `nextRetryAt`.
    Unreachable,
    /// Not connected and not trying (logged out).
    Disconnected,
    /// The connection dropped after being online (or the node holding it stopped and another
    /// takes it over); retrying at `nextRetryAt`.
    Reconnecting,
    /// Waiting for its turn to log in: a node paces its logins (many users resuming at once
    /// after a restart).
    Waiting,
}

impl From<LinkState> for ConnectionState {
    fn from(s: LinkState) -> Self {
        match s {
            LinkState::Connecting => ConnectionState::Connecting,
            LinkState::Online => ConnectionState::Online,
            LinkState::AuthFailed => ConnectionState::AuthFailed,
            LinkState::Unreachable => ConnectionState::Unreachable,
            LinkState::Disconnected => ConnectionState::Disconnected,
            LinkState::Reconnecting => ConnectionState::Reconnecting,
            LinkState::Waiting => ConnectionState::Waiting,
        }
    }
}

/// An account's connection status.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct AccountStatus {
    pub state: ConnectionState,
    /// Since when it is in this state.
    pub since: DateTime<Utc>,
    /// Failed attempts since it was last online.
    pub attempt: i32,
    /// When the next attempt starts, while waiting for one.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Why it is not online (never contains a secret).
    pub detail: Option<String>,
}

impl From<StatusView> for AccountStatus {
    fn from(s: StatusView) -> Self {
        Self {
            state: s.status.state.into(),
            since: s.since,
            attempt: i32::try_from(s.status.attempt).unwrap_or(i32::MAX),
            next_retry_at: s.status.next_retry_at,
            detail: s.status.detail,
        }
    }
}

/// A new session: the bearer token for every other operation, and every bound account with
/// its connection status (login does not wait for the accounts: follow
/// `accountStatusChanged`).
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub token: String,
    /// This login's id, for `loginReport(loginId:)`.
    pub login_id: ID,
    pub user: User,
    pub accounts: Vec<Account>,
}

/// The result of binding an account.
#[derive(SimpleObject)]
pub struct BindAccountPayload {
    pub account: Account,
    /// How many contacts its roster brought.
    pub roster_size: i32,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Offline,
    DoNotDisturb,
    ExtendedAway,
    Away,
    Online,
    Chat,
}

impl From<DomainAvailability> for Availability {
    fn from(a: DomainAvailability) -> Self {
        match a {
            DomainAvailability::Offline => Availability::Offline,
            DomainAvailability::DoNotDisturb => Availability::DoNotDisturb,
            DomainAvailability::ExtendedAway => Availability::ExtendedAway,
            DomainAvailability::Away => Availability::Away,
            DomainAvailability::Online => Availability::Online,
            DomainAvailability::Chat => Availability::Chat,
        }
    }
}

/// What a contact was last seen as, on its own network.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct Presence {
    pub availability: Availability,
    pub status: Option<String>,
}

impl From<&presence::Presence> for Presence {
    fn from(p: &presence::Presence) -> Self {
        Self {
            availability: p.availability.into(),
            status: p.status.clone(),
        }
    }
}

/// A meta-contact's presence: that of its most available member, and which one that is.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct MetaContactPresence {
    pub availability: Availability,
    pub status: Option<String>,
    /// The network where the person is most available; a message goes there by default.
    pub protocol: Protocol,
    pub contact_id: ID,
    pub account_id: ID,
    pub handle: String,
}

/// The presence of the meta-contact made of `members`, as the domain chooses it
/// ([`presence::most_available`]), or `None` when no member's presence is known.
pub fn meta_contact_presence(
    members: &[ContactEntry],
    known: &PresenceMap,
) -> Option<MetaContactPresence> {
    presence::most_available(members.iter().map(|c| {
        (
            c,
            known.get(&(c.account_id, Handle::from_stored(&c.handle))),
        )
    }))
    .map(|(c, p)| MetaContactPresence {
        availability: p.availability.into(),
        status: p.status.clone(),
        protocol: protocol_of(&c.protocol),
        contact_id: ID(c.contact_id.to_string()),
        account_id: ID(c.account_id.to_string()),
        handle: c.handle.clone(),
    })
}

/// A contact's presence after a change, with its meta-contact's aggregated presence.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct PresenceChange {
    pub contact_id: ID,
    pub account_id: ID,
    pub protocol: Protocol,
    pub handle: String,
    /// Null when unknown: its account is not online.
    pub presence: Option<Presence>,
    pub meta_contact_id: Option<ID>,
    pub meta_contact_presence: Option<MetaContactPresence>,
}

/// The user's presence map, read once per response and only if a field asks for it.
#[derive(Clone)]
pub struct LivePresence {
    owner: UserId,
    map: Arc<tokio::sync::OnceCell<PresenceMap>>,
}

impl LivePresence {
    pub fn new(owner: UserId) -> Self {
        Self {
            owner,
            map: Arc::default(),
        }
    }

    async fn get(&self, ctx: &Context<'_>) -> async_graphql::Result<&PresenceMap> {
        let app = ctx.data::<Arc<Switchboard>>()?;
        self.map
            .get_or_try_init(|| app.presence(self.owner))
            .await
            .map_err(super::api_error)
    }
}

/// One contact of one bound account.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Contact {
    pub id: ID,
    pub account_id: ID,
    pub protocol: Protocol,
    pub handle: String,
    pub display_name: Option<String>,
    pub meta_contact_id: Option<ID>,
    /// Appeared upstream after the account's first import, until `markContactsSeen`.
    pub is_new: bool,
    /// Set for a dormant member of a meta-contact: the contact left the roster and waits for
    /// its return (`forgetContact` lets it go for good). Null for contacts on the roster.
    pub dormant: Option<Dormancy>,
    #[graphql(skip)]
    pub live: Option<LivePresence>,
    #[graphql(skip)]
    pub entry: ContactEntry,
}

#[ComplexObject]
impl Contact {
    /// Live presence on its own network (only while the account is online, and not in time
    /// travel).
    async fn presence(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Presence>> {
        let Some(live) = &self.live else {
            return Ok(None);
        };
        let known = live.get(ctx).await?;
        Ok(known
            .get(&(
                self.entry.account_id,
                Handle::from_stored(&self.entry.handle),
            ))
            .map(Presence::from))
    }
}

impl Contact {
    /// A contact as a past list showed it: no live presence.
    pub fn past(entry: ContactEntry) -> Self {
        Self::new(entry, None)
    }

    fn new(entry: ContactEntry, live: Option<LivePresence>) -> Self {
        Self {
            id: ID(entry.contact_id.to_string()),
            account_id: ID(entry.account_id.to_string()),
            protocol: protocol_of(&entry.protocol),
            handle: entry.handle.clone(),
            display_name: entry.display_name.clone(),
            meta_contact_id: entry.meta_contact_id.map(|m| ID(m.to_string())),
            is_new: entry.is_new,
            dormant: entry.departure.map(|d| Dormancy {
                reason: d.reason.into(),
                since: d.since,
            }),
            live,
            entry,
        }
    }
}

/// Several contacts bound together as one real person.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct MetaContact {
    pub id: ID,
    pub name: String,
    pub members: Vec<Contact>,
    #[graphql(skip)]
    pub live: Option<LivePresence>,
    #[graphql(skip)]
    pub entries: Vec<ContactEntry>,
}

#[ComplexObject]
impl MetaContact {
    /// The person's presence: the most available of its members (not in time travel).
    async fn presence(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<MetaContactPresence>> {
        let Some(live) = &self.live else {
            return Ok(None);
        };
        Ok(meta_contact_presence(&self.entries, live.get(ctx).await?))
    }
}

impl MetaContact {
    fn new(entry: MetaContactEntry, live: Option<LivePresence>) -> Self {
        Self {
            id: ID(entry.meta_contact_id.to_string()),
            name: entry.name,
            members: entry
                .members
                .iter()
                .cloned()
                .map(|c| Contact::new(c, live.clone()))
                .collect(),
            live,
            entries: entry.members,
        }
    }
}

/// The unified contact list.
#[derive(SimpleObject, Clone)]
pub struct ContactList {
    pub meta_contacts: Vec<MetaContact>,
    /// Contacts that are in no meta-contact.
    pub contacts: Vec<Contact>,
    /// Set when this is the list as it was at a past instant.
    pub as_of: Option<DateTime<Utc>>,
}

impl ContactList {
    /// `live` lists show presence; lists from the past do not.
    pub fn new(view: ListView, owner: UserId, as_of: Option<DateTime<Utc>>) -> Self {
        let live = as_of.is_none().then(|| LivePresence::new(owner));
        Self {
            meta_contacts: view
                .meta_contacts
                .into_iter()
                .map(|m| MetaContact::new(m, live.clone()))
                .collect(),
            contacts: view
                .single_contacts
                .into_iter()
                .map(|c| Contact::new(c, live.clone()))
                .collect(),
            as_of,
        }
    }
}

/// The result of creating a meta-contact.
#[derive(SimpleObject)]
pub struct MergePayload {
    pub meta_contact_id: ID,
    pub contacts: ContactList,
}

/// The kinds of events in the history.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    UserRegistered,
    AccountBound,
    AccountUnbound,
    RosterContactAdded,
    RosterContactRemoved,
    RosterImported,
    ContactsMerged,
    ContactAddedToMetaContact,
    ContactRemovedFromMetaContact,
    MetaContactRenamed,
    BindingUndone,
    RosterContactDeparted,
    RosterContactReturned,
    RosterContactRenamed,
    DormantContactForgotten,
    ContactsSeen,
    MatchSuggested,
    MatchAccepted,
    MatchRejected,
    MatchPolicySet,
    ContactProfileChanged,
    RoutePreferenceSet,
    ContactKept,
    AuditorRead,
}

/// Why a contact left the roster (it stays in its meta-contact, dormant, for its return).
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum DepartureReason {
    /// The network's roster no longer lists it.
    RemovedUpstream,
    /// Its account was unbound; binding the same account again brings it back.
    AccountUnbound,
    /// Removed by hand with `removeContact`.
    RemovedByUser,
}

impl From<crate::domain::user::DepartureReason> for DepartureReason {
    fn from(reason: crate::domain::user::DepartureReason) -> Self {
        use crate::domain::user::DepartureReason as Domain;
        match reason {
            Domain::RemovedUpstream => Self::RemovedUpstream,
            Domain::AccountUnbound => Self::AccountUnbound,
            Domain::RemovedByUser => Self::RemovedByUser,
        }
    }
}

/// A dormant member: off the roster, its place in the meta-contact kept.
#[derive(SimpleObject, Clone, Debug)]
pub struct Dormancy {
    pub reason: DepartureReason,
    /// When it left (unknown only for lists rebuilt without timestamps).
    pub since: Option<DateTime<Utc>>,
}

impl EventKind {
    /// The stored event type of this kind (the domain's `UserEvent::kind`).
    pub fn stored_name(self) -> String {
        format!("{self:?}")
    }

    fn parse(stored: &str) -> Option<Self> {
        <Self as async_graphql::resolver_utils::EnumType>::items()
            .iter()
            .map(|item| item.value)
            .find(|kind| kind.stored_name() == stored)
    }
}

#[cfg(test)]
mod tests {
    use super::EventKind;
    use crate::domain::user::UserEvent;

    #[test]
    fn every_stored_kind_has_an_api_kind() {
        for kind in UserEvent::KINDS {
            assert_eq!(
                EventKind::parse(kind)
                    .map(EventKind::stored_name)
                    .as_deref(),
                Some(kind)
            );
        }
    }
}

/// One event of the user's history, as auditors see it (no secrets, no password hashes).
#[derive(SimpleObject, Clone)]
pub struct HistoryEntry {
    /// The event's id: pass it to `undo`, or use it as a paging cursor.
    pub id: ID,
    /// Position within the user's own stream (1 = registration).
    pub sequence: i64,
    pub kind: Option<EventKind>,
    pub summary: String,
    /// Who caused it: `user:<id>`, `system:reconciliation` or `admin:<name>`.
    pub actor: String,
    pub request_id: Option<String>,
    pub at: DateTime<Utc>,
    pub contact_ids: Vec<ID>,
    pub meta_contact_ids: Vec<ID>,
    /// Whether `undo` applies to this kind of event.
    pub undoable: bool,
    pub details: Json<serde_json::Value>,
}

impl From<HistoryView> for HistoryEntry {
    fn from(h: HistoryView) -> Self {
        let kind = EventKind::parse(&h.kind);
        Self {
            id: ID(h.position.to_string()),
            sequence: h.sequence,
            undoable: UserEvent::is_undoable_kind(&h.kind),
            kind,
            summary: h.summary,
            actor: h.actor,
            request_id: h.request_id,
            at: h.recorded_at,
            contact_ids: h.contact_ids.iter().map(|c| ID(c.to_string())).collect(),
            meta_contact_ids: h
                .meta_contact_ids
                .iter()
                .map(|c| ID(c.to_string()))
                .collect(),
            details: Json(h.details),
        }
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` for the next (older) page.
    pub end_cursor: Option<String>,
}

/// A page of history, newest first.
#[derive(SimpleObject)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub page_info: PageInfo,
}

/// One logged-in session of the user.
#[derive(SimpleObject)]
pub struct Session {
    pub id: ID,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The client's network address when it logged in.
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// Whether this is the session making the request.
    pub current: bool,
}

impl Session {
    pub fn new(info: crate::app::SessionInfo, current: uuid::Uuid) -> Self {
        Self {
            id: ID(info.id.to_string()),
            created_at: info.created_at,
            expires_at: info.expires_at,
            address: info.address,
            user_agent: info.user_agent,
            current: info.id == current,
        }
    }
}
