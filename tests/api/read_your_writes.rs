//! Read-your-writes through the API: a mutation answers with its own change even while other
//! transactions stay open on the cluster, and says `VIEWS_BEHIND` when the views cannot catch up
//! rather than answering stale data.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

const MERGE: &str =
    "mutation($ids: [ID!]!) { mergeContacts(name: \"Bob\", contactIds: $ids) { metaContactId } }";
const RENAME: &str = "mutation($id: ID!, $name: String!) {
  renameMetaContact(metaContactId: $id, name: $name) { metaContacts { id name } } }";

/// Renames the meta-contact `meta` through `app`.
async fn rename(app: &TestApp, token: &str, meta: &impl serde::Serialize, name: &str) -> Response {
    app.gql(Some(token), RENAME, json!({ "id": meta, "name": name }))
        .await
}

/// Alice with her XMPP roster and one meta-contact holding bob and carol; its id.
async fn alice_with_a_meta_contact(app: &TestApp) -> (String, String) {
    let token = app.register("alice", json!([xmpp_account("alice")])).await;
    let list = app.contacts(&token).await;
    let ids: Vec<String> = ["bob@localhost", "carol@localhost"]
        .iter()
        .flat_map(|h| ids_of(&list, h))
        .collect();
    let merged = app.gql(Some(&token), MERGE, json!({ "ids": ids })).await;
    let meta = merged.data()["mergeContacts"]["metaContactId"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, meta)
}

#[tokio::test]
async fn a_mutation_shows_its_change_while_unrelated_transactions_stay_open() {
    let app = spawn_app().await;
    let (token, meta) = alice_with_a_meta_contact(&app).await;
    sqlx::query("CREATE TABLE batch_job (n int)")
        .execute(&app.pool)
        .await
        .unwrap();

    // Another application's transaction in another database of the cluster, and a batch job
    // in ours writing a table that is not the event store: both hold the cluster's xmin back.
    let elsewhere = open_transaction(
        &fresh_database().await,
        &[
            "CREATE TABLE other_app (n int)",
            "INSERT INTO other_app VALUES (1)",
        ],
    )
    .await;
    let batch = open_transaction(&app.database_url, &["INSERT INTO batch_job VALUES (1)"]).await;

    let started = Instant::now();
    let renamed = rename(&app, &token, &meta, "Robert").await;
    let took = started.elapsed();
    let metas = &renamed.data()["renameMetaContact"]["metaContacts"];
    assert_eq!(metas[0]["id"], meta.as_str());
    assert_eq!(
        metas[0]["name"], "Robert",
        "the answer shows the rename: {renamed:?}"
    );
    println!("renameMetaContact answered in {took:?} with two foreign transactions open");

    // The view shows it to every later read too.
    let list = app.contacts(&token).await;
    assert_eq!(list["metaContacts"][0]["name"], "Robert");

    elsewhere.rollback().await.unwrap();
    batch.rollback().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_mutation_whose_views_cannot_catch_up_answers_views_behind() {
    let mut settings = test_settings(&fresh_database().await);
    settings.view_wait = Duration::from_millis(1500);
    let app = spawn_app_with(settings).await;
    let (token, meta) = alice_with_a_meta_contact(&app).await;
    let events_before = app.event_count().await;

    // The contact list's batch fails from now on: the rename is recorded but cannot be shown.
    sqlx::query(
        "ALTER TABLE meta_contact_view ADD CONSTRAINT broken CHECK (name <> 'Robert') NOT VALID",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let renamed = rename(&app, &token, &meta, "Robert").await;
    assert_eq!(renamed.code(), "VIEWS_BEHIND", "{renamed:?}");
    let error = &renamed.0["errors"][0];
    assert_eq!(error["extensions"]["recorded"], true, "{error}");
    assert!(error["extensions"]["eventId"].is_i64(), "{error}");
    assert!(renamed.0["data"].is_null() || renamed.0["data"]["renameMetaContact"].is_null());
    assert_eq!(
        app.event_count().await,
        events_before + 1,
        "the change was recorded"
    );

    // Once the view can take it, the change shows without being made again.
    sqlx::query("ALTER TABLE meta_contact_view DROP CONSTRAINT broken")
        .execute(&app.pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = app.contacts(&token).await;
        if list["metaContacts"][0]["name"] == "Robert" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view never caught up: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.event_count().await, events_before + 1);
    app.stop().await;
}

/// Two nodes serve one user. Each decides a command first on its own cached copy of the user,
/// without reading the stream; a copy gone stale must never show: a refusal is decided again
/// on the stored stream, and events decided on a stale copy are refused by the store and
/// decided again.
#[tokio::test]
async fn commands_on_two_nodes_are_decided_on_the_stored_stream_not_a_stale_copy() {
    let app = spawn_app().await;
    let other = spawn_app_on(&app.database_url).await;
    let token = app.register("alice", json!([xmpp_account("alice")])).await;
    let elsewhere = other.login("alice").await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The meta-contact is made on the other node: this node's copy does not know it.
    let list = other.contacts(&elsewhere).await;
    let ids: Vec<String> = ["bob@localhost", "carol@localhost"]
        .iter()
        .flat_map(|h| ids_of(&list, h))
        .collect();
    let merged = other
        .gql(Some(&elsewhere), MERGE, json!({ "ids": ids }))
        .await;
    let meta = merged.data()["mergeContacts"]["metaContactId"].clone();
    let renamed = rename(&app, &token, &meta, "Robert").await;
    assert_eq!(
        renamed.data()["renameMetaContact"]["metaContacts"][0]["name"],
        "Robert",
        "refused on a stale copy: {:?}",
        renamed.0
    );

    // The other node renames; this node, deciding the same rename on its stale copy, would
    // record a second rename: the store refuses it, and on the stored stream it is a no-op.
    rename(&other, &elsewhere, &meta, "Robbie").await.data();
    let again = rename(&app, &token, &meta, "Robbie").await;
    assert_eq!(
        again.data()["renameMetaContact"]["metaContacts"][0]["name"],
        "Robbie"
    );
    let renames: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MetaContactRenamed'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(renames, 2, "Robert, then Robbie once");
    other.stop().await;
    app.stop().await;
}
