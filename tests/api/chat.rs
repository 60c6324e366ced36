//! Chat through the API with real servers: a message to a person goes where they are online
//! (XMPP or Matrix), `via` overrides the rules, replies from independent clients land in one
//! conversation, and the same `clientId` twice is one message.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::Roster as RosterQuery;
use tokio_xmpp::{Client, Event, Stanza};

use crate::common::matrix_client::{fresh_pals, password_of, register, server, Raw};
use crate::common::xmpp_client::raw_client;
use crate::helpers::*;

const SEND: &str = "mutation($to: ID!, $text: String!, $via: ID, $key: String) {
  sendMessage(to: $to, text: $text, via: $via, clientId: $key) {
    id state network handle routeReason direction clientId } }";

const CONVERSATION: &str = "query($with: ID!, $first: Int, $after: ID) {
  conversation(with: $with, first: $first, after: $after) {
    with { id name isRequest isMetaContact } hasMore
    messages { id body direction state network handle } } }";

fn matrix_account(localpart: &str) -> Value {
    json!({ "protocol": "MATRIX", "server": server(),
            "handle": format!("@{localpart}:localhost"), "secret": password_of(localpart) })
}

async fn availability(app: &TestApp, token: &str, handle: &str) -> Value {
    let list = app
        .gql(
            Some(token),
            "{ contacts { metaContacts { members { handle presence { availability } } }
                          contacts { handle presence { availability } } } }",
            json!({}),
        )
        .await;
    let list = &list.data()["contacts"];
    list["metaContacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["members"].as_array().unwrap().iter())
        .chain(list["contacts"].as_array().unwrap())
        .find(|c| c["handle"] == handle)
        .map(|c| c["presence"]["availability"].clone())
        .unwrap_or(Value::Null)
}

async fn wait_for_availability(app: &TestApp, token: &str, handle: &str, want: &str) {
    for _ in 0..150 {
        if availability(app, token, handle).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{handle} never showed as {want}");
}

/// Accepts the message request of the contact `id`; returns the contact list's contacts.
async fn accept_request(app: &TestApp, token: &str, id: &Value) -> Value {
    let accepted = app
        .gql(
            Some(token),
            "mutation($c: ID!) { acceptMessageRequest(contactId: $c) { contacts { id handle isNew } } }",
            json!({ "c": id }),
        )
        .await;
    accepted.data()["acceptMessageRequest"]["contacts"].clone()
}

/// The user's conversations, latest first: whom with, unread count and last message.
async fn conversations(app: &TestApp, token: &str) -> Vec<Value> {
    let all = app
        .gql(
            Some(token),
            "{ conversations { with { id name isRequest } unread
                 lastMessage { id kind body handle network direction } } }",
            json!({}),
        )
        .await;
    all.data()["conversations"].as_array().unwrap().clone()
}

/// The first of the user's conversations that `wanted` accepts, waiting up to 20 s for it.
async fn conversation_where(app: &TestApp, token: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = conversations(app, token).await;
        if let Some(found) = all.iter().find(|c| wanted(c)) {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such conversation: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next chat message body `client` receives, within 10 s.
async fn next_body(client: &mut Client) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = client.next().await {
            if let Event::Stanza(Stanza::Message(m)) = event {
                if let Some((_, body)) = m.get_best_body(vec![]) {
                    let from = m
                        .from
                        .as_ref()
                        .map(|j| j.to_bare().to_string())
                        .unwrap_or_default();
                    return (from, body.clone());
                }
            }
        }
        panic!("the raw client ended");
    })
    .await
    .expect("a message arrives")
}

async fn send(app: &TestApp, token: &str, to: &str, text: &str, via: Option<&str>) -> Value {
    let sent = app
        .gql(
            Some(token),
            SEND,
            json!({ "to": to, "text": text, "via": via, "key": null }),
        )
        .await;
    sent.data()["sendMessage"].clone()
}

/// One socket with two subscriptions: what came for the one not being read waits here.
struct Inbox {
    socket: Socket,
    waiting: Vec<Value>,
}

