//! Given/when/then tests of same-person matching on the aggregate: suggestions with evidence,
//! accepting, rejecting for good, and binding by policy (undoable like any binding).

use super::*;
use crate::domain::matching::{Evidence, MatchTarget, Profile};

/// An IRC account (3) beside alice's two XMPP accounts.
fn irc() -> NewAccount {
    NewAccount {
        account_id: AccountId(Uuid::from_u128(3)),
        protocol: Protocol::Irc,
        server: "127.0.0.1:6667".into(),
        handle: Handle::parse(Protocol::Irc, "me3").unwrap(),
    }
}

fn irc_contact(nick: &str) -> ContactId {
    ContactId::for_handle(
        irc().account_id,
        &Handle::parse(Protocol::Irc, nick).unwrap(),
    )
}

fn named(a: &NewAccount, h: &str, display: &str) -> UserEvent {
    UserEvent::RosterContactAdded {
        contact_id: contact(a, h),
        account_id: a.account_id,
        handle: handle(h),
        display_name: Some(display.into()),
        is_new: false,
    }
}

/// alice (account 1) knows "Carol Jones" as carol@localhost; the IRC account is bound.
fn carol_on_xmpp() -> Vec<UserEvent> {
    let a = account(1);
    vec![
        registered(),
        bound(&a),
        named(&a, "carol@localhost", "Carol Jones"),
        UserEvent::RosterImported {
            account_id: a.account_id,
        },
        bound(&irc()),
    ]
}

fn add_irc(nick: &str, display: &str) -> UserCommand {
    UserCommand::AddContact {
        account_id: irc().account_id,
        handle: Handle::parse(Protocol::Irc, nick).unwrap(),
        display_name: Some(display.into()),
    }
}

fn irc_added(nick: &str, display: &str) -> UserEvent {
    UserEvent::RosterContactAdded {
        contact_id: irc_contact(nick),
        account_id: irc().account_id,
        handle: Handle::parse(Protocol::Irc, nick).unwrap(),
        display_name: Some(display.into()),
        is_new: false,
    }
}

fn carol_suggested() -> UserEvent {
    UserEvent::MatchSuggested {
        contact_id: irc_contact("cj"),
        target: MatchTarget::Contact(contact(&account(1), "carol@localhost")),
        score: 60,
        evidence: vec![Evidence::SameName {
            name: "carol jones".into(),
        }],
    }
}

#[tokio::test]
async fn a_new_contact_named_like_a_known_one_is_suggested_with_its_evidence() {
    fixture()
        .given(carol_on_xmpp())
        .when_async(add_irc("cj", "carol  JONES"))
        .await
        .then_expect_events(vec![
            irc_added("cj", "carol  JONES"),
            UserEvent::MatchSuggested {
                contact_id: irc_contact("cj"),
                target: MatchTarget::Contact(contact(&account(1), "carol@localhost")),
                score: 60,
                evidence: vec![Evidence::SameName {
                    name: "carol jones".into(),
                }],
            },
        ]);
    // A stranger raises nothing.
    fixture()
        .given(carol_on_xmpp())
        .when_async(add_irc("zed", "Zed"))
        .await
        .then_expect_events(vec![irc_added("zed", "Zed")]);
}

