//! Presence seen upstream shows on the unified contact list while the account is connected.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{AccountLogin, Connector, Credential, LiveSession};
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

/// bob logged in on his own, with a second, independent XMPP connection.
async fn bob_online() -> LiveSession {
    XmppConnector::default()
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
        .expect("bob logs in")
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
        let bob = bob_online().await;
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

const SEEN: &str = "{ contacts {
    contacts { id presence { availability status } }
    metaContacts { id presence { availability status contactId }
                   members { id presence { availability status } } } } }";

const FIELDS: &str = "subscription { presenceChanged { contactId presence { availability status }
    metaContactId metaContactPresence { availability status contactId } } }";

/// What `presenceChanged` says of one contact, as the contact list shows it now.
fn shown(presence: &Value, meta: Option<&Value>) -> Value {
    json!({
        "presence": presence,
        "metaContactId": meta.map_or(Value::Null, |m| m["id"].clone()),
        "metaContactPresence": meta.map_or(Value::Null, |m| m["presence"].clone()),
    })
}

/// Every contact's presence, by contact id, in `presenceChanged`'s shape.
async fn snapshot(app: &TestApp, token: &str) -> HashMap<String, Value> {
    let list = app.gql(Some(token), SEEN, json!({})).await.data()["contacts"].clone();
    let mut all = HashMap::new();
    for c in list["contacts"].as_array().unwrap() {
        all.insert(
            c["id"].as_str().unwrap().to_owned(),
            shown(&c["presence"], None),
        );
    }
    for m in list["metaContacts"].as_array().unwrap() {
        for c in m["members"].as_array().unwrap() {
            all.insert(
                c["id"].as_str().unwrap().to_owned(),
                shown(&c["presence"], Some(m)),
            );
        }
    }
    all
}

/// A `presenceChanged` subscriber: what it was sent of each contact, over what the list
/// showed when it subscribed.
struct Watcher {
    socket: Socket,
    known: HashMap<String, Value>,
    sent: HashMap<String, Value>,
}

impl Watcher {
    async fn subscribe(app: &TestApp, token: &str) -> Self {
        let known = snapshot(app, token).await;
        let mut socket = open_socket(app, token).await;
        send(
            &mut socket,
            json!({ "id": "p", "type": "subscribe", "payload": { "query": FIELDS } }),
        )
        .await;
        Self {
            socket,
            known,
            sent: HashMap::new(),
        }
    }

    /// Takes the messages that come within `wait` of each other, checking that each is a
    /// change of its contact: the same item twice is a re-send, not a delta.
    async fn take(&mut self, wait: Duration) {
        while let Some(message) = next_within(&mut self.socket, wait).await {
            let item = &message["payload"]["data"]["presenceChanged"];
            let id = item["contactId"]
                .as_str()
                .unwrap_or_else(|| panic!("{message}"))
                .to_owned();
            let now = json!({
                "presence": item["presence"],
                "metaContactId": item["metaContactId"],
                "metaContactPresence": item["metaContactPresence"],
            });
            let before = self.sent.insert(id.clone(), now.clone());
            assert_ne!(
                before.as_ref(),
                Some(&now),
                "contact {id} was sent unchanged: {message}"
            );
            self.known.insert(id, now);
        }
    }

    /// Takes messages until both bobs are known as `want`, for at most 10 s.
    async fn until_bobs(&mut self, bobs: &[String], meta: &str, want: &str) -> bool {
        let want = (json!(want), json!(want));
        for _ in 0..40 {
            self.take(Duration::from_millis(250)).await;
            if bobs_as_known(&self.known, bobs, meta) == [want.clone(), want.clone()] {
                return true;
            }
        }
        false
    }
}

/// What the subscriber knows of both bobs: each one's availability, and the meta-contact's.
fn bobs_as_known(
    known: &HashMap<String, Value>,
    bobs: &[String],
    meta: &str,
) -> Vec<(Value, Value)> {
    bobs.iter()
        .map(|b| {
            let c = &known[b];
            assert_eq!(c["metaContactId"], meta, "{c}");
            let best = &c["metaContactPresence"];
            if !best.is_null() {
                assert!(
                    bobs.contains(&best["contactId"].as_str().unwrap().to_owned()),
                    "{c}"
                );
            }
            (
                c["presence"]["availability"].clone(),
                best["availability"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn presence_changed_sends_the_changed_contacts_and_their_meta_contact_presence_only() {
    let _bob = BOB.lock().await;
    let app = spawn_app().await;
    // bob is on both accounts' rosters, carol on alice2's alone.
    let token = app
        .register(
            "deltas",
            json!([xmpp_account("mallory"), xmpp_account("alice2")]),
        )
        .await;
    let list = app.contacts(&token).await;
    let bobs = ids_of(&list, "bob@localhost");
    assert_eq!(bobs.len(), 2, "{list}");
    assert_eq!(ids_of(&list, "carol@localhost").len(), 1, "{list}");
    let merged = app
        .gql(
            Some(&token),
            "mutation($c: [ID!]!) { mergeContacts(name: \"Bob\", contactIds: $c) { metaContactId } }",
            json!({ "c": bobs }),
        )
        .await;
    let meta = merged.data()["mergeContacts"]["metaContactId"]
        .as_str()
        .unwrap()
        .to_owned();
    let offline = || (json!("OFFLINE"), json!("OFFLINE"));
    for _ in 0..100 {
        if bobs_as_known(&snapshot(&app, &token).await, &bobs, &meta) == [offline(), offline()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two subscribers of one user: they share one feed on the server.
    let mut watchers = vec![
        Watcher::subscribe(&app, &token).await,
        Watcher::subscribe(&app, &token).await,
    ];
    assert_eq!(
        bobs_as_known(&watchers[0].known, &bobs, &meta),
        [offline(), offline()]
    );
    // No "ready" answer: bob comes and goes until both subscribers have seen him come.
    let mut bob = None;
    for attempt in 1..=3 {
        let session = bob_online().await;
        let mut all_saw = true;
        for w in &mut watchers {
            all_saw &= w.until_bobs(&bobs, &meta, "ONLINE").await;
        }
        if all_saw {
            bob = Some(session);
            break;
        }
        assert!(attempt < 3, "the subscribers never saw bob come online");
        session.disconnect().await;
        for w in &mut watchers {
            w.until_bobs(&bobs, &meta, "OFFLINE").await;
        }
    }
    bob.expect("bob is online").disconnect().await;
    for w in &mut watchers {
        assert!(
            w.until_bobs(&bobs, &meta, "OFFLINE").await,
            "bob never showed offline again"
        );
        // Each bob was sent: his own presence moved, and so did his meta-contact's.
        for id in &bobs {
            assert!(w.sent.contains_key(id), "bob {id} was never sent");
        }
    }
    // What the subscribers were told adds up to the list as it is now.
    let now = snapshot(&app, &token).await;
    for w in &watchers {
        for id in &bobs {
            assert_eq!(w.known[id], now[id], "bob {id}");
        }
    }
    app.stop().await;
}
