//! Events of the user aggregate: past tense, stable `event_type`, versioned payloads.
//!
//! Events are forever: never change the shape of one that has been stored. Add a new version
//! and an upcaster instead (see `store::upcasters`).

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::domain::ids::{
    AccountId, ContactId, DisplayName, Handle, MetaContactId, PersonRef, Protocol, UserName,
};
use crate::domain::matching::{Evidence, MatchTarget, Profile};

/// A meta-contact as it stood at one moment: enough to restore it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaContactState {
    pub name: DisplayName,
    /// Sorted, no duplicates.
    pub members: Vec<ContactId>,
}

/// An account as bound: where and as whom. The secret is in the credential vault, never here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundAccount {
    pub account_id: AccountId,
    pub protocol: Protocol,
    pub server: String,
    pub handle: Handle,
}

/// What an auditor read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "what")]
pub enum AuditedRead {
    /// Pages of the history.
    History,
    /// The contact list, now (`as_of` none) or as it was at an instant.
    ContactList {
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The raw event stream, exported.
    Export,
    /// A check of the views against a fresh fold of the stream.
    Verify,
}

/// Why a contact left the visible list. A membership it had stays, dormant, for its return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DepartureReason {
    /// The upstream roster no longer lists it.
    RemovedUpstream,
    /// Its account was unbound.
    AccountUnbound,
    /// The user removed it by hand (networks without a server-side list: IRC).
    RemovedByUser,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// A unified user name was registered. `password_hash` is an argon2id PHC string.
    UserRegistered {
        user_name: UserName,
        password_hash: String,
    },
    AccountBound(BoundAccount),
    /// The account and its contacts are gone; the contacts' own removals precede this event.
    AccountUnbound {
        account_id: AccountId,
    },
    /// A connector saw this contact on the account's upstream roster.
    RosterContactAdded {
        contact_id: ContactId,
        account_id: AccountId,
        handle: Handle,
        display_name: Option<String>,
        /// True when the account's roster had been imported before, i.e. the contact is new
        /// upstream rather than part of a freshly bound account.
        is_new: bool,
    },
    /// Written before contacts could be dormant, and still read so: the contact disappeared
    /// upstream (or its account was unbound). If it was in a meta-contact it left it; a
    /// meta-contact left without members is dissolved. Now [`UserEvent::RosterContactDeparted`].
    RosterContactRemoved {
        contact_id: ContactId,
        account_id: AccountId,
        left_meta_contact: Option<MetaContactId>,
    },
    /// The account's roster was read for the first time.
    RosterImported {
        account_id: AccountId,
    },
    /// The contact left the visible list. Its meta-contact membership, if any, is kept dormant
    /// (`meta_contact_id`), so the contact is back in place when it returns.
    RosterContactDeparted {
        contact_id: ContactId,
        account_id: AccountId,
        reason: DepartureReason,
        meta_contact_id: Option<MetaContactId>,
    },
    /// A departed contact is on the roster again (same account, same handle, same id), back in
    /// its meta-contact if its membership was still kept.
    RosterContactReturned {
        contact_id: ContactId,
        account_id: AccountId,
        handle: Handle,
        display_name: Option<String>,
        meta_contact_id: Option<MetaContactId>,
    },
    /// The name the user gave the contact upstream changed; the meta-contact's own name, which
    /// is the user's, never follows it.
    RosterContactRenamed {
        contact_id: ContactId,
        account_id: AccountId,
        display_name: Option<String>,
        previous: Option<String>,
    },
    /// The user let a dormant member go for good: it leaves its meta-contact (dissolved when it
    /// was the last member). A binding change, undoable like the others.
    DormantContactForgotten {
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
        before: MetaContactState,
    },
    /// The user accepted this contact's message request (someone who wrote without being a
    /// contact): it stays on the list even while the account's upstream roster does not list
    /// it, until the user removes it or the account is unbound.
    ContactKept {
        contact_id: ContactId,
        account_id: AccountId,
    },
    /// The user has seen these new contacts: they are no longer marked new.
    ContactsSeen {
        contact_ids: Vec<ContactId>,
    },
    /// What the contact's network says about it beyond its name changed (XMPP vCard, Nostr
    /// metadata with a checked NIP-05 address): the whole profile as now read. Feeds matching.
    ContactProfileChanged {
        contact_id: ContactId,
        account_id: AccountId,
        profile: Profile,
    },
    /// A contact that arrived looks like a person already on the list; `evidence` says why.
    MatchSuggested {
        contact_id: ContactId,
        target: MatchTarget,
        score: u8,
        evidence: Vec<Evidence>,
    },
    /// The suggestion was taken (by the user, or by the user's policy when `automatic`): the
    /// binding event that does it follows in the same commit, and is undoable as any other.
    MatchAccepted {
        contact_id: ContactId,
        target: MatchTarget,
        automatic: bool,
    },
    /// The user said these are different people: the pair is never suggested again.
    MatchRejected {
        contact_id: ContactId,
        target: MatchTarget,
    },
    /// From now on, suggestions scoring at least `auto_bind_at` are bound without asking
    /// (`None`: never).
    MatchPolicySet {
        auto_bind_at: Option<u8>,
    },
    /// An auditor read the user's data: the user sees who, what and when in their history.
    /// It changes nothing.
    AuditorRead {
        auditor: String,
        read: AuditedRead,
    },
    /// Messages to `person` go through `via` (one of the person's contacts) while its account
    /// is connected; `None`: the routing rules decide again.
    RoutePreferenceSet {
        person: PersonRef,
        via: Option<ContactId>,
    },
    /// Contacts bound into a new meta-contact ("friend binding").
    ContactsMerged {
        meta_contact_id: MetaContactId,
        name: DisplayName,
        contact_ids: Vec<ContactId>,
    },
    ContactAddedToMetaContact {
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
        before: MetaContactState,
    },
    /// Friend unbinding. When `before` had only this member the meta-contact is dissolved.
    ContactRemovedFromMetaContact {
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
        before: MetaContactState,
    },
    MetaContactRenamed {
        meta_contact_id: MetaContactId,
        before: MetaContactState,
        name: DisplayName,
    },
    /// An earlier binding event (possibly itself an undo) was reversed: the meta-contact is set
    /// from `before` (as it stood, equal to the undone event's result) to `after` (as it stood
    /// before the undone event). `None` means "does not exist".
    BindingUndone {
        undone_sequence: usize,
        meta_contact_id: MetaContactId,
        before: Option<MetaContactState>,
        after: Option<MetaContactState>,
    },
}