#[tokio::test]
async fn accepting_binds_the_two_and_the_binding_is_undoable() {
    let history = with(
        carol_on_xmpp(),
        [irc_added("cj", "Carol Jones"), carol_suggested()],
    );
    let carol = contact(&account(1), "carol@localhost");
    let target = MatchTarget::Contact(carol);
    let merged = UserEvent::ContactsMerged {
        meta_contact_id: meta(1),
        name: name("Carol Jones"),
        contact_ids: MetaContactState::new(name("Carol Jones"), [carol, irc_contact("cj")]).members,
    };
    fixture()
        .given(history.clone())
        .when_async(UserCommand::AcceptMatch {
            contact_id: irc_contact("cj"),
            target,
            meta_contact_id: meta(1),
            name: None,
        })
        .await
        .then_expect_events(vec![
            UserEvent::MatchAccepted {
                contact_id: irc_contact("cj"),
                target,
                automatic: false,
            },
            merged.clone(),
        ]);
    let accepted = with(
        history,
        [
            UserEvent::MatchAccepted {
                contact_id: irc_contact("cj"),
                target,
                automatic: false,
            },
            merged.clone(),
        ],
    );
    let user = state_after(&accepted);
    assert_eq!(user.open_suggestions().count(), 0);
    fixture()
        .given(accepted.clone())
        .when_async(UserCommand::Undo {
            target_sequence: accepted.len(),
            target: Box::new(merged),
        })
        .await
        .then_expect_events(vec![UserEvent::BindingUndone {
            undone_sequence: accepted.len(),
            meta_contact_id: meta(1),
            before: Some(MetaContactState::new(
                name("Carol Jones"),
                [carol, irc_contact("cj")],
            )),
            after: None,
        }]);
}

#[tokio::test]
async fn a_rejected_pair_is_never_suggested_again() {
    let carol = contact(&account(1), "carol@localhost");
    let target = MatchTarget::Contact(carol);
    let history = with(
        carol_on_xmpp(),
        [irc_added("cj", "Carol Jones"), carol_suggested()],
    );
    let rejected = UserEvent::MatchRejected {
        contact_id: irc_contact("cj"),
        target,
    };
    fixture()
        .given(history.clone())
        .when_async(UserCommand::RejectMatch {
            contact_id: irc_contact("cj"),
            target,
        })
        .await
        .then_expect_events(vec![rejected.clone()]);
    // The contact goes and is added again (as before dormancy existed): no new suggestion.
    let again = with(
        history,
        [
            rejected,
            UserEvent::RosterContactRemoved {
                contact_id: irc_contact("cj"),
                account_id: irc().account_id,
                left_meta_contact: None,
            },
        ],
    );
    fixture()
        .given(again.clone())
        .when_async(add_irc("cj", "Carol Jones"))
        .await
        .then_expect_events(vec![irc_added("cj", "Carol Jones")]);
    fixture()
        .given(again)
        .when_async(UserCommand::RejectMatch {
            contact_id: irc_contact("cj"),
            target,
        })
        .await
        .then_expect_error(UserError::UnknownSuggestion(irc_contact("cj")));
}

#[tokio::test]
async fn a_policy_binds_a_clear_match_and_the_binding_is_undone_like_any_other() {
    let carol = contact(&account(1), "carol@localhost");
    let target = MatchTarget::Contact(carol);
    let policy = with(
        carol_on_xmpp(),
        [UserEvent::MatchPolicySet {
            auto_bind_at: Some(60),
        }],
    );
    let meta_id = MetaContactId::for_match(irc_contact("cj"), carol);
    let merged = UserEvent::ContactsMerged {
        meta_contact_id: meta_id,
        name: name("Carol Jones"),
        contact_ids: MetaContactState::new(name("x"), [carol, irc_contact("cj")]).members,
    };
    let expected = vec![
        irc_added("cj", "Carol Jones"),
        carol_suggested(),
        UserEvent::MatchAccepted {
            contact_id: irc_contact("cj"),
            target,
            automatic: true,
        },
        merged.clone(),
    ];
    fixture()
        .given(policy.clone())
        .when_async(add_irc("cj", "Carol Jones"))
        .await
        .then_expect_events(expected.clone());
    let bound = with(policy.clone(), expected);
    fixture()
        .given(bound.clone())
        .when_async(UserCommand::Undo {
            target_sequence: bound.len(),
            target: Box::new(merged),
        })
        .await
        .then_expect_events(vec![UserEvent::BindingUndone {
            undone_sequence: bound.len(),
            meta_contact_id: meta_id,
            before: Some(MetaContactState::new(
                name("Carol Jones"),
                [carol, irc_contact("cj")],
            )),
            after: None,
        }]);
    // Below the threshold it is only suggested.
    let strict = with(
        carol_on_xmpp(),
        [UserEvent::MatchPolicySet {
            auto_bind_at: Some(90),
        }],
    );
    fixture()
        .given(strict)
        .when_async(add_irc("cj", "Carol Jones"))
        .await
        .then_expect_events(vec![irc_added("cj", "Carol Jones"), carol_suggested()]);
}

