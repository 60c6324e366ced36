//! Given/when/then tests of the user aggregate's rules.

use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::*;
use crate::domain::ids::{
    AccountId, ContactId, DisplayName, Handle, MetaContactId, PersonRef, Protocol, UserName,
};
use crate::domain::matching::{Evidence, MatchTarget};

type Fixture = TestFramework<User>;

fn fixture() -> Fixture {
    TestFramework::with(())
}

fn account(n: u128) -> NewAccount {
    NewAccount {
        account_id: AccountId(Uuid::from_u128(n)),
        protocol: Protocol::Xmpp,
        server: "127.0.0.1:5222".into(),
        handle: Handle::parse(Protocol::Xmpp, &format!("me{n}@localhost")).unwrap(),
    }
}

fn handle(s: &str) -> Handle {
    Handle::parse(Protocol::Xmpp, s).unwrap()
}

fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).unwrap()
}

fn contact(account: &NewAccount, h: &str) -> ContactId {
    ContactId::for_handle(account.account_id, &handle(h))
}

fn meta(n: u128) -> MetaContactId {
    MetaContactId(Uuid::from_u128(0xfeed_0000 + n))
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        user_name: UserName::parse("alice").unwrap(),
        password_hash: "$argon2id$stub".into(),
    }
}

fn bound(a: &NewAccount) -> UserEvent {
    UserEvent::AccountBound(BoundAccount {
        account_id: a.account_id,
        protocol: a.protocol,
        server: a.server.clone(),
        handle: a.handle.clone(),
    })
}

fn added(a: &NewAccount, h: &str, is_new: bool) -> UserEvent {
    UserEvent::RosterContactAdded {
        contact_id: contact(a, h),
        account_id: a.account_id,
        handle: handle(h),
        display_name: None,
        is_new,
    }
}

/// alice with two XMPP accounts; bob is on both rosters, carol on the first.
/// Sequences: 1 registered, 2-3 bound, 4-6 first roster, 7-8 second roster.
fn alice_with_contacts() -> Vec<UserEvent> {
    let (a, b) = (account(1), account(2));
    vec![
        registered(),
        bound(&a),
        bound(&b),
        added(&a, "bob@localhost", false),
        added(&a, "carol@localhost", false),
        UserEvent::RosterImported {
            account_id: a.account_id,
        },
        added(&b, "bob@localhost", false),
        UserEvent::RosterImported {
            account_id: b.account_id,
        },
    ]
}

fn bob_pair() -> Vec<ContactId> {
    let mut ids = vec![
        contact(&account(1), "bob@localhost"),
        contact(&account(2), "bob@localhost"),
    ];
    ids.sort();
    ids
}

/// Sequence 9: bob's two handles merged into meta(1) "Bob".
fn merged_bob() -> UserEvent {
    UserEvent::ContactsMerged {
        meta_contact_id: meta(1),
        name: name("Bob"),
        contact_ids: bob_pair(),
    }
}

fn merge(ids: Vec<ContactId>) -> UserCommand {
    UserCommand::MergeContacts {
        meta_contact_id: meta(1),
        name: name("Bob"),
        contact_ids: ids,
    }
}

fn with(mut events: Vec<UserEvent>, more: impl IntoIterator<Item = UserEvent>) -> Vec<UserEvent> {
    events.extend(more);
    events
}

fn state_after(events: &[UserEvent]) -> User {
    let mut user = User::default();
    for e in events {
        user.apply(e.clone());
    }
    user
}

mod matching;
mod properties;
mod reconciliation;

#[tokio::test]
async fn registration_binds_accounts_in_the_same_commit() {
    fixture()
        .given_no_previous_events()
        .when_async(UserCommand::Register {
            user_name: UserName::parse("alice").unwrap(),
            password_hash: "$argon2id$stub".into(),
            accounts: vec![account(1), account(2)],
        })
        .await
        .then_expect_events(vec![registered(), bound(&account(1)), bound(&account(2))]);
}

#[tokio::test]
async fn a_taken_name_cannot_be_registered_again() {
    fixture()
        .given(vec![registered()])
        .when_async(UserCommand::Register {
            user_name: UserName::parse("ALICE").unwrap(),
            password_hash: "x".into(),
            accounts: vec![],
        })
        .await
        .then_expect_error(UserError::UserNameTaken);
}

