//! The product's promise across four networks, end to end: one user with an account on XMPP,
//! IRC, Matrix and Nostr logs in once; all four come online; their contacts form one list;
//! bob's four handles merged into one person show the presence of whichever network bob is
//! online on; the XMPP server dying makes only that account reconnect, and the other three
//! never flicker; a message to the person goes out where bob is online, and his replies from
//! each network land in one conversation; wrong credentials on any network are AUTH_FAILED and
//! record nothing. Bob's
//! side is each network's own connector logged in as bob. The XMPP server is the spare
//! Prosody, which this test takes down and brings back.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard::connectors::irc::IrcConnector;
use switchboard::connectors::matrix::MatrixConnector;
use switchboard::connectors::nostr::NostrConnector;
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{AccountLogin, Connector, ConnectorEvent, Credential, LiveSession};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;

use crate::helpers::*;

/// One test identity on the Nostr relay (scripts/servers/nostr.sh).
struct NostrKey {
    secret_hex: String,
    public_hex: String,
    npub: String,
}

fn nostr_keys() -> HashMap<String, NostrKey> {
    let path = env("SWITCHBOARD_TEST_NOSTR_KEYS");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "name secret_hex public_hex nsec npub: {l}");
            (
                f[0].to_owned(),
                NostrKey {
                    secret_hex: f[1].to_owned(),
                    public_hex: f[2].to_owned(),
                    npub: f[4].to_owned(),
                },
            )
        })
        .collect()
}

/// The same test person's account input on each network (XMPP on `xmpp`).
fn accounts_of(user: &str, xmpp: &SpareProsody, keys: &HashMap<String, NostrKey>) -> Value {
    json!([
        xmpp.account(user),
        { "protocol": "IRC", "server": env("SWITCHBOARD_TEST_INSPIRCD_SERVER"),
          "handle": user, "secret": xmpp_password(user) },
        { "protocol": "MATRIX", "server": env("SWITCHBOARD_TEST_MATRIX_SERVER"),
          "handle": format!("@{user}:localhost"), "secret": xmpp_password(user) },
        { "protocol": "NOSTR", "server": env("SWITCHBOARD_TEST_NOSTR_RELAY"),
          "handle": keys[user].npub, "secret": keys[user].secret_hex },
    ])
}

/// Logs bob in on one network with that network's connector, so he is online there.
async fn bob_online(
    protocol: &str,
    xmpp: &SpareProsody,
    keys: &HashMap<String, NostrKey>,
) -> LiveSession {
    let (connector, protocol_id, server, handle, secret): (Box<dyn Connector>, _, _, _, _) =
        match protocol {
            "XMPP" => (
                Box::new(XmppConnector::default()),
                Protocol::Xmpp,
                xmpp.server.clone(),
                "bob@localhost".to_owned(),
                xmpp_password("bob"),
            ),
            "IRC" => (
                Box::new(IrcConnector::default()),
                Protocol::Irc,
                env("SWITCHBOARD_TEST_INSPIRCD_SERVER"),
                "bob".to_owned(),
                xmpp_password("bob"),
            ),
            "MATRIX" => (
                Box::new(MatrixConnector::default()),
                Protocol::Matrix,
                env("SWITCHBOARD_TEST_MATRIX_SERVER"),
                "@bob:localhost".to_owned(),
                xmpp_password("bob"),
            ),
            "NOSTR" => (
                Box::new(NostrConnector::default()),
                Protocol::Nostr,
                env("SWITCHBOARD_TEST_NOSTR_RELAY"),
                keys["bob"].npub.clone(),
                keys["bob"].secret_hex.clone(),
            ),
            other => panic!("no network {other}"),
        };
    connector
        .connect(
            &AccountLogin {
                protocol: protocol_id,
                server,
                handle: Handle::parse(protocol_id, &handle).unwrap(),
                credential: Credential::Password(Secret::new(secret)),
                contacts: Vec::new(),
                message_cursor: None,
            },
            Duration::from_secs(15),
        )
        .await
        .unwrap_or_else(|e| panic!("bob logs in on {protocol}: {e}"))
}

