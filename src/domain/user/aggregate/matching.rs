//! Same-person matching on the aggregate: which contacts to look at after a change, which
//! suggestions are worth recording, and what the user's policy binds by itself. The rules
//! themselves are in [`crate::domain::matching`].

use std::collections::BTreeSet;

use super::{ContactState, User};
use crate::domain::ids::{ContactId, DisplayName, MetaContactId};
use crate::domain::matching::{MatchIndex, MatchTarget, Person, Profile, Suggestion};
use crate::domain::user::error::UserError;
use crate::domain::user::events::{MetaContactState, UserEvent};

/// A contact the matcher looks at, as it will be after the events being decided.
struct Subject<'a> {
    person: Person<'a>,
    /// Added in the same commit (so not in the state yet, and free).
    is_new: bool,
}

/// One string per (contact, target) pair, usable as a map key anywhere.
pub(super) fn pair_key(contact: ContactId, target: MatchTarget) -> String {
    match target {
        MatchTarget::Contact(other) => format!("{contact}/contact/{other}"),
        MatchTarget::MetaContact(meta) => format!("{contact}/meta/{meta}"),
    }
}

pub(super) static NO_PROFILE: Profile = Profile {
    nickname: None,
    emails: Vec::new(),
    verified_address: None,
};

impl User {
    /// What the contact's network said about it (nothing, if it never did).
    pub fn profile_of(&self, id: ContactId) -> &Profile {
        self.profiles.get(&id).unwrap_or(&NO_PROFILE)
    }

