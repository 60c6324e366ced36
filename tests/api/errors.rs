//! Bad input gets a clear, typed error, and a refused command records nothing.

use serde_json::json;

use crate::helpers::*;

const REGISTER: &str = "mutation($u: String!, $p: String!, $a: [AccountInput!]!) {
  register(userName: $u, password: $p, accounts: $a) { token } }";
const BIND: &str = "mutation($a: AccountInput!) { bindAccount(account: $a) { account { id } } }";

#[tokio::test]
async fn wrong_third_party_password_is_auth_failed_and_records_nothing() {
    let app = spawn_app().await;
    let mut account = xmpp_account("alice");
    account["secret"] = json!("not-the-password");
    let response = app
        .gql(
            None,
            REGISTER,
            json!({ "u": "alice", "p": "correct horse battery", "a": [account.clone()] }),
        )
        .await;
    assert_eq!(response.code(), "AUTH_FAILED", "{:?}", response);
    assert!(!response.0.to_string().contains("not-the-password"));
    assert_eq!(app.event_count().await, 0);

    let token = app.register("alice", json!([])).await;
    let before = app.event_count().await;
    let response = app.gql(Some(&token), BIND, json!({ "a": account })).await;
    assert_eq!(response.code(), "AUTH_FAILED");
    assert_eq!(app.event_count().await, before);
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(secrets, 0);
    app.stop().await;
}

#[tokio::test]
async fn unreachable_server_is_upstream_unavailable() {
    let app = spawn_app().await;
    let token = app.register("alice", json!([])).await;
    let mut account = xmpp_account("alice");
    account["server"] = json!("127.0.0.1:1");
    let before = app.event_count().await;
    let response = app.gql(Some(&token), BIND, json!({ "a": account })).await;
    assert_eq!(response.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(app.event_count().await, before);
    app.stop().await;
}

#[tokio::test]
async fn duplicate_binding_is_a_conflict_and_records_nothing() {
    let app = spawn_app().await;
    let token = app.register("alice", json!([xmpp_account("alice")])).await;
    let before = app.event_count().await;
    let mut again = xmpp_account("alice");
    again["handle"] = json!("ALICE@localhost");
    let response = app.gql(Some(&token), BIND, json!({ "a": again })).await;
    assert_eq!(response.code(), "CONFLICT");
    assert_eq!(app.event_count().await, before);
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_too_long_names_and_bad_input_have_codes() {
    let app = spawn_app().await;
    let token = app.register("alice", json!([xmpp_account("alice")])).await;
    let list = app.contacts(&token).await;
    let bob = ids_of(&list, "bob@localhost")[0].clone();
    let before = app.event_count().await;
    let merge = "mutation($n: String!, $ids: [ID!]!) { mergeContacts(name: $n, contactIds: $ids) { metaContactId } }";

    let unknown = uuid::Uuid::new_v4().to_string();
    let response = app
        .gql(
            Some(&token),
            merge,
            json!({ "n": "Bob", "ids": [bob, unknown] }),
        )
        .await;
    assert_eq!(response.code(), "NOT_FOUND");
    assert!(response.message().contains(&unknown));

    let response = app
        .gql(
            Some(&token),
            merge,
            json!({ "n": "B".repeat(65), "ids": [bob, bob] }),
        )
        .await;
    assert_eq!(response.code(), "BAD_USER_INPUT");
    assert!(
        response.message().starts_with("name:"),
        "{}",
        response.message()
    );

    let response = app
        .gql(
            Some(&token),
            merge,
            json!({ "n": "Bob", "ids": [bob, bob] }),
        )
        .await;
    assert_eq!(response.code(), "BAD_USER_INPUT");

    let response = app
        .gql(
            Some(&token),
            merge,
            json!({ "n": "Bob", "ids": ["not-an-id", bob] }),
        )
        .await;
    assert_eq!(response.code(), "BAD_USER_INPUT");

    let response = app
        .gql(
            Some(&token),
            "mutation { undo(eventId: \"999999\") { contacts { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(response.code(), "NOT_FOUND");

    let response = app
        .gql(
            Some(&token),
            "mutation { undo(eventId: \"1\") { contacts { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        response.code(),
        "BAD_USER_INPUT",
        "registration cannot be undone"
    );
    assert_eq!(app.event_count().await, before);

    for (name, code) in [
        ("x".repeat(33), "BAD_USER_INPUT"),
        ("no spaces".into(), "BAD_USER_INPUT"),
    ] {
        let response = app
            .gql(
                None,
                REGISTER,
                json!({ "u": name, "p": "correct horse battery", "a": [] }),
            )
            .await;
        assert_eq!(response.code(), code);
    }
    let response = app
        .gql(
            None,
            REGISTER,
            json!({ "u": "bobby", "p": "short", "a": [] }),
        )
        .await;
    assert_eq!(response.code(), "BAD_USER_INPUT");
    let response = app
        .gql(
            None,
            "mutation { login(userName: \"alice\", password: \"wrong password\") { token } }",
            json!({}),
        )
        .await;
    assert_eq!(response.code(), "UNAUTHENTICATED");
    let response = app
        .gql(None, "{ contacts { contacts { id } } }", json!({}))
        .await;
    assert_eq!(response.code(), "UNAUTHENTICATED");
    let response = app
        .gql(Some("forged-token"), "{ me { id } }", json!({}))
        .await;
    assert_eq!(response.code(), "UNAUTHENTICATED");
    assert_eq!(app.event_count().await, before);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_let_exactly_one_win() {
    // Two server nodes on one database: only the event store can decide between them.
    let app = spawn_app().await;
    let other = spawn_app_on(&app.database_url).await;
    let attempts = (0..8).map(|i| {
        let (node, name) = if i % 2 == 0 {
            (&app, "Zed")
        } else {
            (&other, "zed")
        };
        node.gql(
            None,
            REGISTER,
            json!({ "u": name, "p": format!("password number {i}"), "a": [] }),
        )
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results
        .iter()
        .filter(|r| r.0.get("errors").is_none())
        .count();
    assert_eq!(winners, 1, "{results:?}");
    for loser in results.iter().filter(|r| r.0.get("errors").is_some()) {
        assert_eq!(loser.code(), "CONFLICT");
    }
    let registrations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(registrations, 1);
    other.stop().await;
    app.stop().await;
}