/// What a binding event did to one meta-contact; the basis of exact undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingChange {
    pub meta_contact_id: MetaContactId,
    pub before: Option<MetaContactState>,
    pub after: Option<MetaContactState>,
}

impl UserEvent {
    /// The meta-contact change of a binding event (merge, add, remove, rename, undo); `None`
    /// for every other event. Exactly the undoable events have one (see [`Self::is_undoable`]).
    pub fn binding_change(&self) -> Option<BindingChange> {
        let change = |id: &MetaContactId, before: Option<&MetaContactState>, after| BindingChange {
            meta_contact_id: *id,
            before: before.cloned(),
            after,
        };
        match self {
            UserEvent::ContactsMerged {
                meta_contact_id,
                name,
                contact_ids,
            } => Some(change(
                meta_contact_id,
                None,
                Some(MetaContactState::new(
                    name.clone(),
                    contact_ids.iter().copied(),
                )),
            )),
            UserEvent::ContactAddedToMetaContact {
                meta_contact_id,
                contact_id,
                before,
            } => Some(change(
                meta_contact_id,
                Some(before),
                Some(before.with_member(*contact_id)),
            )),
            UserEvent::ContactRemovedFromMetaContact {
                meta_contact_id,
                contact_id,
                before,
            }
            | UserEvent::DormantContactForgotten {
                meta_contact_id,
                contact_id,
                before,
            } => Some(change(
                meta_contact_id,
                Some(before),
                before.without_member(*contact_id),
            )),
            UserEvent::MetaContactRenamed {
                meta_contact_id,
                before,
                name,
            } => Some(change(
                meta_contact_id,
                Some(before),
                Some(MetaContactState {
                    name: name.clone(),
                    members: before.members.clone(),
                }),
            )),
            UserEvent::BindingUndone {
                meta_contact_id,
                before,
                after,
                ..
            } => Some(change(meta_contact_id, before.as_ref(), after.clone())),
            _ => None,
        }
    }

