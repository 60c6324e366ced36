//! Property tests of the user aggregate: random command sequences over a handful of accounts,
//! people and meta-contact ids (so that they collide often), checked after every step.
//!
//! `PROPTEST_CASES` sets the number of sequences (256 by default).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use cqrs_es::event_sink::EventSink;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::*;
use crate::app::error::AppError;
use crate::domain::ids::UserId;
use crate::domain::matching::{Profile, Suggestion};
use crate::domain::user::aggregate::{AccountState, ContactState};

// ---------------------------------------------------------------------------------------------
// The small world the commands are drawn from.

/// (network, server, own handle) of each account the user may bind.
const ACCOUNTS: [(Protocol, &str, &str); 4] = [
    (Protocol::Xmpp, "xmpp.example", "me@xmpp.example"),
    (Protocol::Xmpp, "jabber.example", "me@jabber.example"),
    (Protocol::Irc, "irc.example", "me"),
    (Protocol::Matrix, "matrix.example", "@me:matrix.example"),
];
/// The people on the rosters: the same local part on every network, so they match.
const PEOPLE: [&str; 3] = ["bob", "carol", "dan"];
/// Roster names and nicknames: two spell the same name, so names match too.
const NAMES: [&str; 4] = ["Bob", "bob", "Carol", "Dan"];
const META_NAMES: [&str; 3] = ["Bob", "Carol", "Friends"];
const EMAILS: [&str; 2] = ["bob@mail.example", "carol@mail.example"];
/// Verified addresses (NIP-05-like): equal to the XMPP contacts' JIDs.
const VERIFIED: [&str; 2] = ["bob@example.org", "carol@example.org"];

fn user_id() -> UserId {
    UserId(Uuid::from_u128(0x5eed))
}

fn person_handle(protocol: Protocol, person: usize) -> Handle {
    let p = PEOPLE[person % PEOPLE.len()];
    let raw = match protocol {
        Protocol::Xmpp => format!("{p}@example.org"),
        Protocol::Matrix => format!("@{p}:example.org"),
        Protocol::Irc => p.to_owned(),
        Protocol::Nostr => unreachable!("no Nostr account in this world"),
    };
    Handle::parse(protocol, &raw).unwrap()
}

fn display_name(pick: Option<usize>) -> Option<String> {
    pick.map(|n| NAMES[n % NAMES.len()].to_owned())
}

// ---------------------------------------------------------------------------------------------
// Commands as generated: references are resolved against the state when the step runs, so that
// most of them name something that exists (and some do not).

#[derive(Debug, Clone)]
enum ContactRef {
    /// Account slot and person: may not be a contact (yet).
    Slot(usize, usize),
    /// The n-th contact in the state, departed ones included.
    Existing(usize),
    /// The n-th dormant member of a meta-contact.
    Dormant(usize),
}

#[derive(Debug, Clone)]
enum MetaRef {
    /// One of a few fixed ids: collisions with existing and dissolved meta-contacts.
    Fixed(u128),
    /// The n-th meta-contact in the state (including those the match policy named).
    Existing(usize),
    /// The first fixed id no binding event has named yet.
    Fresh,
}

#[derive(Debug, Clone)]
enum SuggestionRef {
    /// The n-th open suggestion.
    Open(usize),
    /// Any pair, most likely never suggested.
    Contact(ContactRef, ContactRef),
    Meta(ContactRef, MetaRef),
}

#[derive(Debug, Clone)]
enum UndoRef {
    /// The last undoable event of the stream: chains of undo of undo.
    Last,
    /// The n-th undoable event of the stream.
    Undoable(usize),
    /// The n-th event of the stream, undoable or not.
    Any(usize),
}

#[derive(Debug, Clone)]
enum PersonPick {
    Contact(ContactRef),
    Meta(MetaRef),
}

#[derive(Debug, Clone)]
enum ViaPick {
    /// The n-th member of the person's meta-contact.
    Member(usize),
    Any(ContactRef),
}

/// (nickname, e-mail, verified address), each an index into its list.
type ProfilePick = (Option<usize>, Option<usize>, Option<usize>);

#[derive(Debug, Clone)]
enum Op {
    /// Account slots, each with "uses the id the aggregate gives it" (else a made-up one).
    Register(Vec<(usize, bool)>),
    Bind(usize, bool),
    Unbind(usize),
    /// A roster of (person, display name); `None`: it could not be read.
    Sync(usize, Option<Vec<(usize, Option<usize>)>>),
    Profiles(usize, Vec<(usize, ProfilePick)>),
    AcceptRequest(usize, usize, Option<usize>),
    AddContact(usize, usize, Option<usize>),
    RemoveContact(ContactRef),
    ForgetContact(ContactRef),
    MarkSeen(Option<Vec<ContactRef>>),
    AcceptMatch(SuggestionRef, MetaRef, Option<usize>),
    RejectMatch(SuggestionRef),
    SetPolicy(Option<u8>),
    /// An auditor's read: recorded, changes nothing.
    AuditorRead,
    SetRoute(PersonPick, Option<ViaPick>),
    Merge(MetaRef, usize, Vec<ContactRef>),
    AddTo(MetaRef, ContactRef),
    RemoveFrom(MetaRef, ContactRef),
    Rename(MetaRef, usize),
    Undo(UndoRef),
    /// What the first version of the aggregate wrote (before contacts could depart), written
    /// straight to the stream as a store would replay it: the roster sync that removes contacts
    /// gone upstream, the unbinding that removes the account's contacts, the removal by hand.
    LegacySync(usize, Vec<(usize, Option<usize>)>),
    LegacyUnbind(usize),
    LegacyRemove(ContactRef),
}

