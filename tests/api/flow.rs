//! The whole slice through GraphQL alone: register with XMPP, log in, see the real roster,
//! merge, unbind a friend, undo, read the history, travel back in time.

use serde_json::{json, Value};

use crate::helpers::*;

const HISTORY: &str = "query($kinds: [EventKind!], $contact: ID, $after: String, $first: Int = 50) {
  history(kinds: $kinds, contactId: $contact, after: $after, first: $first) {
    entries { id sequence kind summary actor requestId at contactIds metaContactIds undoable details }
    pageInfo { hasNextPage endCursor }
  }
}";

#[tokio::test]
async fn register_login_merge_unbind_undo_history_and_time_travel() {
    let app = spawn_app().await;
    app.register("Alice", json!([xmpp_account("alice")])).await;

    // Log in again: every bound account connects, and the real roster is the contact list.
    let login = app
        .gql(
            None,
            "mutation { login(userName: \"alice\", password: \"correct horse battery\") {
               token user { userName } accounts { protocol handle status { state } } } }",
            json!({}),
        )
        .await;
    let login = login.data()["login"].clone();
    assert_eq!(login["user"]["userName"], "Alice");
    assert_eq!(login["accounts"][0]["protocol"], "XMPP");
    // Still connected from the registration: nothing to wait for.
    assert_eq!(login["accounts"][0]["status"]["state"], "ONLINE");
    let token = login["token"].as_str().unwrap().to_owned();
    let list = app.contacts(&token).await;
    assert_eq!(
        single_handles(&list),
        ["bob@localhost", "carol@localhost", "dave@localhost"]
    );
    assert!(list["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["isNew"] == false));
    assert_eq!(list["contacts"][0]["displayName"], "Bob");

    // A second XMPP account brings bob and carol again.
    let bound = app
        .gql(
            Some(&token),
            "mutation($a: AccountInput!) { bindAccount(account: $a) { rosterSize account { id handle connected } } }",
            json!({ "a": xmpp_account("alice2") }),
        )
        .await;
    assert_eq!(bound.data()["bindAccount"]["rosterSize"], 2);
    assert_eq!(bound.data()["bindAccount"]["account"]["connected"], true);
    let list = app.contacts(&token).await;
    let bobs = ids_of(&list, "bob@localhost");
    assert_eq!(bobs.len(), 2, "bob on both accounts: {list}");

    // Merge bob's two handles into one person.
    let merged = app
        .gql(
            Some(&token),
            "mutation($ids: [ID!]!) { mergeContacts(name: \"Bob (both)\", contactIds: $ids) {
               metaContactId contacts { metaContacts { id name members { id } } } } }",
            json!({ "ids": bobs }),
        )
        .await;
    let meta_id = merged.data()["mergeContacts"]["metaContactId"]
        .as_str()
        .unwrap()
        .to_owned();
    let metas = merged.data()["mergeContacts"]["contacts"]["metaContacts"].clone();
    assert_eq!(metas.as_array().unwrap().len(), 1);
    assert_eq!(metas[0]["name"], "Bob (both)");
    assert_eq!(metas[0]["members"].as_array().unwrap().len(), 2);

    // Friend unbinding: one handle leaves the meta-contact.
    let removed = app
        .gql(
            Some(&token),
            "mutation($m: ID!, $c: ID!) { removeFromMetaContact(metaContactId: $m, contactId: $c) {
               metaContacts { members { id } } contacts { id } } }",
            json!({ "m": meta_id, "c": bobs[0] }),
        )
        .await;
    let after_removal = removed.data()["removeFromMetaContact"].clone();
    assert_eq!(
        after_removal["metaContacts"][0]["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(after_removal["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == bobs[0].as_str()));

    // The history names each step; undo the removal by its event id.
    let history = app
        .gql(
            Some(&token),
            HISTORY,
            json!({ "kinds": ["CONTACT_REMOVED_FROM_META_CONTACT"] }),
        )
        .await;
    let removal = history.data()["history"]["entries"][0].clone();
    assert_eq!(removal["kind"], "CONTACT_REMOVED_FROM_META_CONTACT");
    assert_eq!(removal["undoable"], true);
    let undone = app
        .gql(
            Some(&token),
            "mutation($e: ID!) { undo(eventId: $e) { metaContacts { name members { id } } } }",
            json!({ "e": removal["id"] }),
        )
        .await;
    let metas = undone.data()["undo"]["metaContacts"].clone();
    assert_eq!(metas[0]["name"], "Bob (both)");
    let mut members: Vec<String> = metas[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    members.sort();
    let mut expected = bobs.clone();
    expected.sort();
    assert_eq!(members, expected, "undo restored exactly both members");

    // Undoing the same removal again is ambiguous now: the undo changed it since.
    let again = app
        .gql(
            Some(&token),
            "mutation($e: ID!) { undo(eventId: $e) { metaContacts { id } } }",
            json!({ "e": removal["id"] }),
        )
        .await;
    assert_eq!(again.code(), "CONFLICT");

    // The whole history, newest first, with actor and time on every entry.
    let all = app
        .gql(Some(&token), HISTORY, json!({ "first": 200 }))
        .await;
    let entries = all.data()["history"]["entries"].as_array().unwrap().clone();
    let kinds: Vec<&str> = entries
        .iter()
        .rev()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let expected_order = [
        "USER_REGISTERED",
        "ACCOUNT_BOUND",
        "ACCOUNT_BOUND",
        "CONTACTS_MERGED",
        "CONTACT_REMOVED_FROM_META_CONTACT",
        "BINDING_UNDONE",
    ];
    let binding_steps: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| expected_order.contains(k))
        .collect();
    assert_eq!(binding_steps, expected_order);
    let user_id = app
        .gql(Some(&token), "{ me { id } }", json!({}))
        .await
        .data()["me"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let merge_entry = entries
        .iter()
        .find(|e| e["kind"] == "CONTACTS_MERGED")
        .unwrap();
    assert_eq!(merge_entry["actor"], format!("user:{user_id}"));
    assert!(merge_entry["requestId"].is_string());
    let import = entries
        .iter()
        .find(|e| e["kind"] == "ROSTER_CONTACT_ADDED")
        .unwrap();
    assert_eq!(import["actor"], "system:reconciliation");
    assert!(entries.iter().all(|e| e["at"].is_string()));

    // Who merged these two, and when: filter by contact.
    let by_contact = app
        .gql(
            Some(&token),
            HISTORY,
            json!({ "contact": bobs[1], "kinds": ["CONTACTS_MERGED"] }),
        )
        .await;
    let by_contact = by_contact.data()["history"]["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(by_contact.len(), 1);
    assert_eq!(by_contact[0]["id"], merge_entry["id"]);

    // Paging: two at a time reaches the same entries.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .gql(Some(&token), HISTORY, json!({ "first": 2, "after": after }))
            .await;
        let page = page.data()["history"].clone();
        paged.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let ids: Vec<_> = entries.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(paged, ids);

    // Time travel: just before the merge, no meta-contact and both bobs single.
    let merged_at =
        chrono::DateTime::parse_from_rfc3339(merge_entry["at"].as_str().unwrap()).unwrap();
    let before = (merged_at - chrono::Duration::microseconds(1)).to_rfc3339();
    let past = app
        .gql(
            Some(&token),
            "query($t: DateTime!) { contacts(asOf: $t) { asOf metaContacts { id } contacts { handle } } }",
            json!({ "t": before }),
        )
        .await;
    let past = past.data()["contacts"].clone();
    assert!(past["metaContacts"].as_array().unwrap().is_empty());
    assert_eq!(
        single_handles(&past),
        [
            "bob@localhost",
            "bob@localhost",
            "carol@localhost",
            "carol@localhost",
            "dave@localhost"
        ]
    );
    // And right after the merge, the meta-contact is there.
    let at_merge = app
        .gql(
            Some(&token),
            "query($t: DateTime!) { contacts(asOf: $t) { metaContacts { name members { id } } } }",
            json!({ "t": merge_entry["at"] }),
        )
        .await;
    assert_eq!(
        at_merge.data()["contacts"]["metaContacts"][0]["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The present, replayed, equals the live view.
    let now = chrono::Utc::now().to_rfc3339();
    let replayed = app
        .gql(
            Some(&token),
            "query($t: DateTime!) { contacts(asOf: $t) { metaContacts { id name members { id } } contacts { id } } }",
            json!({ "t": now }),
        )
        .await;
    let live = app
        .gql(
            Some(&token),
            "{ contacts { metaContacts { id name members { id } } contacts { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(replayed.data()["contacts"], live.data()["contacts"]);

    // Logging out ends the session (and, being the last one, the upstream connections).
    let other = app
        .gql(None, "mutation { login(userName: \"ALICE\", password: \"correct horse battery\") { token } }", json!({}))
        .await;
    let other = other.data()["login"]["token"].as_str().unwrap().to_owned();
    let out = app
        .gql(Some(&token), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out.data()["logout"], true);
    assert_eq!(
        app.gql(Some(&token), "{ me { id } }", json!({}))
            .await
            .code(),
        "UNAUTHENTICATED"
    );
    let connected = app
        .gql(Some(&other), "{ accounts { connected } }", json!({}))
        .await;
    assert!(connected.data()["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["connected"] == true));
    app.logout(&other).await;
    let session = app
        .gql(None, "mutation { login(userName: \"alice\", password: \"correct horse battery\") { token } }", json!({}))
        .await;
    let session = session.data()["login"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let accounts = app
        .gql(Some(&session), "{ accounts { connected } }", json!({}))
        .await;
    assert_eq!(accounts.data()["accounts"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn rename_and_unbind_account_update_the_list() {
    let app = spawn_app().await;
    let token = app
        .register(
            "carl",
            json!([xmpp_account("alice"), xmpp_account("alice2")]),
        )
        .await;
    let list = app.contacts(&token).await;
    let carols = ids_of(&list, "carol@localhost");
    let merged = app
        .gql(
            Some(&token),
            "mutation($ids: [ID!]!) { mergeContacts(name: \"Carol\", contactIds: $ids) { metaContactId } }",
            json!({ "ids": carols }),
        )
        .await;
    let meta = merged.data()["mergeContacts"]["metaContactId"].clone();
    let renamed = app
        .gql(
            Some(&token),
            "mutation($m: ID!) { renameMetaContact(metaContactId: $m, name: \"Caroline\") { metaContacts { name } } }",
            json!({ "m": meta }),
        )
        .await;
    assert_eq!(
        renamed.data()["renameMetaContact"]["metaContacts"][0]["name"],
        "Caroline"
    );

    // Unbinding alice2 takes its contacts off the list; Caroline keeps both places, alice2's
    // carol dormant until the account is bound again.
    let alice2 = app.account_id(&token, "alice2@localhost").await;
    let unbound = app
        .gql(
            Some(&token),
            "mutation($a: ID!) { unbindAccount(accountId: $a) }",
            json!({ "a": alice2 }),
        )
        .await;
    assert_eq!(unbound.data()["unbindAccount"], true);
    let list = app.contacts(&token).await;
    assert_eq!(ids_of(&list, "bob@localhost").len(), 1);
    assert_eq!(list["metaContacts"][0]["name"], "Caroline");
    let members = app
        .gql(
            Some(&token),
            "{ contacts { metaContacts { members { accountId dormant { reason } } } } }",
            json!({}),
        )
        .await;
    let members = members.data()["contacts"]["metaContacts"][0]["members"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(members.len(), 2);
    let dormant: Vec<&Value> = members.iter().filter(|m| !m["dormant"].is_null()).collect();
    assert_eq!(dormant.len(), 1);
    assert_eq!(dormant[0]["accountId"], alice2.as_str());
    assert_eq!(dormant[0]["dormant"]["reason"], "ACCOUNT_UNBOUND");
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(secrets, 1, "the unbound account's secret is destroyed");
    let accounts = app
        .gql(Some(&token), "{ accounts { handle } }", json!({}))
        .await;
    assert_eq!(accounts.data()["accounts"].as_array().unwrap().len(), 1);

    // Unbinding left Caroline as she was, so the rename is still undone exactly.
    let history = app
        .gql(
            Some(&token),
            "{ history(kinds: [META_CONTACT_RENAMED]) { entries { id } } }",
            json!({}),
        )
        .await;
    let rename_id = history.data()["history"]["entries"][0]["id"].clone();
    let undo = app
        .gql(
            Some(&token),
            "mutation($e: ID!) { undo(eventId: $e) { metaContacts { name members { id } } } }",
            json!({ "e": rename_id }),
        )
        .await;
    let carol = &undo.data()["undo"]["metaContacts"][0];
    assert_eq!(carol["name"], "Carol");
    assert_eq!(carol["members"].as_array().unwrap().len(), 2);
    app.stop().await;
}