#[tokio::test]
async fn the_same_account_twice_in_one_registration_is_refused() {
    let mut again = account(1);
    again.account_id = AccountId(Uuid::from_u128(99));
    fixture()
        .given_no_previous_events()
        .when_async(UserCommand::Register {
            user_name: UserName::parse("alice").unwrap(),
            password_hash: "x".into(),
            accounts: vec![account(1), again],
        })
        .await
        .then_expect_error(UserError::DuplicateInRequest);
}

#[tokio::test]
async fn binding_an_account_twice_is_refused() {
    let mut again = account(1);
    again.account_id = AccountId(Uuid::from_u128(99));
    again.server = "127.0.0.1:5222".to_uppercase();
    fixture()
        .given(vec![registered(), bound(&account(1))])
        .when_async(UserCommand::BindAccount(again))
        .await
        .then_expect_error(UserError::DuplicateAccount {
            handle: "me1@localhost".into(),
            server: "127.0.0.1:5222".into(),
        });
}

#[tokio::test]
async fn nothing_but_registration_works_before_registering() {
    fixture()
        .given_no_previous_events()
        .when_async(UserCommand::BindAccount(account(1)))
        .await
        .then_expect_error(UserError::NotRegistered);
}

#[tokio::test]
async fn first_roster_import_adds_contacts_that_are_not_new() {
    let a = account(1);
    fixture()
        .given(vec![registered(), bound(&a)])
        .when_async(UserCommand::SyncRoster {
            account_id: a.account_id,
            roster: Some(vec![
                RosterItem {
                    handle: handle("bob@localhost"),
                    display_name: None,
                },
                RosterItem {
                    handle: handle("bob@localhost"),
                    display_name: None,
                },
            ]),
        })
        .await
        .then_expect_events(vec![
            added(&a, "bob@localhost", false),
            UserEvent::RosterImported {
                account_id: a.account_id,
            },
        ]);
}

#[tokio::test]
async fn later_syncs_add_new_contacts_marked_new_and_depart_vanished_ones_keeping_their_place() {
    let a = account(1);
    let events = with(alice_with_contacts(), [merged_bob()]);
    fixture()
        .given(events)
        .when_async(UserCommand::SyncRoster {
            account_id: a.account_id,
            roster: Some(vec![
                RosterItem {
                    handle: handle("carol@localhost"),
                    display_name: None,
                },
                RosterItem {
                    handle: handle("dave@localhost"),
                    display_name: None,
                },
            ]),
        })
        .await
        .then_expect_events(vec![
            added(&a, "dave@localhost", true),
            UserEvent::RosterContactDeparted {
                contact_id: contact(&a, "bob@localhost"),
                account_id: a.account_id,
                reason: DepartureReason::RemovedUpstream,
                meta_contact_id: Some(meta(1)),
            },
        ]);
}

#[tokio::test]
async fn merging_needs_two_known_free_contacts() {
    let bob = bob_pair();
    fixture()
        .given(alice_with_contacts())
        .when_async(merge(vec![bob[0], bob[0]]))
        .await
        .then_expect_error(UserError::TooFewContacts);
    let stranger = ContactId(Uuid::from_u128(7));
    fixture()
        .given(alice_with_contacts())
        .when_async(merge(vec![bob[0], stranger]))
        .await
        .then_expect_error(UserError::UnknownContact(stranger));
    fixture()
        .given(alice_with_contacts())
        .when_async(merge(bob.clone()))
        .await
        .then_expect_events(vec![merged_bob()]);
}

#[tokio::test]
async fn a_contact_in_a_meta_contact_is_not_silently_moved() {
    let carol = contact(&account(1), "carol@localhost");
    let bob = bob_pair();
    fixture()
        .given(with(alice_with_contacts(), [merged_bob()]))
        .when_async(UserCommand::MergeContacts {
            meta_contact_id: meta(2),
            name: name("Carol"),
            contact_ids: vec![carol, bob[1]],
        })
        .await
        .then_expect_error(UserError::ContactAlreadyBound {
            contact_id: bob[1],
            meta_contact_id: meta(1),
        });
    fixture()
        .given(with(alice_with_contacts(), [merged_bob()]))
        .when_async(UserCommand::MergeContacts {
            meta_contact_id: meta(1),
            name: name("Carol"),
            contact_ids: vec![carol, carol],
        })
        .await
        .then_expect_error(UserError::MetaContactExists(meta(1)));
}