impl Inbox {
    /// The next `count` payloads of the operation `id` (its data's `field`), in order.
    async fn take(&mut self, id: &str, field: &str, count: usize) -> Vec<Value> {
        let mut found = Vec::new();
        while found.len() < count {
            let message = match self.waiting.iter().position(|m| m["id"] == id) {
                Some(at) => self.waiting.remove(at),
                None => {
                    let message = next_within(&mut self.socket, Duration::from_secs(15))
                        .await
                        .unwrap_or_else(|| panic!("only {found:?} of {count} {field} came"));
                    if message["id"] != id {
                        self.waiting.push(message);
                        continue;
                    }
                    message
                }
            };
            found.push(message["payload"]["data"][field].clone());
        }
        found
    }
}

#[tokio::test]
async fn a_message_goes_where_the_person_is_online_and_replies_join_one_conversation() {
    let _bob_turn = BOB.lock().await;
    let (rae, sol, room) = fresh_pals("Rae", "Sol").await;
    let sol_id = format!("@{sol}:localhost");
    let app = spawn_app().await;
    let token = app
        .register(
            "chatty",
            json!([xmpp_account("alice"), matrix_account(&rae)]),
        )
        .await;
    app.wait_for_account(&token, &format!("@{rae}:localhost"), "ONLINE")
        .await;
    let list = app.contacts(&token).await;
    let (bob, sol_contact) = (
        ids_of(&list, "bob@localhost")[0].clone(),
        ids_of(&list, &sol_id)[0].clone(),
    );
    let merged = app
        .gql(
            Some(&token),
            "mutation($ids: [ID!]!) { mergeContacts(name: \"Bob\", contactIds: $ids) { metaContactId } }",
            json!({ "ids": [bob, sol_contact] }),
        )
        .await;
    let person = merged.data()["mergeContacts"]["metaContactId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut inbox = Inbox {
        socket: open_socket(&app, &token).await,
        waiting: Vec::new(),
    };
    crate::helpers::send(
        &mut inbox.socket,
        json!({ "id": "in", "type": "subscribe", "payload": { "query":
            "subscription { messageReceived { body network handle direction } }" } }),
    )
    .await;
    crate::helpers::send(
        &mut inbox.socket,
        json!({ "id": "out", "type": "subscribe", "payload": { "query":
            "subscription { messageStatusChanged { id state network } }" } }),
    )
    .await;

    // bob is online on XMPP, sol has never been online on Matrix: XMPP it is.
    let mut bob_client = raw_client(&xmpp_server(), "bob", &xmpp_password("bob")).await;
    bob_client
        .send_stanza(Presence::available().into())
        .await
        .unwrap();
    wait_for_availability(&app, &token, "bob@localhost", "ONLINE").await;
    let first = send(&app, &token, &person, "hello on xmpp", None).await;
    assert_eq!(first["network"], "XMPP", "{first}");
    assert_eq!(first["state"], "SENT", "{first}");
    let reason = first["routeReason"].as_str().unwrap();
    assert!(reason.contains("online on XMPP"), "{reason}");
    assert_eq!(
        next_body(&mut bob_client).await,
        ("alice@localhost".to_owned(), "hello on xmpp".to_owned())
    );

    // bob leaves XMPP, sol comes online on Matrix: the next message switches network.
    bob_client
        .send_stanza(Presence::new(PresenceType::Unavailable).into())
        .await
        .unwrap();
    let mut sol_client = Raw::login(&sol).await;
    sol_client.set_presence("online", None).await;
    wait_for_availability(&app, &token, "bob@localhost", "OFFLINE").await;
    wait_for_availability(&app, &token, &sol_id, "ONLINE").await;
    let second = send(&app, &token, &person, "hello on matrix", None).await;
    assert_eq!(second["network"], "MATRIX", "{second}");
    assert_eq!(second["state"], "SENT", "{second}");
    let reason = second["routeReason"].as_str().unwrap();
    assert!(
        reason.contains("online on Matrix") && reason.contains("offline on XMPP"),
        "{reason}"
    );
    let rae_id = format!("@{rae}:localhost");
    let got = sol_client
        .sync_until(|sync| {
            sync["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()?
                .iter()
                .find(|e| e["sender"] == rae_id.as_str() && e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        })
        .await;
    assert_eq!(got, "hello on matrix");

    // `via` wins over the rules: XMPP, though bob is offline there (the server keeps it).
    let third = send(&app, &token, &person, "via xmpp", Some(&bob)).await;
    assert_eq!(third["network"], "XMPP", "{third}");
    assert_eq!(third["routeReason"], "you chose XMPP");

    // Replies from both networks land in the one conversation and wake messageReceived.
    sol_client.send_text(&room, "reply from matrix").await;
    let received = inbox.take("in", "messageReceived", 1).await;
    assert_eq!(received[0]["body"], "reply from matrix");
    assert_eq!(received[0]["network"], "MATRIX");
    let to_alice = Message::chat(Some(Jid::from(BareJid::new("alice@localhost").unwrap())))
        .with_body(Lang::default(), "reply from xmpp".to_owned());
    bob_client.send_stanza(to_alice.into()).await.unwrap();
    let received = inbox.take("in", "messageReceived", 1).await;
    assert_eq!(received[0]["body"], "reply from xmpp");
    assert_eq!(received[0]["handle"], "bob@localhost");
    assert_eq!(received[0]["direction"], "INCOMING");

    let page = app
        .gql(
            Some(&token),
            CONVERSATION,
            json!({ "with": person, "first": 10 }),
        )
        .await;
    let page = page.data()["conversation"].clone();
    assert_eq!(page["with"]["name"], "Bob");
    assert_eq!(page["with"]["isMetaContact"], true);
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "reply from xmpp",
            "reply from matrix",
            "via xmpp",
            "hello on matrix",
            "hello on xmpp"
        ]
    );
    assert_eq!(page["hasMore"], false);
    // Paging: two at a time, newest first, continuing after the last one seen.
    let first_page = app
        .gql(
            Some(&token),
            CONVERSATION,
            json!({ "with": person, "first": 2 }),
        )
        .await;
    let first_page = first_page.data()["conversation"].clone();
    assert_eq!(first_page["hasMore"], true);
    let after = first_page["messages"][1]["id"].clone();
    let next_page = app
        .gql(
            Some(&token),
            CONVERSATION,
            json!({ "with": person, "first": 2, "after": after }),
        )
        .await;
    assert_eq!(
        next_page.data()["conversation"]["messages"][0]["body"],
        "via xmpp"
    );

    // The outgoing ones, in order, each ending SENT on its network. A subscriber sees a
    // message's state as it is when read: one that went from QUEUED to SENT in between shows
    // as SENT only.
    let mut states: Vec<(String, String, String)> = Vec::new();
    while states
        .iter()
        .filter(|(_, state, _)| state == "SENT")
        .count()
        < 3
    {
        let change = inbox.take("out", "messageStatusChanged", 1).await.remove(0);
        let text = |key: &str| change[key].as_str().unwrap().to_owned();
        states.push((text("id"), text("state"), text("network")));
    }
    let mut order: Vec<(String, String)> = Vec::new();
    for (id, state, network) in &states {
        if !order.iter().any(|(seen, _)| seen == id) {
            order.push((id.clone(), network.clone()));
        }
        let of_this: Vec<&str> = states
            .iter()
            .filter(|(other, _, _)| other == id)
            .map(|(_, state, _)| state.as_str())
            .collect();
        assert!(
            of_this == ["QUEUED", "SENT"] || of_this == ["SENT"],
            "{id} {state} {network}: {of_this:?}"
        );
    }
    let networks: Vec<&str> = order.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(networks, ["XMPP", "MATRIX", "XMPP"], "{states:?}");
    assert_eq!(
        order.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [
            first["id"].as_str().unwrap(),
            second["id"].as_str().unwrap(),
            third["id"].as_str().unwrap()
        ]
    );

    // The same clientId twice is one message.
    let once = app
        .gql(
            Some(&token),
            SEND,
            json!({ "to": person, "text": "once", "via": bob, "key": "k-1" }),
        )
        .await;
    let twice = app
        .gql(
            Some(&token),
            SEND,
            json!({ "to": person, "text": "once", "via": bob, "key": "k-1" }),
        )
        .await;
    assert_eq!(
        once.data()["sendMessage"]["id"],
        twice.data()["sendMessage"]["id"]
    );
    let page = app
        .gql(
            Some(&token),
            CONVERSATION,
            json!({ "with": person, "first": 10 }),
        )
        .await;
    let onces = page.data()["conversation"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["body"] == "once")
        .count();
    assert_eq!(onces, 1);
    let all = conversations(&app, &token).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["with"]["id"], person.as_str());
    assert_eq!(all[0]["lastMessage"]["body"], "once");
    assert_eq!(all[0]["unread"], 2);
    let newest = all[0]["lastMessage"]["id"].clone();
    let read = app
        .gql(
            Some(&token),
            "mutation($w: ID!, $u: ID!) { markRead(with: $w, upTo: $u) }",
            json!({ "w": person, "u": newest }),
        )
        .await;
    assert_eq!(read.data()["markRead"], true);
    assert_eq!(conversations(&app, &token).await[0]["unread"], 0);

    let _ = bob_client.send_end().await;
    sol_client.logout().await;
    app.stop().await;
}