    /// Whether `undo` accepts events of `kind`: the binding events, the only ones that record
    /// their meta-contact's state on both sides and so can be reversed exactly. Given the kind
    /// name because the history only keeps that; the aggregate, the application and the API all
    /// ask here so they cannot disagree.
    pub fn is_undoable_kind(kind: &str) -> bool {
        matches!(
            kind,
            "ContactsMerged"
                | "ContactAddedToMetaContact"
                | "ContactRemovedFromMetaContact"
                | "MetaContactRenamed"
                | "BindingUndone"
                | "DormantContactForgotten"
        )
    }

    /// Whether `undo` accepts this event (see [`Self::is_undoable_kind`]).
    pub fn is_undoable(&self) -> bool {
        Self::is_undoable_kind(self.kind())
    }

    /// The stable kind name, as stored in `event_type` and filtered on in the history.
    pub fn kind(&self) -> &'static str {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::AccountBound(_) => "AccountBound",
            UserEvent::AccountUnbound { .. } => "AccountUnbound",
            UserEvent::RosterContactAdded { .. } => "RosterContactAdded",
            UserEvent::RosterContactRemoved { .. } => "RosterContactRemoved",
            UserEvent::RosterImported { .. } => "RosterImported",
            UserEvent::RosterContactDeparted { .. } => "RosterContactDeparted",
            UserEvent::RosterContactReturned { .. } => "RosterContactReturned",
            UserEvent::RosterContactRenamed { .. } => "RosterContactRenamed",
            UserEvent::DormantContactForgotten { .. } => "DormantContactForgotten",
            UserEvent::ContactsSeen { .. } => "ContactsSeen",
            UserEvent::ContactKept { .. } => "ContactKept",
            UserEvent::ContactProfileChanged { .. } => "ContactProfileChanged",
            UserEvent::RoutePreferenceSet { .. } => "RoutePreferenceSet",
            UserEvent::MatchSuggested { .. } => "MatchSuggested",
            UserEvent::MatchAccepted { .. } => "MatchAccepted",
            UserEvent::MatchRejected { .. } => "MatchRejected",
            UserEvent::MatchPolicySet { .. } => "MatchPolicySet",
            UserEvent::ContactsMerged { .. } => "ContactsMerged",
            UserEvent::ContactAddedToMetaContact { .. } => "ContactAddedToMetaContact",
            UserEvent::ContactRemovedFromMetaContact { .. } => "ContactRemovedFromMetaContact",
            UserEvent::MetaContactRenamed { .. } => "MetaContactRenamed",
            UserEvent::BindingUndone { .. } => "BindingUndone",
            UserEvent::AuditorRead { .. } => "AuditorRead",
        }
    }

    /// Every kind, for filters and documentation.
    pub const KINDS: [&'static str; 24] = [
        "UserRegistered",
        "AccountBound",
        "AccountUnbound",
        "RosterContactAdded",
        "RosterContactRemoved",
        "RosterImported",
        "ContactsMerged",
        "ContactAddedToMetaContact",
        "ContactRemovedFromMetaContact",
        "MetaContactRenamed",
        "BindingUndone",
        "RosterContactDeparted",
        "RosterContactReturned",
        "RosterContactRenamed",
        "DormantContactForgotten",
        "ContactsSeen",
        "MatchSuggested",
        "MatchAccepted",
        "MatchRejected",
        "MatchPolicySet",
        "ContactProfileChanged",
        "RoutePreferenceSet",
        "ContactKept",
        "AuditorRead",
    ];
}

impl MetaContactState {
    pub fn new(name: DisplayName, members: impl IntoIterator<Item = ContactId>) -> Self {
        let mut members: Vec<ContactId> = members.into_iter().collect();
        members.sort();
        members.dedup();
        Self { name, members }
    }

    fn with_member(&self, contact: ContactId) -> Self {
        Self::new(
            self.name.clone(),
            self.members.iter().copied().chain([contact]),
        )
    }

    /// `None` when the last member leaves: the meta-contact is dissolved.
    fn without_member(&self, contact: ContactId) -> Option<Self> {
        let members: Vec<ContactId> = self
            .members
            .iter()
            .copied()
            .filter(|m| *m != contact)
            .collect();
        (!members.is_empty()).then(|| Self {
            name: self.name.clone(),
            members,
        })
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        self.kind().to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
