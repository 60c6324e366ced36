//! The Matrix connector against the real Synapse that scripts/test.sh starts on loopback, with an
//! independent client on the other side: plain HTTP calls to the client-server API written here,
//! to prove that presence and messages really cross and that `m.direct` is what the connector
//! says it is.
//!
//! The harness users ann, ben and cid (password `<name>-pw-7Q`; ann has DM rooms with ben and
//! cid, named "Ben" and "Cid") serve the tests that only read. Every test that changes presence,
//! rooms or `m.direct` registers throwaway users of its own with the server's registration shared
//! secret, so the tests run in parallel, and again on the same server, without meeting.

mod common;
use common::matrix_client::{enc, fresh_pals, password_of, register, server, Raw};
use common::{absent, complete, env};

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use switchboard::connectors::matrix::MatrixConnector;
use switchboard::connectors::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, ConnectorOptions,
    ConnectorRegistry, Credential, IncomingMessage, LiveSession, OutgoingMessage, RosterEntry,
    RosterSource,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;
use tokio::sync::mpsc;

const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Generous: a `/sync` long poll wakes as soon as something happens, normally within 0.1 s.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

fn domain() -> String {
    env("SWITCHBOARD_TEST_MATRIX_DOMAIN")
}

fn mxid(localpart: &str) -> String {
    format!("@{localpart}:{}", domain())
}

/// As the domain parses it; malformed ones as stored data could still hold them, since the
/// connector must refuse those itself.
fn handle(raw: &str) -> Handle {
    Handle::parse(Protocol::Matrix, raw).unwrap_or_else(|_| Handle::from_stored(raw))
}

fn login_as(localpart: &str, credential: Credential) -> AccountLogin {
    AccountLogin {
        protocol: Protocol::Matrix,
        server: server(),
        handle: handle(&mxid(localpart)),
        credential,
        contacts: Vec::new(),
        message_cursor: None,
    }
}

fn with_password(localpart: &str) -> AccountLogin {
    login_as(
        localpart,
        Credential::Password(Secret::new(password_of(localpart))),
    )
}

async fn connect(localpart: &str) -> LiveSession {
    MatrixConnector::default()
        .connect(&with_password(localpart), LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{localpart} cannot log in: {e}"))
}

/// A password login that fetches the messages since `cursor`.
async fn connect_from(localpart: &str, cursor: Option<&str>) -> LiveSession {
    let mut login = with_password(localpart);
    login.message_cursor = cursor.map(str::to_owned);
    MatrixConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{localpart} cannot log in from {cursor:?}: {e}"))
}

/// The messages a session reports before its first message cursor, and that cursor.
async fn until_cursor(
    events: &mut mpsc::Receiver<ConnectorEvent>,
) -> (Vec<IncomingMessage>, String) {
    let mut messages = Vec::new();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            match event {
                ConnectorEvent::MessageCursor(cursor) => return Some(cursor),
                ConnectorEvent::Message(message) => messages.push(message),
                other => seen.push(other),
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(cursor)) => (messages, cursor),
        Ok(None) => panic!("the session ended; messages {messages:?}, other events {seen:?}"),
        Err(_) => panic!("no message cursor in time; messages {messages:?}, other events {seen:?}"),
    }
}

async fn connect_err(login: &AccountLogin) -> ConnectorError {
    MatrixConnector::default()
        .connect(login, LOGIN_TIMEOUT)
        .await
        .expect_err("login should fail")
}

/// Waits for the first event that `wanted` accepts; panics with everything seen otherwise.
async fn wait_for(
    events: &mut mpsc::Receiver<ConnectorEvent>,
    wanted: impl Fn(&ConnectorEvent) -> bool,
) -> ConnectorEvent {
    common::wait_within(events, EVENT_TIMEOUT, wanted).await
}

fn presence_of(who: &str, availability: Availability) -> impl Fn(&ConnectorEvent) -> bool {
    common::presence_is(handle(who), availability)
}

fn message_from(who: &str) -> impl Fn(&ConnectorEvent) -> bool {
    let who = handle(who);
    move |event| matches!(event, ConnectorEvent::Message(message) if message.from == who)
}

