//! The user aggregate: one event stream per Switchboard user holds every decision about their
//! accounts, contacts and meta-contacts. Its state is what the rules need, nothing more.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::domain::ids::{
    AccountId, AccountKey, ContactId, Handle, MetaContactId, PersonRef, Protocol, UserId, UserName,
};
use crate::domain::matching::{MatchTarget, Profile, Suggestion};
use crate::domain::user::commands::{NewAccount, ProfileItem, RosterItem, UserCommand};
use crate::domain::user::error::UserError;
use crate::domain::user::events::{BoundAccount, DepartureReason, MetaContactState, UserEvent};

mod matching;

use matching::pair_key;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub user_name: UserName,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub account: BoundAccount,
    pub roster_imported: bool,
}

/// Why and when (the event's sequence) a contact left the visible list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    pub reason: DepartureReason,
    pub sequence: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactState {
    pub account_id: AccountId,
    pub handle: Handle,
    pub display_name: Option<String>,
    pub meta_contact: Option<MetaContactId>,
    pub is_new: bool,
    /// `None` while the contact is on the list. A departed contact is kept: its id, history and
    /// (dormant) membership wait for its return.
    pub departure: Option<Departure>,
    /// Accepted from a message request: not removed because the upstream roster lacks it.
    #[serde(default)]
    pub kept: bool,
}

impl ContactState {
    /// On the visible list (not departed).
    pub fn is_listed(&self) -> bool {
        self.departure.is_none()
    }

    /// Departed, with its meta-contact place kept.
    pub fn is_dormant(&self) -> bool {
        self.departure.is_some() && self.meta_contact.is_some()
    }
}

/// `PartialEq`: two states are equal when every field is, bookkeeping included; the property
/// tests compare a replay of the stream with the state the commands built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    registration: Option<Registration>,
    accounts: BTreeMap<AccountId, AccountState>,
    contacts: BTreeMap<ContactId, ContactState>,
    meta_contacts: BTreeMap<MetaContactId, MetaContactState>,
    /// Sequence of the last event that changed each meta-contact or contact, kept after they
    /// are gone, so an undo refused as ambiguous can name the event that made it so.
    meta_contact_touched: HashMap<MetaContactId, usize>,
    contact_touched: HashMap<ContactId, usize>,
    /// Every account ever bound, by [`AccountKey`] (as a string): binding the same account again
    /// gets its old id back, and with it the same contact ids.
    known_accounts: HashMap<String, AccountId>,
    /// The network of every account ever bound, for contacts whose account is gone.
    account_protocols: HashMap<AccountId, Protocol>,
    /// Each account's contacts, departed ones included, so a roster sync costs the size of that
    /// roster, not of the whole list.
    account_contacts: HashMap<AccountId, BTreeSet<ContactId>>,
    /// Where the user wants messages to each person to go.
    route_preferences: HashMap<PersonRef, ContactId>,
    /// What contacts' networks say about them, for those that said anything.
    profiles: HashMap<ContactId, Profile>,
    /// Open match suggestions, by [`pair_key`].
    suggestions: BTreeMap<String, Suggestion>,
    /// Pairs the user said are different people, by [`pair_key`]: never suggested again.
    rejected: BTreeSet<String>,
    /// Suggestions scoring at least this are bound without asking.
    auto_bind_at: Option<u8>,
    /// Number of events applied: the stream's current sequence.
    sequence: usize,
}

impl User {
    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    pub fn accounts(&self) -> impl Iterator<Item = &AccountState> {
        self.accounts.values()
    }

    pub fn account(&self, id: AccountId) -> Option<&AccountState> {
        self.accounts.get(&id)
    }

    /// Open match suggestions that still make sense: both sides on the list, not yet together.
    pub fn open_suggestions(&self) -> impl Iterator<Item = &Suggestion> {
        self.suggestions
            .values()
            .filter(|s| self.suggestion_applies(s.contact_id, s.target))
    }

    /// The open suggestion for this pair, if it still makes sense.
    pub fn suggestion(&self, contact: ContactId, target: MatchTarget) -> Option<&Suggestion> {
        self.suggestions
            .get(&pair_key(contact, target))
            .filter(|s| self.suggestion_applies(s.contact_id, s.target))
    }