fn slot() -> impl Strategy<Value = usize> {
    0..ACCOUNTS.len()
}

fn person() -> impl Strategy<Value = usize> {
    0..PEOPLE.len()
}

fn name_pick() -> impl Strategy<Value = Option<usize>> {
    proptest::option::of(0..NAMES.len())
}

fn id_ok() -> impl Strategy<Value = bool> {
    proptest::bool::weighted(0.9)
}

fn contact_ref() -> impl Strategy<Value = ContactRef> {
    prop_oneof![
        2 => (slot(), person()).prop_map(|(a, p)| ContactRef::Slot(a, p)),
        6 => (0..16usize).prop_map(ContactRef::Existing),
        1 => (0..4usize).prop_map(ContactRef::Dormant),
    ]
}

fn meta_ref() -> impl Strategy<Value = MetaRef> {
    prop_oneof![
        (0..6u128).prop_map(MetaRef::Fixed),
        (0..8usize).prop_map(MetaRef::Existing),
    ]
}

/// A meta-contact id for a new meta-contact: mostly one never used.
fn new_meta_ref() -> impl Strategy<Value = MetaRef> {
    prop_oneof![3 => Just(MetaRef::Fresh), 1 => meta_ref()]
}

fn suggestion_ref() -> impl Strategy<Value = SuggestionRef> {
    prop_oneof![
        6 => (0..8usize).prop_map(SuggestionRef::Open),
        1 => (contact_ref(), contact_ref()).prop_map(|(c, t)| SuggestionRef::Contact(c, t)),
        1 => (contact_ref(), meta_ref()).prop_map(|(c, m)| SuggestionRef::Meta(c, m)),
    ]
}

fn undo_ref() -> impl Strategy<Value = UndoRef> {
    prop_oneof![
        3 => Just(UndoRef::Last),
        3 => (0..64usize).prop_map(UndoRef::Undoable),
        1 => (0..256usize).prop_map(UndoRef::Any),
    ]
}

fn profile_pick() -> impl Strategy<Value = ProfilePick> {
    (
        name_pick(),
        proptest::option::of(0..EMAILS.len()),
        proptest::option::weighted(0.3, 0..VERIFIED.len()),
    )
}

fn op() -> impl Strategy<Value = Op> {
    let roster = proptest::collection::vec((person(), name_pick()), 0..5);
    prop_oneof![
        1 => proptest::collection::vec((slot(), id_ok()), 0..3).prop_map(Op::Register),
        3 => (slot(), id_ok()).prop_map(|(s, ok)| Op::Bind(s, ok)),
        2 => slot().prop_map(Op::Unbind),
        8 => (slot(), proptest::option::weighted(0.9, roster)).prop_map(|(s, r)| Op::Sync(s, r)),
        3 => (slot(), proptest::collection::vec((person(), profile_pick()), 0..3))
            .prop_map(|(s, p)| Op::Profiles(s, p)),
        2 => (slot(), person(), name_pick()).prop_map(|(s, p, n)| Op::AcceptRequest(s, p, n)),
        2 => (slot(), person(), name_pick()).prop_map(|(s, p, n)| Op::AddContact(s, p, n)),
        2 => contact_ref().prop_map(Op::RemoveContact),
        2 => contact_ref().prop_map(Op::ForgetContact),
        2 => proptest::option::of(proptest::collection::vec(contact_ref(), 0..3))
            .prop_map(Op::MarkSeen),
        4 => (suggestion_ref(), new_meta_ref(), proptest::option::of(0..META_NAMES.len()))
            .prop_map(|(s, m, n)| Op::AcceptMatch(s, m, n)),
        2 => suggestion_ref().prop_map(Op::RejectMatch),
        2 => prop_oneof![Just(None), Just(Some(0)), Just(Some(40)), Just(Some(60)),
                         Just(Some(90)), Just(Some(101))].prop_map(Op::SetPolicy),
        1 => Just(Op::AuditorRead),
        2 => (
            prop_oneof![
                contact_ref().prop_map(PersonPick::Contact),
                meta_ref().prop_map(PersonPick::Meta),
            ],
            proptest::option::of(prop_oneof![
                3 => (0..4usize).prop_map(ViaPick::Member),
                1 => contact_ref().prop_map(ViaPick::Any),
            ]),
        )
            .prop_map(|(p, via)| Op::SetRoute(p, via)),
        6 => (new_meta_ref(), 0..META_NAMES.len(), proptest::collection::vec(contact_ref(), 2..4))
            .prop_map(|(m, n, c)| Op::Merge(m, n, c)),
        5 => (meta_ref(), contact_ref()).prop_map(|(m, c)| Op::AddTo(m, c)),
        5 => (meta_ref(), contact_ref()).prop_map(|(m, c)| Op::RemoveFrom(m, c)),
        3 => (meta_ref(), 0..META_NAMES.len()).prop_map(|(m, n)| Op::Rename(m, n)),
        10 => undo_ref().prop_map(Op::Undo),
    ]
}