/// The text messages from `sender` in one sync answer, by room.
fn texts_from(sync: &Value, sender: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Some(rooms) = sync.pointer("/rooms/join").and_then(Value::as_object) {
        for (room, joined) in rooms {
            let events = joined.pointer("/timeline/events").and_then(Value::as_array);
            for event in events.into_iter().flatten() {
                if event["type"] == "m.room.message" && event["sender"] == sender {
                    let body = event["content"]["body"].as_str().unwrap_or_default();
                    found.push((room.clone(), body.to_owned()));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn a_password_login_hands_back_a_token_that_logs_in_again() {
    let connector = MatrixConnector::default();
    let started = Instant::now();
    let session = connector
        .connect(&with_password("ann"), LOGIN_TIMEOUT)
        .await
        .expect("password login");
    let password_login = started.elapsed();
    let expected = vec![
        RosterEntry {
            handle: handle(&mxid("ben")),
            display_name: Some("Ben".to_owned()),
        },
        RosterEntry {
            handle: handle(&mxid("cid")),
            display_name: Some("Cid".to_owned()),
        },
    ];
    assert_eq!(complete(&session.roster), expected);
    let token = session
        .session_credential
        .clone()
        .expect("a password login hands back the access token");
    assert!(!token.expose().is_empty());
    assert!(!token.expose().contains("ann-pw-7Q"));
    session.disconnect().await;

    // The token alone logs in, and the session still works: same roster, nothing new to keep.
    let started = Instant::now();
    let session = connector
        .connect(
            &login_as("ann", Credential::Session(token.clone())),
            LOGIN_TIMEOUT,
        )
        .await
        .expect("token login");
    let token_login = started.elapsed();
    assert_eq!(complete(&session.roster), expected);
    assert!(session.session_credential.is_none());
    session.disconnect().await;
    eprintln!("login of ann: password {password_login:?}, token {token_login:?}");

    // close() did not log the token out.
    let raw = Raw {
        http: reqwest::Client::new(),
        user: mxid("ann"),
        token: token.expose().to_owned(),
        since: None,
    };
    let who = raw.call(Method::GET, "account/whoami", None).await;
    assert_eq!(who["user_id"], mxid("ann"));
    raw.logout().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let login = login_as("ann", Credential::Password(Secret::new("not-the-password")));
    let error = connect_err(&login).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("not-the-password"));
}

#[tokio::test]
async fn an_unknown_user_is_refused_like_a_wrong_password() {
    let error = connect_err(&with_password("nobody-here")).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
}

#[tokio::test]
async fn a_revoked_token_is_refused() {
    let session = connect("cid").await;
    let token = session.session_credential.clone().unwrap();
    session.disconnect().await;
    let raw = Raw {
        http: reqwest::Client::new(),
        user: mxid("cid"),
        token: token.expose().to_owned(),
        since: None,
    };
    raw.logout().await;

    let error = connect_err(&login_as("cid", Credential::Session(token))).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
}

#[tokio::test]
async fn a_token_of_another_user_is_refused() {
    let ben = Raw::login("ben").await;
    let login = login_as("ann", Credential::Session(Secret::new(ben.token.clone())));
    let error = connect_err(&login).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
    ben.logout().await;
}

#[tokio::test]
async fn a_token_revoked_during_the_session_disconnects_it() {
    let (pia, _, _) = fresh_pals("Pia", "Quin").await;
    let mut session = connect(&pia).await;
    let raw = Raw {
        http: reqwest::Client::new(),
        user: mxid(&pia),
        token: session
            .session_credential
            .clone()
            .unwrap()
            .expose()
            .to_owned(),
        since: None,
    };
    raw.logout().await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(&event, ConnectorEvent::Disconnected { reason } if reason.contains("access token")),
        "{event:?}"
    );
    // Nothing after the disconnection; the channel ends.
    let rest = tokio::time::timeout(EVENT_TIMEOUT, session.events.recv()).await;
    assert_eq!(rest.expect("the channel ends"), None);
    session.control.close().await;
}

#[tokio::test]
async fn an_unreachable_server_is_unreachable() {
    let mut login = with_password("ann");
    login.server = "http://127.0.0.1:1".to_owned();
    let error = connect_err(&login).await;
    assert!(matches!(error, ConnectorError::Unreachable(_)), "{error:?}");
    assert!(!error.to_string().contains("ann-pw-7Q"));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts TCP but never answers HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut login = with_password("ann");
    login.server = format!("http://{}", listener.local_addr().unwrap());
    let started = Instant::now();
    let error = MatrixConnector::default()
        .connect(&login, Duration::from_millis(300))
        .await
        .expect_err("login should time out");
    assert!(
        matches!(&error, ConnectorError::Unreachable(reason) if reason == "timed out"),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn something_else_than_a_homeserver_is_a_protocol_error() {
    // An HTTP server that answers every request with 404 and no JSON.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot here!")
                .await;
        }
    });
    let mut login = with_password("ann");
    login.server = format!("http://{address}");
    let error = connect_err(&login).await;
    assert!(matches!(error, ConnectorError::Protocol(_)), "{error:?}");
}

#[tokio::test]
async fn malformed_settings_are_invalid_accounts() {
    for bad_handle in ["ann", "ann@localhost", "@ann", "@:localhost"] {
        let mut login = with_password("ann");
        login.handle = handle(bad_handle);
        let error = connect_err(&login).await;
        assert!(
            matches!(error, ConnectorError::InvalidAccount(_)),
            "{bad_handle}: {error:?}"
        );
    }
    for bad_server in [
        "127.0.0.1:8008",
        "localhost",
        "ftp://127.0.0.1",
        // Plain HTTP beyond loopback would send the password in the clear; refused before
        // any traffic.
        "http://matrix.example.org",
    ] {
        let mut login = with_password("ann");
        login.server = bad_server.to_owned();
        let error = connect_err(&login).await;
        assert!(
            matches!(error, ConnectorError::InvalidAccount(_)),
            "{bad_server}: {error:?}"
        );
    }
    let mut login = with_password("ann");
    login.protocol = Protocol::Xmpp;
    assert!(matches!(
        connect_err(&login).await,
        ConnectorError::InvalidAccount(_)
    ));
}

#[tokio::test]
async fn presence_crosses() {
    let (pia, quin, _) = fresh_pals("Pia", "Quin").await;
    let mut session = connect(&pia).await;
    assert_eq!(
        complete(&session.roster),
        vec![RosterEntry {
            handle: handle(&mxid(&quin)),
            display_name: Some("Quin".to_owned()),
        }]
    );
    // Quin never logged in since registration: reported offline once after login.
    let event = wait_for(&mut session.events, |_| true).await;
    assert_eq!(
        event,
        ConnectorEvent::Presence {
            handle: handle(&mxid(&quin)),
            availability: Availability::Offline,
            status: None,
        }
    );

    let raw = Raw::login(&quin).await;
    raw.set_presence("unavailable", Some("in a meeting")).await;
    let event = wait_for(
        &mut session.events,
        presence_of(&mxid(&quin), Availability::Away),
    )
    .await;
    assert_eq!(
        event,
        ConnectorEvent::Presence {
            handle: handle(&mxid(&quin)),
            availability: Availability::Away,
            status: Some("in a meeting".to_owned()),
        }
    );
    raw.set_presence("online", None).await;
    wait_for(
        &mut session.events,
        presence_of(&mxid(&quin), Availability::Online),
    )
    .await;
    raw.set_presence("offline", None).await;
    wait_for(
        &mut session.events,
        presence_of(&mxid(&quin), Availability::Offline),
    )
    .await;

    // And the other way: the session made Pia online for Quin.
    assert_eq!(raw.presence_of(&mxid(&pia)).await, "online");
    session.disconnect().await;
    raw.logout().await;
}

#[tokio::test]
async fn contacts_already_online_are_reported_after_login() {
    let (pia, quin, _) = fresh_pals("Pia", "Quin").await;
    let raw = Raw::login(&quin).await;
    raw.set_presence("online", Some("around")).await;

    let mut session = connect(&pia).await;
    let event = wait_for(&mut session.events, |_| true).await;
    assert_eq!(
        event,
        ConnectorEvent::Presence {
            handle: handle(&mxid(&quin)),
            availability: Availability::Online,
            status: Some("around".to_owned()),
        }
    );
    session.disconnect().await;
    raw.logout().await;
}

#[tokio::test]
async fn messages_cross_both_ways() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let mut session = connect(&pia).await;
    let mut raw = Raw::login(&quin).await;

    let before = chrono::Utc::now();
    raw.send_text(&room, "hello from the other side").await;
    let event = wait_for(&mut session.events, message_from(&mxid(&quin))).await;
    let ConnectorEvent::Message(message) = event else {
        unreachable!()
    };
    assert_eq!(message.body, "hello from the other side");
    let skew = (message.sent_at - before).num_seconds().abs();
    assert!(skew < 60, "sent_at {} vs {before}", message.sent_at);

    session
        .control
        .send_text(&handle(&mxid(&quin)), "and hello back")
        .await
        .expect("send");
    let pia_id = mxid(&pia);
    let (in_room, body) = raw
        .sync_until(|sync| texts_from(sync, &pia_id).into_iter().next())
        .await;
    assert_eq!(
        (in_room.as_str(), body.as_str()),
        (room.as_str(), "and hello back")
    );

    // Our own message does not come back as an incoming one.
    raw.send_text(&room, "second").await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Message(_))
    })
    .await;
    assert!(
        matches!(&event, ConnectorEvent::Message(m) if m.body == "second"),
        "{event:?}"
    );
    session.disconnect().await;
    raw.logout().await;
}

