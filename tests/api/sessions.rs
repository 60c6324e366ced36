//! A user's sessions: listed, revoked one or all; a subscription lives only as long as its
//! session, and a session holds a bounded number of them.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const HISTORY: &str = "subscription { historyAppended { kind } }";

async fn subscribe(socket: &mut Socket, id: &str, query: &str) {
    send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
}

/// Records something in the user's history (a match policy change).
async fn touch(app: &TestApp, token: &str, at: i32) {
    app.gql(
        Some(token),
        "mutation($at: Int) { setMatchPolicy(autoBindAt: $at) }",
        json!({ "at": at }),
    )
    .await
    .data();
}

/// The next message for subscription `id` within `wait` (other messages are skipped).
async fn next_of(socket: &mut Socket, id: &str, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = next_within(socket, left).await?;
        if message["id"] == id {
            return Some(message);
        }
    }
}

async fn login_as(app: &TestApp, user: &str, agent: &str) -> String {
    let body: Value = app
        .http
        .post(app.url("/graphql"))
        .header("user-agent", agent)
        .json(&json!({ "query": "mutation($u: String!) { login(userName: $u, password: \"correct horse battery\") { token } }", "variables": { "u": user } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]["login"]["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_and_their_subscriptions_end_at_once() {
    let app = spawn_app().await;
    let first = app.register("sessions", json!([])).await;
    let phone = login_as(&app, "sessions", "phone/1.0").await;
    let laptop = login_as(&app, "sessions", "laptop/2.0").await;

    let listed = app
        .gql(
            Some(&first),
            "{ sessions { id current address userAgent createdAt expiresAt } }",
            json!({}),
        )
        .await;
    let sessions = listed.data()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{sessions:?}"
    );
    assert!(
        sessions.iter().all(|s| s["address"] == "127.0.0.1"),
        "{sessions:?}"
    );
    let phone_id = sessions
        .iter()
        .find(|s| s["userAgent"] == "phone/1.0")
        .expect("the phone's session is listed")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The phone's subscription ends the moment the phone's session is revoked elsewhere.
    let mut on_phone = open_socket(&app, &phone).await;
    subscribe(&mut on_phone, "h", HISTORY).await;
    touch(&app, &first, 90).await;
    let seen = next_of(&mut on_phone, "h", Duration::from_secs(10)).await;
    assert_eq!(seen.expect("a history entry")["type"], "next");
    app.gql(
        Some(&first),
        "mutation($id: ID!) { revokeSession(id: $id) }",
        json!({ "id": phone_id }),
    )
    .await
    .data();
    let ended = next_of(&mut on_phone, "h", Duration::from_secs(3)).await;
    assert_eq!(
        ended.expect("the subscription ends within 3 s")["type"],
        "complete"
    );
    touch(&app, &first, 80).await;
    assert!(
        next_of(&mut on_phone, "h", Duration::from_secs(1))
            .await
            .is_none(),
        "nothing streams after the revocation"
    );
    assert_eq!(
        app.gql(Some(&phone), "{ me { id } }", json!({}))
            .await
            .code(),
        "UNAUTHENTICATED"
    );
    // The same socket cannot start another one.
    subscribe(&mut on_phone, "again", HISTORY).await;
    let refused = next_of(&mut on_phone, "again", Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"]
            .as_str()
            .or(refused["payload"][0]["extensions"]["code"].as_str()),
        Some("UNAUTHENTICATED"),
        "{refused}"
    );
    let again = app
        .gql(
            Some(&first),
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({ "id": phone_id }),
        )
        .await;
    assert_eq!(again.code(), "NOT_FOUND");

    // A plain logout ends that session's subscription.
    let mut on_laptop = open_socket(&app, &laptop).await;
    subscribe(&mut on_laptop, "h", HISTORY).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.logout(&laptop).await;
    let ended = next_of(&mut on_laptop, "h", Duration::from_secs(3)).await;
    assert_eq!(ended.expect("ends within 3 s")["type"], "complete");

    // Logout everywhere ends them all, this one included.
    let other = login_as(&app, "sessions", "tablet/3.0").await;
    let mut on_first = open_socket(&app, &first).await;
    subscribe(&mut on_first, "h", HISTORY).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.gql(
        Some(&other),
        "mutation { logout(everywhere: true) }",
        json!({}),
    )
    .await
    .data();
    let ended = next_of(&mut on_first, "h", Duration::from_secs(3)).await;
    assert_eq!(ended.expect("ends within 3 s")["type"], "complete");
    for token in [&first, &other] {
        assert_eq!(
            app.gql(Some(token), "{ me { id } }", json!({}))
                .await
                .code(),
            "UNAUTHENTICATED"
        );
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_expiring_session_ends_its_subscriptions_and_expired_ones_are_swept() {
    let app = spawn_app().await;
    let token = app.register("expiring", json!([])).await;
    sqlx::query(
        "UPDATE sessions SET expires_at = now() + interval '2 seconds' WHERE token_hash = $1",
    )
    .bind(Sha256::digest(token.as_bytes()).to_vec())
    .execute(&app.pool)
    .await
    .unwrap();
    let mut socket = open_socket(&app, &token).await;
    subscribe(&mut socket, "h", HISTORY).await;
    let ended = next_of(&mut socket, "h", Duration::from_secs(5)).await;
    assert_eq!(
        ended.expect("the subscription ends at expiry")["type"],
        "complete"
    );
    assert_eq!(
        app.gql(Some(&token), "{ me { id } }", json!({}))
            .await
            .code(),
        "UNAUTHENTICATED"
    );
    let store = switchboard::store::sessions::SessionStore::new(app.pool.clone());
    assert_eq!(store.sweep_expired().await.unwrap(), 1);
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_session_holds_a_bounded_number_of_subscriptions() {
    let mut settings = test_settings(&fresh_database().await);
    settings.limits.max_subscriptions = 2;
    let app = spawn_app_with(settings).await;
    let token = app.register("bounded", json!([])).await;
    let mut socket = open_socket(&app, &token).await;
    // Three at once: whichever comes third is refused.
    for id in ["a", "b", "c"] {
        subscribe(&mut socket, id, HISTORY).await;
    }
    let refused = next_within(&mut socket, Duration::from_secs(5))
        .await
        .expect("an answer to the third");
    assert!(refused.to_string().contains("LIMIT_EXCEEDED"), "{refused}");
    let refused_id = refused["id"].as_str().unwrap().to_owned();
    let live: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|id| *id != refused_id)
        .collect();
    // Another socket of the same session counts too.
    let mut second = open_socket(&app, &token).await;
    subscribe(&mut second, "d", HISTORY).await;
    let refused = next_of(&mut second, "d", Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(refused.to_string().contains("LIMIT_EXCEEDED"), "{refused}");
    // Ending one frees its place.
    send(&mut socket, json!({ "id": live[0], "type": "complete" })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    subscribe(&mut second, "e", HISTORY).await;
    touch(&app, &token, 70).await;
    let seen = next_of(&mut second, "e", Duration::from_secs(10))
        .await
        .expect("the new subscription streams");
    assert_eq!(seen["type"], "next", "{seen}");
    app.stop().await;
}
