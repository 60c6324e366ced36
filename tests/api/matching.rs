//! Same-person matching through the API, against real Prosody and Synapse: alice's Matrix
//! contacts look like her XMPP ones (same display names, same user names) and are suggested
//! with that evidence; a rejected suggestion stays gone; a policy binds by itself, undoably.

use serde_json::{json, Value};

use crate::helpers::*;

const SUGGESTIONS: &str = "{ matchSuggestions { id contactId targetContactId targetMetaContactId
    score evidence { kind value description } } }";

fn matrix_account(user: &str) -> Value {
    json!({ "protocol": "MATRIX", "server": env("SWITCHBOARD_TEST_MATRIX_SERVER"),
            "handle": format!("@{user}:localhost"), "secret": xmpp_password(user) })
}

async fn suggestions(app: &TestApp, token: &str) -> Vec<Value> {
    app.gql(Some(token), SUGGESTIONS, json!({})).await.data()["matchSuggestions"]
        .as_array()
        .unwrap()
        .clone()
}

/// The id of the contact with `handle` in the list (single or member).
fn contact_id(list: &Value, handle: &str) -> String {
    let ids = ids_of(list, handle);
    assert_eq!(ids.len(), 1, "one {handle}: {list}");
    ids[0].clone()
}

async fn bind_matrix(app: &TestApp, token: &str) {
    app.gql(
        Some(token),
        "mutation($a: AccountInput!) { bindAccount(account: $a) { rosterSize } }",
        json!({ "a": matrix_account("alice") }),
    )
    .await
    .data();
}

#[tokio::test]
async fn matrix_contacts_like_xmpp_ones_are_suggested_with_evidence_and_rejections_stick() {
    let app = spawn_app().await;
    let token = app.register("tess", json!([xmpp_account("alice")])).await;
    bind_matrix(&app, &token).await;
    let list = app.contacts(&token).await;
    let open = suggestions(&app, &token).await;
    assert_eq!(open.len(), 3, "bob, carol and dave: {open:?}");
    for friend in ["bob", "carol", "dave"] {
        let matrix = contact_id(&list, &format!("@{friend}:localhost"));
        let xmpp = contact_id(&list, &format!("{friend}@localhost"));
        let found = open
            .iter()
            .find(|s| s["contactId"] == matrix.as_str())
            .unwrap_or_else(|| panic!("no suggestion for {friend}: {open:?}"));
        assert_eq!(found["targetContactId"], xmpp.as_str());
        assert_eq!(found["score"], 70);
        let kinds: Vec<&str> = found["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["SAME_NAME", "SAME_LOCAL_PART"]);
        assert_eq!(found["evidence"][0]["value"], friend);
    }

    // Rejected: gone, for good.
    let carol = open
        .iter()
        .find(|s| s["contactId"] == contact_id(&list, "@carol:localhost").as_str())
        .unwrap();
    let rejected = app
        .gql(
            Some(&token),
            "mutation($s: ID!) { rejectMatch(suggestionId: $s) }",
            json!({ "s": carol["id"] }),
        )
        .await;
    assert_eq!(rejected.data()["rejectMatch"], true);
    let again = app
        .gql(
            Some(&token),
            "mutation($s: ID!) { rejectMatch(suggestionId: $s) }",
            json!({ "s": carol["id"] }),
        )
        .await;
    assert_eq!(again.code(), "NOT_FOUND");
    assert_eq!(suggestions(&app, &token).await.len(), 2);

    // Accepted: one person, named after the existing contact.
    let bob = open
        .iter()
        .find(|s| s["contactId"] == contact_id(&list, "@bob:localhost").as_str())
        .unwrap();
    let accepted = app
        .gql(
            Some(&token),
            "mutation($s: ID!) { acceptMatch(suggestionId: $s) { metaContacts { name members { handle } } } }",
            json!({ "s": bob["id"] }),
        )
        .await;
    let metas = &accepted.data()["acceptMatch"]["metaContacts"];
    assert_eq!(metas[0]["name"], "Bob");
    let mut members: Vec<&str> = metas[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["handle"].as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["@bob:localhost", "bob@localhost"]);
    assert_eq!(suggestions(&app, &token).await.len(), 1, "dave's is left");
    let bad = app
        .gql(
            Some(&token),
            "mutation { acceptMatch(suggestionId: \"nonsense\") { contacts { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(bad.code(), "BAD_USER_INPUT");
    app.stop().await;
}

#[tokio::test]
async fn a_policy_binds_clear_matches_by_itself_and_undo_takes_one_back() {
    let app = spawn_app().await;
    let token = app.register("uma", json!([xmpp_account("alice")])).await;
    let set = app
        .gql(
            Some(&token),
            "mutation { setMatchPolicy(autoBindAt: 70) }",
            json!({}),
        )
        .await;
    assert_eq!(set.data()["setMatchPolicy"], 70);
    let refused = app
        .gql(
            Some(&token),
            "mutation { setMatchPolicy(autoBindAt: 300) }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "BAD_USER_INPUT");

    bind_matrix(&app, &token).await;
    let list = app.contacts(&token).await;
    assert_eq!(list["metaContacts"].as_array().unwrap().len(), 3, "{list}");
    assert!(suggestions(&app, &token).await.is_empty());
    let history = app
        .gql(
            Some(&token),
            "{ history(kinds: [CONTACTS_MERGED]) { entries { id actor undoable summary } } }",
            json!({}),
        )
        .await;
    let merges = history.data()["history"]["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(merges.len(), 3);
    assert!(merges.iter().all(|e| e["actor"] == "system:reconciliation"));
    let undone = app
        .gql(
            Some(&token),
            "mutation($e: ID!) { undo(eventId: $e) { metaContacts { id } } }",
            json!({ "e": merges[0]["id"] }),
        )
        .await;
    assert_eq!(
        undone.data()["undo"]["metaContacts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    app.stop().await;
}
