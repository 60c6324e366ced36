//! The Nostr connector against the real relay (nostr-relay, NIP-42 login required) that
//! scripts/test.sh starts on loopback, with an independent client on the other side: the raw
//! websocket client of tests/common/nostr_client.rs.
//!
//! Identities (scripts/servers/nostr.sh): ann, ben, cid, dot and eve each follow the other four
//! (petnames "Ann", "Ben", …); `stranger` may log in but is granted nothing. The tests run in
//! parallel, so each connector login uses an identity of its own: ann (login and close), cid
//! (messages), dot (follow list changes), eve (presence); ben only ever appears as the raw peer,
//! so nobody else changes his status. The last test uses a scripted relay to lose the
//! connection on demand.
//!
//! Profiles: fay follows gil, hal and joe (ivy too, for a while), who publish kind-0 metadata;
//! their NIP-05 identifiers are `…@localhost`, served by an HTTPS server in the test with the
//! certificate scripts/servers/nostr.sh makes for it, which the connector dials through its
//! `nip05_resolve` option: the connector's real https path, certificate check included.
//!
//! Chat: ray sends the same message twice, tom logs out and in again with his message cursor,
//! una logs in for the first time; sue is the raw peer on the other side of all three.

mod common;
use common::nostr_client::{
    capitalised, follow_list_of, hex, identity, next_json, relay, rumor_of, send_json, Nip05Server,
    Peer, EVENT_TIMEOUT,
};
use common::{complete, env};

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use nostr::nips::nip59::UnwrappedGift;
use nostr::{Event, EventBuilder, Kind, Tag, Timestamp};
use serde_json::json;
use switchboard::connectors::nostr::{NostrConnector, MESSAGE_MARGIN};
use switchboard::connectors::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, ConnectorOptions,
    ContactProfile, Credential, IncomingMessage, LiveSession, OutgoingMessage, RosterEntry,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::domain::matching::Profile;
use switchboard::secret::Secret;
use tokio::sync::mpsc;

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The handle the connector reports for a test identity: its public key in lower-case hex.
fn handle(name: &str) -> Handle {
    Handle::parse(Protocol::Nostr, &hex(name)).unwrap()
}

fn login_with(server: &str, handle: &str, secret: &str) -> AccountLogin {
    AccountLogin {
        protocol: Protocol::Nostr,
        server: server.to_owned(),
        // What the domain refuses can still reach a connector from stored data: it must say so
        // itself, hence from_stored for malformed handles.
        handle: Handle::parse(Protocol::Nostr, handle)
            .unwrap_or_else(|_| Handle::from_stored(handle)),
        credential: Credential::Password(Secret::new(secret)),
        contacts: Vec::new(),
        message_cursor: None,
    }
}

fn login_as(name: &str) -> AccountLogin {
    let who = identity(name);
    login_with(
        &relay(),
        &who.keys.public_key().to_hex(),
        who.keys.secret_key().to_secret_hex().as_str(),
    )
}