#[tokio::test]
async fn history_and_encrypted_messages_are_not_reported() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let raw = Raw::login(&quin).await;
    raw.send_text(&room, "sent before the login").await;

    let mut session = connect(&pia).await;
    raw.send(
        &room,
        "m.room.encrypted",
        json!({
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg",
            "device_id": "RJYKSTBOIE",
            "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
            "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
        }),
    )
    .await;
    raw.send_text(&room, "sent after the login").await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Message(_))
    })
    .await;
    assert!(
        matches!(&event, ConnectorEvent::Message(m)
            if m.body == "sent after the login" && m.from == handle(&mxid(&quin))),
        "{event:?}"
    );
    session.disconnect().await;
    raw.logout().await;
}

/// Switchboard sends a message again with the same id when it does not know whether the first
/// attempt arrived (a lost answer, a crash): the homeserver keeps one event for it, also when
/// the retry comes from a new session with the same access token.
#[tokio::test]
async fn a_retried_message_is_one_event_with_one_id() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let session = connect(&pia).await;
    let token = session.session_credential.clone().unwrap();
    let message = |id: &str| OutgoingMessage {
        to: handle(&mxid(&quin)),
        body: "only once".to_owned(),
        id: id.to_owned(),
        created_at: chrono::Utc::now(),
    };
    let once = message(&uuid::Uuid::now_v7().simple().to_string());
    let first = session.control.send_message(&once).await.expect("send");
    let event_id = first.network_id.clone().expect("the event id");
    assert!(event_id.starts_with('$'), "{event_id}");
    let again = session.control.send_message(&once).await.expect("retry");
    assert_eq!(again, first);
    session.disconnect().await;

    let later = MatrixConnector::default()
        .connect(&login_as(&pia, Credential::Session(token)), LOGIN_TIMEOUT)
        .await
        .expect("token login");
    let after_a_crash = later.control.send_message(&once).await.expect("retry");
    assert_eq!(after_a_crash, first);
    // The same text under another id is another message.
    let other = later
        .control
        .send_message(&message(&uuid::Uuid::now_v7().simple().to_string()))
        .await
        .expect("send");
    let other_id = other.network_id.expect("the event id");
    assert_ne!(other_id, event_id);
    later.disconnect().await;

    let raw = Raw::login(&quin).await;
    let events = raw.room_messages(&room, 50).await;
    let ids: Vec<&str> = events
        .iter()
        .filter(|event| event["content"]["body"] == "only once")
        .map(|event| event["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [event_id.as_str(), other_id.as_str()]);
    raw.logout().await;
}

/// The cursor a session reports brings the next login what arrived in between, once.
#[tokio::test]
async fn messages_sent_while_away_are_reported_at_the_next_login() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let mut session = connect(&pia).await;
    let (history, cursor) = until_cursor(&mut session.events).await;
    assert_eq!(history, Vec::new());
    session.disconnect().await;

    let raw = Raw::login(&quin).await;
    let mut sent = Vec::new();
    for body in ["while away", "still away", "back soon?"] {
        let id = raw.send_text(&room, body).await;
        let event = raw
            .call(
                Method::GET,
                &format!("rooms/{}/event/{}", enc(&room), enc(&id)),
                None,
            )
            .await;
        let sent_at = event["origin_server_ts"].as_i64().unwrap();
        sent.push((id, body.to_owned(), sent_at));
    }
    // Reported with the time they were sent, not the time they were read.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut session = connect_from(&pia, Some(&cursor)).await;
    let (messages, newer) = until_cursor(&mut session.events).await;
    let reported: Vec<(String, String, i64)> = messages
        .iter()
        .map(|m| {
            assert_eq!(m.from, handle(&mxid(&quin)));
            (
                m.id.clone().expect("the event id"),
                m.body.clone(),
                m.sent_at.timestamp_millis(),
            )
        })
        .collect();
    assert_eq!(reported, sent);
    assert_ne!(newer, cursor);
    // Live messages still come as before.
    raw.send_text(&room, "live").await;
    let event = wait_for(&mut session.events, message_from(&mxid(&quin))).await;
    assert!(
        matches!(&event, ConnectorEvent::Message(m) if m.body == "live"),
        "{event:?}"
    );
    // The cursor moves on at once after a message.
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::MessageCursor(_))
    })
    .await;
    let ConnectorEvent::MessageCursor(latest) = event else {
        unreachable!()
    };
    session.disconnect().await;

    // From the newest cursor, nothing is reported again.
    let mut session = connect_from(&pia, Some(&latest)).await;
    let (again, _) = until_cursor(&mut session.events).await;
    assert_eq!(again, Vec::new());
    session.disconnect().await;
    raw.logout().await;
}

