//! Which contacts look like the same person: pure, explainable rules. Every suggestion carries
//! a score and the evidence behind it, so a person can judge it (and the rules can be tested).
//!
//! Evidence, strongest first:
//! - a *verified address* equal to another contact's address: a Nostr NIP-05 identifier is
//!   checked by its domain, so `bob@example.org` there and the XMPP JID `bob@example.org` are
//!   very likely one person (95);
//! - the same e-mail address in both profiles (85);
//! - the same normalised name: display names (or nicknames) equal once case, accents, spacing
//!   and punctuation are set aside (60), or equal to the name of an existing meta-contact (60);
//! - the same local part on different networks: `bob@server`, `@bob:server`, IRC `bob` (40).
//!
//! Each further distinct kind of evidence adds 10, up to 99. A name alone is never more than a
//! medium match: different people share names (auto-binding on names alone is how other contact
//! managers join strangers), so only a policy threshold above 60 should bind automatically.
//!
//! The index makes matching a new contact cost a few lookups, not a scan of the whole list.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::domain::ids::{ContactId, Handle, MetaContactId, Protocol};

/// Profile data a network offers about a contact, beyond handle and roster name. Stored in
/// `ContactProfileChanged` events: its shape is as fixed as theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// XMPP vCard nickname, Matrix display name, Nostr `name`/`display_name`.
    pub nickname: Option<String>,
    /// E-mail addresses (XMPP vCard).
    pub emails: Vec<String>,
    /// An address the network verified belongs to the contact (Nostr NIP-05 `name@domain`).
    pub verified_address: Option<String>,
}

/// One piece of evidence that two contacts are one person.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Evidence {
    /// One side's verified address is the other's address (a NIP-05 equal to a JID).
    VerifiedAddress {
        address: String,
    },
    SameEmail {
        email: String,
    },
    /// The normalised names are equal.
    SameName {
        name: String,
    },
    /// The new contact's name is the name of the meta-contact the other contact is in.
    MetaContactName {
        name: String,
    },
    /// The same local part on two networks.
    SameLocalPart {
        local_part: String,
    },
}

impl Evidence {
    /// In words, for people reading the history.
    pub fn describe(&self) -> String {
        match self {
            Evidence::VerifiedAddress { address } => format!("verified address {address}"),
            Evidence::SameEmail { email } => format!("same e-mail {email}"),
            Evidence::SameName { name } => format!("same name \u{201c}{name}\u{201d}"),
            Evidence::MetaContactName { name } => {
                format!("named like the meta-contact \u{201c}{name}\u{201d}")
            }
            Evidence::SameLocalPart { local_part } => {
                format!("same user name \u{201c}{local_part}\u{201d} on another network")
            }
        }
    }

    fn weight(&self) -> u8 {
        match self {
            Evidence::VerifiedAddress { .. } => 95,
            Evidence::SameEmail { .. } => 85,
            Evidence::SameName { .. } | Evidence::MetaContactName { .. } => 60,
            Evidence::SameLocalPart { .. } => 40,
        }
    }

    /// Which rule this is, for counting distinct kinds.
    fn rule(&self) -> u8 {
        match self {
            Evidence::VerifiedAddress { .. } => 0,
            Evidence::SameEmail { .. } => 1,
            Evidence::SameName { .. } | Evidence::MetaContactName { .. } => 2,
            Evidence::SameLocalPart { .. } => 3,
        }
    }
}

/// The score of a set of evidence: the strongest piece, plus 10 for each further kind of rule.
pub fn score(evidence: &[Evidence]) -> u8 {
    let Some(best) = evidence.iter().map(Evidence::weight).max() else {
        return 0;
    };
    let rules: BTreeSet<u8> = evidence.iter().map(Evidence::rule).collect();
    let extra = u8::try_from(rules.len().saturating_sub(1) * 10).unwrap_or(u8::MAX);
    best.saturating_add(extra).min(99)
}

/// What the matcher knows of one contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person<'a> {
    pub contact_id: ContactId,
    pub protocol: Protocol,
    pub handle: &'a Handle,
    pub display_name: Option<&'a str>,
    pub profile: &'a Profile,
    /// The meta-contact it is in, with that meta-contact's name.
    pub meta_contact: Option<(MetaContactId, &'a str)>,
    /// Its account, so two contacts of one account are never matched.
    pub account: uuid::Uuid,
}