#[tokio::test]
async fn removing_the_last_member_dissolves_and_undo_restores_name_and_members() {
    let bob = bob_pair();
    let before = MetaContactState::new(name("Bob"), bob.clone());
    let history = with(
        alice_with_contacts(),
        [
            merged_bob(),
            UserEvent::ContactRemovedFromMetaContact {
                meta_contact_id: meta(1),
                contact_id: bob[0],
                before: before.clone(),
            },
            UserEvent::ContactRemovedFromMetaContact {
                meta_contact_id: meta(1),
                contact_id: bob[1],
                before: MetaContactState::new(name("Bob"), [bob[1]]),
            },
        ],
    );
    let user = state_after(&history);
    assert!(
        user.meta_contacts().is_empty(),
        "the empty meta-contact is dissolved"
    );
    assert!(user.contacts().values().all(|c| c.meta_contact.is_none()));

    // Undo the last removal (sequence 11): Bob comes back with bob[1] only.
    let last = history[10].clone();
    fixture()
        .given(history)
        .when_async(UserCommand::Undo {
            target_sequence: 11,
            target: Box::new(last),
        })
        .await
        .then_expect_events(vec![UserEvent::BindingUndone {
            undone_sequence: 11,
            meta_contact_id: meta(1),
            before: None,
            after: Some(MetaContactState::new(name("Bob"), [bob[1]])),
        }]);
}

#[tokio::test]
async fn undo_restores_exactly_and_undoing_the_undo_redoes() {
    let bob = bob_pair();
    let carol = contact(&account(1), "carol@localhost");
    let full = MetaContactState::new(name("Bob"), bob.clone());
    let removal = UserEvent::ContactRemovedFromMetaContact {
        meta_contact_id: meta(1),
        contact_id: bob[0],
        before: full.clone(),
    };
    let history = with(alice_with_contacts(), [merged_bob(), removal.clone()]);
    let undo = UserEvent::BindingUndone {
        undone_sequence: 10,
        meta_contact_id: meta(1),
        before: Some(MetaContactState::new(name("Bob"), [bob[1]])),
        after: Some(full.clone()),
    };
    fixture()
        .given(history.clone())
        .when_async(UserCommand::Undo {
            target_sequence: 10,
            target: Box::new(removal.clone()),
        })
        .await
        .then_expect_events(vec![undo.clone()]);

    let after_undo = with(history.clone(), [undo.clone()]);
    assert_eq!(state_after(&after_undo).meta_contacts()[&meta(1)], full);
    fixture()
        .given(after_undo.clone())
        .when_async(UserCommand::Undo {
            target_sequence: 11,
            target: Box::new(undo.clone()),
        })
        .await
        .then_expect_events(vec![UserEvent::BindingUndone {
            undone_sequence: 11,
            meta_contact_id: meta(1),
            before: Some(full.clone()),
            after: Some(MetaContactState::new(name("Bob"), [bob[1]])),
        }]);

    // Undoing the same removal twice is ambiguous: the undo (sequence 11) changed it since.
    fixture()
        .given(after_undo)
        .when_async(UserCommand::Undo {
            target_sequence: 10,
            target: Box::new(removal),
        })
        .await
        .then_expect_error(UserError::UndoConflict {
            target: 10,
            conflicting: 11,
        });

    // Undoing the merge dissolves the meta-contact and frees both handles.
    let user = state_after(&with(
        alice_with_contacts(),
        [
            merged_bob(),
            UserEvent::BindingUndone {
                undone_sequence: 9,
                meta_contact_id: meta(1),
                before: Some(full),
                after: None,
            },
        ],
    ));
    assert!(user.meta_contacts().is_empty());
    assert!(user.contacts()[&carol].meta_contact.is_none());
    assert!(bob
        .iter()
        .all(|b| user.contacts()[b].meta_contact.is_none()));
}