#[tokio::test]
async fn a_tie_is_left_to_the_user_even_above_the_threshold() {
    let b = account(2);
    let history = with(
        carol_on_xmpp(),
        [
            bound(&b),
            named(&b, "cjones@localhost", "Carol Jones"),
            UserEvent::MatchPolicySet {
                auto_bind_at: Some(50),
            },
        ],
    );
    let events = fixture()
        .given(history)
        .when_async(add_irc("cj", "Carol Jones"))
        .await
        .inspect_result()
        .unwrap();
    let suggested = events
        .iter()
        .filter(|e| matches!(e, UserEvent::MatchSuggested { .. }))
        .count();
    assert_eq!(suggested, 2, "{events:?}");
    assert!(!events
        .iter()
        .any(|e| matches!(e, UserEvent::MatchAccepted { .. })));
}

#[tokio::test]
async fn a_policy_threshold_is_between_1_and_100() {
    fixture()
        .given(carol_on_xmpp())
        .when_async(UserCommand::SetMatchPolicy {
            auto_bind_at: Some(101),
        })
        .await
        .then_expect_error(UserError::BadThreshold);
    fixture()
        .given(carol_on_xmpp())
        .when_async(UserCommand::SetMatchPolicy {
            auto_bind_at: Some(80),
        })
        .await
        .then_expect_events(vec![UserEvent::MatchPolicySet {
            auto_bind_at: Some(80),
        }]);
}

#[tokio::test]
async fn a_newly_bound_accounts_contacts_are_matched_in_its_first_import() {
    let b = account(2);
    let history = with(carol_on_xmpp(), [bound(&b)]);
    let events = fixture()
        .given(history)
        .when_async(UserCommand::SyncRoster {
            account_id: b.account_id,
            roster: Some(vec![RosterItem {
                handle: handle("carol@elsewhere"),
                display_name: Some("Carol Jones".into()),
            }]),
        })
        .await
        .inspect_result()
        .unwrap();
    let suggestion = events
        .iter()
        .find_map(|e| match e {
            UserEvent::MatchSuggested {
                target,
                evidence,
                score,
                ..
            } => Some((*target, evidence.clone(), *score)),
            _ => None,
        })
        .expect("a suggestion");
    assert_eq!(
        suggestion.0,
        MatchTarget::Contact(contact(&account(1), "carol@localhost"))
    );
    assert_eq!(
        suggestion.1,
        vec![
            Evidence::SameName {
                name: "carol jones".into()
            },
            Evidence::SameLocalPart {
                local_part: "carol".into()
            },
        ]
    );
    assert_eq!(suggestion.2, 70);
}

#[tokio::test]
async fn an_irc_account_bound_again_brings_its_hand_made_list_back() {
    let history = with(
        carol_on_xmpp(),
        [
            irc_added("cj", "Carol Jones"),
            UserEvent::ContactsMerged {
                meta_contact_id: meta(1),
                name: name("Carol"),
                contact_ids: MetaContactState::new(
                    name("Carol"),
                    [irc_contact("cj"), contact(&account(1), "carol@localhost")],
                )
                .members,
            },
            UserEvent::RosterContactDeparted {
                contact_id: irc_contact("cj"),
                account_id: irc().account_id,
                reason: DepartureReason::AccountUnbound,
                meta_contact_id: Some(meta(1)),
            },
            UserEvent::AccountUnbound {
                account_id: irc().account_id,
            },
        ],
    );
    fixture()
        .given(history)
        .when_async(UserCommand::BindAccount(irc()))
        .await
        .then_expect_events(vec![
            bound(&irc()),
            UserEvent::RosterContactReturned {
                contact_id: irc_contact("cj"),
                account_id: irc().account_id,
                handle: Handle::parse(Protocol::Irc, "cj").unwrap(),
                display_name: Some("Carol Jones".into()),
                meta_contact_id: Some(meta(1)),
            },
        ]);
}