    /// What the matcher knows of a listed contact.
    fn person(&self, id: ContactId) -> Option<Person<'_>> {
        self.person_of(id, self.contacts.get(&id)?)
    }

    fn person_of<'a>(&'a self, id: ContactId, contact: &'a ContactState) -> Option<Person<'a>> {
        if !contact.is_listed() {
            return None;
        }
        Some(Person {
            contact_id: id,
            protocol: self.account_protocol(contact.account_id)?,
            handle: &contact.handle,
            display_name: contact.display_name.as_deref(),
            profile: self.profile_of(id),
            meta_contact: contact
                .meta_contact
                .and_then(|m| Some((m, self.meta_contacts.get(&m)?.name.as_str()))),
            account: contact.account_id.0,
        })
    }

    /// Every listed contact and meta-contact, indexed for matching: one pass over the list.
    fn match_index(&self) -> MatchIndex {
        let mut index = MatchIndex::default();
        for (id, contact) in &self.contacts {
            if let Some(person) = self.person_of(*id, contact) {
                index.add(&person);
            }
        }
        for (id, meta) in &self.meta_contacts {
            index.add_meta_contact(*id, meta.name.as_str());
        }
        index
    }

    /// `events`, followed by the suggestions (and, by policy, bindings) for the contacts they add.
    pub(super) fn with_matches(&self, mut events: Vec<UserEvent>) -> Vec<UserEvent> {
        let matches = self.match_events(&events);
        events.extend(matches);
        events
    }

    /// Suggestions (and, by policy, bindings) for the contacts `events` add, and for those
    /// whose profile they change. The events are decided on the state before them, so each
    /// contact is looked at as it will be.
    fn match_events(&self, events: &[UserEvent]) -> Vec<UserEvent> {
        let subjects: Vec<Subject<'_>> = events.iter().filter_map(|e| self.subject(e)).collect();
        if subjects.is_empty() {
            return Vec::new();
        }
        let index = self.match_index();
        let mut out = Vec::new();
        // Contacts and meta-contacts a binding of this commit took: one binding each.
        let mut bound: BTreeSet<MatchTarget> = BTreeSet::new();
        for subject in subjects {
            let found = index.suggest(
                &subject.person,
                |id| self.person(id),
                |contact, target| self.rejected.contains(&pair_key(contact, target)),
            );
            let mut recorded = Vec::new();
            for suggestion in found {
                let Some(suggestion) = self.worth_recording(&subject, suggestion) else {
                    continue;
                };
                out.push(UserEvent::MatchSuggested {
                    contact_id: suggestion.contact_id,
                    target: suggestion.target,
                    score: suggestion.score,
                    evidence: suggestion.evidence.clone(),
                });
                recorded.push(suggestion);
            }
            // The policy binds the subject's best match, or each match that brings another
            // contact into the subject's meta-contact.
            let own = subject.person.contact_id;
            let chosen: Vec<&Suggestion> = if subject.person.meta_contact.is_none() {
                let mine: Vec<Suggestion> = recorded
                    .iter()
                    .filter(|s| s.contact_id == own)
                    .cloned()
                    .collect();
                let best = self
                    .auto_bind_choice(&mine)
                    .map(|b| (b.contact_id, b.target));
                recorded
                    .iter()
                    .filter(|s| Some((s.contact_id, s.target)) == best)
                    .collect()
            } else {
                recorded
                    .iter()
                    .filter(|s| self.auto_bind_choice(std::slice::from_ref(*s)).is_some())
                    .collect()
            };
            for best in chosen {
                let sides = [MatchTarget::Contact(best.contact_id), best.target];
                if sides.iter().any(|side| bound.contains(side)) {
                    continue;
                }
                let meta_contact_id = match best.target {
                    MatchTarget::MetaContact(meta) => meta,
                    MatchTarget::Contact(other) => MetaContactId::for_match(best.contact_id, other),
                };
                let is_new = subject.is_new && best.contact_id == own;
                if let Ok(binding) = self.binding_for_match(
                    best.contact_id,
                    best.target,
                    meta_contact_id,
                    None,
                    is_new,
                ) {
                    bound.extend(sides);
                    out.push(UserEvent::MatchAccepted {
                        contact_id: best.contact_id,
                        target: best.target,
                        automatic: true,
                    });
                    out.push(binding);
                }
            }
        }
        out
    }

    /// The contact an event asks the matcher to look at: one just added, or a listed one
    /// whose profile changed.
    fn subject<'e>(&'e self, event: &'e UserEvent) -> Option<Subject<'e>> {
        match event {
            UserEvent::RosterContactAdded {
                contact_id,
                account_id,
                handle,
                display_name,
                ..
            } => Some(Subject {
                person: Person {
                    contact_id: *contact_id,
                    protocol: self.account_protocol(*account_id)?,
                    handle,
                    display_name: display_name.as_deref(),
                    profile: self.profile_of(*contact_id),
                    meta_contact: None,
                    account: account_id.0,
                },
                is_new: true,
            }),
            UserEvent::ContactProfileChanged {
                contact_id,
                profile,
                ..
            } => {
                let known = self.person(*contact_id)?;
                Some(Subject {
                    person: Person { profile, ..known },
                    is_new: false,
                })
            }
            _ => None,
        }
    }

    /// A suggestion found for `subject`, as it should be recorded, or `None` when it says
    /// nothing new: the pair was rejected, or is already suggested with at least this
    /// evidence (either way round). A contact already in a meta-contact is not moved: the
    /// other contact is suggested into its meta-contact instead.
    fn worth_recording(&self, subject: &Subject<'_>, found: Suggestion) -> Option<Suggestion> {
        let own = subject.person.contact_id;
        let (contact_id, target) = match (subject.person.meta_contact, found.target) {
            (None, target) => (own, target),
            (Some((meta, _)), MatchTarget::Contact(other)) => {
                (other, MatchTarget::MetaContact(meta))
            }
            (Some(_), MatchTarget::MetaContact(_)) => return None,
        };
        let mut keys = vec![(contact_id, target)];
        if let MatchTarget::Contact(other) = target {
            keys.push((other, MatchTarget::Contact(contact_id)));
        }
        if keys
            .iter()
            .any(|(c, t)| self.rejected.contains(&pair_key(*c, *t)))
        {
            return None;
        }
        let (contact_id, target) = match keys
            .iter()
            .find_map(|(c, t)| self.suggestions.get(&pair_key(*c, *t)))
        {
            Some(open) if found.evidence.iter().all(|e| open.evidence.contains(e)) => return None,
            // Stronger evidence for a pair already suggested: the suggestion is updated.
            Some(open) => (open.contact_id, open.target),
            None => (contact_id, target),
        };
        Some(Suggestion {
            contact_id,
            target,
            ..found
        })
    }

    /// The one suggestion the policy binds: the best, if it reaches the threshold and no other
    /// target scores as high (a tie is a question for the user).
    fn auto_bind_choice<'s>(&self, suggestions: &'s [Suggestion]) -> Option<&'s Suggestion> {
        let threshold = self.auto_bind_at?;
        let best = suggestions.iter().max_by_key(|s| s.score)?;
        let tied = suggestions.iter().filter(|s| s.score == best.score).count();
        (best.score >= threshold && tied == 1).then_some(best)
    }

    /// The binding event that takes a match: the contact joins the target's meta-contact (or
    /// the other contact joins the contact's, when only the contact is in one), or the two
    /// contacts form a new one. `contact_is_new`: the contact is added in the same commit (so
    /// it is not in the state yet, and is free).
    pub(super) fn binding_for_match(
        &self,
        contact_id: ContactId,
        target: MatchTarget,
        meta_contact_id: MetaContactId,
        name: Option<DisplayName>,
        contact_is_new: bool,
    ) -> Result<UserEvent, UserError> {
        // The contact may have joined a meta-contact since the suggestion, the other still
        // free: the other joins it (as a suggestion found today would have put it). Two
        // meta-contacts are never merged: with both sides bound, the refusal below stands.
        if let (MatchTarget::Contact(other), false) = (target, contact_is_new) {
            let own = self.listed_contact(contact_id)?.meta_contact;
            if let (Some(own), Ok(())) = (own, self.free_contact(other)) {
                return Ok(UserEvent::ContactAddedToMetaContact {
                    meta_contact_id: own,
                    contact_id: other,
                    before: self.meta_contact(own)?.clone(),
                });
            }
        }
        if !contact_is_new {
            self.free_contact(contact_id)?;
        }
        // The other contact may have joined a meta-contact since the suggestion: join that.
        let target = match target {
            MatchTarget::Contact(other) => self
                .contacts
                .get(&other)
                .and_then(|c| c.meta_contact)
                .map_or(target, MatchTarget::MetaContact),
            meta => meta,
        };
        match target {
            MatchTarget::MetaContact(meta) => Ok(UserEvent::ContactAddedToMetaContact {
                meta_contact_id: meta,
                contact_id,
                before: self.meta_contact(meta)?.clone(),
            }),
            MatchTarget::Contact(other) => {
                self.free_contact(other)?;
                if self.meta_contact_touched.contains_key(&meta_contact_id) {
                    return Err(UserError::MetaContactExists(meta_contact_id));
                }
                let name = match name {
                    Some(name) => name,
                    None => self.default_name(other)?,
                };
                let merged = MetaContactState::new(name, [contact_id, other]);
                Ok(UserEvent::ContactsMerged {
                    meta_contact_id,
                    name: merged.name,
                    contact_ids: merged.members,
                })
            }
        }
    }

    /// A new meta-contact's name: the existing contact's name, or its handle.
    fn default_name(&self, contact: ContactId) -> Result<DisplayName, UserError> {
        let state = self.contact(contact)?;
        let raw = state
            .display_name
            .clone()
            .unwrap_or_else(|| state.handle.as_str().to_owned());
        let short: String = raw.chars().take(DisplayName::MAX).collect();
        DisplayName::parse(&short).or_else(|_| {
            DisplayName::parse(
                &state
                    .handle
                    .as_str()
                    .chars()
                    .take(DisplayName::MAX)
                    .collect::<String>(),
            )
            .map_err(|_| UserError::UnknownContact(contact))
        })
    }
}