#[tokio::test]
async fn undo_is_refused_when_later_events_changed_the_same_people() {
    let bob = bob_pair();
    let renamed = UserEvent::MetaContactRenamed {
        meta_contact_id: meta(1),
        before: MetaContactState::new(name("Bob"), bob.clone()),
        name: name("Robert"),
    };
    fixture()
        .given(with(alice_with_contacts(), [merged_bob(), renamed]))
        .when_async(UserCommand::Undo {
            target_sequence: 9,
            target: Box::new(merged_bob()),
        })
        .await
        .then_expect_error(UserError::UndoConflict {
            target: 9,
            conflicting: 10,
        });

    // A removed member that was then bound elsewhere cannot be put back.
    let carol = contact(&account(1), "carol@localhost");
    let removal = UserEvent::ContactRemovedFromMetaContact {
        meta_contact_id: meta(1),
        contact_id: bob[0],
        before: MetaContactState::new(name("Bob"), bob.clone()),
    };
    let elsewhere = UserEvent::ContactsMerged {
        meta_contact_id: meta(2),
        name: name("Other"),
        contact_ids: {
            let mut v = vec![bob[0], carol];
            v.sort();
            v
        },
    };
    fixture()
        .given(with(
            alice_with_contacts(),
            [merged_bob(), removal.clone(), elsewhere],
        ))
        .when_async(UserCommand::Undo {
            target_sequence: 10,
            target: Box::new(removal),
        })
        .await
        .then_expect_error(UserError::UndoConflict {
            target: 10,
            conflicting: 11,
        });
}

#[tokio::test]
async fn only_binding_events_can_be_undone() {
    fixture()
        .given(alice_with_contacts())
        .when_async(UserCommand::Undo {
            target_sequence: 2,
            target: Box::new(bound(&account(1))),
        })
        .await
        .then_expect_error(UserError::NotUndoable(2));
    fixture()
        .given(alice_with_contacts())
        .when_async(UserCommand::Undo {
            target_sequence: 99,
            target: Box::new(merged_bob()),
        })
        .await
        .then_expect_error(UserError::NotUndoable(99));
}

#[tokio::test]
async fn rename_add_and_remove_record_the_state_before() {
    let bob = bob_pair();
    let carol = contact(&account(1), "carol@localhost");
    let history = with(alice_with_contacts(), [merged_bob()]);
    let before = MetaContactState::new(name("Bob"), bob.clone());
    fixture()
        .given(history.clone())
        .when_async(UserCommand::RenameMetaContact {
            meta_contact_id: meta(1),
            name: name("Bob"),
        })
        .await
        .then_expect_events(vec![]);
    fixture()
        .given(history.clone())
        .when_async(UserCommand::RenameMetaContact {
            meta_contact_id: meta(1),
            name: name("Robert"),
        })
        .await
        .then_expect_events(vec![UserEvent::MetaContactRenamed {
            meta_contact_id: meta(1),
            before: before.clone(),
            name: name("Robert"),
        }]);
    fixture()
        .given(history.clone())
        .when_async(UserCommand::AddToMetaContact {
            meta_contact_id: meta(1),
            contact_id: carol,
        })
        .await
        .then_expect_events(vec![UserEvent::ContactAddedToMetaContact {
            meta_contact_id: meta(1),
            contact_id: carol,
            before: before.clone(),
        }]);
    fixture()
        .given(history.clone())
        .when_async(UserCommand::RemoveFromMetaContact {
            meta_contact_id: meta(1),
            contact_id: carol,
        })
        .await
        .then_expect_error(UserError::ContactNotInMetaContact {
            contact_id: carol,
            meta_contact_id: meta(1),
        });
    fixture()
        .given(history)
        .when_async(UserCommand::AddToMetaContact {
            meta_contact_id: meta(2),
            contact_id: carol,
        })
        .await
        .then_expect_error(UserError::UnknownMetaContact(meta(2)));
}

#[tokio::test]
async fn unbinding_an_account_departs_its_contacts_and_keeps_their_memberships_dormant() {
    let b = account(2);
    let history = with(alice_with_contacts(), [merged_bob()]);
    let departed = UserEvent::RosterContactDeparted {
        contact_id: contact(&b, "bob@localhost"),
        account_id: b.account_id,
        reason: DepartureReason::AccountUnbound,
        meta_contact_id: Some(meta(1)),
    };
    let unbound = UserEvent::AccountUnbound {
        account_id: b.account_id,
    };
    fixture()
        .given(history.clone())
        .when_async(UserCommand::UnbindAccount {
            account_id: b.account_id,
        })
        .await
        .then_expect_events(vec![departed.clone(), unbound.clone()]);
    let user = state_after(&with(history, [departed, unbound]));
    assert_eq!(user.accounts().count(), 1);
    assert_eq!(user.meta_contacts()[&meta(1)].members, bob_pair());
    assert!(user.contacts()[&contact(&b, "bob@localhost")].is_dormant());
}