#[tokio::test]
async fn accepting_a_match_whose_contact_joined_a_meta_contact_since_joins_that_one() {
    let carol = contact(&account(1), "carol@localhost");
    let b = account(2);
    let carol_b = contact(&b, "carol@elsewhere");
    let history = with(
        carol_on_xmpp(),
        [
            irc_added("cj", "Carol Jones"),
            carol_suggested(),
            bound(&b),
            named(&b, "carol@elsewhere", "Carol"),
            UserEvent::ContactsMerged {
                meta_contact_id: meta(2),
                name: name("Carol"),
                contact_ids: MetaContactState::new(name("Carol"), [carol, carol_b]).members,
            },
        ],
    );
    let target = MatchTarget::Contact(carol);
    fixture()
        .given(history)
        .when_async(UserCommand::AcceptMatch {
            contact_id: irc_contact("cj"),
            target,
            meta_contact_id: meta(3),
            name: None,
        })
        .await
        .then_expect_events(vec![
            UserEvent::MatchAccepted {
                contact_id: irc_contact("cj"),
                target,
                automatic: false,
            },
            UserEvent::ContactAddedToMetaContact {
                meta_contact_id: meta(2),
                contact_id: irc_contact("cj"),
                before: MetaContactState::new(name("Carol"), [carol, carol_b]),
            },
        ]);
}

/// The mirror of the case above, found by the property tests: the suggested contact itself
/// has joined a meta-contact since, the other is still free. The suggestion stays open, so
/// accepting it brings the other contact into that meta-contact (it was refused as "already
/// bound: remove it there first").
#[tokio::test]
async fn accepting_a_match_whose_own_contact_joined_a_meta_contact_since_brings_the_other_in() {
    let carol = contact(&account(1), "carol@localhost");
    let b = account(2);
    let carol_b = contact(&b, "carol@elsewhere");
    let joined = MetaContactState::new(name("Carol"), [irc_contact("cj"), carol_b]);
    let history = with(
        carol_on_xmpp(),
        [
            irc_added("cj", "Carol Jones"),
            carol_suggested(),
            bound(&b),
            named(&b, "carol@elsewhere", "Carol"),
            UserEvent::ContactsMerged {
                meta_contact_id: meta(2),
                name: name("Carol"),
                contact_ids: joined.members.clone(),
            },
        ],
    );
    let target = MatchTarget::Contact(carol);
    assert!(
        state_after(&history)
            .suggestion(irc_contact("cj"), target)
            .is_some(),
        "still open"
    );
    fixture()
        .given(history)
        .when_async(UserCommand::AcceptMatch {
            contact_id: irc_contact("cj"),
            target,
            meta_contact_id: meta(3),
            name: None,
        })
        .await
        .then_expect_events(vec![
            UserEvent::MatchAccepted {
                contact_id: irc_contact("cj"),
                target,
                automatic: false,
            },
            UserEvent::ContactAddedToMetaContact {
                meta_contact_id: meta(2),
                contact_id: carol,
                before: joined,
            },
        ]);
}

/// A Nostr account (4) beside alice's XMPP accounts.
fn nostr() -> NewAccount {
    NewAccount {
        account_id: AccountId(Uuid::from_u128(4)),
        protocol: Protocol::Nostr,
        server: "ws://127.0.0.1:7447".into(),
        handle: Handle::parse(Protocol::Nostr, &"e".repeat(64)).unwrap(),
    }
}

fn npub(c: char) -> Handle {
    Handle::parse(Protocol::Nostr, &c.to_string().repeat(64)).unwrap()
}