/// Where alice's handle on `protocol` is in `handles` (XMPP, IRC, MATRIX, NOSTR).
fn index_of(protocol: &str) -> usize {
    ["XMPP", "IRC", "MATRIX", "NOSTR"]
        .iter()
        .position(|p| *p == protocol)
        .unwrap()
}

const PERSON: &str =
    "{ contacts { metaContacts { id name presence { availability protocol handle } \
                       members { protocol handle presence { availability } } } } }";

/// Waits until the meta-contact's presence satisfies `want`; returns the meta-contact.
async fn wait_for_person(app: &TestApp, token: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let list = app.gql(Some(token), PERSON, json!({})).await;
        last = list.data()["contacts"]["metaContacts"][0].clone();
        if want(&last["presence"]) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the person's presence never matched: {last}");
}

#[tokio::test]
async fn four_networks_one_login_one_contact_list_one_person() {
    let _bob = BOB.lock().await;
    let _spare = SPARE.lock().await;
    let mut xmpp = SpareProsody::new();
    xmpp.start().await;
    let keys = nostr_keys();
    let app = spawn_app().await;
    let token = app
        .register("fourfold", accounts_of("alice", &xmpp, &keys))
        .await;
    app.logout(&token).await;

    // One login: every account starts at once and all four come online.
    let login = app.login("fourfold").await;
    let token = login["token"].as_str().unwrap().to_owned();
    let mut protocols: Vec<&str> = login["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["protocol"].as_str().unwrap())
        .collect();
    protocols.sort();
    assert_eq!(protocols, ["IRC", "MATRIX", "NOSTR", "XMPP"]);
    let handles = [
        "alice@localhost".to_owned(),
        "alice".to_owned(),
        "@alice:localhost".to_owned(),
        keys["alice"].public_hex.clone(),
    ];
    for handle in &handles {
        app.wait_for_account(&token, handle, "ONLINE").await;
    }

    // IRC keeps no contact list: bob is added by hand and watched from now on.
    let irc = app.account_id(&token, "alice").await;
    app.gql(
        Some(&token),
        "mutation($a: ID!) { addContact(accountId: $a, handle: \"Bob\", displayName: \"Bob\") { contacts { handle } } }",
        json!({ "a": irc }),
    )
    .await
    .data();

    // One list: bob on every network, from three server-side rosters and the IRC watch list.
    let list = app.contacts(&token).await;
    let bob_handles = [
        "bob@localhost".to_owned(),
        "bob".to_owned(),
        "@bob:localhost".to_owned(),
        keys["bob"].public_hex.clone(),
    ];
    let mut bobs = Vec::new();
    for handle in &bob_handles {
        let ids = ids_of(&list, handle);
        assert_eq!(ids.len(), 1, "bob as {handle} once in {list}");
        bobs.extend(ids);
    }
    app.gql(
        Some(&token),
        "mutation($ids: [ID!]!) { mergeContacts(name: \"Bob\", contactIds: $ids) { metaContactId } }",
        json!({ "ids": bobs }),
    )
    .await
    .data();

    let mut chat = open_socket(&app, &token).await;
    send(
        &mut chat,
        json!({ "id": "m", "type": "subscribe", "payload": { "query":
            "subscription { messageReceived { body network } }" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Bob goes online on one network at a time: the person follows him there, a message to
    // the person goes out there, and his reply from there joins the one conversation.
    for protocol in ["IRC", "MATRIX", "NOSTR", "XMPP"] {
        let mut session = bob_online(protocol, &xmpp, &keys).await;
        let person = wait_for_person(&app, &token, |p| {
            p["availability"] == "ONLINE" && p["protocol"] == protocol
        })
        .await;
        assert_eq!(person["name"], "Bob");
        let online: Vec<&str> = person["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["presence"]["availability"] == "ONLINE")
            .map(|m| m["protocol"].as_str().unwrap())
            .collect();
        assert_eq!(online, [protocol], "only there: {person}");

        let text = format!("hello bob on {protocol}");
        let sent = app
            .gql(
                Some(&token),
                "mutation($to: ID!, $text: String!) { sendMessage(to: $to, text: $text) { state network } }",
                json!({ "to": person["id"], "text": text }),
            )
            .await;
        assert_eq!(
            sent.data()["sendMessage"],
            json!({ "state": "SENT", "network": protocol }),
            "routed to where bob is"
        );
        let got = crate::common::wait_within(
            &mut session.events,
            Duration::from_secs(15),
            |e| matches!(e, ConnectorEvent::Message(m) if m.body == text),
        )
        .await;
        let ConnectorEvent::Message(got) = got else {
            unreachable!()
        };
        assert_eq!(got.from.as_str(), handles[index_of(protocol)], "from alice");

        let reply = format!("bob replies on {protocol}");
        session
            .control
            .send_text(&Handle::from_stored(&handles[index_of(protocol)]), &reply)
            .await
            .unwrap_or_else(|e| panic!("bob's reply on {protocol}: {e}"));
        let received = next_within(&mut chat, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("bob's reply on {protocol} never came"));
        assert_eq!(
            received["payload"]["data"]["messageReceived"],
            json!({ "body": reply, "network": protocol })
        );
        session.disconnect().await;
        wait_for_person(&app, &token, |p| p["availability"] != "ONLINE").await;
    }

    // One conversation with bob, across the four networks, in order, each message once.
    let person_id = wait_for_person(&app, &token, |_| true).await["id"].clone();
    let conversation = app
        .gql(
            Some(&token),
            "query($w: ID!) { conversation(with: $w, first: 20) { messages { body network direction } } }",
            json!({ "w": person_id }),
        )
        .await;
    let mut seen: Vec<String> = conversation.data()["conversation"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {} {}",
                m["direction"].as_str().unwrap(),
                m["network"].as_str().unwrap(),
                m["body"].as_str().unwrap()
            )
        })
        .collect();
    seen.reverse();
    let mut expected = Vec::new();
    for protocol in ["IRC", "MATRIX", "NOSTR", "XMPP"] {
        expected.push(format!("OUTGOING {protocol} hello bob on {protocol}"));
        expected.push(format!("INCOMING {protocol} bob replies on {protocol}"));
    }
    assert_eq!(seen, expected);

    // The XMPP server dies and comes back: only that account changes state.
    let xmpp_account = app.account_id(&token, "alice@localhost").await;
    let mut socket = open_socket(&app, &token).await;
    send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": { "query":
            "subscription { accountStatusChanged { id protocol status { state } } }" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    xmpp.kill();
    app.wait_for_account(&token, "alice@localhost", "RECONNECTING")
        .await;
    for handle in &handles[1..] {
        app.wait_for_account(&token, handle, "ONLINE").await;
    }
    xmpp.start().await;
    app.wait_for_account(&token, "alice@localhost", "ONLINE")
        .await;
    let states = states_until_online(&mut socket, &xmpp_account).await;
    assert_eq!(states[0], "RECONNECTING", "{states:?}");

    // Wrong credentials on every network: AUTH_FAILED, and nothing recorded.
    let events = app.event_count().await;
    let mut wrong = accounts_of("carol", &xmpp, &keys);
    for account in wrong.as_array_mut().unwrap() {
        account["secret"] = match account["protocol"].as_str().unwrap() {
            // A valid key that is not carol's: the relay would take it, the handle does not.
            "NOSTR" => json!(keys["dave"].secret_hex),
            _ => json!("not-the-password-1"),
        };
        let answer = app
            .gql(
                Some(&token),
                "mutation($a: AccountInput!) { bindAccount(account: $a) { account { id } } }",
                json!({ "a": account }),
            )
            .await;
        assert_eq!(answer.code(), "AUTH_FAILED", "{account}: {}", answer.0);
    }
    assert_eq!(
        app.event_count().await,
        events,
        "refused bindings record nothing"
    );
    app.stop().await;
}
