//! Subscriptions over WebSocket (graphql-transport-ws), fed by the projections.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn contacts_changed_and_history_appended_follow_the_views() {
    let app = spawn_app().await;
    let token = app.register("alice", json!([xmpp_account("alice")])).await;
    let mut socket = open_socket(&app, &token).await;
    send(
        &mut socket,
        json!({ "id": "c", "type": "subscribe", "payload": { "query": "subscription { contactsChanged { metaContacts { name } } }" } }),
    )
    .await;
    send(
        &mut socket,
        json!({ "id": "h", "type": "subscribe", "payload": { "query": "subscription { historyAppended { kind summary actor } }" } }),
    )
    .await;
    // Give the server a moment to register both subscriptions before the change.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let list = app.contacts(&token).await;
    let ids = vec![
        ids_of(&list, "bob@localhost")[0].clone(),
        ids_of(&list, "carol@localhost")[0].clone(),
    ];
    app.gql(
        Some(&token),
        "mutation($ids: [ID!]!) { mergeContacts(name: \"Pair\", contactIds: $ids) { metaContactId } }",
        json!({ "ids": ids }),
    )
    .await
    .data();

    let mut seen_contacts = false;
    let mut seen_history = false;
    while !(seen_contacts && seen_history) {
        let message = next(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        match message["id"].as_str() {
            Some("c") => {
                assert_eq!(
                    message["payload"]["data"]["contactsChanged"]["metaContacts"][0]["name"],
                    "Pair"
                );
                seen_contacts = true;
            }
            Some("h") => {
                let entry = &message["payload"]["data"]["historyAppended"];
                assert_eq!(entry["kind"], "CONTACTS_MERGED");
                assert!(entry["actor"].as_str().unwrap().starts_with("user:"));
                seen_history = true;
            }
            other => panic!("unexpected message id {other:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn subscriptions_need_a_valid_token() {
    let app = spawn_app().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_request(&app))
        .await
        .unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": "Bearer forged" } }),
    )
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("an answer");
    match answer {
        Some(Ok(Message::Close(frame))) => {
            let frame = frame.expect("a close reason");
            assert!(frame.reason.contains("not logged in"), "{frame:?}");
        }
        other => panic!("expected the socket to be closed, got {other:?}"),
    }
    app.stop().await;
}

/// Found by the fuzzer (tests/api/fuzz.rs): async-graphql closed a socket after an unreadable
/// message with its parse error as the reason, longer than the 123 bytes a close frame holds
/// (clients take that for a broken connection), and after a legacy `connection_terminate` it
/// dropped the connection without a close frame. Both now end with a valid close frame.
#[tokio::test]
async fn a_socket_always_ends_with_a_valid_close_frame() {
    let app = spawn_app().await;
    let token = app.register("closer", json!([])).await;
    let unreadable = json!({ "type": "next", "id": "1", "payload": {} });
    let terminate = json!({ "type": "connection_terminate" });
    for (message, code) in [(unreadable, 1002), (terminate, 1000)] {
        let mut socket = open_socket(&app, &token).await;
        send(&mut socket, message.clone()).await;
        let answer = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer");
        match answer {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), code, "after {message}: {frame:?}");
                assert!(frame.reason.len() <= 123, "{frame:?}");
            }
            other => panic!("expected a close frame after {message}, got {other:?}"),
        }
    }
    app.stop().await;
}