fn nostr_contact(c: char) -> ContactId {
    ContactId::for_handle(nostr().account_id, &npub(c))
}

fn nostr_added(c: char, display: Option<&str>) -> UserEvent {
    UserEvent::RosterContactAdded {
        contact_id: nostr_contact(c),
        account_id: nostr().account_id,
        handle: npub(c),
        display_name: display.map(Into::into),
        is_new: false,
    }
}

fn verified(address: &str) -> Profile {
    Profile {
        verified_address: Some(address.into()),
        ..Profile::default()
    }
}

fn with_email(email: &str) -> Profile {
    Profile {
        emails: vec![email.into()],
        ..Profile::default()
    }
}

fn profiles(account: &NewAccount, items: &[(Handle, Profile)]) -> UserCommand {
    UserCommand::UpdateProfiles {
        account_id: account.account_id,
        profiles: items
            .iter()
            .map(|(handle, profile)| ProfileItem {
                handle: handle.clone(),
                profile: profile.clone(),
            })
            .collect(),
    }
}

fn profile_changed(account: &NewAccount, contact_id: ContactId, profile: Profile) -> UserEvent {
    UserEvent::ContactProfileChanged {
        contact_id,
        account_id: account.account_id,
        profile,
    }
}

/// carol@localhost on XMPP, and a nameless Nostr contact `a` followed by the Nostr account.
fn carol_and_a_nostr_stranger() -> Vec<UserEvent> {
    with(carol_on_xmpp(), [bound(&nostr()), nostr_added('a', None)])
}

fn verified_carol() -> Vec<Evidence> {
    vec![Evidence::VerifiedAddress {
        address: "carol@localhost".into(),
    }]
}

#[tokio::test]
async fn a_nostr_contact_whose_checked_nip05_is_a_known_jid_is_suggested_with_a_high_score() {
    let carol = contact(&account(1), "carol@localhost");
    let changed = profile_changed(&nostr(), nostr_contact('a'), verified("carol@localhost"));
    fixture()
        .given(carol_and_a_nostr_stranger())
        .when_async(profiles(
            &nostr(),
            &[(npub('a'), verified("carol@localhost"))],
        ))
        .await
        .then_expect_events(vec![
            changed.clone(),
            UserEvent::MatchSuggested {
                contact_id: nostr_contact('a'),
                target: MatchTarget::Contact(carol),
                score: 95,
                evidence: verified_carol(),
            },
        ]);
    // The same profile read again records nothing; nor does a handle the account does not
    // follow.
    let read = with(
        carol_and_a_nostr_stranger(),
        [
            changed,
            UserEvent::MatchSuggested {
                contact_id: nostr_contact('a'),
                target: MatchTarget::Contact(carol),
                score: 95,
                evidence: verified_carol(),
            },
        ],
    );
    fixture()
        .given(read)
        .when_async(profiles(
            &nostr(),
            &[
                (npub('a'), verified("carol@localhost")),
                (npub('b'), verified("carol@localhost")),
            ],
        ))
        .await
        .then_expect_events(vec![]);
    // An account that is not bound is refused.
    fixture()
        .given(carol_on_xmpp())
        .when_async(profiles(&nostr(), &[(npub('a'), Profile::default())]))
        .await
        .then_expect_error(UserError::UnknownAccount(nostr().account_id));
}

