//! Given/when/then tests of reconciliation: stable account identity, dormant memberships,
//! upstream renames, absent rosters, forgetting and seeing contacts.

use super::*;
use crate::domain::ids::{AccountKey, UserId};

fn item(h: &str, display_name: Option<&str>) -> RosterItem {
    RosterItem {
        handle: handle(h),
        display_name: display_name.map(str::to_owned),
    }
}

fn sync(a: &NewAccount, items: Vec<RosterItem>) -> UserCommand {
    UserCommand::SyncRoster {
        account_id: a.account_id,
        roster: Some(items),
    }
}

fn departed(
    a: &NewAccount,
    h: &str,
    reason: DepartureReason,
    meta: Option<MetaContactId>,
) -> UserEvent {
    UserEvent::RosterContactDeparted {
        contact_id: contact(a, h),
        account_id: a.account_id,
        reason,
        meta_contact_id: meta,
    }
}

fn returned(a: &NewAccount, h: &str, meta: Option<MetaContactId>) -> UserEvent {
    UserEvent::RosterContactReturned {
        contact_id: contact(a, h),
        account_id: a.account_id,
        handle: handle(h),
        display_name: None,
        meta_contact_id: meta,
    }
}

fn pair(a: &NewAccount, b: &NewAccount, h: &str) -> Vec<ContactId> {
    let mut ids = vec![contact(a, h), contact(b, h)];
    ids.sort();
    ids
}

const FRIENDS: [&str; 3] = ["bob@localhost", "carol@localhost", "dave@localhost"];

/// Two accounts with the same three friends, each friend one meta-contact (meta 1, 2, 3).
fn three_people_on_two_accounts() -> Vec<UserEvent> {
    let (a, b) = (account(1), account(2));
    let mut events = vec![registered(), bound(&a), bound(&b)];
    for acc in [&a, &b] {
        events.extend(FRIENDS.iter().map(|h| added(acc, h, false)));
        events.push(UserEvent::RosterImported {
            account_id: acc.account_id,
        });
    }
    for (n, h) in FRIENDS.iter().enumerate() {
        events.push(UserEvent::ContactsMerged {
            meta_contact_id: meta(n as u128 + 1),
            name: name(h),
            contact_ids: pair(&a, &b, h),
        });
    }
    events
}

#[test]
fn an_account_bound_again_gets_its_old_id_back_even_a_random_one() {
    let user = UserId(Uuid::from_u128(42));
    // account(2) has an id that is not derived: accounts bound before ids were derived.
    let b = account(2);
    let history = with(
        three_people_on_two_accounts(),
        [UserEvent::AccountUnbound {
            account_id: b.account_id,
        }],
    );
    let state = state_after(&history);
    let upper = b.server.to_uppercase();
    assert_eq!(
        state.account_id_for(user, b.protocol, &upper, &b.handle),
        b.account_id
    );
    let fresh = handle("new@localhost");
    assert_eq!(
        state.account_id_for(user, Protocol::Xmpp, &b.server, &fresh),
        AccountId::for_binding(user, &AccountKey::new(Protocol::Xmpp, &b.server, &fresh))
    );
}

#[tokio::test]
async fn binding_a_known_account_under_another_id_is_refused() {
    let b = account(2);
    let history = with(
        three_people_on_two_accounts(),
        [UserEvent::AccountUnbound {
            account_id: b.account_id,
        }],
    );
    let other_id = AccountId(Uuid::from_u128(99));
    fixture()
        .given(history)
        .when_async(UserCommand::BindAccount(NewAccount {
            account_id: other_id,
            ..b.clone()
        }))
        .await
        .then_expect_error(UserError::AccountIdMismatch {
            expected: b.account_id,
        });
}

#[tokio::test]
async fn unbinding_and_binding_again_puts_every_membership_back() {
    let (a, b) = (account(1), account(2));
    let unbind = UserCommand::UnbindAccount {
        account_id: b.account_id,
    };
    let mut left: Vec<UserEvent> = FRIENDS
        .iter()
        .enumerate()
        .map(|(n, h)| {
            departed(
                &b,
                h,
                DepartureReason::AccountUnbound,
                Some(meta(n as u128 + 1)),
            )
        })
        .collect();
    // Departures come in contact id order.
    left.sort_by_key(|e| match e {
        UserEvent::RosterContactDeparted { contact_id, .. } => *contact_id,
        _ => unreachable!(),
    });
    left.push(UserEvent::AccountUnbound {
        account_id: b.account_id,
    });
    fixture()
        .given(three_people_on_two_accounts())
        .when_async(unbind)
        .await
        .then_expect_events(left.clone());

    // Bound again: the same id, and its roster brings each friend back where they were.
    let rebound = with(with(three_people_on_two_accounts(), left), [bound(&b)]);
    let mut back: Vec<UserEvent> = FRIENDS
        .iter()
        .enumerate()
        .map(|(n, h)| returned(&b, h, Some(meta(n as u128 + 1))))
        .collect();
    back.push(UserEvent::RosterImported {
        account_id: b.account_id,
    });
    fixture()
        .given(rebound.clone())
        .when_async(sync(&b, FRIENDS.iter().map(|h| item(h, None)).collect()))
        .await
        .then_expect_events(back.clone());
    let user = state_after(&with(rebound, back));
    for (n, h) in FRIENDS.iter().enumerate() {
        let members = &user.meta_contacts()[&meta(n as u128 + 1)].members;
        assert_eq!(members, &pair(&a, &b, h));
        assert!(members.iter().all(|m| user.contacts()[m].is_listed()));
    }
}