/// A stream begun by the first version: only what it could write.
fn legacy_op() -> impl Strategy<Value = Op> {
    let roster = proptest::collection::vec((person(), name_pick()), 0..5);
    prop_oneof![
        2 => (slot(), id_ok()).prop_map(|(s, ok)| Op::Bind(s, ok)),
        4 => (slot(), roster).prop_map(|(s, r)| Op::LegacySync(s, r)),
        1 => slot().prop_map(Op::LegacyUnbind),
        2 => contact_ref().prop_map(Op::LegacyRemove),
        6 => (new_meta_ref(), 0..META_NAMES.len(), proptest::collection::vec(contact_ref(), 2..4))
            .prop_map(|(m, n, c)| Op::Merge(m, n, c)),
        4 => (meta_ref(), contact_ref()).prop_map(|(m, c)| Op::AddTo(m, c)),
        4 => (meta_ref(), contact_ref()).prop_map(|(m, c)| Op::RemoveFrom(m, c)),
        2 => (meta_ref(), 0..META_NAMES.len()).prop_map(|(m, n)| Op::Rename(m, n)),
        6 => undo_ref().prop_map(Op::Undo),
    ]
}

/// A registration with some accounts and their full rosters read (with the names given to the
/// three people); in a quarter of the runs by the first version, followed by more of what it
/// wrote. Then the random commands.
fn scenario() -> impl Strategy<Value = Vec<Op>> {
    (
        prop_oneof![
            3 => Just(None),
            1 => proptest::collection::vec(legacy_op(), 0..15).prop_map(Some),
        ],
        // Mostly two accounts or more, so that there are contacts to bind across networks.
        prop_oneof![1 => 0usize..16, 3 => prop_oneof![Just(3), Just(5), Just(7), Just(11), Just(15)]],
        proptest::array::uniform3(name_pick()),
        proptest::collection::vec(op(), 0..=40),
    )
        .prop_map(|(legacy, mask, names, ops)| {
            let slots: Vec<usize> = (0..ACCOUNTS.len()).filter(|s| mask & (1 << s) != 0).collect();
            let mut all = vec![Op::Register(slots.iter().map(|s| (*s, true)).collect())];
            for s in slots {
                let roster = names.iter().enumerate().map(|(p, n)| (p, *n)).collect();
                all.push(match legacy {
                    Some(_) => Op::LegacySync(s, roster),
                    None => Op::Sync(s, Some(roster)),
                });
            }
            all.extend(legacy.into_iter().flatten());
            all.extend(ops);
            all
        })
}

// ---------------------------------------------------------------------------------------------
// What is compared.

/// What a person sees of the state: the contact list, the meta-contacts and the bound accounts
/// (plus the open suggestions and the policy), without the bookkeeping (sequence, when each
/// thing was last touched, accounts ever bound).
#[derive(Debug, Clone, PartialEq)]
struct View {
    contacts: BTreeMap<ContactId, ContactState>,
    meta_contacts: BTreeMap<MetaContactId, MetaContactState>,
    accounts: Vec<AccountState>,
    suggestions: Vec<Suggestion>,
    policy: Option<u8>,
}

impl View {
    fn of(user: &User) -> Self {
        Self {
            contacts: user.contacts().clone(),
            meta_contacts: user.meta_contacts().clone(),
            accounts: user.accounts().cloned().collect(),
            suggestions: user.open_suggestions().cloned().collect(),
            policy: user.match_policy(),
        }
    }

    /// This view with meta-contact `id` set to `state` and its members' memberships in step:
    /// what an exact undo must leave. The open suggestions, which follow from memberships, are
    /// left out of the comparison.
    fn with_meta_contact(&self, id: MetaContactId, state: Option<&MetaContactState>) -> Self {
        let mut view = self.clone();
        if let Some(old) = view.meta_contacts.remove(&id) {
            for member in old.members {
                if let Some(c) = view.contacts.get_mut(&member) {
                    c.meta_contact = None;
                }
            }
        }
        if let Some(new) = state {
            for member in &new.members {
                if let Some(c) = view.contacts.get_mut(member) {
                    c.meta_contact = Some(id);
                }
            }
            view.meta_contacts.insert(id, new.clone());
        }
        view.suggestions.clear();
        view
    }

    fn without_suggestions(&self) -> Self {
        Self {
            suggestions: Vec::new(),
            ..self.clone()
        }
    }
}

/// Runs a future that must finish at its first poll (the aggregate never waits on anything).
fn at_once<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the aggregate waited on something"),
    }
}