    /// The contact the user wants messages to `person` to go through, if any.
    pub fn route_preference(&self, person: PersonRef) -> Option<ContactId> {
        self.route_preferences.get(&person).copied()
    }

    pub fn match_policy(&self) -> Option<u8> {
        self.auto_bind_at
    }

    fn suggestion_applies(&self, contact: ContactId, target: MatchTarget) -> bool {
        let Some(state) = self.contacts.get(&contact).filter(|c| c.is_listed()) else {
            return false;
        };
        match target {
            MatchTarget::MetaContact(meta) => {
                self.meta_contacts.contains_key(&meta) && state.meta_contact != Some(meta)
            }
            MatchTarget::Contact(other) => self.contacts.get(&other).is_some_and(|o| {
                o.is_listed() && (o.meta_contact.is_none() || o.meta_contact != state.meta_contact)
            }),
        }
    }

    /// The network of an account bound now or before.
    pub fn account_protocol(&self, id: AccountId) -> Option<Protocol> {
        self.account_protocols.get(&id).copied()
    }

    pub fn contacts(&self) -> &BTreeMap<ContactId, ContactState> {
        &self.contacts
    }

    pub fn meta_contacts(&self) -> &BTreeMap<MetaContactId, MetaContactState> {
        &self.meta_contacts
    }

    pub fn sequence(&self) -> usize {
        self.sequence
    }

    /// The id to bind this account with: the one it had when it was bound before (so its
    /// contacts keep their ids and memberships), or a new one derived from the user and key.
    pub fn account_id_for(
        &self,
        user: UserId,
        protocol: Protocol,
        server: &str,
        handle: &Handle,
    ) -> AccountId {
        let key = AccountKey::new(protocol, server, handle);
        self.known_accounts
            .get(&key.to_string())
            .copied()
            .unwrap_or_else(|| AccountId::for_binding(user, &key))
    }

    fn require_registered(&self) -> Result<(), UserError> {
        self.registration
            .as_ref()
            .map(|_| ())
            .ok_or(UserError::NotRegistered)
    }

    fn require_account(&self, account: AccountId) -> Result<(), UserError> {
        if self.accounts.contains_key(&account) {
            Ok(())
        } else {
            Err(UserError::UnknownAccount(account))
        }
    }

    fn check_new_account(&self, new: &NewAccount) -> Result<(), UserError> {
        let key = key_of(new);
        let clash = self.accounts.values().any(|a| {
            a.account.account_id == new.account_id
                || AccountKey::new(a.account.protocol, &a.account.server, &a.account.handle) == key
        });
        if clash {
            return Err(UserError::DuplicateAccount {
                handle: new.handle.to_string(),
                server: new.server.clone(),
            });
        }
        match self.known_accounts.get(&key.to_string()) {
            Some(expected) if *expected != new.account_id => Err(UserError::AccountIdMismatch {
                expected: *expected,
            }),
            _ => Ok(()),
        }
    }

    fn contact(&self, id: ContactId) -> Result<&ContactState, UserError> {
        self.contacts.get(&id).ok_or(UserError::UnknownContact(id))
    }

    fn meta_contact(&self, id: MetaContactId) -> Result<&MetaContactState, UserError> {
        self.meta_contacts
            .get(&id)
            .ok_or(UserError::UnknownMetaContact(id))
    }

    /// A contact on the list; a departed one cannot be bound anew.
    fn listed_contact(&self, id: ContactId) -> Result<&ContactState, UserError> {
        let contact = self.contact(id)?;
        if !contact.is_listed() {
            return Err(UserError::ContactDeparted(id));
        }
        Ok(contact)
    }

    fn free_contact(&self, id: ContactId) -> Result<(), UserError> {
        match self.listed_contact(id)?.meta_contact {
            Some(meta_contact_id) => Err(UserError::ContactAlreadyBound {
                contact_id: id,
                meta_contact_id,
            }),
            None => Ok(()),
        }
    }