/// More messages while away than one sync's timeline holds: the gap is fetched back.
#[tokio::test]
async fn a_long_absence_is_fetched_back_in_full() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let raw = Raw::login(&quin).await;
    // Before the cursor: the gap's fetch must stop short of it.
    raw.send_text(&room, "seen before").await;
    let mut session = connect(&pia).await;
    let (_, cursor) = until_cursor(&mut session.events).await;
    session.disconnect().await;

    // More than the first sync's timeline (20) and than one page of the gap (40).
    let mut sent = Vec::new();
    for n in 0..70 {
        let body = format!("message {n}");
        sent.push((raw.send_text(&room, &body).await, body));
    }

    let mut session = connect_from(&pia, Some(&cursor)).await;
    let (messages, _) = until_cursor(&mut session.events).await;
    let reported: Vec<(String, String)> = messages
        .into_iter()
        .map(|m| (m.id.expect("the event id"), m.body))
        .collect();
    assert_eq!(reported.len(), sent.len(), "{reported:?}");
    assert_eq!(reported, sent);
    session.disconnect().await;
    raw.logout().await;
}

#[tokio::test]
async fn a_first_login_reports_no_history_but_a_cursor() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let raw = Raw::login(&quin).await;
    raw.send_text(&room, "sent before the first login").await;

    let mut session = connect_from(&pia, None).await;
    let (history, cursor) = until_cursor(&mut session.events).await;
    assert_eq!(history, Vec::new());
    assert!(!cursor.is_empty());
    session.disconnect().await;

    // The cursor stands after that history: it is not reported later either.
    let mut session = connect_from(&pia, Some(&cursor)).await;
    let (history, _) = until_cursor(&mut session.events).await;
    assert_eq!(history, Vec::new());
    session.disconnect().await;
    raw.logout().await;
}

