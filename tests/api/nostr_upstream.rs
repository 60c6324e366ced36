//! What a Nostr account's relay says, through the API, against the real relay and Prosody: a
//! contact whose NIP-05 identifier (checked over HTTPS) is one of the user's XMPP JIDs is
//! suggested as the same person; a relay that has no follow list removes nobody, while a follow
//! list without a contact makes that contact depart.
//!
//! Identities (scripts/servers/nostr.sh): kim follows lou and max, who publish profiles here;
//! ned follows oli and pat, and his follow list is deleted and published again here. Nobody
//! else uses them, and each test dates what it publishes after anything already on the relay,
//! so the tests can run again against the same relay.

use std::collections::HashMap;
use std::time::Duration;

use nostr::{EventBuilder, Kind, Tag};
use serde_json::{json, Value};

use crate::common::nostr_client::{follow_list_of, hex, identity, relay, Nip05Server, Peer};
use crate::helpers::*;
use crate::lists::*;

const SUGGESTIONS: &str = "{ matchSuggestions { id contactId targetContactId targetMetaContactId
    score evidence { kind value } } }";

/// A bindable Nostr account of a relay test identity.
fn nostr_account(name: &str) -> Value {
    let who = identity(name);
    json!({ "protocol": "NOSTR", "server": relay(), "handle": who.npub,
            "secret": who.secret_hex() })
}

/// The id of the one contact with `handle` (single or member).
fn contact_id(list: &Value, handle: &str) -> String {
    let ids = ids_of(list, handle);
    assert_eq!(ids.len(), 1, "one {handle}: {list}");
    ids[0].clone()
}

async fn suggestions(app: &TestApp, token: &str) -> Vec<Value> {
    app.gql(Some(token), SUGGESTIONS, json!({})).await.data()["matchSuggestions"]
        .as_array()
        .unwrap()
        .clone()
}