#[tokio::test]
async fn an_absent_roster_records_nothing_not_even_an_import() {
    let a = account(1);
    for given in [
        vec![registered(), bound(&a)],
        three_people_on_two_accounts(),
    ] {
        fixture()
            .given(given)
            .when_async(UserCommand::SyncRoster {
                account_id: a.account_id,
                roster: None,
            })
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn an_empty_roster_departs_contacts_but_dissolves_no_meta_contact() {
    let (a, b) = (account(1), account(2));
    let events = fixture()
        .given(three_people_on_two_accounts())
        .when_async(sync(&a, vec![]))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| matches!(
        e,
        UserEvent::RosterContactDeparted {
            reason: DepartureReason::RemovedUpstream,
            meta_contact_id: Some(_),
            ..
        }
    )));
    let user = state_after(&with(three_people_on_two_accounts(), events));
    assert_eq!(user.meta_contacts().len(), 3);
    for h in FRIENDS {
        assert!(user.contacts()[&contact(&a, h)].is_dormant());
        assert!(user.contacts()[&contact(&b, h)].is_listed());
    }
}

#[tokio::test]
async fn a_contact_deleted_upstream_and_added_again_is_back_in_its_meta_contact() {
    let a = account(1);
    let gone = departed(
        &a,
        "bob@localhost",
        DepartureReason::RemovedUpstream,
        Some(meta(1)),
    );
    let history = with(three_people_on_two_accounts(), [gone]);
    fixture()
        .given(history)
        .when_async(sync(&a, FRIENDS.iter().map(|h| item(h, None)).collect()))
        .await
        .then_expect_events(vec![returned(&a, "bob@localhost", Some(meta(1)))]);
}

#[tokio::test]
async fn an_upstream_rename_is_an_update_that_leaves_the_meta_contact_name_alone() {
    let a = account(1);
    let renamed = UserEvent::RosterContactRenamed {
        contact_id: contact(&a, "bob@localhost"),
        account_id: a.account_id,
        display_name: Some("Bobby".into()),
        previous: None,
    };
    let roster = vec![
        item("bob@localhost", Some("Bobby")),
        item("carol@localhost", None),
        item("dave@localhost", None),
    ];
    fixture()
        .given(three_people_on_two_accounts())
        .when_async(sync(&a, roster))
        .await
        .then_expect_events(vec![renamed.clone()]);
    let user = state_after(&with(three_people_on_two_accounts(), [renamed]));
    let bob = &user.contacts()[&contact(&a, "bob@localhost")];
    assert_eq!(bob.display_name.as_deref(), Some("Bobby"));
    assert_eq!(user.meta_contacts()[&meta(1)].name, name("bob@localhost"));
}