#[tokio::test]
async fn a_cursor_the_server_refuses_logs_in_without_history() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let raw = Raw::login(&quin).await;
    raw.send_text(&room, "sent before the login").await;

    let mut session = connect_from(&pia, Some("not-a-sync-token")).await;
    assert_eq!(
        complete(&session.roster),
        vec![RosterEntry {
            handle: handle(&mxid(&quin)),
            display_name: Some("Quin".to_owned()),
        }]
    );
    let (history, cursor) = until_cursor(&mut session.events).await;
    assert_eq!(history, Vec::new());
    assert!(
        !cursor.is_empty() && cursor != "not-a-sync-token",
        "{cursor}"
    );
    session.disconnect().await;
    raw.logout().await;
}

#[tokio::test]
async fn sending_to_someone_without_a_dm_room_creates_one() {
    let (rae, sam) = tokio::join!(register("rae", "Rae"), register("sam", "Sam"));
    let mut session = connect(&rae).await;
    // A new account has no m.direct yet: nothing known, which the DM below changes.
    absent(&session.roster);
    let sam_id = mxid(&sam);

    session
        .control
        .send_text(&handle(&sam_id), "hi Sam")
        .await
        .expect("send to a new contact");
    // The new DM room made Sam a contact.
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(_))
    })
    .await;
    assert_eq!(
        event,
        ConnectorEvent::RosterChanged(vec![RosterEntry {
            handle: handle(&sam_id),
            display_name: Some("Sam".to_owned()),
        }])
    );
    wait_for(
        &mut session.events,
        presence_of(&sam_id, Availability::Offline),
    )
    .await;

    // Sam is invited to a room marked as a DM, joins it and reads the message.
    let mut raw = Raw::login(&sam).await;
    let rae_id = mxid(&rae);
    let room = raw
        .sync_until(|sync| {
            let invites = sync.pointer("/rooms/invite")?.as_object()?;
            invites.iter().find_map(|(room, invite)| {
                let events = invite.pointer("/invite_state/events")?.as_array()?;
                events
                    .iter()
                    .any(|event| {
                        event["type"] == "m.room.member"
                            && event["sender"] == rae_id.as_str()
                            && event["state_key"] == sam_id.as_str()
                            && event["content"]["is_direct"] == true
                    })
                    .then(|| room.clone())
            })
        })
        .await;
    raw.join(&room).await;
    let (in_room, body) = raw
        .sync_until(|sync| texts_from(sync, &rae_id).into_iter().next())
        .await;
    assert_eq!((in_room.as_str(), body.as_str()), (room.as_str(), "hi Sam"));

    // Rae's m.direct lists the room; the next message goes to the same room.
    let rae_raw = Raw::login(&rae).await;
    assert_eq!(
        rae_raw.direct().await,
        json!({ sam_id.clone(): [room.clone()] })
    );
    session
        .control
        .send_text(&handle(&sam_id), "again")
        .await
        .expect("second send");
    let (in_room, body) = raw
        .sync_until(|sync| texts_from(sync, &rae_id).into_iter().next())
        .await;
    assert_eq!((in_room.as_str(), body.as_str()), (room.as_str(), "again"));
    session.disconnect().await;
    tokio::join!(raw.logout(), rae_raw.logout());
}