    /// The events that bring the account's contacts in line with the upstream roster: new
    /// contacts are added (marked new once the account's roster was imported before), departed
    /// ones return, renamed ones are renamed, and listed ones missing upstream depart with their
    /// memberships kept. Costs the size of the roster and of the account's contacts.
    fn roster_sync_events(&self, account_id: AccountId, roster: &[RosterItem]) -> Vec<UserEvent> {
        let Some(account) = self.accounts.get(&account_id) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let mut upstream: BTreeSet<ContactId> = BTreeSet::new();
        for item in roster {
            let contact_id = ContactId::for_handle(account_id, &item.handle);
            if !upstream.insert(contact_id) {
                continue; // listed twice upstream: once is enough
            }
            match self.contacts.get(&contact_id) {
                None => events.push(UserEvent::RosterContactAdded {
                    contact_id,
                    account_id,
                    handle: item.handle.clone(),
                    display_name: item.display_name.clone(),
                    is_new: account.roster_imported,
                }),
                Some(contact) if !contact.is_listed() => {
                    events.push(UserEvent::RosterContactReturned {
                        contact_id,
                        account_id,
                        handle: item.handle.clone(),
                        display_name: item.display_name.clone(),
                        meta_contact_id: contact.meta_contact,
                    })
                }
                Some(contact) if contact.display_name != item.display_name => {
                    events.push(UserEvent::RosterContactRenamed {
                        contact_id,
                        account_id,
                        display_name: item.display_name.clone(),
                        previous: contact.display_name.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        events.extend(
            self.departures(account_id, DepartureReason::RemovedUpstream, |id| {
                !upstream.contains(id)
            }),
        );
        if !account.roster_imported {
            events.push(UserEvent::RosterImported { account_id });
        }
        events
    }

    /// The profiles that differ from what the account's contacts had (the last one given for a
    /// contact named twice); handles that are not contacts of the account are ignored.
    fn profile_events(&self, account_id: AccountId, profiles: Vec<ProfileItem>) -> Vec<UserEvent> {
        let mut latest: BTreeMap<ContactId, Profile> = BTreeMap::new();
        for item in profiles {
            let contact_id = ContactId::for_handle(account_id, &item.handle);
            if self
                .contacts
                .get(&contact_id)
                .is_some_and(|c| c.account_id == account_id)
            {
                latest.insert(contact_id, item.profile);
            }
        }
        latest
            .into_iter()
            .filter(|(id, profile)| self.profile_of(*id) != profile)
            .map(|(contact_id, profile)| UserEvent::ContactProfileChanged {
                contact_id,
                account_id,
                profile,
            })
            .collect()
    }

    /// The contacts of a rebound account that left because it was unbound, back in place.
    fn returns_after_unbinding(&self, account_id: AccountId) -> Vec<UserEvent> {
        self.account_contacts
            .get(&account_id)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let contact = self.contacts.get(id)?;
                let left_with_account = contact
                    .departure
                    .is_some_and(|d| d.reason == DepartureReason::AccountUnbound);
                left_with_account.then(|| UserEvent::RosterContactReturned {
                    contact_id: *id,
                    account_id,
                    handle: contact.handle.clone(),
                    display_name: contact.display_name.clone(),
                    meta_contact_id: contact.meta_contact,
                })
            })
            .collect()
    }

    /// The contacts of an account (departed ones included).
    pub fn contacts_of(&self, account_id: AccountId) -> impl Iterator<Item = &ContactState> {
        self.account_contacts
            .get(&account_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.contacts.get(id))
    }

    /// Departures of the account's listed contacts that `leaves` picks.
    fn departures(
        &self,
        account_id: AccountId,
        reason: DepartureReason,
        leaves: impl Fn(&ContactId) -> bool,
    ) -> Vec<UserEvent> {
        let Some(ids) = self.account_contacts.get(&account_id) else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| leaves(id))
            .filter_map(|id| {
                let contact = self.contacts.get(id)?;
                let kept_here = contact.kept && reason == DepartureReason::RemovedUpstream;
                (contact.is_listed() && !kept_here).then_some(UserEvent::RosterContactDeparted {
                    contact_id: *id,
                    account_id,
                    reason,
                    meta_contact_id: contact.meta_contact,
                })
            })
            .collect()
    }

    /// Checks that reversing `target` restores exactly the state before it, and builds the
    /// event that does.
    fn undo_event(
        &self,
        target_sequence: usize,
        target: &UserEvent,
    ) -> Result<UserEvent, UserError> {
        let change = Some(target)
            .filter(|t| t.is_undoable() && target_sequence <= self.sequence)
            .and_then(UserEvent::binding_change)
            .ok_or(UserError::NotUndoable(target_sequence))?;
        let id = change.meta_contact_id;
        let conflict = |conflicting: Option<&usize>| UserError::UndoConflict {
            target: target_sequence,
            conflicting: conflicting.copied().unwrap_or(self.sequence),
        };
        let current = self.meta_contacts.get(&id);
        if current != change.after.as_ref() {
            return Err(conflict(self.meta_contact_touched.get(&id)));
        }
        // Contacts that the undo puts back must still exist and be free of other meta-contacts.
        if let Some(restored) = &change.before {
            for member in &restored.members {
                let back_in_place = self
                    .contacts
                    .get(member)
                    .is_some_and(|c| c.meta_contact.is_none() || c.meta_contact == Some(id));
                if !back_in_place {
                    return Err(conflict(self.contact_touched.get(member)));
                }
            }
        }
        Ok(UserEvent::BindingUndone {
            undone_sequence: target_sequence,
            meta_contact_id: id,
            before: change.after,
            after: change.before,
        })
    }

    /// Sets a meta-contact to `state` (or dissolves it), keeping contacts' membership in step.
    fn set_meta_contact(&mut self, id: MetaContactId, state: Option<MetaContactState>) {
        let seq = self.sequence;
        if let Some(old) = self.meta_contacts.remove(&id) {
            for member in old.members {
                if let Some(contact) = self.contacts.get_mut(&member) {
                    contact.meta_contact = None;
                }
                self.contact_touched.insert(member, seq);
            }
        }
        if let Some(new) = state {
            for member in &new.members {
                if let Some(contact) = self.contacts.get_mut(member) {
                    contact.meta_contact = Some(id);
                }
                self.contact_touched.insert(*member, seq);
            }
            self.meta_contacts.insert(id, new);
        }
        self.meta_contact_touched.insert(id, seq);
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    /// Every check runs before the first event is written, so a refused command leaves the
    /// aggregate untouched.
    async fn handle(
        &mut self,
        command: UserCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let events = self.decide(command)?;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        self.sequence += 1;
        let seq = self.sequence;
        if let Some(change) = event.binding_change() {
            self.set_meta_contact(change.meta_contact_id, change.after);
            return;
        }
        match event {
            UserEvent::UserRegistered {
                user_name,
                password_hash,
            } => {
                self.registration = Some(Registration {
                    user_name,
                    password_hash,
                });
            }
            UserEvent::AccountBound(account) => {
                let key = AccountKey::new(account.protocol, &account.server, &account.handle);
                self.known_accounts
                    .insert(key.to_string(), account.account_id);
                self.account_protocols
                    .insert(account.account_id, account.protocol);
                self.accounts.insert(
                    account.account_id,
                    AccountState {
                        account,
                        roster_imported: false,
                    },
                );
            }
            UserEvent::AccountUnbound { account_id } => {
                self.accounts.remove(&account_id);
            }
            UserEvent::RosterContactAdded {
                contact_id,
                account_id,
                handle,
                display_name,
                is_new,
            } => {
                self.contacts.insert(
                    contact_id,
                    ContactState {
                        account_id,
                        handle,
                        display_name,
                        meta_contact: None,
                        is_new,
                        departure: None,
                        kept: false,
                    },
                );
                self.account_contacts
                    .entry(account_id)
                    .or_default()
                    .insert(contact_id);
                self.contact_touched.insert(contact_id, seq);
            }
            UserEvent::RosterContactRemoved {
                contact_id,
                account_id,
                left_meta_contact,
            } => {
                self.contacts.remove(&contact_id);
                if let Some(ids) = self.account_contacts.get_mut(&account_id) {
                    ids.remove(&contact_id);
                }
                self.contact_touched.insert(contact_id, seq);
                if let Some(meta_id) = left_meta_contact {
                    if let Some(meta) = self.meta_contacts.get_mut(&meta_id) {
                        meta.members.retain(|m| *m != contact_id);
                        if meta.members.is_empty() {
                            self.meta_contacts.remove(&meta_id);
                        }
                    }
                    self.meta_contact_touched.insert(meta_id, seq);
                }
            }
            UserEvent::RosterImported { account_id } => {
                if let Some(account) = self.accounts.get_mut(&account_id) {
                    account.roster_imported = true;
                }
            }
            UserEvent::RosterContactDeparted {
                contact_id, reason, ..
            } => {
                if let Some(contact) = self.contacts.get_mut(&contact_id) {
                    // Kept until it leaves: a contact back later is an ordinary one again.
                    contact.kept = false;
                    contact.departure = Some(Departure {
                        reason,
                        sequence: seq,
                    });
                }
                self.contact_touched.insert(contact_id, seq);
            }
            UserEvent::RosterContactReturned {
                contact_id,
                account_id,
                handle,
                display_name,
                ..
            } => {
                let contact = self
                    .contacts
                    .entry(contact_id)
                    .or_insert_with(|| ContactState {
                        account_id,
                        handle,
                        display_name: None,
                        meta_contact: None,
                        is_new: false,
                        departure: None,
                        kept: false,
                    });
                contact.departure = None;
                contact.display_name = display_name;
                self.account_contacts
                    .entry(account_id)
                    .or_default()
                    .insert(contact_id);
                self.contact_touched.insert(contact_id, seq);
            }
            UserEvent::RosterContactRenamed {
                contact_id,
                display_name,
                ..
            } => {
                if let Some(contact) = self.contacts.get_mut(&contact_id) {
                    contact.display_name = display_name;
                }
            }
            UserEvent::ContactKept { contact_id, .. } => {
                if let Some(contact) = self.contacts.get_mut(&contact_id) {
                    contact.kept = true;
                }
            }
            UserEvent::ContactsSeen { contact_ids } => {
                for id in contact_ids {
                    if let Some(contact) = self.contacts.get_mut(&id) {
                        contact.is_new = false;
                    }
                }
            }
            UserEvent::ContactProfileChanged {
                contact_id,
                profile,
                ..
            } => {
                self.profiles.insert(contact_id, profile);
            }
            UserEvent::RoutePreferenceSet { person, via } => match via {
                Some(via) => {
                    self.route_preferences.insert(person, via);
                }
                None => {
                    self.route_preferences.remove(&person);
                }
            },
            UserEvent::MatchSuggested {
                contact_id,
                target,
                score,
                evidence,
            } => {
                self.suggestions.insert(
                    pair_key(contact_id, target),
                    Suggestion {
                        contact_id,
                        target,
                        score,
                        evidence,
                    },
                );
            }
            UserEvent::MatchAccepted {
                contact_id, target, ..
            } => {
                self.suggestions.remove(&pair_key(contact_id, target));
            }
            UserEvent::MatchRejected { contact_id, target } => {
                let key = pair_key(contact_id, target);
                self.suggestions.remove(&key);
                self.rejected.insert(key);
            }
            UserEvent::MatchPolicySet { auto_bind_at } => {
                self.auto_bind_at = auto_bind_at;
            }
            // A record for the user to see; the state does not change.
            UserEvent::AuditorRead { .. } => {}
            // Binding events were handled above through their change.
            UserEvent::ContactsMerged { .. }
            | UserEvent::ContactAddedToMetaContact { .. }
            | UserEvent::ContactRemovedFromMetaContact { .. }
            | UserEvent::DormantContactForgotten { .. }
            | UserEvent::MetaContactRenamed { .. }
            | UserEvent::BindingUndone { .. } => {}
        }
    }
}

impl User {
    /// Decides which events a command produces, without changing anything.
    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        if !matches!(command, UserCommand::Register { .. }) {
            self.require_registered()?;
        }
        match command {
            UserCommand::Register {
                user_name,
                password_hash,
                accounts,
            } => {
                if self.registration.is_some() {
                    return Err(UserError::UserNameTaken);
                }
                let mut events = vec![UserEvent::UserRegistered {
                    user_name,
                    password_hash,
                }];
                for (i, account) in accounts.iter().enumerate() {
                    let repeated = accounts[..i].iter().any(|earlier| {
                        earlier.account_id == account.account_id
                            || key_of(earlier) == key_of(account)
                    });
                    if repeated {
                        return Err(UserError::DuplicateInRequest);
                    }
                    events.push(UserEvent::AccountBound(bound(account.clone())));
                }
                Ok(events)
            }
            UserCommand::BindAccount(account) => {
                self.check_new_account(&account)?;
                let mut events = vec![UserEvent::AccountBound(bound(account.clone()))];
                // Where no server keeps the list, the user's own contacts of the account come
                // back with it; elsewhere its first roster sync brings them back.
                if !account.protocol.has_server_roster() {
                    events.extend(self.returns_after_unbinding(account.account_id));
                }
                Ok(events)
            }
            UserCommand::UnbindAccount { account_id } => {
                self.require_account(account_id)?;
                let mut events =
                    self.departures(account_id, DepartureReason::AccountUnbound, |_| true);
                events.push(UserEvent::AccountUnbound { account_id });
                Ok(events)
            }
            UserCommand::SyncRoster { account_id, roster } => {
                self.require_account(account_id)?;
                let events = roster
                    .map(|roster| self.roster_sync_events(account_id, &roster))
                    .unwrap_or_default();
                Ok(self.with_matches(events))
            }
            UserCommand::SetRoutePreference { person, via } => {
                let meta_contact_id = match person {
                    PersonRef::MetaContact(id) => id,
                    PersonRef::Contact(id) => {
                        let contact = self.contact(id)?;
                        return Err(match contact.meta_contact {
                            Some(meta_contact_id) => UserError::ContactAlreadyBound {
                                contact_id: id,
                                meta_contact_id,
                            },
                            None => UserError::NoRouteChoice(id),
                        });
                    }
                };
                let meta = self.meta_contact(meta_contact_id)?;
                if let Some(via) = via {
                    if !meta.members.contains(&via) {
                        return Err(UserError::ContactNotInMetaContact {
                            contact_id: via,
                            meta_contact_id,
                        });
                    }
                }
                if self.route_preferences.get(&person).copied() == via {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::RoutePreferenceSet { person, via }])
            }
            UserCommand::UpdateProfiles {
                account_id,
                profiles,
            } => {
                self.require_account(account_id)?;
                Ok(self.with_matches(self.profile_events(account_id, profiles)))
            }
            UserCommand::AddContact {
                account_id,
                handle,
                display_name,
            } => {
                self.require_account(account_id)?;
                let contact_id = ContactId::for_handle(account_id, &handle);
                match self.contacts.get(&contact_id) {
                    Some(contact) if contact.is_listed() => {
                        Err(UserError::ContactExists(contact_id))
                    }
                    Some(contact) => Ok(vec![UserEvent::RosterContactReturned {
                        contact_id,
                        account_id,
                        handle,
                        display_name,
                        meta_contact_id: contact.meta_contact,
                    }]),
                    None => Ok(self.with_matches(vec![UserEvent::RosterContactAdded {
                        contact_id,
                        account_id,
                        handle,
                        display_name,
                        is_new: false,
                    }])),
                }
            }
            UserCommand::AcceptMessageRequest {
                account_id,
                handle,
                display_name,
            } => {
                self.require_account(account_id)?;
                let contact_id = ContactId::for_handle(account_id, &handle);
                let first = match self.contacts.get(&contact_id) {
                    Some(contact) if contact.is_listed() => {
                        return Err(UserError::ContactExists(contact_id))
                    }
                    Some(contact) => UserEvent::RosterContactReturned {
                        contact_id,
                        account_id,
                        handle,
                        display_name,
                        meta_contact_id: contact.meta_contact,
                    },
                    None => UserEvent::RosterContactAdded {
                        contact_id,
                        account_id,
                        handle,
                        display_name,
                        is_new: true,
                    },
                };
                Ok(self.with_matches(vec![
                    first,
                    UserEvent::ContactKept {
                        contact_id,
                        account_id,
                    },
                ]))
            }
            UserCommand::RemoveContact { contact_id } => {
                let contact = self.listed_contact(contact_id)?;
                Ok(vec![UserEvent::RosterContactDeparted {
                    contact_id,
                    account_id: contact.account_id,
                    reason: DepartureReason::RemovedByUser,
                    meta_contact_id: contact.meta_contact,
                }])
            }
            UserCommand::ForgetContact { contact_id } => {
                let contact = self.contact(contact_id)?;
                let meta_contact_id = contact
                    .meta_contact
                    .filter(|_| contact.is_dormant())
                    .ok_or(UserError::ContactNotDormant(contact_id))?;
                Ok(vec![UserEvent::DormantContactForgotten {
                    meta_contact_id,
                    contact_id,
                    before: self.meta_contact(meta_contact_id)?.clone(),
                }])
            }
            UserCommand::AcceptMatch {
                contact_id,
                target,
                meta_contact_id,
                name,
            } => {
                self.suggestion(contact_id, target)
                    .ok_or(UserError::UnknownSuggestion(contact_id))?;
                let binding =
                    self.binding_for_match(contact_id, target, meta_contact_id, name, false)?;
                Ok(vec![
                    UserEvent::MatchAccepted {
                        contact_id,
                        target,
                        automatic: false,
                    },
                    binding,
                ])
            }
            UserCommand::RejectMatch { contact_id, target } => {
                self.suggestion(contact_id, target)
                    .ok_or(UserError::UnknownSuggestion(contact_id))?;
                Ok(vec![UserEvent::MatchRejected { contact_id, target }])
            }
            UserCommand::RecordAuditorRead { auditor, read } => {
                Ok(vec![UserEvent::AuditorRead { auditor, read }])
            }
            UserCommand::SetMatchPolicy { auto_bind_at } => {
                if auto_bind_at.is_some_and(|t| !(1..=100).contains(&t)) {
                    return Err(UserError::BadThreshold);
                }
                if auto_bind_at == self.auto_bind_at {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::MatchPolicySet { auto_bind_at }])
            }
            UserCommand::MarkContactsSeen { contact_ids } => {
                let seen: Vec<ContactId> = match contact_ids {
                    Some(ids) => {
                        let mut seen = BTreeSet::new();
                        for id in ids {
                            if self.contact(id)?.is_new {
                                seen.insert(id);
                            }
                        }
                        seen.into_iter().collect()
                    }
                    None => self
                        .contacts
                        .iter()
                        .filter(|(_, c)| c.is_new)
                        .map(|(id, _)| *id)
                        .collect(),
                };
                if seen.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::ContactsSeen { contact_ids: seen }])
            }
            UserCommand::MergeContacts {
                meta_contact_id,
                name,
                contact_ids,
            } => {
                if self.meta_contact_touched.contains_key(&meta_contact_id) {
                    return Err(UserError::MetaContactExists(meta_contact_id));
                }
                let merged = MetaContactState::new(name, contact_ids);
                if merged.members.len() < 2 {
                    return Err(UserError::TooFewContacts);
                }
                for id in &merged.members {
                    self.free_contact(*id)?;
                }
                Ok(vec![UserEvent::ContactsMerged {
                    meta_contact_id,
                    name: merged.name,
                    contact_ids: merged.members,
                }])
            }
            UserCommand::AddToMetaContact {
                meta_contact_id,
                contact_id,
            } => {
                let before = self.meta_contact(meta_contact_id)?.clone();
                self.free_contact(contact_id)?;
                Ok(vec![UserEvent::ContactAddedToMetaContact {
                    meta_contact_id,
                    contact_id,
                    before,
                }])
            }
            UserCommand::RemoveFromMetaContact {
                meta_contact_id,
                contact_id,
            } => {
                let before = self.meta_contact(meta_contact_id)?.clone();
                self.contact(contact_id)?;
                if !before.members.contains(&contact_id) {
                    return Err(UserError::ContactNotInMetaContact {
                        contact_id,
                        meta_contact_id,
                    });
                }
                Ok(vec![UserEvent::ContactRemovedFromMetaContact {
                    meta_contact_id,
                    contact_id,
                    before,
                }])
            }
            UserCommand::RenameMetaContact {
                meta_contact_id,
                name,
            } => {
                let before = self.meta_contact(meta_contact_id)?.clone();
                if before.name == name {
                    // Nothing changes, so nothing is recorded.
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::MetaContactRenamed {
                    meta_contact_id,
                    before,
                    name,
                }])
            }
            UserCommand::Undo {
                target_sequence,
                target,
            } => Ok(vec![self.undo_event(target_sequence, &target)?]),
        }
    }
}

/// What makes `account` the same account as another.
fn key_of(account: &NewAccount) -> AccountKey {
    AccountKey::new(account.protocol, &account.server, &account.handle)
}

fn bound(account: NewAccount) -> BoundAccount {
    BoundAccount {
        account_id: account.account_id,
        protocol: account.protocol,
        server: account.server,
        handle: account.handle,
    }
}