#[tokio::test]
async fn a_sync_without_upstream_change_records_nothing() {
    let a = account(1);
    fixture()
        .given(three_people_on_two_accounts())
        .when_async(sync(
            &a,
            FRIENDS.iter().rev().map(|h| item(h, None)).collect(),
        ))
        .await
        .then_expect_events(vec![]);
    // Nor does a departed contact that is still gone.
    let gone = departed(
        &a,
        "bob@localhost",
        DepartureReason::RemovedUpstream,
        Some(meta(1)),
    );
    fixture()
        .given(with(three_people_on_two_accounts(), [gone]))
        .when_async(sync(
            &a,
            FRIENDS[1..].iter().map(|h| item(h, None)).collect(),
        ))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn syncing_one_account_never_touches_another_accounts_contacts() {
    let (a, b) = (account(1), account(2));
    let events = fixture()
        .given(three_people_on_two_accounts())
        .when_async(sync(&b, vec![item("bob@localhost", None)]))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 2);
    for event in events {
        match event {
            UserEvent::RosterContactDeparted { account_id, .. } => {
                assert_eq!(account_id, b.account_id);
                assert_ne!(account_id, a.account_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn only_a_dormant_member_can_be_forgotten_and_undo_brings_it_back() {
    let a = account(1);
    let b = account(2);
    let bob = contact(&a, "bob@localhost");
    fixture()
        .given(three_people_on_two_accounts())
        .when_async(UserCommand::ForgetContact { contact_id: bob })
        .await
        .then_expect_error(UserError::ContactNotDormant(bob));

    let gone = departed(
        &a,
        "bob@localhost",
        DepartureReason::RemovedUpstream,
        Some(meta(1)),
    );
    let history = with(three_people_on_two_accounts(), [gone]);
    let forgotten = UserEvent::DormantContactForgotten {
        meta_contact_id: meta(1),
        contact_id: bob,
        before: MetaContactState::new(name("bob@localhost"), pair(&a, &b, "bob@localhost")),
    };
    fixture()
        .given(history.clone())
        .when_async(UserCommand::ForgetContact { contact_id: bob })
        .await
        .then_expect_events(vec![forgotten.clone()]);
    let after = with(history, [forgotten.clone()]);
    let user = state_after(&after);
    assert_eq!(
        user.meta_contacts()[&meta(1)].members,
        vec![contact(&b, "bob@localhost")]
    );
    assert_eq!(user.contacts()[&bob].meta_contact, None);
    fixture()
        .given(after.clone())
        .when_async(UserCommand::Undo {
            target_sequence: after.len(),
            target: Box::new(forgotten),
        })
        .await
        .then_expect_events(vec![UserEvent::BindingUndone {
            undone_sequence: after.len(),
            meta_contact_id: meta(1),
            before: Some(MetaContactState::new(
                name("bob@localhost"),
                [contact(&b, "bob@localhost")],
            )),
            after: Some(MetaContactState::new(
                name("bob@localhost"),
                pair(&a, &b, "bob@localhost"),
            )),
        }]);
}

#[tokio::test]
async fn a_departed_contact_cannot_be_bound_anew() {
    let a = account(1);
    let history = with(
        alice_with_contacts(),
        [departed(
            &a,
            "carol@localhost",
            DepartureReason::RemovedUpstream,
            None,
        )],
    );
    let carol = contact(&a, "carol@localhost");
    fixture()
        .given(history)
        .when_async(UserCommand::MergeContacts {
            meta_contact_id: meta(5),
            name: name("Carol"),
            contact_ids: vec![carol, contact(&account(2), "bob@localhost")],
        })
        .await
        .then_expect_error(UserError::ContactDeparted(carol));
}

#[tokio::test]
async fn a_hand_removed_contact_added_again_returns() {
    let a = account(1);
    let history = with(
        three_people_on_two_accounts(),
        [departed(
            &a,
            "bob@localhost",
            DepartureReason::RemovedByUser,
            Some(meta(1)),
        )],
    );
    fixture()
        .given(history)
        .when_async(UserCommand::AddContact {
            account_id: a.account_id,
            handle: handle("bob@localhost"),
            display_name: None,
        })
        .await
        .then_expect_events(vec![returned(&a, "bob@localhost", Some(meta(1)))]);
}

#[tokio::test]
async fn new_contacts_stay_new_until_seen() {
    let a = account(1);
    let history = with(
        alice_with_contacts(),
        [
            added(&a, "dave@localhost", true),
            added(&a, "erin@localhost", true),
        ],
    );
    let dave = contact(&a, "dave@localhost");
    let erin = contact(&a, "erin@localhost");
    let mut both = vec![dave, erin];
    both.sort();
    fixture()
        .given(history.clone())
        .when_async(UserCommand::MarkContactsSeen {
            contact_ids: Some(vec![dave, contact(&a, "bob@localhost")]),
        })
        .await
        .then_expect_events(vec![UserEvent::ContactsSeen {
            contact_ids: vec![dave],
        }]);
    fixture()
        .given(history.clone())
        .when_async(UserCommand::MarkContactsSeen { contact_ids: None })
        .await
        .then_expect_events(vec![UserEvent::ContactsSeen {
            contact_ids: both.clone(),
        }]);
    let seen = with(history, [UserEvent::ContactsSeen { contact_ids: both }]);
    fixture()
        .given(seen.clone())
        .when_async(UserCommand::MarkContactsSeen { contact_ids: None })
        .await
        .then_expect_events(vec![]);
    let stranger = ContactId(Uuid::from_u128(7));
    fixture()
        .given(seen)
        .when_async(UserCommand::MarkContactsSeen {
            contact_ids: Some(vec![stranger]),
        })
        .await
        .then_expect_error(UserError::UnknownContact(stranger));
}

#[test]
fn a_removal_recorded_before_dormancy_existed_replays_as_it_did_then() {
    let a = account(1);
    let b = account(2);
    let user = state_after(&with(
        alice_with_contacts(),
        [
            merged_bob(),
            UserEvent::RosterContactRemoved {
                contact_id: contact(&a, "bob@localhost"),
                account_id: a.account_id,
                left_meta_contact: Some(meta(1)),
            },
            UserEvent::RosterContactRemoved {
                contact_id: contact(&b, "bob@localhost"),
                account_id: b.account_id,
                left_meta_contact: Some(meta(1)),
            },
        ],
    ));
    assert!(user.meta_contacts().is_empty(), "dissolved as it was then");
    assert!(!user.contacts().contains_key(&contact(&a, "bob@localhost")));
}