#[tokio::test]
async fn sending_to_a_user_that_does_not_exist_is_refused() {
    let rae = register("rae", "Rae").await;
    let session = connect(&rae).await;
    let error = session
        .control
        .send_text(&handle(&mxid("nobody-at-all")), "hello?")
        .await
        .expect_err("no such user");
    assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");
    session.disconnect().await;
}

#[tokio::test]
async fn a_strangers_dm_invitation_is_a_request_until_accepted() {
    let (rae, sam) = tokio::join!(register("rae", "Rae"), register("sam", "Sam"));
    let mut session = connect(&rae).await;
    // A new account has no m.direct yet: nothing known.
    absent(&session.roster);

    let raw = Raw::login(&sam).await;
    let room = raw.create_dm(&mxid(&rae)).await;
    raw.send_text(&room, "hello, stranger here").await;
    let event = wait_for(&mut session.events, |event| {
        matches!(
            event,
            ConnectorEvent::Invitation(_) | ConnectorEvent::RosterChanged(_)
        )
    })
    .await;
    let ConnectorEvent::Invitation(invitation) = event else {
        panic!("a stranger's invitation is a request, not a contact: {event:?}");
    };
    assert_eq!(invitation.from, handle(&mxid(&sam)));
    assert_eq!(invitation.id, room);
    // Not joined, not listed: Rae has no m.direct, and the message cannot be read yet.
    let rae_raw = Raw::login(&rae).await;
    assert_eq!(rae_raw.direct().await, json!({}));

    session
        .control
        .accept(&invitation.from, std::slice::from_ref(&invitation.id))
        .await
        .expect("accepting the invitation");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let (mut contact, mut message) = (false, false);
    while !(contact && message) {
        let event = tokio::time::timeout_at(deadline, session.events.recv())
            .await
            .unwrap_or_else(|_| panic!("accepted, then only {seen:?}"))
            .expect("the session runs");
        match &event {
            ConnectorEvent::RosterChanged(roster) => {
                contact = roster
                    == &vec![RosterEntry {
                        handle: handle(&mxid(&sam)),
                        display_name: Some("Sam".to_owned()),
                    }];
            }
            ConnectorEvent::Message(m) if m.body == "hello, stranger here" => {
                assert_eq!(m.from, handle(&mxid(&sam)));
                message = true;
            }
            _ => {}
        }
        seen.push(event);
    }
    assert_eq!(
        rae_raw.direct().await,
        json!({ mxid(&sam): [room.clone()] })
    );

    raw.send_text(&room, "welcome").await;
    let event = wait_for(&mut session.events, message_from(&mxid(&sam))).await;
    assert!(
        matches!(&event, ConnectorEvent::Message(m) if m.body == "welcome"),
        "{event:?}"
    );
    session.disconnect().await;
    tokio::join!(raw.logout(), rae_raw.logout());
}

#[tokio::test]
async fn a_dm_invitation_from_a_contact_switchboard_holds_is_joined() {
    let (rae, sam) = tokio::join!(register("rae", "Rae"), register("sam", "Sam"));
    let mut login = with_password(&rae);
    login.contacts = vec![RosterEntry {
        handle: handle(&mxid(&sam)),
        display_name: None,
    }];
    let mut session = MatrixConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect("login");

    let raw = Raw::login(&sam).await;
    let room = raw.create_dm(&mxid(&rae)).await;
    let event = wait_for(&mut session.events, |event| {
        matches!(
            event,
            ConnectorEvent::Invitation(_) | ConnectorEvent::RosterChanged(_)
        )
    })
    .await;
    assert_eq!(
        event,
        ConnectorEvent::RosterChanged(vec![RosterEntry {
            handle: handle(&mxid(&sam)),
            display_name: Some("Sam".to_owned()),
        }])
    );
    let rae_raw = Raw::login(&rae).await;
    assert_eq!(
        rae_raw.direct().await,
        json!({ mxid(&sam): [room.clone()] })
    );
    session.disconnect().await;
    tokio::join!(raw.logout(), rae_raw.logout());
}

