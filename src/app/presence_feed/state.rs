//! One user's presence as `presenceChanged` shows it, kept up to date change by change.
//!
//! Pure: the list and the presence come in, the items that changed go out. A change of one
//! handle recomputes that contact and, when it is a member, its meta-contact's members (their
//! aggregated presence may move): the cost is the meta-contact's size, never the list's.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::domain::ids::{AccountId, ContactId, Handle, MetaContactId};
use crate::domain::presence::{most_available, Presence};
use crate::projections::contacts::{ContactEntry, ContactList, MetaContactEntry};

use super::super::PresenceMap;

/// A contact's presence after a change, with its meta-contact's aggregated presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPresence {
    pub contact: ContactRef,
    /// `None` when unknown: its account is not online.
    pub presence: Option<Presence>,
    pub meta_contact_id: Option<MetaContactId>,
    /// The most available member of the meta-contact, as the domain chooses it; `None` when
    /// no member's presence is known.
    pub meta_contact_presence: Option<MemberPresence>,
}

/// Which contact, as `presenceChanged` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRef {
    pub contact_id: ContactId,
    pub account_id: AccountId,
    pub protocol: String,
    pub handle: String,
}

/// The member that speaks for a meta-contact, and its presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPresence {
    pub member: ContactRef,
    pub presence: Presence,
}

impl From<&ContactEntry> for ContactRef {
    fn from(c: &ContactEntry) -> Self {
        Self {
            contact_id: c.contact_id,
            account_id: c.account_id,
            protocol: c.protocol.clone(),
            handle: c.handle.clone(),
        }
    }
}

fn key_of(c: &ContactEntry) -> (AccountId, Handle) {
    (c.account_id, Handle::from_stored(&c.handle))
}

/// Where a contact handle sits in the list. The derived order is the list's order
/// (meta-contacts' members first, then contacts in none), which batches keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Member(usize, usize),
    Single(usize),
}

/// What a subscriber saw last of one contact, and in which version it changed.
#[derive(Debug)]
struct Shown {
    item: ContactPresence,
    version: u64,
}

/// One user's list, presence, and what was last shown of each contact.
#[derive(Debug, Default)]
pub struct FeedState {
    metas: Vec<MetaContactEntry>,
    singles: Vec<ContactEntry>,
    places: HashMap<(AccountId, Handle), Place>,
    presence: PresenceMap,
    shown: HashMap<ContactId, Shown>,
    version: u64,
}

impl FeedState {
    /// The state of `list` with `presence`, as a subscriber starting now sees it.
    pub fn new(list: ContactList, presence: PresenceMap) -> Self {
        let mut state = Self::default();
        state.replace(list, presence);
        state
    }

    /// The version of the latest change; a subscriber that saw it has seen everything.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Takes a fresh read of everything; the items that differ from what was shown (contacts
    /// new to the list included).
    pub fn replace(&mut self, list: ContactList, presence: PresenceMap) -> Vec<ContactPresence> {
        self.metas = list.meta_contacts;
        self.singles = list.single_contacts;
        self.presence = presence;
        self.places.clear();
        for (m, meta) in self.metas.iter().enumerate() {
            for (i, c) in meta.members.iter().enumerate() {
                self.places.insert(key_of(c), Place::Member(m, i));
            }
        }
        for (i, c) in self.singles.iter().enumerate() {
            self.places.insert(key_of(c), Place::Single(i));
        }
        let everyone: BTreeSet<Place> = self.places.values().copied().collect();
        let listed: HashSet<ContactId> =
            everyone.iter().map(|p| self.entry(*p).contact_id).collect();
        // Contacts that left the list are no longer shown.
        self.shown.retain(|id, _| listed.contains(id));
        self.refresh(everyone)
    }

    /// Takes the presence now known of some of `account`'s handles (`None`: unknown); the
    /// items that changed.
    pub fn observe(
        &mut self,
        account: AccountId,
        observed: impl IntoIterator<Item = (Handle, Option<Presence>)>,
    ) -> Vec<ContactPresence> {
        let mut touched = BTreeSet::new();
        for (handle, presence) in observed {
            let key = (account, handle);
            match self.places.get(&key) {
                Some(&Place::Member(m, _)) => {
                    touched.extend((0..self.metas[m].members.len()).map(|i| Place::Member(m, i)))
                }
                Some(&place) => {
                    touched.insert(place);
                }
                // Not on the list yet: the list's own change brings it in.
                None => {}
            }
            match presence {
                Some(p) => self.presence.insert(key, p),
                None => self.presence.remove(&key),
            };
        }
        self.refresh(touched)
    }

    /// Every item changed after `version` (for a subscriber that missed batches), in list
    /// order.
    pub fn changed_since(&self, version: u64) -> Vec<ContactPresence> {
        let mut places: Vec<Place> = self.places.values().copied().collect();
        places.sort();
        places
            .into_iter()
            .filter_map(|p| self.shown.get(&self.entry(p).contact_id))
            .filter(|shown| shown.version > version)
            .map(|shown| shown.item.clone())
            .collect()
    }

    fn entry(&self, place: Place) -> &ContactEntry {
        match place {
            Place::Member(m, i) => &self.metas[m].members[i],
            Place::Single(i) => &self.singles[i],
        }
    }

    /// Recomputes the items at `places`; those that differ from what was shown get the next
    /// version and are returned.
    fn refresh(&mut self, places: BTreeSet<Place>) -> Vec<ContactPresence> {
        let next = self.version + 1;
        let mut changed = Vec::new();
        let mut aggregates: HashMap<usize, Option<MemberPresence>> = HashMap::new();
        for place in places {
            let meta = match place {
                Place::Member(m, _) => Some((
                    self.metas[m].meta_contact_id,
                    aggregates
                        .entry(m)
                        .or_insert_with(|| self.aggregate(&self.metas[m]))
                        .clone(),
                )),
                Place::Single(_) => None,
            };
            let entry = self.entry(place);
            let item = ContactPresence {
                contact: ContactRef::from(entry),
                presence: self.presence.get(&key_of(entry)).cloned(),
                meta_contact_id: meta.as_ref().map(|(id, _)| *id),
                meta_contact_presence: meta.and_then(|(_, best)| best),
            };
            let id = entry.contact_id;
            if self.shown.get(&id).map(|s| &s.item) != Some(&item) {
                changed.push(item.clone());
                self.shown.insert(
                    id,
                    Shown {
                        item,
                        version: next,
                    },
                );
            }
        }
        if !changed.is_empty() {
            self.version = next;
        }
        changed
    }

    /// The meta-contact's presence by the domain's rule ([`most_available`]).
    fn aggregate(&self, meta: &MetaContactEntry) -> Option<MemberPresence> {
        most_available(
            meta.members
                .iter()
                .map(|c| (c, self.presence.get(&key_of(c)))),
        )
        .map(|(c, p)| MemberPresence {
            member: ContactRef::from(c),
            presence: p.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