#[tokio::test]
async fn a_contact_added_by_hand_is_a_roster_contact_of_the_account() {
    let a = account(1);
    fixture()
        .given(vec![registered(), bound(&a)])
        .when_async(UserCommand::AddContact {
            account_id: a.account_id,
            handle: handle("Dan@localhost"),
            display_name: Some("Dan".into()),
        })
        .await
        .then_expect_events(vec![UserEvent::RosterContactAdded {
            contact_id: contact(&a, "dan@localhost"),
            account_id: a.account_id,
            handle: handle("dan@localhost"),
            display_name: Some("Dan".into()),
            is_new: false,
        }]);
}

#[tokio::test]
async fn a_contact_cannot_be_added_twice_or_to_an_unknown_account() {
    let a = account(1);
    fixture()
        .given(alice_with_contacts())
        .when_async(UserCommand::AddContact {
            account_id: a.account_id,
            handle: handle("BOB@localhost"),
            display_name: None,
        })
        .await
        .then_expect_error(UserError::ContactExists(contact(&a, "bob@localhost")));
    fixture()
        .given(alice_with_contacts())
        .when_async(UserCommand::AddContact {
            account_id: account(7).account_id,
            handle: handle("dan@localhost"),
            display_name: None,
        })
        .await
        .then_expect_error(UserError::UnknownAccount(account(7).account_id));
}

#[tokio::test]
async fn removing_a_bound_contact_by_hand_keeps_its_place_dormant() {
    let bob = contact(&account(1), "bob@localhost");
    let events = with(alice_with_contacts(), [merged_bob()]);
    fixture()
        .given(events.clone())
        .when_async(UserCommand::RemoveContact { contact_id: bob })
        .await
        .then_expect_events(vec![UserEvent::RosterContactDeparted {
            contact_id: bob,
            account_id: account(1).account_id,
            reason: DepartureReason::RemovedByUser,
            meta_contact_id: Some(meta(1)),
        }]);
    let gone = contact(&account(1), "nobody@localhost");
    fixture()
        .given(events)
        .when_async(UserCommand::RemoveContact { contact_id: gone })
        .await
        .then_expect_error(UserError::UnknownContact(gone));
}

