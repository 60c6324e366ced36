//! Messages are never lost nor sent twice: one sent while the person's only network is down is
//! `QUEUED` and goes out once when the network is back; one answered `QUEUED` by a server that is
//! then killed with SIGKILL goes out after the restart; messages sent on XMPP and Matrix while
//! the user was logged out are in the conversation after the next login, once each. The independent client of the recipient
//! (on the spare Prosody, which these tests take down and bring back) counts what arrives.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use switchboard::store::vault::MasterKey;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::roster::Subscription;
use tokio_xmpp::{Client, Event, Stanza};

use crate::common::matrix_client::{fresh_pals, password_of, server as matrix_server, Raw};
use crate::common::xmpp_client::{raw_client, set_roster_item};
use crate::crash;
use crate::helpers::*;

const SEND: &str = "mutation($to: ID!, $text: String!) {
  sendMessage(to: $to, text: $text) { id state routeReason } }";

/// The spare Prosody, started, with two fresh users: the owner, whose roster lists the friend.
async fn spare_with_a_friend() -> (SpareProsody, String, String) {
    let mut spare = SpareProsody::new();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let (owner, friend) = (format!("o{tag}"), format!("f{tag}"));
    spare.register_user(&owner, &xmpp_password(&owner));
    spare.register_user(&friend, &xmpp_password(&friend));
    spare.start().await;
    let mut editor = raw_client(&spare.server, &owner, &xmpp_password(&owner)).await;
    let jid = format!("{friend}@localhost");
    set_roster_item(&mut editor, &jid, "Friend", Subscription::None).await;
    let _ = editor.send_end().await;
    (spare, owner, friend)
}

/// Every chat body `client` receives within `wait` after coming online.
async fn bodies_within(client: &mut Client, wait: Duration) -> Vec<String> {
    client
        .send_stanza(Presence::available().into())
        .await
        .unwrap();
    let mut bodies = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        while let Some(event) = client.next().await {
            if let Event::Stanza(Stanza::Message(m)) = event {
                if let Some((_, body)) = m.get_best_body(vec![]) {
                    bodies.push(body.clone());
                }
            }
        }
    })
    .await;
    bodies
}

fn count(bodies: &[String], text: &str) -> usize {
    bodies.iter().filter(|b| *b == text).count()
}