/// Names compare without case, accents, spacing and punctuation: the words, lower-cased,
/// joined by one space. `None` when nothing is left.
pub fn normalize_name(name: &str) -> Option<String> {
    let folded: String = name
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    let words: Vec<&str> = folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// The part of a handle that names the person on most networks: `bob` of `bob@server`,
/// `@bob:server` and the IRC nick `bob` (trailing `_`, the usual collision suffix, dropped).
/// Nostr keys have none.
pub fn local_part(protocol: Protocol, handle: &Handle) -> Option<String> {
    let raw = handle.as_str();
    let local = match protocol {
        Protocol::Xmpp => raw.split_once('@').map(|(local, _)| local)?,
        Protocol::Matrix => raw.strip_prefix('@')?.split_once(':')?.0,
        Protocol::Irc => raw.trim_end_matches('_'),
        Protocol::Nostr => return None,
    };
    // One or two letters say nothing about a person.
    (local.chars().count() >= 3).then(|| local.to_lowercase())
}

/// Addresses of the `name@domain` form a contact is known by: its XMPP JID.
fn own_address(protocol: Protocol, handle: &Handle) -> Option<String> {
    (protocol == Protocol::Xmpp && handle.as_str().contains('@'))
        .then(|| handle.as_str().to_lowercase())
}

fn names_of<'a>(person: &'a Person<'a>) -> impl Iterator<Item = String> + 'a {
    person
        .display_name
        .into_iter()
        .chain(person.profile.nickname.as_deref())
        .filter_map(normalize_name)
}

/// Where a new contact may find its match: an existing contact, or the meta-contact that
/// contact is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MatchTarget {
    Contact(ContactId),
    MetaContact(MetaContactId),
}

/// A suggestion that `contact` and `target` are one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    pub contact_id: ContactId,
    pub target: MatchTarget,
    pub score: u8,
    /// Sorted, no duplicates.
    pub evidence: Vec<Evidence>,
}

/// Contacts by every key a rule compares, so matching costs lookups, not a scan.
#[derive(Debug, Default)]
pub struct MatchIndex {
    by_name: HashMap<String, BTreeSet<ContactId>>,
    by_local_part: HashMap<String, BTreeSet<ContactId>>,
    by_email: HashMap<String, BTreeSet<ContactId>>,
    /// Addresses contacts are known by (XMPP JIDs) and verified ones (NIP-05).
    by_address: HashMap<String, BTreeSet<ContactId>>,
    by_verified: HashMap<String, BTreeSet<ContactId>>,
    /// Meta-contacts by normalised name.
    meta_by_name: HashMap<String, BTreeSet<MetaContactId>>,
}

impl MatchIndex {
    pub fn add(&mut self, person: &Person<'_>) {
        let id = person.contact_id;
        for name in names_of(person) {
            self.by_name.entry(name).or_default().insert(id);
        }
        if let Some(local) = local_part(person.protocol, person.handle) {
            self.by_local_part.entry(local).or_default().insert(id);
        }
        for email in &person.profile.emails {
            self.by_email
                .entry(email.trim().to_lowercase())
                .or_default()
                .insert(id);
        }
        if let Some(address) = own_address(person.protocol, person.handle) {
            self.by_address.entry(address).or_default().insert(id);
        }
        if let Some(verified) = &person.profile.verified_address {
            self.by_verified
                .entry(verified.trim().to_lowercase())
                .or_default()
                .insert(id);
        }
    }

    pub fn add_meta_contact(&mut self, id: MetaContactId, name: &str) {
        if let Some(name) = normalize_name(name) {
            self.meta_by_name.entry(name).or_default().insert(id);
        }
    }

