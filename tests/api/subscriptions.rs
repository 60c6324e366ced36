//! Subscriptions over WebSocket (graphql-transport-ws), fed by the projections.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket upgrade request for the subscription endpoint, speaking graphql-transport-ws.
fn ws_request(app: &TestApp) -> Request {
    let mut request = format!("ws://{}/graphql/ws", app.address)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    request
}

async fn open(app: &TestApp, token: &str) -> Socket {
    let request = ws_request(app);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket opens");
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    let ack = next(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "ping" && value["type"] != "pong" {
                return value;
            }
        }
    }
}

#[tokio::test]
async fn contacts_changed_and_history_appended_follow_the_views() {
    let app = spawn_app().await;
    let token = app.register("alice", json!([xmpp_account("alice")])).await;
    let mut socket = open(&app, &token).await;
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
