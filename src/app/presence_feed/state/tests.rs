use uuid::Uuid;

use super::*;
use crate::domain::presence::Availability;

fn account(n: u128) -> AccountId {
    AccountId(Uuid::from_u128(n))
}

fn contact(acc: AccountId, handle: &str, meta: Option<MetaContactId>) -> ContactEntry {
    ContactEntry {
        contact_id: ContactId::for_handle(acc, &Handle::from_stored(handle)),
        account_id: acc,
        protocol: "XMPP".into(),
        handle: handle.into(),
        display_name: None,
        meta_contact_id: meta,
        is_new: false,
        departure: None,
    }
}

fn seen(availability: Availability) -> Option<Presence> {
    Some(Presence {
        availability,
        status: None,
    })
}

/// bob on two accounts merged into one meta-contact, and 50 other contacts alone.
fn list() -> (ContactList, MetaContactId) {
    let meta = MetaContactId(Uuid::from_u128(99));
    let members = vec![
        contact(account(1), "bob@a", Some(meta)),
        contact(account(2), "bob@b", Some(meta)),
    ];
    let singles = (0..50)
        .map(|i| contact(account(1), &format!("p{i}@a"), None))
        .collect();
    let list = ContactList {
        meta_contacts: vec![MetaContactEntry {
            meta_contact_id: meta,
            name: "Bob".into(),
            members,
        }],
        single_contacts: singles,
    };
    (list, meta)
}

fn handles(items: &[ContactPresence]) -> Vec<&str> {
    items.iter().map(|i| i.contact.handle.as_str()).collect()
}

#[test]
fn a_single_contact_change_is_that_contact_alone() {
    let (list, _) = list();
    let mut state = FeedState::new(list, PresenceMap::new());
    let before = state.version();
    let changed = state.observe(
        account(1),
        [(Handle::from_stored("p7@a"), seen(Availability::Away))],
    );
    assert_eq!(handles(&changed), ["p7@a"]);
    assert_eq!(changed[0].presence, seen(Availability::Away));
    assert_eq!(changed[0].meta_contact_id, None);
    assert!(state.version() > before);
    // The same presence again is no change.
    let again = state.observe(
        account(1),
        [(Handle::from_stored("p7@a"), seen(Availability::Away))],
    );
    assert!(again.is_empty());
}

#[test]
fn a_member_change_carries_the_meta_contact_presence_to_every_member() {
    let (list, meta) = list();
    let mut state = FeedState::new(list, PresenceMap::new());
    let changed = state.observe(
        account(2),
        [(Handle::from_stored("bob@b"), seen(Availability::Online))],
    );
    // bob@a's own presence did not change, but his meta-contact's did.
    assert_eq!(handles(&changed), ["bob@a", "bob@b"]);
    for item in &changed {
        assert_eq!(item.meta_contact_id, Some(meta));
        let best = item.meta_contact_presence.as_ref().unwrap();
        assert_eq!(best.member.handle, "bob@b");
        assert_eq!(best.presence, seen(Availability::Online).unwrap());
    }
    assert_eq!(changed[0].presence, None);
    // A less available presence on the other member changes only that member.
    let changed = state.observe(
        account(1),
        [(Handle::from_stored("bob@a"), seen(Availability::Away))],
    );
    assert_eq!(handles(&changed), ["bob@a"]);
    assert_eq!(
        changed[0]
            .meta_contact_presence
            .as_ref()
            .unwrap()
            .member
            .handle,
        "bob@b"
    );
}

#[test]
fn an_unknown_presence_is_a_change_to_none() {
    let (list, _) = list();
    let mut state = FeedState::new(list, PresenceMap::new());
    state.observe(
        account(1),
        [(Handle::from_stored("p1@a"), seen(Availability::Chat))],
    );
    let changed = state.observe(account(1), [(Handle::from_stored("p1@a"), None)]);
    assert_eq!(handles(&changed), ["p1@a"]);
    assert_eq!(changed[0].presence, None);
}

#[test]
fn a_handle_not_on_the_list_changes_nothing_shown() {
    let (list, _) = list();
    let mut state = FeedState::new(list, PresenceMap::new());
    let version = state.version();
    assert!(state
        .observe(
            account(1),
            [(
                Handle::from_stored("stranger@a"),
                seen(Availability::Online)
            )]
        )
        .is_empty());
    assert_eq!(state.version(), version);
}

#[test]
fn a_full_read_yields_what_changed_and_new_contacts() {
    let (list, _) = list();
    let mut state = FeedState::new(list.clone(), PresenceMap::new());
    let mut more = list;
    more.single_contacts
        .push(contact(account(1), "newcomer@a", None));
    let mut presence = PresenceMap::new();
    presence.insert(
        (account(1), Handle::from_stored("p3@a")),
        seen(Availability::Away).unwrap(),
    );
    let changed = state.replace(more, presence);
    assert_eq!(handles(&changed), ["p3@a", "newcomer@a"]);
}

#[test]
fn a_subscriber_behind_gets_each_changed_contact_once_in_its_latest_state() {
    let (list, _) = list();
    let mut state = FeedState::new(list, PresenceMap::new());
    let behind = state.version();
    state.observe(
        account(1),
        [(Handle::from_stored("p2@a"), seen(Availability::Online))],
    );
    state.observe(
        account(1),
        [(Handle::from_stored("p9@a"), seen(Availability::Online))],
    );
    state.observe(
        account(1),
        [(Handle::from_stored("p2@a"), seen(Availability::Away))],
    );
    let missed = state.changed_since(behind);
    assert_eq!(handles(&missed), ["p2@a", "p9@a"]);
    assert_eq!(missed[0].presence, seen(Availability::Away));
    assert!(state.changed_since(state.version()).is_empty());
}