    /// The suggestions for `new` against the indexed people. `person` looks a contact up by
    /// id; `members` lists a meta-contact's listed members; `excluded` says which pairs must
    /// never be suggested (rejected before, or already bound together).
    pub fn suggest<'p>(
        &self,
        new: &Person<'_>,
        person: impl Fn(ContactId) -> Option<Person<'p>>,
        excluded: impl Fn(ContactId, MatchTarget) -> bool,
    ) -> Vec<Suggestion> {
        let mut found: BTreeMap<MatchTarget, BTreeSet<Evidence>> = BTreeMap::new();
        let mut note = |other: ContactId, evidence: Evidence| {
            if other == new.contact_id {
                return;
            }
            let Some(other) = person(other) else { return };
            if other.account == new.account {
                return;
            }
            let target = match other.meta_contact {
                Some((meta, _)) => MatchTarget::MetaContact(meta),
                None => MatchTarget::Contact(other.contact_id),
            };
            if new
                .meta_contact
                .is_some_and(|(own, _)| target == MatchTarget::MetaContact(own))
            {
                return;
            }
            found.entry(target).or_default().insert(evidence);
        };
        let hits = |map: &HashMap<String, BTreeSet<ContactId>>, key: &str| -> Vec<ContactId> {
            map.get(key).into_iter().flatten().copied().collect()
        };
        if let Some(verified) = &new.profile.verified_address {
            let verified = verified.trim().to_lowercase();
            for other in hits(&self.by_address, &verified) {
                note(
                    other,
                    Evidence::VerifiedAddress {
                        address: verified.clone(),
                    },
                );
            }
        }
        if let Some(address) = own_address(new.protocol, new.handle) {
            for other in hits(&self.by_verified, &address) {
                note(
                    other,
                    Evidence::VerifiedAddress {
                        address: address.clone(),
                    },
                );
            }
        }
        for email in &new.profile.emails {
            let email = email.trim().to_lowercase();
            for other in hits(&self.by_email, &email) {
                note(
                    other,
                    Evidence::SameEmail {
                        email: email.clone(),
                    },
                );
            }
        }
        let names: Vec<String> = names_of(new).collect();
        for name in &names {
            for other in hits(&self.by_name, name) {
                note(other, Evidence::SameName { name: name.clone() });
            }
        }
        if let Some(local) = local_part(new.protocol, new.handle) {
            for other in hits(&self.by_local_part, &local) {
                note(
                    other,
                    Evidence::SameLocalPart {
                        local_part: local.clone(),
                    },
                );
            }
        }
        for name in names {
            for meta in self.meta_by_name.get(&name).into_iter().flatten() {
                let target = MatchTarget::MetaContact(*meta);
                if new.meta_contact.map(|(own, _)| own) != Some(*meta) {
                    found
                        .entry(target)
                        .or_default()
                        .insert(Evidence::MetaContactName { name: name.clone() });
                }
            }
        }
        found
            .into_iter()
            .filter(|(target, _)| !excluded(new.contact_id, *target))
            .map(|(target, evidence)| {
                let evidence: Vec<Evidence> = evidence.into_iter().collect();
                Suggestion {
                    contact_id: new.contact_id,
                    target,
                    score: score(&evidence),
                    evidence,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn handle(protocol: Protocol, raw: &str) -> Handle {
        Handle::parse(protocol, raw).unwrap()
    }

    #[test]
    fn names_ignore_case_accents_spacing_and_punctuation() {
        assert_eq!(
            normalize_name("  Zoë   O'Brien "),
            Some("zoe o brien".into())
        );
        assert_eq!(normalize_name("ZOE O BRIEN"), normalize_name("Zoë O'Brien"));
        assert_eq!(normalize_name("José-María"), Some("jose maria".into()));
        assert_eq!(normalize_name(" -- "), None);
        assert_ne!(normalize_name("Bob"), normalize_name("Rob"));
    }

    #[test]
    fn local_parts_across_networks() {
        assert_eq!(
            local_part(Protocol::Xmpp, &handle(Protocol::Xmpp, "Bob@Example.org")),
            Some("bob".into())
        );
        assert_eq!(
            local_part(
                Protocol::Matrix,
                &handle(Protocol::Matrix, "@bob:example.org")
            ),
            Some("bob".into())
        );
        assert_eq!(
            local_part(Protocol::Irc, &handle(Protocol::Irc, "bob__")),
            Some("bob".into())
        );
        assert_eq!(
            local_part(Protocol::Xmpp, &handle(Protocol::Xmpp, "bo@example.org")),
            None,
            "too short to mean anything"
        );
    }

    #[test]
    fn the_score_is_the_strongest_evidence_plus_ten_per_further_rule() {
        let name = Evidence::SameName { name: "bob".into() };
        let meta = Evidence::MetaContactName { name: "bob".into() };
        let local = Evidence::SameLocalPart {
            local_part: "bob".into(),
        };
        let verified = Evidence::VerifiedAddress {
            address: "bob@x.org".into(),
        };
        assert_eq!(score(&[]), 0);
        assert_eq!(score(std::slice::from_ref(&local)), 40);
        assert_eq!(score(std::slice::from_ref(&name)), 60);
        assert_eq!(score(&[name.clone(), meta]), 60, "one rule, two pieces");
        assert_eq!(score(&[name.clone(), local.clone()]), 70);
        assert_eq!(score(std::slice::from_ref(&verified)), 95);
        assert_eq!(score(&[verified, name, local]), 99);
    }

    struct World {
        handles: Vec<(Protocol, Handle)>,
        names: Vec<Option<String>>,
        profiles: Vec<Profile>,
        metas: Vec<Option<(MetaContactId, String)>>,
        accounts: Vec<u128>,
    }

    impl World {
        fn new() -> Self {
            Self {
                handles: Vec::new(),
                names: Vec::new(),
                profiles: Vec::new(),
                metas: Vec::new(),
                accounts: Vec::new(),
            }
        }

        fn add(
            &mut self,
            account: u128,
            protocol: Protocol,
            raw: &str,
            name: Option<&str>,
        ) -> usize {
            self.handles.push((protocol, handle(protocol, raw)));
            self.names.push(name.map(str::to_owned));
            self.profiles.push(Profile::default());
            self.metas.push(None);
            self.accounts.push(account);
            self.handles.len() - 1
        }

        fn id(i: usize) -> ContactId {
            ContactId(Uuid::from_u128(i as u128 + 1))
        }

        fn person(&self, i: usize) -> Person<'_> {
            Person {
                contact_id: Self::id(i),
                protocol: self.handles[i].0,
                handle: &self.handles[i].1,
                display_name: self.names[i].as_deref(),
                profile: &self.profiles[i],
                meta_contact: self.metas[i].as_ref().map(|(m, n)| (*m, n.as_str())),
                account: Uuid::from_u128(self.accounts[i]),
            }
        }

        /// Indexes everyone but `new` and asks for `new`'s suggestions.
        fn suggest(&self, new: usize) -> Vec<Suggestion> {
            let mut index = MatchIndex::default();
            for i in 0..self.handles.len() {
                if i != new {
                    index.add(&self.person(i));
                    if let Some((meta, name)) = &self.metas[i] {
                        index.add_meta_contact(*meta, name);
                    }
                }
            }
            index.suggest(
                &self.person(new),
                |id| {
                    (0..self.handles.len())
                        .find(|i| Self::id(*i) == id)
                        .map(|i| self.person(i))
                },
                |_, _| false,
            )
        }
    }

    #[test]
    fn a_matrix_contact_named_like_an_xmpp_contact_is_a_medium_match_with_its_evidence() {
        let mut world = World::new();
        let bob = world.add(
            1,
            Protocol::Xmpp,
            "robert@jabber.example",
            Some("Bob Smith"),
        );
        let new = world.add(
            2,
            Protocol::Matrix,
            "@bsmith:matrix.example",
            Some("bob  SMITH"),
        );
        let found = world.suggest(new);
        assert_eq!(
            found,
            vec![Suggestion {
                contact_id: World::id(new),
                target: MatchTarget::Contact(World::id(bob)),
                score: 60,
                evidence: vec![Evidence::SameName {
                    name: "bob smith".into()
                }],
            }]
        );
    }

    #[test]
    fn a_nip05_equal_to_a_jid_is_a_high_match_both_ways() {
        let mut world = World::new();
        let jid = world.add(1, Protocol::Xmpp, "bob@example.org", None);
        let key = "a".repeat(64);
        let nostr = world.add(2, Protocol::Nostr, &key, None);
        world.profiles[nostr].verified_address = Some("Bob@Example.org".into());
        let found = world.suggest(nostr);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].target, MatchTarget::Contact(World::id(jid)));
        assert_eq!(found[0].score, 95);
        assert_eq!(
            found[0].evidence,
            vec![Evidence::VerifiedAddress {
                address: "bob@example.org".into()
            }]
        );
        // And the other way round: the XMPP contact arrives after the Nostr one.
        let found = world.suggest(jid);
        assert_eq!(found[0].target, MatchTarget::Contact(World::id(nostr)));
        assert_eq!(found[0].score, 95);
    }

    #[test]
    fn a_contact_in_a_meta_contact_is_matched_through_it_and_its_name_counts() {
        let mut world = World::new();
        let meta = MetaContactId(Uuid::from_u128(77));
        let bob = world.add(1, Protocol::Xmpp, "bob@example.org", Some("Bob"));
        world.metas[bob] = Some((meta, "Bobby Tables".into()));
        let new = world.add(2, Protocol::Irc, "bob", Some("Bobby Tables"));
        let found = world.suggest(new);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].target, MatchTarget::MetaContact(meta));
        assert_eq!(
            found[0].evidence,
            vec![
                Evidence::MetaContactName {
                    name: "bobby tables".into()
                },
                Evidence::SameLocalPart {
                    local_part: "bob".into()
                },
            ]
        );
        assert_eq!(found[0].score, 70);
    }

    #[test]
    fn no_suggestion_within_one_account_or_without_evidence_or_when_excluded() {
        let mut world = World::new();
        world.add(1, Protocol::Xmpp, "bob@example.org", Some("Bob"));
        let same_account = world.add(1, Protocol::Xmpp, "bob@other.example", Some("Bob"));
        assert!(world.suggest(same_account).is_empty());
        let stranger = world.add(2, Protocol::Xmpp, "carol@example.org", Some("Carol"));
        assert!(world.suggest(stranger).is_empty());
        let twin = world.add(3, Protocol::Xmpp, "bob@third.example", Some("Bob"));
        let mut index = MatchIndex::default();
        index.add(&world.person(0));
        let all = index.suggest(&world.person(twin), |_| Some(world.person(0)), |_, _| true);
        assert!(all.is_empty(), "a rejected pair stays rejected");
    }
}