async fn connect(name: &str) -> LiveSession {
    NostrConnector::default()
        .connect(&login_as(name), LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{name} cannot log in: {e}"))
}

async fn connect_err(login: &AccountLogin) -> ConnectorError {
    NostrConnector::default()
        .connect(login, LOGIN_TIMEOUT)
        .await
        .expect_err("login should fail")
}

fn pals_of(name: &str) -> Vec<RosterEntry> {
    ["ann", "ben", "cid", "dot", "eve"]
        .into_iter()
        .filter(|pal| *pal != name)
        .map(|pal| RosterEntry {
            handle: handle(pal),
            display_name: Some(capitalised(pal)),
        })
        .collect()
}

fn sorted(mut roster: Vec<RosterEntry>) -> Vec<RosterEntry> {
    roster.sort_by(|a, b| a.handle.cmp(&b.handle));
    roster
}

/// Waits for the first event that `wanted` accepts; panics with everything seen otherwise.
async fn wait_for(
    events: &mut mpsc::Receiver<ConnectorEvent>,
    wanted: impl Fn(&ConnectorEvent) -> bool,
) -> ConnectorEvent {
    common::wait_within(events, EVENT_TIMEOUT, wanted).await
}

fn presence_of(
    who: &str,
    availability: Availability,
    status: Option<&str>,
) -> impl Fn(&ConnectorEvent) -> bool {
    let who = handle(who);
    let status = status.map(str::to_owned);
    move |event| {
        matches!(event, ConnectorEvent::Presence { handle, availability: a, status: s }
            if *handle == who && *a == availability && *s == status)
    }
}

/// The general status `name` has on the relay now, as the peer sees it.
async fn status_on_relay(peer: &mut Peer, name: &str) -> Option<Event> {
    let mut statuses = peer
        .query(json!({"kinds": [30315], "authors": [hex(name)], "#d": ["general"]}))
        .await;
    statuses.sort_by_key(|event| event.created_at);
    statuses.pop()
}

#[tokio::test]
async fn login_reads_the_follow_list_and_close_clears_the_status() {
    // npub and nsec forms are accepted too; the handles reported are lower-case hex.
    let ann = identity("ann");
    let login = login_with(&relay(), &ann.npub, &ann.nsec);
    let started = Instant::now();
    let mut session = NostrConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ann cannot log in: {e}"));
    eprintln!("ann logged in in {:?}", started.elapsed());
    assert_eq!(sorted(complete(&session.roster)), sorted(pals_of("ann")));

    // One presence per contact after login, Offline included.
    let mut reported = HashSet::new();
    while reported.len() < 4 {
        match wait_for(&mut session.events, |_| true).await {
            ConnectorEvent::Presence { handle, .. } => {
                assert!(reported.insert(handle.clone()), "{handle} reported twice");
            }
            // Where the (no) stored messages end: may come before or between them.
            ConnectorEvent::MessageCursor(_) => {}
            other => panic!("expected the contacts' presence first, got {other:?}"),
        }
    }
    let contacts: HashSet<Handle> = pals_of("ann").into_iter().map(|e| e.handle).collect();
    assert_eq!(reported, contacts);

    // The login proved write access with ann's own status, which expires on its own.
    let mut peer = Peer::login("ben").await;
    let status = status_on_relay(&mut peer, "ann")
        .await
        .expect("ann's status");
    assert_eq!(status.content, "online");
    assert!(status
        .tags
        .expiration()
        .is_some_and(|at| *at > Timestamp::now()));

    let closing = Instant::now();
    session.control.close().await;
    session.control.close().await; // idempotent
    assert!(
        closing.elapsed() < Duration::from_secs(6),
        "close took {:?}",
        closing.elapsed()
    );
    // Nothing after close: no Disconnected, just the end of the events.
    let rest = tokio::time::timeout(EVENT_TIMEOUT, async {
        let mut rest = Vec::new();
        while let Some(event) = session.events.recv().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("the events did not end after close");
    assert!(
        !rest
            .iter()
            .any(|e| matches!(e, ConnectorEvent::Disconnected { .. })),
        "{rest:?}"
    );
    let status = status_on_relay(&mut peer, "ann")
        .await
        .expect("ann's status");
    assert_eq!(status.content, "", "close should clear ann's status");
    assert!(matches!(
        session.control.send_text(&handle("ben"), "too late").await,
        Err(ConnectorError::Closed)
    ));
}

#[tokio::test]
async fn a_secret_key_of_another_account_fails_as_auth_failed() {
    let ann = identity("ann");
    let ben = identity("ben");
    for secret in [ben.nsec.as_str(), "not-a-key", ""] {
        let login = login_with(&relay(), &ann.npub, secret);
        let error = connect_err(&login).await;
        assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
        // The secret must not leak into the error.
        assert!(secret.is_empty() || !format!("{error:?} {error}").contains(secret));
    }
}

#[tokio::test]
async fn a_key_the_relay_does_not_grant_fails_as_auth_failed() {
    let started = Instant::now();
    let error = connect_err(&login_as("stranger")).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
    // Refused by the relay, not given up on at the login timeout.
    assert!(
        started.elapsed() < LOGIN_TIMEOUT,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_relay_and_bad_accounts_are_told_apart() {
    let ann = identity("ann");
    let secret = ann.nsec.as_str();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let login = login_with(&format!("ws://127.0.0.1:{closed_port}"), &ann.npub, secret);
    let error = connect_err(&login).await;
    assert!(matches!(error, ConnectorError::Unreachable(_)), "{error:?}");

    for server in ["127.0.0.1:7777", "https://relay.example.org", "ws://"] {
        let error = connect_err(&login_with(server, &ann.npub, secret)).await;
        assert!(
            matches!(error, ConnectorError::InvalidAccount(_)),
            "{server}: {error:?}"
        );
    }
    let error = connect_err(&login_with(&relay(), "ann@example.org", secret)).await;
    assert!(
        matches!(error, ConnectorError::InvalidAccount(_)),
        "{error:?}"
    );
}

/// dot's follow list is what two tests change: one at a time, each leaving it as it was.
static DOT_FOLLOWS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// dot's follow lists on the relay now (one, or none once deleted).
async fn follow_lists_of_dot(peer: &mut Peer) -> Vec<Event> {
    peer.query(json!({"kinds": [3], "authors": [hex("dot")]}))
        .await
}

/// A date for dot's next follow lists: now, or later if the current one is dated ahead (a test
/// before may have dated its last list a few seconds ahead).
async fn follow_list_base(peer: &mut Peer) -> Timestamp {
    let newest = follow_lists_of_dot(peer)
        .await
        .iter()
        .map(|event| event.created_at)
        .max();
    newest.map_or(Timestamp::now(), |at| at.max(Timestamp::now()))
}

/// dot's follow list of these (public key, petname) entries, dated `at`.
fn follow_list_of_dot(entries: Vec<(String, &str)>, at: Timestamp) -> Event {
    let tags = entries
        .iter()
        .map(|(key, name)| Tag::parse(["p", key.as_str(), "", name]).unwrap())
        .collect::<Vec<_>>();
    EventBuilder::new(Kind::ContactList, "")
        .tags(tags)
        .custom_created_at(at)
        .sign_with_keys(&identity("dot").keys)
        .unwrap()
}

/// dot's seeded follow list entries.
fn pals_of_dot() -> Vec<(String, &'static str)> {
    pals_of("dot")
        .into_iter()
        .map(|entry| (entry.handle.as_str().to_owned(), leak(entry.display_name)))
        .collect()
}

#[tokio::test]
async fn a_new_follow_list_is_reported() {
    let _turn = DOT_FOLLOWS.lock().await;
    let mut session = connect("dot").await;
    assert_eq!(sorted(complete(&session.roster)), sorted(pals_of("dot")));
    let mut dot = Peer::login("dot").await;
    // As the user's other client would: drop three, rename one.
    let now = follow_list_base(&mut dot).await;
    let list = follow_list_of_dot(vec![(hex("ann"), "Annie")], now + 1u64);
    dot.publish(&list).await;
    let changed = wait_for(&mut session.events, |e| {
        matches!(e, ConnectorEvent::RosterChanged(_))
    })
    .await;
    assert_eq!(
        changed,
        ConnectorEvent::RosterChanged(vec![RosterEntry {
            handle: handle("ann"),
            display_name: Some("Annie".to_owned()),
        }])
    );

    // An older list is not news; the original list back is.
    let stale = follow_list_of_dot(vec![(hex("eve"), "Eve")], now - 30u64);
    dot.publish(&stale).await;
    dot.publish(&follow_list_of_dot(pals_of_dot(), now + 2u64))
        .await;
    match wait_for(&mut session.events, |e| {
        matches!(e, ConnectorEvent::RosterChanged(_))
    })
    .await
    {
        ConnectorEvent::RosterChanged(roster) => {
            assert_eq!(sorted(roster), sorted(pals_of("dot")))
        }
        _ => unreachable!(),
    }
    // The contacts back in the list are reported again, Offline included.
    for pal in ["ben", "cid", "eve"] {
        let who = handle(pal);
        wait_for(
            &mut session.events,
            |e| matches!(e, ConnectorEvent::Presence { handle, .. } if *handle == who),
        )
        .await;
    }
    session.control.close().await;
}

fn leak(name: Option<String>) -> &'static str {
    Box::leak(name.unwrap_or_default().into_boxed_str())
}

/// A relay without the account's follow list may just not have it (yet): the roster is absent,
/// not empty, which would make every contact depart. A follow list without `p` tags is an empty
/// roster; arriving in a session whose roster was absent, it is reported although nobody is in
/// it, since the roster is known from then on.
#[tokio::test]
async fn no_follow_list_is_an_absent_roster_and_one_without_contacts_an_empty_one() {
    let _turn = DOT_FOLLOWS.lock().await;
    let mut dot = Peer::login("dot").await;
    let at = follow_list_base(&mut dot).await;
    // dot's follow list off the relay (a NIP-09 deletion), as on a relay that never had it.
    let lists = follow_lists_of_dot(&mut dot).await;
    assert!(!lists.is_empty(), "dot has no follow list to delete");
    let deletion = EventBuilder::new(Kind::EventDeletion, "")
        .tags(lists.iter().map(|list| Tag::event(list.id)))
        .sign_with_keys(&identity("dot").keys)
        .unwrap();
    dot.publish(&deletion).await;
    assert_eq!(follow_lists_of_dot(&mut dot).await, Vec::new());

    let mut session = connect("dot").await;
    let reason = common::absent(&session.roster);
    assert!(reason.contains("follow list"), "{reason}");

    dot.publish(&follow_list_of_dot(Vec::new(), at + 1u64))
        .await;
    let changed = wait_for(&mut session.events, |e| {
        matches!(e, ConnectorEvent::RosterChanged(_))
    })
    .await;
    assert_eq!(changed, ConnectorEvent::RosterChanged(Vec::new()));
    session.control.close().await;
    let session = connect("dot").await;
    assert_eq!(complete(&session.roster), Vec::new());
    session.control.close().await;

    // dot's list back as it was, for the other tests.
    dot.publish(&follow_list_of_dot(pals_of_dot(), at + 2u64))
        .await;
    let lists = follow_lists_of_dot(&mut dot).await;
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(lists[0].tags.public_keys().count(), 4);
}

#[tokio::test]
async fn contacts_statuses_are_reported_as_presence() {
    let mut ben = Peer::login("ben").await;
    // Dated after anything ben has on the relay, should the tests run again against it.
    let mut at = status_on_relay(&mut ben, "ben")
        .await
        .map_or(Timestamp::now(), |last| {
            last.created_at.max(Timestamp::now())
        });
    let mut next = || {
        at = at + 1u64;
        at
    };
    let run = nonce();
    let (reading, hiking, brb) = (
        format!("reading {run}"),
        format!("hiking {run}"),
        format!("brb {run}"),
    );
    // Already set before eve logs in: reported with the first presences.
    ben.set_status(&reading, next(), None).await;
    let mut session = connect("eve").await;
    wait_for(
        &mut session.events,
        presence_of("ben", Availability::Online, Some(&reading)),
    )
    .await;

    ben.set_status(&hiking, next(), None).await;
    wait_for(
        &mut session.events,
        presence_of("ben", Availability::Online, Some(&hiking)),
    )
    .await;

    // An empty status is offline.
    ben.set_status("", next(), None).await;
    wait_for(
        &mut session.events,
        presence_of("ben", Availability::Offline, None),
    )
    .await;

    // So is an expired one, when it expires.
    ben.set_status(&brb, next(), Some(Timestamp::now() + 3u64))
        .await;
    wait_for(
        &mut session.events,
        presence_of("ben", Availability::Online, Some(&brb)),
    )
    .await;
    wait_for(
        &mut session.events,
        presence_of("ben", Availability::Offline, None),
    )
    .await;
    session.control.close().await;
}

/// Tells this run's statuses and messages from those of earlier runs against the same relay.
fn nonce() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn private_messages_cross_both_ways() {
    let cid = identity("cid").keys.public_key();
    let ben_key = identity("ben").keys.public_key();
    let mut ben = Peer::login("ben").await;
    // Sent before cid's session: not reported by it.
    let run = nonce();
    ben.send_message(&cid, &format!("old news {run}"), Timestamp::now() - 600u64)
        .await;

    let mut session = connect("cid").await;
    let sent = Timestamp::now();
    let (hello, second, third) = (
        format!("hello cid {run}"),
        format!("second {run}"),
        format!("third {run}"),
    );
    let ours =
        |e: &ConnectorEvent| matches!(e, ConnectorEvent::Message(m) if m.body.ends_with(&run));
    // The same message wrapped twice (as a client resending does) is reported once.
    let rumor = EventBuilder::private_msg_rumor(cid, hello.as_str())
        .custom_created_at(sent)
        .build(ben_key);
    for _ in 0..2 {
        let wrap = EventBuilder::gift_wrap(&ben.keys, &cid, rumor.clone(), [])
            .await
            .unwrap();
        ben.publish(&wrap).await;
    }
    ben.send_message(&cid, &second, Timestamp::now()).await;
    // A message that arrives during the session is new, even from a sender whose clock is
    // far behind.
    let late = format!("late clock {run}");
    ben.send_message(&cid, &late, Timestamp::now() - 3600u64)
        .await;

    let mut bodies = Vec::new();
    while bodies.len() < 3 {
        if let ConnectorEvent::Message(message) = wait_for(&mut session.events, ours).await {
            assert_eq!(message.from, handle("ben"));
            if message.body == hello {
                assert_eq!(message.sent_at.timestamp() as u64, sent.as_secs());
            }
            bodies.push(message.body);
        }
    }
    assert_eq!(bodies, [hello, second, late]);

    // And the other way: ben unwraps what cid's session sent.
    let sub = ben
        .subscribe(json!({"kinds": [1059], "#p": [ben_key.to_hex()], "since": Timestamp::now().as_secs() - 3 * 24 * 3600}))
        .await;
    assert!(sub.starts_with("peer-"));
    let reply = format!("hi ben, cid here {run}");
    session
        .control
        .send_text(&handle("ben"), &reply)
        .await
        .expect("the relay took the message");
    let keys = ben.keys.clone();
    let mut found = None;
    while found.is_none() {
        let wrap = ben.wait_event(|e| e.kind == Kind::GiftWrap).await;
        if let Ok(gift) = UnwrappedGift::from_gift_wrap(&keys, &wrap).await {
            if gift.rumor.content == reply {
                found = Some(gift);
            }
        }
    }
    let gift = found.unwrap();
    assert_eq!(gift.sender, cid);
    assert_eq!(gift.rumor.kind, Kind::PrivateDirectMessage);

    // cid's own copy came back to the session too, and is not reported as a message from
    // anyone: the next message is ben's.
    ben.send_message(&cid, &third, Timestamp::now()).await;
    match wait_for(&mut session.events, ours).await {
        ConnectorEvent::Message(message) => {
            assert_eq!((message.from, message.body), (handle("ben"), third))
        }
        _ => unreachable!(),
    }
    let copies = Peer::login("cid")
        .await
        .query(json!({"kinds": [1059], "#p": [cid.to_hex()], "since": Timestamp::now().as_secs() - 3 * 24 * 3600}))
        .await;
    let cid_keys = identity("cid").keys;
    let mut own_copies = 0;
    for wrap in &copies {
        if let Ok(gift) = UnwrappedGift::from_gift_wrap(&cid_keys, wrap).await {
            if gift.sender == cid && gift.rumor.content == reply {
                own_copies += 1;
            }
        }
    }
    assert_eq!(own_copies, 1, "cid keeps one copy of what it sent");
    session.control.close().await;
}

/// A scripted relay that logs one client in (challenge, OK to its status, no follow list nor
/// messages), then drops the connection; it counts the connections it gets.
async fn scripted_relay() -> (String, tokio::sync::watch::Receiver<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (count_tx, count) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count_tx.send_modify(|n| *n += 1);
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            send_json(&mut ws, json!(["AUTH", "challenge-1"])).await;
            let mut status_ok = false;
            let mut queries_done = false;
            while !(status_ok && queries_done) {
                let message = next_json(&mut ws).await;
                match message[0].as_str() {
                    Some("EVENT") if message[1]["kind"] == 30315 => {
                        send_json(&mut ws, json!(["OK", message[1]["id"], true, ""])).await;
                        status_ok = true;
                    }
                    Some("REQ") => {
                        send_json(&mut ws, json!(["EOSE", message[1]])).await;
                        queries_done |= message[1] == "messages";
                    }
                    _ => {}
                }
            }
            // Gone without a goodbye, as a crashed relay would be.
            drop(ws);
        }
    });
    (url, count)
}

#[tokio::test]
async fn a_lost_connection_is_reported_once_and_not_retried() {
    let (url, mut count) = scripted_relay().await;
    let ann = identity("ann");
    let login = login_with(&url, &ann.npub, &ann.nsec);
    let mut session = NostrConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect("scripted login");
    common::absent(&session.roster);
    let event = wait_for(&mut session.events, |e| {
        matches!(e, ConnectorEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(event, ConnectorEvent::Disconnected { reason } if !reason.is_empty()));
    // The events end there, and the connector did not dial again: that is the caller's call.
    let rest = tokio::time::timeout(EVENT_TIMEOUT, session.events.recv())
        .await
        .expect("the events did not end after the disconnection");
    assert!(rest.is_none(), "{rest:?}");
    assert_eq!(*count.borrow_and_update(), 1);
    session.control.close().await;
}

#[tokio::test]
async fn two_logins_in_the_same_second_both_succeed() {
    // Both publish the same status event (same key, content and second): the relay answers
    // the second with "duplicate:", which must not fail the login. Logging in at once makes
    // the same second all but certain.
    let (first, second) = tokio::join!(connect("dave"), connect("dave"));
    first.disconnect().await;
    second.disconnect().await;
}

/// The next profiles event's contents.
async fn next_profiles(events: &mut mpsc::Receiver<ConnectorEvent>) -> Vec<ContactProfile> {
    match wait_for(events, |e| matches!(e, ConnectorEvent::Profiles(_))).await {
        ConnectorEvent::Profiles(profiles) => profiles,
        _ => unreachable!(),
    }
}

fn profile_of(name: &str, nickname: &str, verified_address: Option<&str>) -> ContactProfile {
    ContactProfile {
        handle: handle(name),
        profile: Profile {
            nickname: Some(nickname.to_owned()),
            emails: Vec::new(),
            verified_address: verified_address.map(str::to_owned),
        },
    }
}

#[tokio::test]
async fn contacts_profiles_are_reported_with_their_nip05_checked() {
    // hal claims hal@localhost, which the domain lists with ivy's key: not his. And the domain
    // is slow to say so.
    const SLOW: Duration = Duration::from_secs(6);
    let server = Nip05Server::start(HashMap::from([
        ("gil", (hex("gil"), Duration::ZERO)),
        ("hal", (hex("ivy"), SLOW)),
        ("ivy", (hex("ivy"), Duration::ZERO)),
    ]))
    .await;
    let [mut fay, mut gil, mut hal, mut ivy, mut joe] = [
        Peer::login("fay").await,
        Peer::login("gil").await,
        Peer::login("hal").await,
        Peer::login("ivy").await,
        Peer::login("joe").await,
    ];
    // Dated after anything already on the relay, should the tests run again against it.
    let authors: Vec<String> = ["fay", "gil", "hal", "ivy", "joe"].map(hex).to_vec();
    let mut at = fay
        .query(json!({"kinds": [0, 3], "authors": authors}))
        .await
        .iter()
        .map(|event| event.created_at)
        .max()
        .map_or(Timestamp::now(), |newest| newest.max(Timestamp::now()));
    let mut next = || {
        at = at + 1u64;
        at
    };
    // fay's follow list as seeded, should an earlier run against this relay have left another.
    fay.publish(&follow_list_of("fay", &["gil", "hal", "joe"], next()))
        .await;
    gil.set_profile(
        &json!({"name": "gil", "display_name": " Gil Gómez ", "nip05": "Gil@LocalHost"})
            .to_string(),
        next(),
    )
    .await;
    hal.set_profile(
        &json!({"name": "Hal", "nip05": "hal@localhost"}).to_string(),
        next(),
    )
    .await;
    joe.set_profile(r#"{"name": "Joe""#, next()).await;
    ivy.set_profile(
        &json!({"display_name": "Ivy", "nip05": "ivy@localhost"}).to_string(),
        next(),
    )
    .await;

    let connector = NostrConnector::with_options(&ConnectorOptions {
        extra_roots_pem: Some(
            std::fs::read(env("SWITCHBOARD_TEST_NIP05_TLS_CA")).expect("the NIP-05 test CA"),
        ),
        nip05_resolve: vec![("localhost".to_owned(), server.address)],
        ..ConnectorOptions::default()
    })
    .expect("the NIP-05 test CA is usable");
    let mut session = connector
        .connect(&login_as("fay"), LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("fay cannot log in: {e}"));
    let follows = ["gil", "hal", "joe"].map(|name| RosterEntry {
        handle: handle(name),
        display_name: Some(capitalised(name)),
    });
    assert_eq!(sorted(complete(&session.roster)), sorted(follows.to_vec()));

    // gil's verified profile comes without waiting for hal's slow domain; joe's unreadable
    // metadata is no profile at all.
    assert_eq!(
        next_profiles(&mut session.events).await,
        [profile_of("gil", "Gil Gómez", Some("gil@localhost"))]
    );
    // Nor does that check hold up presence.
    joe.set_status(&format!("here {}", nonce()), Timestamp::now(), None)
        .await;
    let joe_handle = handle("joe");
    loop {
        match wait_for(&mut session.events, |_| true).await {
            ConnectorEvent::Presence {
                handle,
                availability: Availability::Online,
                status: Some(status),
            } if handle == joe_handle && status.starts_with("here ") => break,
            ConnectorEvent::Profiles(profiles) => {
                panic!("joe's presence came after the slow check: {profiles:?}")
            }
            _ => {}
        }
    }
    // hal's nickname, and no address: the domain does not list his key.
    assert_eq!(
        next_profiles(&mut session.events).await,
        [profile_of("hal", "Hal", None)]
    );

    // A changed profile during the session is reported again, alone.
    gil.set_profile(
        &json!({"display_name": "Gil G.", "nip05": "gil@localhost"}).to_string(),
        next(),
    )
    .await;
    assert_eq!(
        next_profiles(&mut session.events).await,
        [profile_of("gil", "Gil G.", Some("gil@localhost"))]
    );
    // The same profile again is not news, unreadable metadata is none: the next report is
    // joe's first readable one. A bare domain is the domain's own identifier (`_@localhost`):
    // no address, and not asked.
    gil.set_profile(
        &json!({"nip05": "gil@localhost", "display_name": "Gil G."}).to_string(),
        next(),
    )
    .await;
    joe.set_profile("[1, 2", next()).await;
    joe.set_profile(
        &json!({"name": "Joe", "nip05": "localhost"}).to_string(),
        next(),
    )
    .await;
    assert_eq!(
        next_profiles(&mut session.events).await,
        [profile_of("joe", "Joe", None)]
    );

    // A new follow: its profile is read and checked too.
    fay.publish(&follow_list_of(
        "fay",
        &["gil", "hal", "joe", "ivy"],
        next(),
    ))
    .await;
    wait_for(
        &mut session.events,
        |e| matches!(e, ConnectorEvent::RosterChanged(roster) if roster.len() == 4),
    )
    .await;
    assert_eq!(
        next_profiles(&mut session.events).await,
        [profile_of("ivy", "Ivy", Some("ivy@localhost"))]
    );

    // Each identifier was asked once, though gil's came in three events and the follow list
    // change brought every profile again.
    assert_eq!(server.asked(), ["gil", "hal", "ivy"]);
    // And the session lived through it all.
    let rest: Vec<ConnectorEvent> = std::iter::from_fn(|| session.events.try_recv().ok()).collect();
    assert!(
        !rest.iter().any(|e| matches!(
            e,
            ConnectorEvent::Disconnected { .. } | ConnectorEvent::Profiles(_)
        )),
        "{rest:?}"
    );
    session
        .control
        .send_text(&handle("gil"), &format!("still here {}", nonce()))
        .await
        .expect("the session still sends");
    session.control.close().await;
}

/// Logs `name` in with the message cursor a previous session reported.
async fn connect_with_cursor(name: &str, cursor: Option<String>) -> LiveSession {
    let login = AccountLogin {
        message_cursor: cursor,
        ..login_as(name)
    };
    NostrConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{name} cannot log in: {e}"))
}

/// The messages reported up to the next cursor, and that cursor.
async fn messages_until_cursor(
    events: &mut mpsc::Receiver<ConnectorEvent>,
) -> (Vec<IncomingMessage>, String) {
    let mut messages = Vec::new();
    loop {
        match wait_for(events, |e| {
            matches!(
                e,
                ConnectorEvent::Message(_) | ConnectorEvent::MessageCursor(_)
            )
        })
        .await
        {
            ConnectorEvent::Message(message) => messages.push(message),
            ConnectorEvent::MessageCursor(cursor) => return (messages, cursor),
            _ => unreachable!(),
        }
    }
}

fn seconds(cursor: &str) -> u64 {
    cursor
        .parse()
        .unwrap_or_else(|_| panic!("the cursor {cursor:?} is not unix seconds"))
}

#[tokio::test]
async fn a_message_sent_again_keeps_its_rumor_id() {
    let sue_keys = identity("sue").keys;
    let mut sue = Peer::login("sue").await;
    sue.subscribe(json!({"kinds": [1059], "#p": [hex("sue")], "since": Timestamp::now().as_secs() - 3 * 24 * 3600}))
        .await;
    let session = connect("ray").await;
    // Dated when the user sent it, a while ago: a retry after a crash or a lost answer.
    let message = OutgoingMessage {
        to: handle("sue"),
        body: format!("just once {}", nonce()),
        id: nonce(),
        created_at: Utc::now() - chrono::Duration::seconds(30),
    };
    let first = session.control.send_message(&message).await.expect("sent");
    let again = session
        .control
        .send_message(&message)
        .await
        .expect("sent again");

    let mut wraps = Vec::new();
    while wraps.len() < 2 {
        let wrap = sue.wait_event(|e| e.kind == Kind::GiftWrap).await;
        if let Some((sender, rumor)) = rumor_of(&sue_keys, &wrap).await {
            // The relay may send a wrap twice, stored and live, if it came during the query.
            if rumor.content == message.body && wraps.iter().all(|(id, _)| *id != wrap.id) {
                assert_eq!(sender, identity("ray").keys.public_key());
                wraps.push((wrap.id, rumor));
            }
        }
    }
    let ids: Vec<String> = wraps
        .iter()
        .map(|(_, rumor)| rumor.id.unwrap().to_hex())
        .collect();
    assert_eq!(ids[0], ids[1], "one rumor");
    assert_eq!(
        wraps[0].1.created_at.as_secs(),
        message.created_at.timestamp() as u64,
        "dated when the user sent it"
    );
    assert_eq!(first.network_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(again.network_id.as_deref(), Some(ids[0].as_str()));
    session.control.close().await;
}

#[tokio::test]
async fn messages_sent_while_logged_out_are_reported_at_the_next_login_once() {
    let tom = identity("tom").keys.public_key();
    let mut sue = Peer::login("sue").await;
    let first = connect_with_cursor("tom", None).await;
    let mut events = first.events;
    let (_, cursor) = messages_until_cursor(&mut events).await;
    first.control.close().await;
    let since = seconds(&cursor);

    // Sent while tom is away, newest first, their wraps back-dated up to two days (one at the
    // very edge: a relay query reaching back less would miss it).
    let run = nonce();
    let bodies: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|word| format!("{word} {run}"))
        .collect();
    for (i, body) in bodies.iter().enumerate().rev() {
        let at = Timestamp::from_secs(since + 1 + i as u64);
        let wrap_at = match i {
            0 => at - Duration::from_secs(2 * 24 * 3600 - 120),
            1 => at - Duration::from_secs(24 * 3600),
            _ => Timestamp::now() - Duration::from_secs(3600),
        };
        sue.send_message_wrapped_at(&tom, body, at, wrap_at).await;
    }
    // Something older than the cursor (by more than the margin) was for the earlier session.
    sue.send_message(
        &tom,
        &format!("before the cursor {run}"),
        Timestamp::from_secs(since) - MESSAGE_MARGIN - Duration::from_secs(5),
    )
    .await;
    // Let the messages age past the margin, so that the next session's cursor is clearly
    // after them.
    let last = since + bodies.len() as u64;
    while Timestamp::now().as_secs() <= last + MESSAGE_MARGIN.as_secs() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let ours = |messages: Vec<IncomingMessage>| -> Vec<IncomingMessage> {
        messages
            .into_iter()
            .filter(|m| m.body.ends_with(&run))
            .collect()
    };
    let second = connect_with_cursor("tom", Some(cursor.clone())).await;
    let mut events = second.events;
    let (reported, newer) = messages_until_cursor(&mut events).await;
    let reported = ours(reported);
    assert_eq!(
        reported.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        bodies,
        "each once, in rumor order"
    );
    for (i, message) in reported.iter().enumerate() {
        assert_eq!(message.from, handle("sue"));
        assert_eq!(message.sent_at.timestamp() as u64, since + 1 + i as u64);
        assert!(message.id.is_some());
    }
    assert!(seconds(&newer) > last, "{newer} after {last}");
    second.control.close().await;

    let third = connect_with_cursor("tom", Some(newer)).await;
    let mut events = third.events;
    let (again, _) = messages_until_cursor(&mut events).await;
    assert_eq!(ours(again), [], "nothing reported again");
    third.control.close().await;
}

#[tokio::test]
async fn a_first_login_reports_nothing_old_and_a_cursor() {
    let una = identity("una").keys.public_key();
    let mut sue = Peer::login("sue").await;
    let run = nonce();
    sue.send_message(
        &una,
        &format!("old news {run}"),
        Timestamp::now() - Duration::from_secs(600),
    )
    .await;
    let before = Timestamp::now().as_secs();
    let session = connect_with_cursor("una", None).await;
    let after = Timestamp::now().as_secs();
    let mut events = session.events;
    let (reported, cursor) = messages_until_cursor(&mut events).await;
    assert!(
        !reported.iter().any(|m| m.body.ends_with(&run)),
        "{reported:?}"
    );
    // The session start.
    assert!((before..=after).contains(&seconds(&cursor)), "{cursor}");
    session.control.close().await;
}