#[tokio::test]
async fn stronger_evidence_updates_the_open_suggestion_whichever_side_it_came_from() {
    let b = account(2);
    let carol = contact(&account(1), "carol@localhost");
    let cj = contact(&b, "cj@elsewhere");
    let suggested_by_name = UserEvent::MatchSuggested {
        contact_id: cj,
        target: MatchTarget::Contact(carol),
        score: 60,
        evidence: vec![Evidence::SameName {
            name: "carol jones".into(),
        }],
    };
    let history = with(
        carol_on_xmpp(),
        [
            bound(&b),
            named(&b, "cj@elsewhere", "Carol Jones"),
            suggested_by_name,
            profile_changed(&b, cj, with_email("carol@mail.example")),
        ],
    );
    let both = vec![
        Evidence::SameEmail {
            email: "carol@mail.example".into(),
        },
        Evidence::SameName {
            name: "carol jones".into(),
        },
    ];
    // carol's vCard gives the e-mail cj's already has: the suggestion cj → carol grows
    // (recorded as it was first made, not as a second suggestion the other way round).
    fixture()
        .given(history.clone())
        .when_async(profiles(
            &account(1),
            &[(handle("carol@localhost"), with_email("Carol@Mail.example"))],
        ))
        .await
        .then_expect_events(vec![
            profile_changed(&account(1), carol, with_email("Carol@Mail.example")),
            UserEvent::MatchSuggested {
                contact_id: cj,
                target: MatchTarget::Contact(carol),
                score: 95,
                evidence: both,
            },
        ]);
    // Rejected the other way round: never again, whatever the evidence.
    let rejected = with(
        history,
        [UserEvent::MatchRejected {
            contact_id: cj,
            target: MatchTarget::Contact(carol),
        }],
    );
    fixture()
        .given(rejected)
        .when_async(profiles(
            &account(1),
            &[(handle("carol@localhost"), with_email("carol@mail.example"))],
        ))
        .await
        .then_expect_events(vec![profile_changed(
            &account(1),
            carol,
            with_email("carol@mail.example"),
        )]);
}

#[tokio::test]
async fn a_bound_contacts_new_profile_suggests_the_other_person_into_its_meta_contact() {
    let b = account(2);
    let dana = contact(&b, "dana@elsewhere");
    // Nostr `a` is already bound with dana (account 2) in meta-contact 1.
    let history = with(
        carol_and_a_nostr_stranger(),
        [
            bound(&b),
            named(&b, "dana@elsewhere", "Dana"),
            UserEvent::ContactsMerged {
                meta_contact_id: meta(1),
                name: name("Dana"),
                contact_ids: MetaContactState::new(name("Dana"), [dana, nostr_contact('a')])
                    .members,
            },
        ],
    );
    let carol = contact(&account(1), "carol@localhost");
    fixture()
        .given(history)
        .when_async(profiles(
            &nostr(),
            &[(npub('a'), verified("carol@localhost"))],
        ))
        .await
        .then_expect_events(vec![
            profile_changed(&nostr(), nostr_contact('a'), verified("carol@localhost")),
            UserEvent::MatchSuggested {
                contact_id: carol,
                target: MatchTarget::MetaContact(meta(1)),
                score: 95,
                evidence: verified_carol(),
            },
        ]);
}

#[tokio::test]
async fn a_policy_binds_a_match_a_profile_revealed() {
    let carol = contact(&account(1), "carol@localhost");
    let history = with(
        carol_and_a_nostr_stranger(),
        [UserEvent::MatchPolicySet {
            auto_bind_at: Some(90),
        }],
    );
    let meta_id = MetaContactId::for_match(nostr_contact('a'), carol);
    fixture()
        .given(history)
        .when_async(profiles(
            &nostr(),
            &[(npub('a'), verified("carol@localhost"))],
        ))
        .await
        .then_expect_events(vec![
            profile_changed(&nostr(), nostr_contact('a'), verified("carol@localhost")),
            UserEvent::MatchSuggested {
                contact_id: nostr_contact('a'),
                target: MatchTarget::Contact(carol),
                score: 95,
                evidence: verified_carol(),
            },
            UserEvent::MatchAccepted {
                contact_id: nostr_contact('a'),
                target: MatchTarget::Contact(carol),
                automatic: true,
            },
            UserEvent::ContactsMerged {
                meta_contact_id: meta_id,
                name: name("Carol Jones"),
                contact_ids: MetaContactState::new(name("x"), [carol, nostr_contact('a')]).members,
            },
        ]);
}