/// The user's history entries of these kinds (e.g. `[ROSTER_CONTACT_DEPARTED]`), newest first.
async fn history(app: &TestApp, token: &str, kinds: &str) -> Vec<Value> {
    let query = format!(
        "{{ history(first: 200, kinds: {kinds}) {{ entries {{ kind summary contactIds details }} }} }}"
    );
    app.gql(Some(token), &query, json!({})).await.data()["history"]["entries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `read` every 100 ms until `found` picks something out of it; panics after 20 s with
/// the last thing read.
async fn poll<T, F: std::future::Future<Output = T>>(
    what: &str,
    read: impl Fn() -> F,
    found: impl Fn(&T) -> Option<Value>,
) -> Value
where
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let current = read().await;
        if let Some(hit) = found(&current) {
            return hit;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {what}; last read: {current:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a suggestion pairs these two contacts, either way round.
fn pairs(suggestion: &Value, a: &str, b: &str) -> bool {
    let (contact, target) = (&suggestion["contactId"], &suggestion["targetContactId"]);
    (contact == a && target == b) || (contact == b && target == a)
}

fn involves(suggestion: &Value, contact: &str) -> bool {
    suggestion["contactId"] == contact || suggestion["targetContactId"] == contact
}

#[tokio::test]
async fn a_nostr_contact_whose_checked_nip05_is_an_xmpp_jid_is_suggested_as_that_person() {
    // The domain confirms dave@localhost is lou's key; carol@localhost it lists under lou's
    // key too, so max's claim to it is false.
    let server = Nip05Server::start(HashMap::from([
        ("dave", (hex("lou"), Duration::ZERO)),
        ("carol", (hex("lou"), Duration::ZERO)),
    ]))
    .await;
    let (mut lou, mut max) = (Peer::login("lou").await, Peer::login("max").await);
    let at = lou
        .dated_after(json!({"kinds": [0], "authors": [hex("lou"), hex("max")]}))
        .await;
    lou.set_profile(
        &json!({"name": "Lou", "nip05": "dave@localhost"}).to_string(),
        at + 1u64,
    )
    .await;
    max.set_profile(
        &json!({"name": "Max", "nip05": "carol@localhost"}).to_string(),
        at + 1u64,
    )
    .await;

    // The app dials the NIP-05 domain `localhost` at the test server and trusts its CA.
    let mut settings = test_settings(&fresh_database().await);
    settings.extra_ca_file = Some(env("SWITCHBOARD_TEST_NIP05_TLS_CA").into());
    settings.nip05_resolve = vec![("localhost".to_owned(), server.address)];
    let app = spawn_app_with(settings).await;
    let token = app
        .register("nora", json!([xmpp_account("alice"), nostr_account("kim")]))
        .await;
    let list = app.contacts(&token).await;
    let lou_contact = contact_id(&list, &hex("lou"));
    let max_contact = contact_id(&list, &hex("max"));
    let dave = contact_id(&list, "dave@localhost");
    let carol = contact_id(&list, "carol@localhost");

    let found = poll(
        "a suggestion between lou's Nostr contact and dave@localhost",
        || suggestions(&app, &token),
        |open| open.iter().find(|s| pairs(s, &lou_contact, &dave)).cloned(),
    )
    .await;
    assert!(
        found["score"].as_u64().unwrap() >= 95,
        "a checked address is a strong match: {found}"
    );
    assert!(
        found["evidence"]
            .as_array()
            .unwrap()
            .contains(&json!({ "kind": "VERIFIED_ADDRESS", "value": "dave@localhost" })),
        "{found}"
    );
    // The history is a view: it may show the profile a moment after the aggregate decided.
    let lous = poll(
        "lou's profile in the history",
        || history(&app, &token, "[CONTACT_PROFILE_CHANGED]"),
        |entries| {
            entries
                .iter()
                .find(|e| e["contactIds"] == json!([lou_contact]))
                .cloned()
        },
    )
    .await;
    assert_eq!(
        lous["details"]["ContactProfileChanged"]["profile"]["verified_address"], "dave@localhost",
        "{lous}"
    );

    // max's profile is in too, read and checked: his nickname, no address.
    let maxs = poll(
        "max's profile in the history",
        || history(&app, &token, "[CONTACT_PROFILE_CHANGED]"),
        |entries| {
            entries
                .iter()
                .find(|e| e["contactIds"] == json!([max_contact]))
                .cloned()
        },
    )
    .await;
    let profile = &maxs["details"]["ContactProfileChanged"]["profile"];
    assert_eq!(profile["nickname"], "Max", "{maxs}");
    assert!(profile["verified_address"].is_null(), "{maxs}");
    assert!(
        server.asked().contains(&"carol".to_owned()),
        "max's claim was checked: {:?}",
        server.asked()
    );
    let open = suggestions(&app, &token).await;
    assert!(
        !open.iter().any(|s| pairs(s, &max_contact, &carol)),
        "an unconfirmed NIP-05 makes no match: {open:?}"
    );
    assert!(
        !open.iter().any(|s| involves(s, &max_contact)
            && s["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "VERIFIED_ADDRESS")),
        "{open:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_absent_follow_list_removes_nobody_and_a_follow_list_without_a_contact_does() {
    let mut ned = Peer::login("ned").await;
    let follows = json!({"kinds": [3], "authors": [hex("ned")]});
    let at = ned.dated_after(follows.clone()).await;
    // ned's follow list as seeded, should an earlier run have left another.
    ned.publish(&follow_list_of("ned", &["oli", "pat"], at + 1u64))
        .await;

    let app = spawn_app().await;
    let token = app
        .register("otto", json!([xmpp_account("alice"), nostr_account("ned")]))
        .await;
    let (oli, pat) = (hex("oli"), hex("pat"));
    let first = list(&app, &token).await;
    assert!(single(&first, &pat).is_some(), "{first}");
    let oli_contact = contact_id(&first, &oli);
    app.gql(
        Some(&token),
        MERGE,
        json!({ "name": "Oli", "ids": [oli_contact, contact_id(&first, "bob@localhost")] }),
    )
    .await
    .data();
    app.logout(&token).await;

    // The follow list off the relay (NIP-09), as on a relay that never had it.
    let lists = ned.query(follows.clone()).await;
    assert!(!lists.is_empty(), "ned has no follow list to delete");
    let deletion = EventBuilder::new(Kind::EventDeletion, "")
        .tags(lists.iter().map(|list| Tag::event(list.id)))
        .sign_with_keys(&identity("ned").keys)
        .unwrap();
    ned.publish(&deletion).await;
    assert_eq!(ned.query(follows.clone()).await, Vec::new());

    // The login reads no follow list: an absent roster, and nobody departs.
    let login = app.login("otto").await;
    let token = login["token"].as_str().unwrap().to_owned();
    app.wait_for_account(&token, &hex("ned"), "ONLINE").await;
    app.wait_for_account(&token, "alice@localhost", "ONLINE")
        .await;
    let after = list(&app, &token).await;
    let meta = meta_named(&after, "Oli");
    for handle in [oli.as_str(), "bob@localhost"] {
        let kept = member(meta, handle).unwrap_or_else(|| panic!("{handle} left Oli: {after}"));
        assert!(kept["dormant"].is_null(), "{handle} departed: {after}");
    }
    assert!(single(&after, &pat).is_some(), "pat departed: {after}");
    let departed = history(&app, &token, "[ROSTER_CONTACT_DEPARTED]").await;
    assert_eq!(departed, Vec::<Value>::new(), "nobody departs");
    let report = app
        .gql(
            Some(&token),
            "query($l: ID) { loginReport(loginId: $l) { accounts { account { handle }
               removedUpstream { handle } } } }",
            json!({ "l": login["loginId"] }),
        )
        .await;
    let accounts = report.data()["loginReport"]["accounts"].clone();
    let nostr_part = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"]["handle"] == hex("ned").as_str())
        .unwrap_or_else(|| panic!("no report of the Nostr account: {accounts}"));
    assert_eq!(nostr_part["removedUpstream"], json!([]), "{nostr_part}");

    // A follow list without oli is a whole roster: oli departs, and keeps his place in Oli.
    ned.publish(&follow_list_of("ned", &["pat"], at + 2u64))
        .await;
    let gone = list_until(&app, &token, "oli departed", |l| {
        member(meta_named(l, "Oli"), &oli).is_some_and(|m| !m["dormant"].is_null())
    })
    .await;
    let oli_now = member(meta_named(&gone, "Oli"), &oli).unwrap();
    assert_eq!(oli_now["dormant"]["reason"], "REMOVED_UPSTREAM", "{gone}");
    assert_eq!(oli_now["id"], oli_contact.as_str(), "the same contact");
    assert!(member(meta_named(&gone, "Oli"), "bob@localhost").unwrap()["dormant"].is_null());
    assert!(single(&gone, &oli).is_none(), "{gone}");
    assert!(single(&gone, &pat).is_some(), "pat stays: {gone}");
    let departed = history(&app, &token, "[ROSTER_CONTACT_DEPARTED]").await;
    assert_eq!(departed.len(), 1, "{departed:?}");
    assert_eq!(departed[0]["contactIds"], json!([oli_contact]));
    app.stop().await;

    // ned's follow list as seeded again, for the relay's self-check and the next run.
    ned.publish(&follow_list_of("ned", &["oli", "pat"], at + 3u64))
        .await;
}
