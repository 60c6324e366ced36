//! GraphQL output and input types: thin mirrors of the application's views.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Json, SimpleObject, ID};
use chrono::{DateTime, Utc};

use crate::app::{AccountLoginResult, AccountView, Switchboard};
use crate::connectors::Availability as DomainAvailability;
use crate::domain::ids::{Protocol as DomainProtocol, UserId};
use crate::projections::contacts::{ContactEntry, ContactList as ListView, MetaContactEntry};
use crate::projections::history::HistoryEntry as HistoryView;
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
fn protocol_of(name: &str) -> Protocol {
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
#[derive(SimpleObject, Clone)]
pub struct Account {
    pub id: ID,
    pub protocol: Protocol,
    pub server: String,
    pub handle: String,
    pub bound_at: DateTime<Utc>,
    /// Whether this server holds a live connection for it right now.
    pub connected: bool,
}

impl From<AccountView> for Account {
    fn from(a: AccountView) -> Self {
        Self {
            id: ID(a.account_id.to_string()),
            protocol: protocol_of(&a.protocol),
            server: a.server,
            handle: a.handle,
            bound_at: a.bound_at,
            connected: a.connected,
        }
    }
}

/// How logging one bound account in went.
#[derive(SimpleObject, Clone)]
pub struct AccountLogin {
    pub account_id: ID,
    pub protocol: Protocol,
    pub handle: String,
    pub ok: bool,
    /// The error code when it failed (`AUTH_FAILED`, `UPSTREAM_UNAVAILABLE`, …).
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// How many contacts the upstream roster holds, when it worked.
    pub roster_size: Option<i32>,
}

impl From<AccountLoginResult> for AccountLogin {
    fn from(r: AccountLoginResult) -> Self {
        let (ok, error_code, error, roster_size) = match r.outcome {
            Ok(n) => (true, None, None, Some(i32::try_from(n).unwrap_or(i32::MAX))),
            Err(e) => (false, Some(e.code().to_owned()), Some(e.to_string()), None),
        };
        Self {
            account_id: ID(r.account_id.to_string()),
            protocol: r.protocol.into(),
            handle: r.handle,
            ok,
            error_code,
            error,
            roster_size,
        }
    }
}

/// A new session: the bearer token for every other operation, and how each account's login
/// went.
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub token: String,
    pub user: User,
    pub accounts: Vec<AccountLogin>,
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
#[derive(SimpleObject, Clone)]
pub struct Presence {
    pub availability: Availability,
    pub status: Option<String>,
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
    /// Appeared upstream after the account's first import.
    pub is_new: bool,
    #[graphql(skip)]
    pub owner: Option<UserId>,
    #[graphql(skip)]
    pub entry: ContactEntry,
}

#[ComplexObject]
impl Contact {
    /// Live presence (only while the account is connected, and not in time travel).
    async fn presence(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Presence>> {
        let Some(owner) = self.owner else {
            return Ok(None);
        };
        let app = ctx.data::<std::sync::Arc<Switchboard>>()?;
        Ok(app
            .presence(owner, self.entry.account_id, &self.entry.handle)
            .map(|p| Presence {
                availability: p.availability.into(),
                status: p.status,
            }))
    }
}

impl Contact {
    fn new(entry: ContactEntry, owner: Option<UserId>) -> Self {
        Self {
            id: ID(entry.contact_id.to_string()),
            account_id: ID(entry.account_id.to_string()),
            protocol: protocol_of(&entry.protocol),
            handle: entry.handle.clone(),
            display_name: entry.display_name.clone(),
            meta_contact_id: entry.meta_contact_id.map(|m| ID(m.to_string())),
            is_new: entry.is_new,
            owner,
            entry,
        }
    }
}

/// Several contacts bound together as one real person.
#[derive(SimpleObject, Clone)]
pub struct MetaContact {
    pub id: ID,
    pub name: String,
    pub members: Vec<Contact>,
}

impl MetaContact {
    fn new(entry: MetaContactEntry, owner: Option<UserId>) -> Self {
        Self {
            id: ID(entry.meta_contact_id.to_string()),
            name: entry.name,
            members: entry
                .members
                .into_iter()
                .map(|c| Contact::new(c, owner))
                .collect(),
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
        let owner = as_of.is_none().then_some(owner);
        Self {
            meta_contacts: view
                .meta_contacts
                .into_iter()
                .map(|m| MetaContact::new(m, owner))
                .collect(),
            contacts: view
                .single_contacts
                .into_iter()
                .map(|c| Contact::new(c, owner))
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
            undoable: matches!(
                kind,
                Some(
                    EventKind::ContactsMerged
                        | EventKind::ContactAddedToMetaContact
                        | EventKind::ContactRemovedFromMetaContact
                        | EventKind::MetaContactRenamed
                        | EventKind::BindingUndone
                )
            ),
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