/// A realistic stream holding at least one event of every kind, binding events included.
fn one_event_of_every_kind() -> Vec<UserEvent> {
    let (a, b) = (account(1), account(2));
    let carol = contact(&a, "carol@localhost");
    let mut bob_and_carol = bob_pair();
    bob_and_carol.push(carol);
    with(
        alice_with_contacts(),
        [
            merged_bob(),
            UserEvent::AuditorRead {
                auditor: "inspector".into(),
                read: crate::domain::user::AuditedRead::ContactList { as_of: None },
            },
            UserEvent::RoutePreferenceSet {
                person: PersonRef::MetaContact(meta(1)),
                via: Some(bob_pair()[0]),
            },
            UserEvent::ContactAddedToMetaContact {
                meta_contact_id: meta(1),
                contact_id: carol,
                before: MetaContactState::new(name("Bob"), bob_pair()),
            },
            UserEvent::MetaContactRenamed {
                meta_contact_id: meta(1),
                before: MetaContactState::new(name("Bob"), bob_and_carol.clone()),
                name: name("Robert"),
            },
            UserEvent::ContactRemovedFromMetaContact {
                meta_contact_id: meta(1),
                contact_id: carol,
                before: MetaContactState::new(name("Robert"), bob_and_carol.clone()),
            },
            UserEvent::BindingUndone {
                undone_sequence: 12,
                meta_contact_id: meta(1),
                before: Some(MetaContactState::new(name("Robert"), bob_pair())),
                after: Some(MetaContactState::new(name("Robert"), bob_and_carol)),
            },
            UserEvent::RosterContactRemoved {
                contact_id: carol,
                account_id: a.account_id,
                left_meta_contact: Some(meta(1)),
            },
            UserEvent::RosterContactRemoved {
                contact_id: contact(&b, "bob@localhost"),
                account_id: b.account_id,
                left_meta_contact: Some(meta(1)),
            },
            UserEvent::AccountUnbound {
                account_id: b.account_id,
            },
            added(&a, "dave@localhost", true),
            UserEvent::ContactKept {
                contact_id: contact(&a, "dave@localhost"),
                account_id: a.account_id,
            },
            UserEvent::ContactsSeen {
                contact_ids: vec![contact(&a, "dave@localhost")],
            },
            UserEvent::RosterContactRenamed {
                contact_id: contact(&a, "dave@localhost"),
                account_id: a.account_id,
                display_name: Some("Dave".into()),
                previous: None,
            },
            added(&a, "erin@localhost", false),
            UserEvent::ContactsMerged {
                meta_contact_id: meta(2),
                name: name("Dave and Erin"),
                contact_ids: dave_and_erin(),
            },
            UserEvent::RosterContactDeparted {
                contact_id: contact(&a, "erin@localhost"),
                account_id: a.account_id,
                reason: DepartureReason::RemovedUpstream,
                meta_contact_id: Some(meta(2)),
            },
            UserEvent::RosterContactReturned {
                contact_id: contact(&a, "erin@localhost"),
                account_id: a.account_id,
                handle: handle("erin@localhost"),
                display_name: None,
                meta_contact_id: Some(meta(2)),
            },
            UserEvent::RosterContactDeparted {
                contact_id: contact(&a, "erin@localhost"),
                account_id: a.account_id,
                reason: DepartureReason::RemovedUpstream,
                meta_contact_id: Some(meta(2)),
            },
            UserEvent::DormantContactForgotten {
                meta_contact_id: meta(2),
                contact_id: contact(&a, "erin@localhost"),
                before: MetaContactState::new(name("Dave and Erin"), dave_and_erin()),
            },
            UserEvent::MatchPolicySet {
                auto_bind_at: Some(90),
            },
            UserEvent::ContactProfileChanged {
                contact_id: contact(&a, "dave@localhost"),
                account_id: a.account_id,
                profile: crate::domain::matching::Profile {
                    nickname: Some("Davy".into()),
                    emails: vec!["dave@example.org".into()],
                    verified_address: None,
                },
            },
            UserEvent::MatchSuggested {
                contact_id: contact(&a, "dave@localhost"),
                target: MatchTarget::MetaContact(meta(1)),
                score: 60,
                evidence: vec![Evidence::SameName {
                    name: "dave".into(),
                }],
            },
            UserEvent::MatchRejected {
                contact_id: contact(&a, "dave@localhost"),
                target: MatchTarget::MetaContact(meta(1)),
            },
            UserEvent::MatchSuggested {
                contact_id: contact(&a, "dave@localhost"),
                target: MatchTarget::MetaContact(meta(2)),
                score: 60,
                evidence: vec![Evidence::MetaContactName {
                    name: "dave".into(),
                }],
            },
            UserEvent::MatchAccepted {
                contact_id: contact(&a, "dave@localhost"),
                target: MatchTarget::MetaContact(meta(2)),
                automatic: false,
            },
        ],
    )
}

fn dave_and_erin() -> Vec<ContactId> {
    let a = account(1);
    let mut ids = vec![contact(&a, "dave@localhost"), contact(&a, "erin@localhost")];
    ids.sort();
    ids
}

#[test]
fn the_sample_stream_covers_every_kind() {
    let mut seen: Vec<&str> = one_event_of_every_kind()
        .iter()
        .map(UserEvent::kind)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    let mut every = UserEvent::KINDS.to_vec();
    every.sort_unstable();
    assert_eq!(seen, every);
}

/// The undoable kinds the API advertises are exactly those the aggregate reverses: each event,
/// undone right after it happened (when nothing can conflict), is accepted if and only if its
/// kind is undoable.
#[test]
fn undo_accepts_exactly_the_undoable_kinds() {
    let history = one_event_of_every_kind();
    for (i, event) in history.iter().enumerate() {
        let sequence = i + 1;
        let kind = event.kind();
        assert_eq!(event.is_undoable(), UserEvent::is_undoable_kind(kind));
        assert_eq!(
            event.is_undoable(),
            event.binding_change().is_some(),
            "{kind}: undoable kinds are those with a binding change"
        );
        let decided = state_after(&history[..=i]).decide(UserCommand::Undo {
            target_sequence: sequence,
            target: Box::new(event.clone()),
        });
        if event.is_undoable() {
            let events = decided.unwrap_or_else(|e| panic!("{kind} at {sequence} refused: {e}"));
            assert!(
                matches!(
                    events.as_slice(),
                    [UserEvent::BindingUndone { undone_sequence, .. }] if *undone_sequence == sequence
                ),
                "{kind} at {sequence}: {events:?}"
            );
        } else {
            assert_eq!(decided, Err(UserError::NotUndoable(sequence)), "{kind}");
        }
    }
}