#[tokio::test]
async fn a_message_waits_while_the_network_is_down_and_goes_out_once_when_it_returns() {
    let _spare_turn = SPARE.lock().await;
    let (mut spare, owner, friend) = spare_with_a_friend().await;
    let friend_jid = format!("{friend}@localhost");

    let app = spawn_app().await;
    let token = app
        .register("patient", json!([spare.account(&owner)]))
        .await;
    let friend_id = ids_of(&app.contacts(&token).await, &friend_jid)[0].clone();
    let mut socket = open_socket(&app, &token).await;
    send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": { "query":
            "subscription { messageStatusChanged { id state } }" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    spare.kill();
    app.wait_for_account(&token, &format!("{owner}@localhost"), "RECONNECTING")
        .await;
    let sent = app
        .gql(
            Some(&token),
            SEND,
            json!({ "to": friend_id, "text": "wait for it" }),
        )
        .await;
    let sent = sent.data()["sendMessage"].clone();
    assert_eq!(sent["state"], "QUEUED", "{sent}");
    let reason = sent["routeReason"].as_str().unwrap();
    assert!(reason.contains("not connected on XMPP"), "{reason}");

    spare.start().await;
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("SENT") {
        let message = next_within(&mut socket, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("only {states:?} came"));
        let change = &message["payload"]["data"]["messageStatusChanged"];
        assert_eq!(change["id"], sent["id"], "{message}");
        states.push(change["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(states, ["QUEUED", "SENT"]);

    // The friend comes online later: the server kept it for them, once.
    let mut friend_client = raw_client(&spare.server, &friend, &xmpp_password(&friend)).await;
    let bodies = bodies_within(&mut friend_client, Duration::from_secs(3)).await;
    assert_eq!(count(&bodies, "wait for it"), 1, "{bodies:?}");
    let _ = friend_client.send_end().await;
    app.stop().await;
    spare.kill();
}

#[tokio::test]
async fn a_queued_message_survives_sigkill_and_goes_out_after_the_restart() {
    let _spare_turn = SPARE.lock().await;
    let (mut spare, owner, friend) = spare_with_a_friend().await;
    let friend_jid = format!("{friend}@localhost");

    let database_url = fresh_database().await;
    let key = MasterKey::generate().to_base64();
    let log: PathBuf = std::env::temp_dir().join(format!(
        "switchboard-chat-crash-{}.log",
        uuid::Uuid::new_v4()
    ));
    let mut server = crash::start(&database_url, &key, &log).await;
    let registered = crash::gql(
        &server,
        None,
        "mutation($a: [AccountInput!]!) { register(userName: \"sturdy\", password: \"correct horse battery\", accounts: $a) { token } }",
        json!({ "a": [spare.account(&owner)] }),
    )
    .await;
    let token = registered.data()["register"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = crash::gql(&server, Some(&token), CONTACTS, json!({}))
        .await
        .data()["contacts"]
        .clone();
    let friend_id = ids_of(&list, &friend_jid)[0].clone();

    spare.kill();
    let sent = crash::gql(
        &server,
        Some(&token),
        SEND,
        json!({ "to": friend_id, "text": "through the crash" }),
    )
    .await;
    let sent: Value = sent.data()["sendMessage"].clone();
    assert_eq!(sent["state"], "QUEUED", "{sent}");
    server.child.kill().await.expect("SIGKILL");

    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT state FROM messages WHERE id = $1::uuid")
        .bind(sent["id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        stored, "QUEUED",
        "stored before the answer, kept through the kill"
    );

    spare.start().await;
    let server = crash::start(&database_url, &key, &log).await;
    // Nobody logs in: the new node takes the live session's connections over once the killed
    // node's hold on them has run out (30 s; made to pass here), and the outbox sends.
    sqlx::query("UPDATE live_leases SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM messages WHERE id = $1::uuid")
            .bind(sent["id"].as_str().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
        if state == "SENT" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut friend_client = raw_client(&spare.server, &friend, &xmpp_password(&friend)).await;
    let bodies = bodies_within(&mut friend_client, Duration::from_secs(3)).await;
    assert_eq!(count(&bodies, "through the crash"), 1, "{bodies:?}");
    let _ = friend_client.send_end().await;
    drop(server);
    pool.close().await;
    let _ = std::fs::remove_file(&log);
    spare.kill();
}

#[tokio::test]
async fn messages_sent_while_logged_out_are_in_the_conversation_after_the_next_login() {
    let _spare_turn = SPARE.lock().await;
    let (mut spare, owner, friend) = spare_with_a_friend().await;
    let (rae, sol, room) = fresh_pals("Rae", "Sol").await;
    let app = spawn_app().await;
    let token = app
        .register(
            "returning",
            json!([spare.account(&owner), {
                "protocol": "MATRIX", "server": matrix_server(),
                "handle": format!("@{rae}:localhost"), "secret": password_of(&rae) }]),
        )
        .await;
    for handle in [format!("{owner}@localhost"), format!("@{rae}:localhost")] {
        app.wait_for_account(&token, &handle, "ONLINE").await;
    }
    let list = app.contacts(&token).await;
    let friend_id = ids_of(&list, &format!("{friend}@localhost"))[0].clone();
    let sol_id = ids_of(&list, &format!("@{sol}:localhost"))[0].clone();
    // Let the sessions report where they start reading from, then leave.
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.logout(&token).await;

    // While the user is away: one message on each network.
    let mut friend_client = raw_client(&spare.server, &friend, &xmpp_password(&friend)).await;
    let to_owner = Message::chat(Some(Jid::from(
        BareJid::new(&format!("{owner}@localhost")).unwrap(),
    )))
    .with_body(Lang::default(), "while you were out (xmpp)".to_owned());
    friend_client.send_stanza(to_owner.into()).await.unwrap();
    let _ = friend_client.send_end().await;
    let sol_client = Raw::login(&sol).await;
    sol_client
        .send_text(&room, "while you were out (matrix)")
        .await;
    sol_client.logout().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let login = app.login("returning").await;
    let token = login["token"].as_str().unwrap().to_owned();
    for (with, body) in [
        (&friend_id, "while you were out (xmpp)"),
        (&sol_id, "while you were out (matrix)"),
    ] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let page = app
                .gql(
                    Some(&token),
                    "query($w: ID!) { conversation(with: $w, first: 20) { messages { body direction } } }",
                    json!({ "w": with }),
                )
                .await;
            let found = page.data()["conversation"]["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["body"] == body && m["direction"] == "INCOMING")
                .count();
            if found > 0 {
                assert_eq!(found, 1, "{body} once: {}", page.0);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{body} never came: {}",
                page.0
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    app.stop().await;
    spare.kill();
}
