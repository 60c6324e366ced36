//! Presence seen upstream shows on the unified contact list while the account is connected.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{AccountLogin, Connector, Credential};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;

use crate::helpers::*;

const PRESENCE: &str = "{ contacts { contacts { handle presence { availability } } } }";

async fn presence_of(app: &TestApp, token: &str, handle: &str) -> Value {
    let list = app.gql(Some(token), PRESENCE, json!({})).await;
    list.data()["contacts"]["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["handle"] == handle)
        .map(|c| c["presence"]["availability"].clone())
        .unwrap_or(Value::Null)
}

async fn wait_for_presence(app: &TestApp, token: &str, handle: &str, want: &str) {
    for _ in 0..100 {
        if presence_of(app, token, handle).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{handle} never showed as {want}");
}

/// bob's availability in a `presenceChanged` message, checking the rest of it.
fn availability_in(message: &Value) -> String {
    let change = &message["payload"]["data"]["presenceChanged"];
    assert_eq!(change["handle"], "bob@localhost", "{message}");
    assert_eq!(change["protocol"], "XMPP");
    assert!(change["metaContactId"].is_null());
    change["presence"]["availability"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_contact_logging_in_upstream_shows_online_then_offline() {
    let _bob = BOB.lock().await;
    let app = spawn_app().await;
    let token = app
        .register("watcher", json!([xmpp_account("mallory")]))
        .await;
    wait_for_presence(&app, &token, "bob@localhost", "OFFLINE").await;
    let mut socket = open_socket(&app, &token).await;
    send(
        &mut socket,
        json!({ "id": "p", "type": "subscribe", "payload": { "query":
            "subscription { presenceChanged { handle protocol presence { availability } metaContactId } }" } }),
    )
    .await;
    // The subscription has no "ready" answer: under load it may start after a first change.
    // So bob logs in and out until it has seen him come online, then it must see him go.
    let mut seen = Vec::new();
    for attempt in 1..=3 {
        // bob logs in on his own, with a second, independent XMPP connection.
        let bob = XmppConnector::default()
            .connect(
                &AccountLogin {
                    protocol: Protocol::Xmpp,
                    server: xmpp_server(),
                    handle: Handle::parse(Protocol::Xmpp, "bob@localhost").unwrap(),
                    credential: Credential::Password(Secret::new(xmpp_password("bob"))),
                    contacts: Vec::new(),
                    message_cursor: None,
                },
                Duration::from_secs(10),
            )
            .await
            .expect("bob logs in");
        wait_for_presence(&app, &token, "bob@localhost", "ONLINE").await;
        let online = next_within(&mut socket, Duration::from_secs(5)).await;
        bob.disconnect().await;
        wait_for_presence(&app, &token, "bob@localhost", "OFFLINE").await;
        match online {
            Some(message) => {
                seen.push(availability_in(&message));
                break;
            }
            None => {
                assert!(attempt < 3, "the subscription never reported bob");
                // It may have started in between and seen him leave: not what is checked.
                let _ = next_within(&mut socket, Duration::from_secs(2)).await;
            }
        }
    }
    while seen.last().map(String::as_str) != Some("OFFLINE") {
        let message = next(&mut socket).await;
        seen.push(availability_in(&message));
    }
    assert_eq!(seen, ["ONLINE", "OFFLINE"]);
    app.stop().await;
}