#[tokio::test]
async fn bad_sends_are_refused_with_clear_codes() {
    let app = spawn_app().await;
    let token = app.register("terse", json!([xmpp_account("alice")])).await;
    let list = app.contacts(&token).await;
    let carol = ids_of(&list, "carol@localhost")[0].clone();
    let dave = ids_of(&list, "dave@localhost")[0].clone();
    for (to, text, via, code) in [
        (carol.as_str(), "", None, "BAD_USER_INPUT"),
        (carol.as_str(), "   ", None, "BAD_USER_INPUT"),
        ("not an id", "hi", None, "BAD_USER_INPUT"),
        (
            "00000000-0000-0000-0000-000000000000",
            "hi",
            None,
            "NOT_FOUND",
        ),
        (carol.as_str(), "hi", Some(dave.as_str()), "BAD_USER_INPUT"),
    ] {
        let refused = app
            .gql(
                Some(&token),
                SEND,
                json!({ "to": to, "text": text, "via": via, "key": null }),
            )
            .await;
        assert_eq!(refused.code(), code, "{to} {text:?} {via:?}");
    }
    let long = "x".repeat(16_001);
    let refused = app
        .gql(
            Some(&token),
            SEND,
            json!({ "to": carol, "text": long, "via": null, "key": null }),
        )
        .await;
    assert_eq!(refused.code(), "BAD_USER_INPUT");
    // Nothing refused was stored (other tests may write to alice meanwhile: only what this
    // user sent counts).
    let outgoing = conversations(&app, &token).await;
    let sent = outgoing
        .iter()
        .filter(|c| c["lastMessage"]["direction"] == "OUTGOING")
        .count();
    assert_eq!(sent, 0, "{outgoing:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_strangers_message_is_a_request_until_accepted_then_a_contact_that_stays() {
    let app = spawn_app().await;
    let token = app.register("guarded", json!([xmpp_account("jan")])).await;
    app.wait_for_account(&token, "jan@localhost", "ONLINE")
        .await;
    // kit and jan are nobody's contacts and appear in no other test: jan's roster changes here.
    let mut kit = raw_client(&xmpp_server(), "kit", &xmpp_password("kit")).await;
    // An interested resource (roster read, available): subscription requests reach it.
    let roster = Iq::from_get(
        "kit-roster",
        RosterQuery {
            ver: None,
            items: Vec::new(),
        },
    );
    kit.send_stanza(roster.into()).await.unwrap();
    kit.send_stanza(Presence::available().into()).await.unwrap();
    let note = format!("hi, you don't know me {}", uuid::Uuid::new_v4());
    let to_jan = Message::chat(Some(Jid::from(BareJid::new("jan@localhost").unwrap())))
        .with_body(Lang::default(), note.clone());
    kit.send_stanza(to_jan.into()).await.unwrap();

    // A request: in the conversations, not in the contact list.
    let request =
        conversation_where(&app, &token, |c| c["lastMessage"]["body"] == note.as_str()).await;
    assert_eq!(request["with"]["isRequest"], true, "{request}");
    assert_eq!(request["with"]["name"], "kit@localhost");
    assert!(ids_of(&app.contacts(&token).await, "kit@localhost").is_empty());

    // Accepted: a contact, marked new, kept whatever jan's roster says.
    let contacts = accept_request(&app, &token, &request["with"]["id"]).await;
    let kit_contact = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["handle"] == "kit@localhost")
        .cloned()
        .expect("kit is a contact now");
    assert_eq!(kit_contact["isNew"], true);
    assert_eq!(
        kit_contact["id"], request["with"]["id"],
        "the same contact id"
    );
    // Upstream too: jan asks for kit's presence (and approved sharing its own); once kit
    // agrees, kit's presence shows.
    let asked = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = kit.next().await {
            if let Event::Stanza(Stanza::Presence(p)) = event {
                let from = p.from.as_ref().map(|j| j.to_bare().to_string());
                if p.type_ == PresenceType::Subscribe && from.as_deref() == Some("jan@localhost") {
                    return;
                }
            }
        }
    })
    .await;
    assert!(asked.is_ok(), "jan never asked kit for presence");
    let jan = Jid::from(BareJid::new("jan@localhost").unwrap());
    kit.send_stanza(
        Presence::new(PresenceType::Subscribed)
            .with_to(jan.clone())
            .into(),
    )
    .await
    .unwrap();
    // Its presence again, now that jan may see it.
    kit.send_stanza(Presence::available().into()).await.unwrap();
    wait_for_availability(&app, &token, "kit@localhost", "ONLINE").await;
    let again = app
        .gql(
            Some(&token),
            "mutation($c: ID!) { acceptMessageRequest(contactId: $c) { contacts { id } } }",
            json!({ "c": request["with"]["id"] }),
        )
        .await;
    assert_eq!(again.code(), "CONFLICT");
    let page = app
        .gql(
            Some(&token),
            CONVERSATION,
            json!({ "with": request["with"]["id"], "first": 5 }),
        )
        .await;
    assert_eq!(page.data()["conversation"]["with"]["isRequest"], false);
    assert_eq!(
        page.data()["conversation"]["messages"][0]["body"],
        note.as_str()
    );

    app.logout(&token).await;
    let login = app.login("guarded").await;
    let token = login["token"].as_str().unwrap().to_owned();
    app.wait_for_account(&token, "jan@localhost", "ONLINE")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ids_of(&app.contacts(&token).await, "kit@localhost").len(),
        1,
        "a login's reconciliation keeps an accepted contact"
    );
    let unknown = app
        .gql(
            Some(&token),
            "mutation { acceptMessageRequest(contactId: \"00000000-0000-0000-0000-000000000000\") { contacts { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(unknown.code(), "NOT_FOUND");
    let _ = kit.send_end().await;
    app.stop().await;
}