#[tokio::test]
async fn close_is_clean_and_idempotent() {
    let (pia, quin, _) = fresh_pals("Pia", "Quin").await;
    let mut session = connect(&pia).await;
    let token = session.session_credential.clone().unwrap();
    let raw = Raw::login(&quin).await;
    assert_eq!(raw.presence_of(&mxid(&pia)).await, "online");

    let started = Instant::now();
    session.control.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // The task is gone, and its event sender with it; no Disconnected after a close.
    let rest = tokio::time::timeout(EVENT_TIMEOUT, async {
        let mut rest = Vec::new();
        while let Some(event) = session.events.recv().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("the event channel ends after close");
    assert!(
        !rest
            .iter()
            .any(|event| matches!(event, ConnectorEvent::Disconnected { .. })),
        "{rest:?}"
    );
    let started = Instant::now();
    session.control.close().await; // idempotent, and immediate the second time
    assert!(started.elapsed() < Duration::from_secs(1));
    let error = session
        .control
        .send_text(&handle(&mxid(&quin)), "too late")
        .await
        .expect_err("closed");
    assert!(matches!(error, ConnectorError::Closed), "{error:?}");

    // Quin sees Pia offline; the token still works for the next login.
    assert_eq!(raw.presence_of(&mxid(&pia)).await, "offline");
    let again = MatrixConnector::default()
        .connect(&login_as(&pia, Credential::Session(token)), LOGIN_TIMEOUT)
        .await
        .expect("the token outlives close()");
    drop(again);
    raw.logout().await;
}

#[tokio::test]
async fn dropping_the_session_sets_presence_offline() {
    let (pia, quin, _) = fresh_pals("Pia", "Quin").await;
    let session = connect(&pia).await;
    let raw = Raw::login(&quin).await;
    assert_eq!(raw.presence_of(&mxid(&pia)).await, "online");
    drop(session);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while raw.presence_of(&mxid(&pia)).await != "offline" {
        assert!(Instant::now() < deadline, "Pia stays online after the drop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    raw.logout().await;
}

#[tokio::test]
async fn changes_of_m_direct_and_of_names_are_reported() {
    let (pia, quin, room) = fresh_pals("Pia", "Quin").await;
    let mut session = connect(&pia).await;
    let quin_id = mxid(&quin);
    let quin_entry = |name: &str| RosterEntry {
        handle: handle(&quin_id),
        display_name: Some(name.to_owned()),
    };
    assert_eq!(complete(&session.roster), vec![quin_entry("Quin")]);

    // Pia's other client drops Quin from m.direct, then puts Quin back.
    let other_client = Raw::login(&pia).await;
    let direct_path = format!("user/{}/account_data/m.direct", enc(&other_client.user));
    other_client
        .call(Method::PUT, &direct_path, Some(json!({})))
        .await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(_))
    })
    .await;
    assert_eq!(event, ConnectorEvent::RosterChanged(Vec::new()));
    other_client
        .call(
            Method::PUT,
            &direct_path,
            Some(json!({ quin_id.clone(): [room] })),
        )
        .await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(_))
    })
    .await;
    assert_eq!(
        event,
        ConnectorEvent::RosterChanged(vec![quin_entry("Quin")])
    );

    // Quin renames themself; the member event in the DM room carries the new name.
    let raw = Raw::login(&quin).await;
    raw.call(
        Method::PUT,
        &format!("profile/{}/displayname", enc(&quin_id)),
        Some(json!({ "displayname": "Quinn Q." })),
    )
    .await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(_))
    })
    .await;
    assert_eq!(
        event,
        ConnectorEvent::RosterChanged(vec![quin_entry("Quinn Q.")])
    );
    session.disconnect().await;
    tokio::join!(raw.logout(), other_client.logout());
}

/// An account without `m.direct` has not said who its contacts are: the roster is absent, not
/// empty, which would make every contact depart. An `m.direct` that lists nobody is an empty
/// roster; set during a session whose roster was absent, it is reported although nobody is in
/// it, since the roster is known from then on.
#[tokio::test]
async fn no_m_direct_is_an_absent_roster_and_an_empty_one_a_complete_one() {
    let ula = register("ula", "Ula").await;
    let mut session = connect(&ula).await;
    let reason = absent(&session.roster);
    assert!(reason.contains("m.direct"), "{reason}");

    // Ula's other client writes an m.direct that lists nobody.
    let other_client = Raw::login(&ula).await;
    other_client
        .call(
            Method::PUT,
            &format!("user/{}/account_data/m.direct", enc(&other_client.user)),
            Some(json!({})),
        )
        .await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(_))
    })
    .await;
    assert_eq!(event, ConnectorEvent::RosterChanged(Vec::new()));
    session.disconnect().await;

    let session = connect(&ula).await;
    assert_eq!(complete(&session.roster), Vec::new());
    session.disconnect().await;
    other_client.logout().await;
}

