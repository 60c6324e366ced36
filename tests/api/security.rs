//! Secrets stay secret, and one user cannot read or change another's data.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn third_party_passwords_never_reach_events_views_or_responses() {
    let app = spawn_app().await;
    let mut bodies = Vec::new();
    let register = app
        .raw(
            None,
            "mutation($a: [AccountInput!]!) { register(userName: \"alice\", password: \"correct horse battery\", accounts: $a) {
               token accounts { status { state detail } } } }",
            json!({ "a": [xmpp_account("alice")] }),
        )
        .await;
    let token = serde_json::from_str::<serde_json::Value>(&register).unwrap()["data"]["register"]
        ["token"]
        .as_str()
        .unwrap()
        .to_owned();
    bodies.push(register);
    let mut wrong = xmpp_account("alice2");
    wrong["secret"] = json!("wrong-secret-XYZ");
    bodies.push(
        app.raw(
            Some(&token),
            "mutation($a: AccountInput!) { bindAccount(account: $a) { account { id } } }",
            json!({ "a": wrong }),
        )
        .await,
    );
    bodies.push(
        app.raw(Some(&token), "mutation($a: AccountInput!) { bindAccount(account: $a) { account { id server handle } } }", json!({ "a": xmpp_account("alice2") }))
            .await,
    );
    bodies.push(
        app.raw(
            Some(&token),
            "{ accounts { id protocol server handle boundAt connected } }",
            json!({}),
        )
        .await,
    );
    bodies.push(
        app.raw(
            Some(&token),
            "{ history(first: 200) { entries { summary details actor } } }",
            json!({}),
        )
        .await,
    );
    bodies.push(
        app.raw(None, "mutation { login(userName: \"alice\", password: \"correct horse battery\") { token accounts { status { detail } } } }", json!({}))
            .await,
    );
    let secrets = [
        xmpp_password("alice"),
        xmpp_password("alice2"),
        "wrong-secret-XYZ".to_owned(),
        "correct horse battery".to_owned(),
    ];
    for body in &bodies {
        for secret in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "a response leaks a secret: {body}"
            );
        }
        assert!(
            !body.contains("$argon2"),
            "a response shows a password hash: {body}"
        );
    }
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text || metadata::text FROM events
         UNION ALL SELECT details::text || summary FROM history_view
         UNION ALL SELECT encode(ciphertext, 'escape') FROM credentials",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(stored.len() > 5);
    for row in &stored {
        for secret in &secrets {
            assert!(!row.contains(secret.as_str()), "stored in clear: {row}");
        }
    }
    let hashes_in_history: i64 =
        sqlx::query_scalar("SELECT count(*) FROM history_view WHERE details::text LIKE '%argon2%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(hashes_in_history, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_user_cannot_read_or_change_another_users_data() {
    let app = spawn_app().await;
    let alice = app.register("alice", json!([xmpp_account("alice")])).await;
    let mallory = app
        .register("mallory", json!([xmpp_account("mallory")]))
        .await;
    let alice_list = app.contacts(&alice).await;
    let alice_bobs = ids_of(&alice_list, "bob@localhost");
    let alice_carols = ids_of(&alice_list, "carol@localhost");
    let merged = app
        .gql(
            Some(&alice),
            "mutation($ids: [ID!]!) { mergeContacts(name: \"B&C\", contactIds: $ids) { metaContactId } }",
            json!({ "ids": [alice_bobs[0], alice_carols[0]] }),
        )
        .await;
    let alice_meta = merged.data()["mergeContacts"]["metaContactId"].clone();
    let alice_history = app
        .gql(
            Some(&alice),
            "{ history(kinds: [CONTACTS_MERGED]) { entries { id } } }",
            json!({}),
        )
        .await;
    let merge_event = alice_history.data()["history"]["entries"][0]["id"].clone();
    let alice_account = app
        .gql(Some(&alice), "{ accounts { id } }", json!({}))
        .await
        .data()["accounts"][0]["id"]
        .clone();
    let before = app.event_count().await;

    // Mallory sees only her own things.
    let mallory_list = app.contacts(&mallory).await;
    assert_eq!(single_handles(&mallory_list), ["bob@localhost"]);
    assert!(mallory_list["metaContacts"].as_array().unwrap().is_empty());
    let mallory_history = app
        .gql(
            Some(&mallory),
            "{ history(first: 200) { entries { id } } }",
            json!({}),
        )
        .await;
    let ids: Vec<_> = mallory_history.data()["history"]["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!ids.iter().any(|e| e["id"] == merge_event));

    // And can change nothing of Alice's.
    let attempts = [
        ("mutation($e: ID!) { undo(eventId: $e) { contacts { id } } }", json!({ "e": merge_event })),
        (
            "mutation($m: ID!, $c: ID!) { removeFromMetaContact(metaContactId: $m, contactId: $c) { contacts { id } } }",
            json!({ "m": alice_meta, "c": alice_bobs[0] }),
        ),
        (
            "mutation($m: ID!) { renameMetaContact(metaContactId: $m, name: \"pwned\") { contacts { id } } }",
            json!({ "m": alice_meta }),
        ),
        (
            "mutation($ids: [ID!]!) { mergeContacts(name: \"x\", contactIds: $ids) { metaContactId } }",
            json!({ "ids": [alice_bobs[0], alice_carols[0]] }),
        ),
        ("mutation($a: ID!) { unbindAccount(accountId: $a) }", json!({ "a": alice_account })),
    ];
    for (query, variables) in attempts {
        let response = app.gql(Some(&mallory), query, variables).await;
        assert_eq!(response.code(), "NOT_FOUND", "{query}: {:?}", response);
    }
    assert_eq!(app.event_count().await, before);
    let still = app.contacts(&alice).await;
    assert_eq!(still["metaContacts"][0]["name"], "B&C");
    app.stop().await;
}

#[tokio::test]
async fn orphaned_secrets_are_swept_and_bound_ones_kept() {
    use switchboard::store::vault::{MasterKey, Vault};
    let app = spawn_app().await;
    let token = app
        .register(
            "alice",
            json!([xmpp_account("alice"), xmpp_account("alice2")]),
        )
        .await;
    let alice2 = app.account_id(&token, "alice2@localhost").await;
    let user: String = app
        .gql(Some(&token), "{ me { id } }", json!({}))
        .await
        .data()["me"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let vault = Vault::new(app.pool.clone(), &MasterKey::generate());
    // A secret stored for a binding that was never recorded (a crash in between)...
    let never_bound = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO credentials (account_id, user_id, nonce, ciphertext, created_at) \
         VALUES ($1, $2::uuid, '\\x00', '\\x00', now() - interval '1 hour')",
    )
    .bind(never_bound)
    .bind(&user)
    .execute(&app.pool)
    .await
    .unwrap();
    // ...and one whose unbinding was recorded but whose secret survived.
    sqlx::query("UPDATE credentials SET created_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    let unbound = app
        .gql(
            Some(&token),
            "mutation($a: ID!) { unbindAccount(accountId: $a) }",
            json!({ "a": alice2 }),
        )
        .await;
    assert_eq!(unbound.data()["unbindAccount"], true);
    sqlx::query(
        "INSERT INTO credentials (account_id, user_id, nonce, ciphertext, created_at) \
         VALUES ($1::uuid, $2::uuid, '\\x00', '\\x00', now() - interval '1 hour')",
    )
    .bind(&alice2)
    .bind(&user)
    .execute(&app.pool)
    .await
    .unwrap();
    // A fresh orphan is spared: its binding may still be in flight.
    sqlx::query("INSERT INTO credentials (account_id, user_id, nonce, ciphertext) VALUES ($1, $2::uuid, '\\x00', '\\x00')")
        .bind(uuid::Uuid::new_v4())
        .bind(&user)
        .execute(&app.pool)
        .await
        .unwrap();

    let swept = vault
        .sweep_orphans(std::time::Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(swept, 2);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 2, "alice's bound secret and the fresh one remain");
    // The bound account still logs in with its kept secret.
    let login = app
        .gql(None, "mutation { login(userName: \"alice\", password: \"correct horse battery\") { token } }", json!({}))
        .await;
    let token = login.data()["login"]["token"].as_str().unwrap().to_owned();
    app.wait_for_account(&token, "alice@localhost", "ONLINE")
        .await;
    app.stop().await;
}