/// Memberships are consistent both ways, so a contact is in at most one meta-contact; every
/// member exists (listed, or departed and so kept dormant); no meta-contact is empty; a listed
/// contact's account is bound.
fn check_invariants(user: &User) -> Result<(), TestCaseError> {
    let mut memberships: BTreeMap<ContactId, usize> = BTreeMap::new();
    for (id, meta) in user.meta_contacts() {
        prop_assert!(!meta.members.is_empty(), "meta-contact {id} is empty");
        prop_assert!(
            meta.members.windows(2).all(|w| w[0] < w[1]),
            "members of {id} not sorted and unique: {:?}",
            meta.members
        );
        for member in &meta.members {
            *memberships.entry(*member).or_default() += 1;
            let contact = user.contacts().get(member);
            prop_assert!(contact.is_some(), "member {member} of {id} does not exist");
            prop_assert_eq!(
                contact.and_then(|c| c.meta_contact),
                Some(*id),
                "member {} of {} thinks it is elsewhere",
                member,
                id
            );
        }
    }
    for (id, n) in &memberships {
        prop_assert!(*n <= 1, "contact {id} is in {n} meta-contacts");
    }
    for (id, contact) in user.contacts() {
        if let Some(meta) = contact.meta_contact {
            prop_assert!(
                user.meta_contacts()
                    .get(&meta)
                    .is_some_and(|m| m.members.contains(id)),
                "contact {id} names meta-contact {meta}, which does not list it"
            );
        }
        if contact.is_listed() {
            prop_assert!(
                user.account(contact.account_id).is_some(),
                "listed contact {id} of an unbound account"
            );
        }
    }
    // The per-account index a roster sync reads agrees with the contact list.
    let accounts: BTreeSet<AccountId> = user.contacts().values().map(|c| c.account_id).collect();
    for account in accounts {
        let indexed: Vec<&ContactState> = user.contacts_of(account).collect();
        let listed: Vec<&ContactState> = user
            .contacts()
            .values()
            .filter(|c| c.account_id == account)
            .collect();
        prop_assert_eq!(indexed, listed, "contacts of account {}", account);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One run of a scenario.

struct Run {
    /// The state the commands built, through `Aggregate::handle`.
    live: User,
    /// The stream as stored.
    log: Vec<UserEvent>,
    /// Folds of the stream from `User::default()`: as written, and as read back from JSON.
    folded: User,
    replayed: User,
    /// `views[n]`: the view after the first `n` events.
    views: Vec<View>,
}

impl Run {
    fn new() -> Self {
        Self {
            live: User::default(),
            log: Vec::new(),
            folded: User::default(),
            replayed: User::default(),
            views: vec![View::of(&User::default())],
        }
    }

    fn account_id(&self, slot: usize, id_ok: bool) -> AccountId {
        let (protocol, server, handle) = ACCOUNTS[slot];
        if id_ok {
            self.live.account_id_for(
                user_id(),
                protocol,
                server,
                &Handle::parse(protocol, handle).unwrap(),
            )
        } else {
            AccountId(Uuid::from_u128(0xbad0 + slot as u128))
        }
    }

    fn new_account(&self, slot: usize, id_ok: bool) -> NewAccount {
        let (protocol, server, handle) = ACCOUNTS[slot];
        NewAccount {
            account_id: self.account_id(slot, id_ok),
            protocol,
            server: server.to_owned(),
            handle: Handle::parse(protocol, handle).unwrap(),
        }
    }

    fn contact(&self, r: &ContactRef) -> ContactId {
        let slot_contact = |a: usize, p: usize| {
            ContactId::for_handle(self.account_id(a, true), &person_handle(ACCOUNTS[a].0, p))
        };
        match *r {
            ContactRef::Slot(a, p) => slot_contact(a, p),
            ContactRef::Existing(n) => {
                let ids = self.live.contacts();
                ids.keys()
                    .nth(n % ids.len().max(1))
                    .copied()
                    .unwrap_or_else(|| slot_contact(n % ACCOUNTS.len(), n % PEOPLE.len()))
            }
            ContactRef::Dormant(n) => {
                let dormant: Vec<ContactId> = self
                    .live
                    .contacts()
                    .iter()
                    .filter(|(_, c)| c.is_dormant())
                    .map(|(id, _)| *id)
                    .collect();
                match dormant.get(n % dormant.len().max(1)) {
                    Some(id) => *id,
                    None => self.contact(&ContactRef::Existing(n)),
                }
            }
        }
    }

    fn meta_contact(&self, r: &MetaRef) -> MetaContactId {
        match *r {
            MetaRef::Fixed(n) => meta(n),
            MetaRef::Existing(n) => {
                let metas = self.live.meta_contacts();
                metas
                    .keys()
                    .nth(n % metas.len().max(1))
                    .copied()
                    .unwrap_or_else(|| meta(n as u128 % 6))
            }
            MetaRef::Fresh => {
                let used: Vec<MetaContactId> = self
                    .log
                    .iter()
                    .filter_map(|e| e.binding_change())
                    .map(|c| c.meta_contact_id)
                    .collect();
                (0..)
                    .map(meta)
                    .find(|id| !used.contains(id))
                    .expect("an unused id")
            }
        }
    }

    fn suggestion(&self, r: &SuggestionRef) -> (ContactId, MatchTarget) {
        match r {
            SuggestionRef::Open(n) => {
                let open: Vec<&Suggestion> = self.live.open_suggestions().collect();
                match open.get(n % open.len().max(1)) {
                    Some(s) => (s.contact_id, s.target),
                    None => (
                        self.contact(&ContactRef::Existing(*n)),
                        MatchTarget::Contact(self.contact(&ContactRef::Existing(n + 1))),
                    ),
                }
            }
            SuggestionRef::Contact(c, t) => {
                (self.contact(c), MatchTarget::Contact(self.contact(t)))
            }
            SuggestionRef::Meta(c, m) => (
                self.contact(c),
                MatchTarget::MetaContact(self.meta_contact(m)),
            ),
        }
    }

    /// The stored event an undo names: (sequence, event).
    fn undo_target(&self, r: &UndoRef) -> Option<(usize, UserEvent)> {
        let undoable: Vec<usize> = (0..self.log.len())
            .filter(|i| self.log[*i].is_undoable())
            .collect();
        let index = match *r {
            UndoRef::Last => undoable.last().copied(),
            UndoRef::Undoable(n) => undoable.get(n % undoable.len().max(1)).copied(),
            UndoRef::Any(_) => None,
        };
        let index = match (index, r) {
            (Some(i), _) => i,
            (None, UndoRef::Any(n)) | (None, UndoRef::Undoable(n)) if !self.log.is_empty() => {
                n % self.log.len()
            }
            _ => self.log.len().checked_sub(1)?,
        };
        Some((index + 1, self.log[index].clone()))
    }

    fn command(&self, op: &Op) -> UserCommand {
        let roster_items = |slot: usize, items: &[(usize, Option<usize>)]| -> Vec<RosterItem> {
            items
                .iter()
                .map(|(p, n)| RosterItem {
                    handle: person_handle(ACCOUNTS[slot].0, *p),
                    display_name: display_name(*n),
                })
                .collect()
        };
        match op {
            Op::Register(accounts) => UserCommand::Register {
                user_name: UserName::parse("alice").unwrap(),
                password_hash: "$argon2id$stub".into(),
                accounts: accounts
                    .iter()
                    .map(|(s, ok)| self.new_account(*s, *ok))
                    .collect(),
            },
            Op::Bind(s, ok) => UserCommand::BindAccount(self.new_account(*s, *ok)),
            Op::Unbind(s) => UserCommand::UnbindAccount {
                account_id: self.account_id(*s, true),
            },
            Op::Sync(s, roster) => UserCommand::SyncRoster {
                account_id: self.account_id(*s, true),
                roster: roster.as_ref().map(|r| roster_items(*s, r)),
            },
            Op::Profiles(s, items) => UserCommand::UpdateProfiles {
                account_id: self.account_id(*s, true),
                profiles: items
                    .iter()
                    .map(|(p, (nick, email, verified))| ProfileItem {
                        handle: person_handle(ACCOUNTS[*s].0, *p),
                        profile: Profile {
                            nickname: display_name(*nick),
                            emails: email.iter().map(|e| EMAILS[*e].to_owned()).collect(),
                            verified_address: verified.map(|v| VERIFIED[v].to_owned()),
                        },
                    })
                    .collect(),
            },
            Op::AcceptRequest(s, p, n) => UserCommand::AcceptMessageRequest {
                account_id: self.account_id(*s, true),
                handle: person_handle(ACCOUNTS[*s].0, *p),
                display_name: display_name(*n),
            },
            Op::AddContact(s, p, n) => UserCommand::AddContact {
                account_id: self.account_id(*s, true),
                handle: person_handle(ACCOUNTS[*s].0, *p),
                display_name: display_name(*n),
            },
            Op::RemoveContact(c) => UserCommand::RemoveContact {
                contact_id: self.contact(c),
            },
            Op::ForgetContact(c) => UserCommand::ForgetContact {
                contact_id: self.contact(c),
            },
            Op::MarkSeen(ids) => UserCommand::MarkContactsSeen {
                contact_ids: ids
                    .as_ref()
                    .map(|ids| ids.iter().map(|c| self.contact(c)).collect()),
            },
            Op::AcceptMatch(s, m, n) => {
                let (contact_id, target) = self.suggestion(s);
                UserCommand::AcceptMatch {
                    contact_id,
                    target,
                    meta_contact_id: self.meta_contact(m),
                    name: n.map(|n| name(META_NAMES[n])),
                }
            }
            Op::RejectMatch(s) => {
                let (contact_id, target) = self.suggestion(s);
                UserCommand::RejectMatch { contact_id, target }
            }
            Op::SetPolicy(auto_bind_at) => UserCommand::SetMatchPolicy {
                auto_bind_at: *auto_bind_at,
            },
            Op::AuditorRead => UserCommand::RecordAuditorRead {
                auditor: "inspector".into(),
                read: crate::domain::user::AuditedRead::History,
            },
            Op::SetRoute(p, via) => {
                let person = match p {
                    PersonPick::Contact(c) => PersonRef::Contact(self.contact(c)),
                    PersonPick::Meta(m) => PersonRef::MetaContact(self.meta_contact(m)),
                };
                let via = via.as_ref().map(|via| match (via, person) {
                    (ViaPick::Member(n), PersonRef::MetaContact(m)) => {
                        match self.live.meta_contacts().get(&m) {
                            Some(meta) => meta.members[n % meta.members.len()],
                            None => self.contact(&ContactRef::Existing(*n)),
                        }
                    }
                    (ViaPick::Member(n), PersonRef::Contact(_)) => {
                        self.contact(&ContactRef::Existing(*n))
                    }
                    (ViaPick::Any(c), _) => self.contact(c),
                });
                UserCommand::SetRoutePreference { person, via }
            }
            Op::Merge(m, n, ids) => UserCommand::MergeContacts {
                meta_contact_id: self.meta_contact(m),
                name: name(META_NAMES[*n]),
                contact_ids: ids.iter().map(|c| self.contact(c)).collect(),
            },
            Op::AddTo(m, c) => UserCommand::AddToMetaContact {
                meta_contact_id: self.meta_contact(m),
                contact_id: self.contact(c),
            },
            Op::RemoveFrom(m, c) => UserCommand::RemoveFromMetaContact {
                meta_contact_id: self.meta_contact(m),
                contact_id: self.contact(c),
            },
            Op::Rename(m, n) => UserCommand::RenameMetaContact {
                meta_contact_id: self.meta_contact(m),
                name: name(META_NAMES[*n]),
            },
            Op::LegacySync(..) | Op::LegacyUnbind(_) | Op::LegacyRemove(_) => {
                unreachable!("written without a command")
            }
            Op::Undo(r) => match self.undo_target(r) {
                Some((target_sequence, target)) => UserCommand::Undo {
                    target_sequence,
                    target: Box::new(target),
                },
                // Nothing stored yet: an undo of an event that is not there.
                None => UserCommand::Undo {
                    target_sequence: 1,
                    target: Box::new(merged_bob()),
                },
            },
        }
    }

    /// The events the first version wrote for a legacy op (see [`Op::LegacySync`]).
    fn legacy_events(&self, op: &Op) -> Vec<UserEvent> {
        let removal = |id: &ContactId, c: &ContactState| UserEvent::RosterContactRemoved {
            contact_id: *id,
            account_id: c.account_id,
            left_meta_contact: c.meta_contact,
        };
        let contacts_of = |account_id: AccountId| {
            self.live
                .contacts()
                .iter()
                .filter(move |(_, c)| c.account_id == account_id)
        };
        match op {
            Op::LegacySync(slot, roster) => {
                let account_id = self.account_id(*slot, true);
                let Some(account) = self.live.account(account_id) else {
                    return Vec::new();
                };
                let upstream: BTreeMap<Handle, Option<String>> = roster
                    .iter()
                    .map(|(p, n)| (person_handle(ACCOUNTS[*slot].0, *p), display_name(*n)))
                    .collect();
                let mut events: Vec<UserEvent> = contacts_of(account_id)
                    .filter(|(_, c)| !upstream.contains_key(&c.handle))
                    .map(|(id, c)| removal(id, c))
                    .collect();
                for (handle, display_name) in upstream {
                    let contact_id = ContactId::for_handle(account_id, &handle);
                    if !self.live.contacts().contains_key(&contact_id) {
                        events.push(UserEvent::RosterContactAdded {
                            contact_id,
                            account_id,
                            handle,
                            display_name,
                            is_new: account.roster_imported,
                        });
                    }
                }
                if !account.roster_imported {
                    events.push(UserEvent::RosterImported { account_id });
                }
                events
            }
            Op::LegacyUnbind(slot) => {
                let account_id = self.account_id(*slot, true);
                if self.live.account(account_id).is_none() {
                    return Vec::new();
                }
                let mut events: Vec<UserEvent> = contacts_of(account_id)
                    .map(|(id, c)| removal(id, c))
                    .collect();
                events.push(UserEvent::AccountUnbound { account_id });
                events
            }
            Op::LegacyRemove(c) => {
                let id = self.contact(c);
                self.live
                    .contacts()
                    .get(&id)
                    .map(|c| removal(&id, c))
                    .into_iter()
                    .collect()
            }
            _ => unreachable!("not a legacy op"),
        }
    }

    /// One command through `Aggregate::handle` (or, for a legacy op, the events the first
    /// version wrote, applied as a replay would), then every check.
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if matches!(
            op,
            Op::LegacySync(..) | Op::LegacyUnbind(_) | Op::LegacyRemove(_)
        ) {
            for event in self.legacy_events(op) {
                self.live.apply(event.clone());
                self.record(event)?;
            }
            return self.check_state();
        }
        let command = self.command(op);
        let before = self.live.clone();
        let decided = before.decide(command.clone());
        let mut next = before.clone();
        let sink = EventSink::default();
        let handled = at_once(next.handle(command.clone(), &(), &sink));
        let written = at_once(sink.collect());
        match &handled {
            Err(error) => {
                prop_assert_eq!(&decided, &Err(error.clone()));
                prop_assert!(written.is_empty(), "refused, yet wrote {written:?}");
                prop_assert!(next == before, "refused, yet the state changed");
                let code = AppError::from(error.clone()).code();
                prop_assert_ne!(code, "INTERNAL", "{:?} is an internal error", error);
            }
            Ok(()) => prop_assert_eq!(&decided, &Ok(written.clone())),
        }
        // An accepted match is followed by the binding event that takes it.
        for (i, event) in written.iter().enumerate() {
            if let UserEvent::MatchAccepted { contact_id, .. } = event {
                let binding = written.get(i + 1).and_then(UserEvent::binding_change);
                prop_assert!(
                    binding
                        .is_some_and(|b| b.after.is_some_and(|a| a.members.contains(contact_id))),
                    "{:?} is not followed by its binding in {:?}",
                    event,
                    written
                );
            }
        }
        // Reading the same roster or profiles again finds nothing new.
        if handled.is_ok()
            && matches!(
                command,
                UserCommand::SyncRoster { .. } | UserCommand::UpdateProfiles { .. }
            )
        {
            prop_assert_eq!(next.decide(command.clone()), Ok(Vec::new()), "read again");
        }
        if let UserCommand::Undo {
            target_sequence,
            target,
        } = &command
        {
            // Only undos of stored events: the application loads the target from the store.
            if *target_sequence <= before.sequence() {
                self.check_undo(&before, *target_sequence, target, &handled, &written, &next)?;
            }
        }
        for event in written {
            self.record(event)?;
        }
        self.live = next;
        self.check_state()
    }

    /// The live state against both folds of the stream, and the invariants.
    fn check_state(&self) -> Result<(), TestCaseError> {
        self.check_open_suggestions()?;
        prop_assert_eq!(self.live.sequence(), self.log.len());
        prop_assert!(
            self.folded == self.live,
            "the fold of the stream is not the live state"
        );
        prop_assert!(
            self.replayed == self.live,
            "the fold of the stream read back from JSON is not the live state"
        );
        check_invariants(&self.live)
    }

    /// Every open suggestion can be taken (with an id never used), unless both sides are in
    /// meta-contacts by now (there is no merging two meta-contacts); and turned down.
    fn check_open_suggestions(&self) -> Result<(), TestCaseError> {
        for s in self.live.open_suggestions() {
            let accept = self.live.decide(UserCommand::AcceptMatch {
                contact_id: s.contact_id,
                target: s.target,
                meta_contact_id: self.meta_contact(&MetaRef::Fresh),
                name: None,
            });
            let meta_of =
                |id: &ContactId| self.live.contacts().get(id).and_then(|c| c.meta_contact);
            let both_bound = meta_of(&s.contact_id).is_some()
                && match s.target {
                    MatchTarget::Contact(other) => meta_of(&other).is_some(),
                    MatchTarget::MetaContact(_) => true,
                };
            prop_assert!(
                accept.is_ok()
                    || (both_bound && matches!(accept, Err(UserError::ContactAlreadyBound { .. }))),
                "open suggestion {:?} cannot be accepted: {:?}",
                s,
                accept
            );
            let reject = self.live.decide(UserCommand::RejectMatch {
                contact_id: s.contact_id,
                target: s.target,
            });
            prop_assert!(
                reject.is_ok(),
                "open suggestion {:?} cannot be rejected: {:?}",
                s,
                reject
            );
        }
        Ok(())
    }

    /// An undo asked for in the sequence: exact, or refused as a conflict (a binding event), or
    /// refused as not undoable (any other event).
    fn check_undo(
        &self,
        before: &User,
        target_sequence: usize,
        target: &UserEvent,
        handled: &Result<(), UserError>,
        written: &[UserEvent],
        after: &User,
    ) -> Result<(), TestCaseError> {
        let Some(change) = target.binding_change() else {
            prop_assert_eq!(handled, &Err(UserError::NotUndoable(target_sequence)));
            return Ok(());
        };
        let id = change.meta_contact_id;
        match handled {
            Ok(()) => {
                prop_assert_eq!(
                    written,
                    &[UserEvent::BindingUndone {
                        undone_sequence: target_sequence,
                        meta_contact_id: id,
                        before: change.after.clone(),
                        after: change.before.clone(),
                    }][..]
                );
                // Exact: the meta-contact is as it was before the undone event, its members'
                // memberships follow, nothing else moved.
                prop_assert_eq!(
                    View::of(after).without_suggestions(),
                    View::of(before).with_meta_contact(id, change.before.as_ref()),
                );
                // Undoing the last event (an undo of an undo, say) gives back the state before it.
                if target_sequence == before.sequence() {
                    prop_assert_eq!(View::of(after), self.views[target_sequence - 1].clone());
                }
            }
            Err(error) => {
                prop_assert!(
                    target_sequence < before.sequence(),
                    "undo of the last event refused: {:?}",
                    error
                );
                let UserError::UndoConflict {
                    target: refused,
                    conflicting,
                } = error
                else {
                    return Err(TestCaseError::fail(format!(
                        "undo of binding event {target_sequence} refused with {error:?}"
                    )));
                };
                prop_assert_eq!(*refused, target_sequence);
                prop_assert!(
                    target_sequence < *conflicting && *conflicting <= before.sequence(),
                    "conflicting event {} is not between {} and {}",
                    conflicting,
                    target_sequence,
                    before.sequence()
                );
                prop_assert_eq!(AppError::from(error.clone()).code(), "CONFLICT");
                // Refused only when the meta-contact changed since, or a contact it would take
                // back is gone or in another meta-contact.
                let moved = before.meta_contacts().get(&id) != change.after.as_ref();
                let taken = change.before.iter().flat_map(|s| &s.members).any(|m| {
                    before
                        .contacts()
                        .get(m)
                        .is_none_or(|c| c.meta_contact.is_some_and(|other| other != id))
                });
                prop_assert!(
                    moved || taken,
                    "undo of {} refused for nothing",
                    target_sequence
                );
            }
        }
        Ok(())
    }

    /// What a roster event tells projections about the contact (its membership, its previous
    /// name) is what the stream's state says just before it.
    fn check_recorded_facts(
        &self,
        sequence: usize,
        event: &UserEvent,
    ) -> Result<(), TestCaseError> {
        let contact = |id: &ContactId| self.folded.contacts().get(id);
        match event {
            UserEvent::RosterContactDeparted {
                contact_id,
                meta_contact_id,
                ..
            }
            | UserEvent::RosterContactReturned {
                contact_id,
                meta_contact_id,
                ..
            }
            | UserEvent::RosterContactRemoved {
                contact_id,
                left_meta_contact: meta_contact_id,
                ..
            } => prop_assert_eq!(
                contact(contact_id).and_then(|c| c.meta_contact),
                *meta_contact_id,
                "event {} ({:?}) names the wrong meta-contact",
                sequence,
                event
            ),
            UserEvent::RosterContactRenamed {
                contact_id,
                previous,
                ..
            } => prop_assert_eq!(
                contact(contact_id).map(|c| c.display_name.clone()),
                Some(previous.clone()),
                "event {} ({:?}) names the wrong previous name",
                sequence,
                event
            ),
            UserEvent::MatchSuggested {
                contact_id,
                target,
                score,
                evidence,
            } => {
                prop_assert!(
                    evidence.windows(2).all(|w| w[0] < w[1]),
                    "evidence of {:?} not sorted and unique",
                    event
                );
                prop_assert_eq!(*score, crate::domain::matching::score(evidence));
                // Turned down for good, either way round.
                let rejected = self.log.iter().any(|e| match (e, target) {
                    (
                        UserEvent::MatchRejected {
                            contact_id: c,
                            target: t,
                        },
                        _,
                    ) if c == contact_id && t == target => true,
                    (
                        UserEvent::MatchRejected {
                            contact_id: c,
                            target: MatchTarget::Contact(t),
                        },
                        MatchTarget::Contact(other),
                    ) => c == other && t == contact_id,
                    _ => false,
                });
                prop_assert!(
                    !rejected,
                    "event {} suggests a rejected pair: {:?}",
                    sequence,
                    event
                );
                let account = |id: &ContactId| contact(id).map(|c| c.account_id);
                if let MatchTarget::Contact(other) = target {
                    prop_assert!(
                        other != contact_id && account(other) != account(contact_id),
                        "event {} pairs a contact with itself or its own account: {:?}",
                        sequence,
                        event
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Stores one event and applies it to both folds; a binding event must record the state it
    /// found, and undoing it right away must give back the view before it.
    fn record(&mut self, event: UserEvent) -> Result<(), TestCaseError> {
        let sequence = self.log.len() + 1;
        prop_assert!(UserEvent::KINDS.contains(&event.kind()));
        let json = serde_json::to_string(&event).unwrap();
        let read_back: UserEvent = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&read_back, &event, "JSON round trip of {}", json);
        let change = event.binding_change();
        if let Some(change) = &change {
            prop_assert_eq!(
                self.folded.meta_contacts().get(&change.meta_contact_id),
                change.before.as_ref(),
                "binding event {} ({:?}) records a state before it that is not the state it found",
                sequence,
                event
            );
        }
        self.check_recorded_facts(sequence, &event)?;
        let view_before = self.views[sequence - 1].clone();
        self.log.push(event.clone());
        self.folded.apply(event.clone());
        self.replayed.apply(read_back);
        self.views.push(View::of(&self.folded));
        if let Some(change) = change {
            let mut undone = self.folded.clone();
            let undo = undone.decide(UserCommand::Undo {
                target_sequence: sequence,
                target: Box::new(event.clone()),
            });
            prop_assert_eq!(
                &undo,
                &Ok(vec![UserEvent::BindingUndone {
                    undone_sequence: sequence,
                    meta_contact_id: change.meta_contact_id,
                    before: change.after,
                    after: change.before,
                }]),
                "undo right after binding event {} ({:?})",
                sequence,
                event
            );
            for e in undo.unwrap() {
                undone.apply(e);
            }
            prop_assert_eq!(
                View::of(&undone),
                view_before,
                "undo right after binding event {} ({:?}) is not exact",
                sequence,
                event
            );
        }
        Ok(())
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        // A failing sequence shrinks to a few commands well within this.
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_command_sequences_keep_the_user_aggregate_consistent(ops in scenario()) {
        let mut run = Run::new();
        for op in &ops {
            run.step(op)?;
        }
        // The whole stream once more, from the start, both ways.
        let mut folded = User::default();
        let mut replayed = User::default();
        for event in &run.log {
            folded.apply(event.clone());
            let json = serde_json::to_value(event).unwrap();
            replayed.apply(serde_json::from_value(json).unwrap());
        }
        prop_assert!(folded == run.live);
        prop_assert!(replayed == run.live);
    }
}