#[tokio::test]
async fn a_homeserver_that_keeps_failing_disconnects_the_session() {
    let server = failing_homeserver().await;
    let mut login = with_password("frank");
    login.server = server;
    let mut session = MatrixConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect("the scripted login");
    // Its first sync has no m.direct.
    absent(&session.roster);
    // The first sync's position is where messages start; no sync gets beyond it.
    let event = wait_for(&mut session.events, |_| true).await;
    assert_eq!(event, ConnectorEvent::MessageCursor("s1".to_owned()));
    // A few retries with short pauses (about 6 s in all), then the session gives up.
    let event = wait_for(&mut session.events, |_| true).await;
    assert!(
        matches!(&event, ConnectorEvent::Disconnected { reason } if reason.contains("502")),
        "{event:?}"
    );
    let rest = tokio::time::timeout(EVENT_TIMEOUT, session.events.recv()).await;
    assert_eq!(rest.expect("the channel ends"), None);
    session.control.close().await;
}

/// A scripted homeserver: logs anyone in, answers the first `/sync` with an empty account and
/// every later one with 502 Bad Gateway, the way a homeserver behind a dead proxy would.
async fn failing_homeserver() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve(mut socket: tokio::net::TcpStream) {
        let mut received: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let head_end = loop {
                if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => received.extend_from_slice(&chunk[..read]),
                }
            };
            let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            while received.len() < head_end + length {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => received.extend_from_slice(&chunk[..read]),
                }
            }
            received.drain(..head_end + length);
            let target = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let (status, body) = if target.contains("/login") {
                (
                    "200 OK",
                    r#"{"user_id":"@frank:localhost","access_token":"scripted","device_id":"D"}"#,
                )
            } else if target.contains("/sync") && !target.contains("since=") {
                ("200 OK", r#"{"next_batch":"s1"}"#)
            } else if target.contains("/sync") {
                (
                    "502 Bad Gateway",
                    r#"{"errcode":"M_UNKNOWN","error":"upstream down"}"#,
                )
            } else {
                ("200 OK", "{}")
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if socket.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    format!("http://{address}")
}

/// The same Synapse over HTTPS, and the PEM file of the CA that issued its certificate (for
/// "localhost").
fn tls_server() -> (String, Vec<u8>) {
    let server = env("SWITCHBOARD_TEST_MATRIX_TLS_SERVER");
    let ca = env("SWITCHBOARD_TEST_MATRIX_TLS_CA");
    let pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("cannot read {ca}: {e}"));
    (server, pem)
}

#[tokio::test]
async fn https_with_the_ca_trusted_logs_in() {
    let (server, ca) = tls_server();
    let connector = MatrixConnector::with_extra_roots(&ca).expect("the test CA is usable");
    let mut login = with_password("ben");
    login.server = server;
    let session = connector
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ben cannot log in over HTTPS: {e}"));
    assert_eq!(
        complete(&session.roster),
        vec![RosterEntry {
            handle: handle(&mxid("ann")),
            display_name: Some("Ann".to_owned()),
        }]
    );
    let token = session.session_credential.clone().unwrap();
    session.disconnect().await;
    Raw {
        http: reqwest::Client::new(),
        user: mxid("ben"),
        token: token.expose().to_owned(),
        since: None,
    }
    .logout()
    .await;
}

#[tokio::test]
async fn https_with_an_untrusted_certificate_is_unreachable() {
    let (server, _) = tls_server();
    let mut login = with_password("ben");
    login.server = server;
    // Public web PKI roots only: the throwaway CA is not among them.
    let error = connect_err(&login).await;
    assert!(
        matches!(&error, ConnectorError::Unreachable(reason) if reason.contains("UnknownIssuer")),
        "{error:?}"
    );
    assert!(!error.to_string().contains("ben-pw-7Q"));
}

#[tokio::test]
async fn https_checks_the_certificate_against_the_server_name() {
    let (server, ca) = tls_server();
    let connector = MatrixConnector::with_extra_roots(&ca).expect("the test CA is usable");
    let mut login = with_password("ben");
    // The same server, but by an address the certificate (for "localhost") does not name.
    login.server = server.replace("localhost", "127.0.0.1");
    let error = connector
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect_err("a certificate for another name must fail");
    assert!(
        matches!(&error, ConnectorError::Unreachable(reason) if reason.contains("certificate not valid for name")),
        "{error:?}"
    );
}

#[test]
fn extra_roots_must_be_pem_certificates() {
    let (_, ca) = tls_server();
    assert!(MatrixConnector::with_extra_roots(&ca).is_ok());
    for bad in [
        &b""[..],
        b"not a certificate",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        assert!(
            MatrixConnector::with_extra_roots(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn the_registry_has_the_matrix_connector_with_server_rosters() {
    let registry = ConnectorRegistry::with_builtin(&ConnectorOptions::default()).unwrap();
    let connector = registry.get(Protocol::Matrix).expect("built in");
    assert_eq!(connector.protocol(), Protocol::Matrix);
    assert_eq!(connector.roster_source(), RosterSource::Server);
}