#[test]
fn unknown_kinds_are_not_undoable() {
    assert!(!UserEvent::is_undoable_kind("SomethingFromTheFuture"));
    assert!(!UserEvent::is_undoable_kind(""));
    // Kind names are case-sensitive, as stored.
    assert!(!UserEvent::is_undoable_kind("contactsmerged"));
}

#[tokio::test]
async fn a_route_preference_names_one_member_of_a_meta_contact() {
    let history = with(alice_with_contacts(), [merged_bob()]);
    let bob = PersonRef::MetaContact(meta(1));
    let via = bob_pair()[1];
    let chosen = UserEvent::RoutePreferenceSet {
        person: bob,
        via: Some(via),
    };
    fixture()
        .given(history.clone())
        .when_async(UserCommand::SetRoutePreference {
            person: bob,
            via: Some(via),
        })
        .await
        .then_expect_events(vec![chosen.clone()]);
    // The same again changes nothing; clearing it is recorded.
    let set = with(history.clone(), [chosen]);
    fixture()
        .given(set.clone())
        .when_async(UserCommand::SetRoutePreference {
            person: bob,
            via: Some(via),
        })
        .await
        .then_expect_events(vec![]);
    fixture()
        .given(set.clone())
        .when_async(UserCommand::SetRoutePreference {
            person: bob,
            via: None,
        })
        .await
        .then_expect_events(vec![UserEvent::RoutePreferenceSet {
            person: bob,
            via: None,
        }]);
    assert_eq!(state_after(&set).route_preference(bob), Some(via));
    // Not a member; not a meta-contact; a contact alone has no choice.
    let carol = contact(&account(1), "carol@localhost");
    fixture()
        .given(history.clone())
        .when_async(UserCommand::SetRoutePreference {
            person: bob,
            via: Some(carol),
        })
        .await
        .then_expect_error(UserError::ContactNotInMetaContact {
            contact_id: carol,
            meta_contact_id: meta(1),
        });
    fixture()
        .given(history.clone())
        .when_async(UserCommand::SetRoutePreference {
            person: PersonRef::MetaContact(meta(9)),
            via: None,
        })
        .await
        .then_expect_error(UserError::UnknownMetaContact(meta(9)));
    fixture()
        .given(history)
        .when_async(UserCommand::SetRoutePreference {
            person: PersonRef::Contact(carol),
            via: Some(carol),
        })
        .await
        .then_expect_error(UserError::NoRouteChoice(carol));
}

#[tokio::test]
async fn an_accepted_message_request_is_a_new_contact_the_roster_does_not_remove() {
    let a = account(1);
    let zoe = contact(&a, "zoe@elsewhere");
    let accept = UserCommand::AcceptMessageRequest {
        account_id: a.account_id,
        handle: handle("zoe@elsewhere"),
        display_name: None,
    };
    let accepted = vec![
        added(&a, "zoe@elsewhere", true),
        UserEvent::ContactKept {
            contact_id: zoe,
            account_id: a.account_id,
        },
    ];
    fixture()
        .given(alice_with_contacts())
        .when_async(accept.clone())
        .await
        .then_expect_events(accepted.clone());
    let history = with(alice_with_contacts(), accepted);
    fixture()
        .given(history.clone())
        .when_async(accept)
        .await
        .then_expect_error(UserError::ContactExists(zoe));
    // The upstream roster does not list zoe: she stays; the others it lacks leave as before.
    let events = fixture()
        .given(history.clone())
        .when_async(UserCommand::SyncRoster {
            account_id: a.account_id,
            roster: Some(vec![RosterItem {
                handle: handle("bob@localhost"),
                display_name: None,
            }]),
        })
        .await
        .inspect_result()
        .unwrap();
    let departed: Vec<ContactId> = events
        .iter()
        .filter_map(|e| match e {
            UserEvent::RosterContactDeparted { contact_id, .. } => Some(*contact_id),
            _ => None,
        })
        .collect();
    assert!(!departed.contains(&zoe), "{events:?}");
    assert!(
        departed.contains(&contact(&a, "carol@localhost")),
        "{events:?}"
    );
    // The user can still let her go.
    fixture()
        .given(history)
        .when_async(UserCommand::RemoveContact { contact_id: zoe })
        .await
        .then_expect_events(vec![UserEvent::RosterContactDeparted {
            contact_id: zoe,
            account_id: a.account_id,
            reason: DepartureReason::RemovedByUser,
            meta_contact_id: None,
        }]);
}