#[tokio::test]
async fn a_strangers_matrix_invitation_is_a_request_and_accepting_joins_it() {
    let app = spawn_app().await;
    let (rae, sam) = tokio::join!(register("rae", "Rae"), register("sam", "Sam"));
    let token = app.register("invited", json!([matrix_account(&rae)])).await;
    let rae_id = format!("@{rae}:localhost");
    let sam_id = format!("@{sam}:localhost");
    app.wait_for_account(&token, &rae_id, "ONLINE").await;

    let sam_client = Raw::login(&sam).await;
    let room = sam_client.create_dm(&rae_id).await;
    let hello = format!("hello from a stranger {}", uuid::Uuid::new_v4());
    sam_client.send_text(&room, &hello).await;

    // A request: the invitation is in the conversations, Sam is not on the list, nothing
    // joined upstream.
    let request = conversation_where(&app, &token, |c| {
        c["lastMessage"]["handle"] == sam_id.as_str()
    })
    .await;
    assert_eq!(request["with"]["isRequest"], true, "{request}");
    assert_eq!(request["lastMessage"]["kind"], "INVITATION", "{request}");
    assert_eq!(request["lastMessage"]["network"], "MATRIX");
    assert!(ids_of(&app.contacts(&token).await, &sam_id).is_empty());
    let rae_client = Raw::login(&rae).await;
    assert_eq!(rae_client.direct().await, json!({}), "nothing joined yet");

    let contacts = accept_request(&app, &token, &request["with"]["id"]).await;
    assert!(
        contacts
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["handle"] == sam_id.as_str()),
        "{contacts}"
    );
    // Joined and listed upstream; what Sam wrote before follows the invitation.
    assert_eq!(
        rae_client.direct().await,
        json!({ sam_id.clone(): [room.clone()] })
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = app
            .gql(
                Some(&token),
                "query($with: ID!) { conversation(with: $with, first: 10) {
                   with { isRequest } messages { kind body } } }",
                json!({ "with": request["with"]["id"] }),
            )
            .await;
        let conversation = &page.data()["conversation"];
        let kinds: Vec<(String, String)> = conversation["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["kind"].as_str().unwrap().to_owned(),
                    m["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if kinds.iter().any(|(_, body)| *body == hello) {
            assert_eq!(conversation["with"]["isRequest"], false);
            assert_eq!(
                kinds.len(),
                2,
                "the invitation and the message, once each: {kinds:?}"
            );
            assert_eq!(kinds[0], ("TEXT".to_owned(), hello.clone()));
            assert_eq!(kinds[1].0, "INVITATION");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Sam's message never came: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::join!(sam_client.logout(), rae_client.logout());
    app.stop().await;
}
