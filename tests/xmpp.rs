//! The XMPP connector against the real Prosody that scripts/test.sh starts on loopback, with a
//! second, independent client (raw tokio-xmpp) on the other side to prove that presence really
//! crosses. Users ann, ben, cid, dot and eve (password `<name>-pw-7Q`) share one roster group, so
//! each has the other four as contacts; each test uses its own users for anything that changes
//! presence, so the tests can run in parallel. The last tests use a scripted server for the
//! failure paths a real server will not produce on demand.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, LiveSession, RosterEntry,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;
use tokio::sync::mpsc;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::presence::{Presence, Show};
use tokio_xmpp::parsers::roster::{Item, Roster, Subscription};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, IqRequest, IqResponse};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Prosody that scripts/test.sh starts; without it these tests fail rather than skip.
fn server() -> String {
    std::env::var("SWITCHBOARD_TEST_XMPP_SERVER")
        .expect("SWITCHBOARD_TEST_XMPP_SERVER is not set: run the tests through scripts/test.sh")
}

fn handle(raw: &str) -> Handle {
    Handle::parse(Protocol::Xmpp, raw).unwrap()
}

fn login_as(user: &str, password: &str) -> AccountLogin {
    AccountLogin {
        protocol: Protocol::Xmpp,
        server: server(),
        handle: handle(&format!("{user}@localhost")),
        secret: Secret::new(password),
    }
}

async fn connect(user: &str) -> LiveSession {
    XmppConnector::default()
        .connect(&login_as(user, &format!("{user}-pw-7Q")), LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"))
}

async fn connect_err(login: &AccountLogin) -> ConnectorError {
    XmppConnector::default()
        .connect(login, LOGIN_TIMEOUT)
        .await
        .expect_err("login should fail")
}

/// Waits for the first event that `wanted` accepts; panics with everything seen otherwise.
async fn wait_for(
    events: &mut mpsc::Receiver<ConnectorEvent>,
    wanted: impl Fn(&ConnectorEvent) -> bool,
) -> ConnectorEvent {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            if wanted(&event) {
                return Some(event);
            }
            seen.push(event);
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the session ended; events seen: {seen:?}"),
        Err(_) => panic!("no matching event in time; events seen: {seen:?}"),
    }
}

fn presence_of(who: &str, availability: Availability) -> impl Fn(&ConnectorEvent) -> bool {
    let who = handle(who);
    move |event| {
        matches!(event, ConnectorEvent::Presence { handle, availability: seen, .. }
            if *handle == who && *seen == availability)
    }
}

/// A plain tokio-xmpp client, online, for driving the other side of a test.
async fn raw_client(user: &str) -> Client {
    let jid = BareJid::new(&format!("{user}@localhost")).unwrap();
    let mut client = Client::new_plaintext(
        jid,
        format!("{user}-pw-7Q"),
        DnsConfig::addr(&server()),
        Timeouts::tight(),
    );
    tokio::time::timeout(LOGIN_TIMEOUT, async {
        while let Some(event) = client.next().await {
            if event.is_online() {
                return;
            }
        }
        panic!("{user}'s raw client ended before going online");
    })
    .await
    .expect("raw client login timed out");
    client
}

async fn set_presence(client: &mut Client, show: Show, status: &str) {
    let mut presence = Presence::available().with_show(show);
    presence.set_status("", status);
    client.send_stanza(presence.into()).await.unwrap();
}

#[tokio::test]
async fn login_reads_the_roster() {
    let session = connect("ann").await;
    let ben = RosterEntry {
        handle: handle("ben@localhost"),
        display_name: Some("Ben".to_owned()),
    };
    let cid = RosterEntry {
        handle: handle("cid@localhost"),
        display_name: Some("Cid".to_owned()),
    };
    assert!(session.roster.contains(&ben), "{:?}", session.roster);
    assert!(session.roster.contains(&cid), "{:?}", session.roster);
    assert!(
        !session
            .roster
            .iter()
            .any(|entry| entry.handle == handle("ann@localhost")),
        "the account itself is not its own contact: {:?}",
        session.roster
    );
    session.disconnect().await;
}

#[tokio::test]
async fn a_wrong_password_fails_promptly() {
    let started = Instant::now();
    let error = connect_err(&login_as("ann", "not-the-password")).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!error.to_string().contains("not-the-password"));
}

#[tokio::test]
async fn an_unknown_user_fails_like_a_wrong_password() {
    let error = connect_err(&login_as("nobody", "whatever")).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let mut login = login_as("ann", "ann-pw-7Q");
    login.server = "127.0.0.1:1".to_owned();
    let error = connect_err(&login).await;
    assert!(matches!(error, ConnectorError::Unreachable(_)), "{error:?}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts TCP but never speaks XMPP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut login = login_as("ann", "ann-pw-7Q");
    login.server = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let error = XmppConnector::default()
        .connect(&login, Duration::from_millis(300))
        .await
        .expect_err("login should time out");
    assert!(
        matches!(&error, ConnectorError::Unreachable(reason) if reason == "timed out"),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_unserved_domain_is_an_invalid_account() {
    let mut login = login_as("ann", "ann-pw-7Q");
    login.handle = handle("ann@elsewhere.example");
    let error = connect_err(&login).await;
    assert!(
        matches!(error, ConnectorError::InvalidAccount(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn malformed_settings_are_invalid_accounts() {
    for bad_handle in ["ann", "ann@localhost/phone", "@localhost"] {
        let mut login = login_as("ann", "ann-pw-7Q");
        login.handle = handle(bad_handle);
        let error = connect_err(&login).await;
        assert!(
            matches!(error, ConnectorError::InvalidAccount(_)),
            "{bad_handle}: {error:?}"
        );
    }
    for bad_server in [
        "localhost",
        "localhost:",
        "localhost:0",
        "localhost:x",
        ":5222",
        "::1:5222",
    ] {
        let mut login = login_as("ann", "ann-pw-7Q");
        login.server = bad_server.to_owned();
        let error = connect_err(&login).await;
        assert!(
            matches!(error, ConnectorError::InvalidAccount(_)),
            "{bad_server}: {error:?}"
        );
    }
    let mut login = login_as("ann", "ann-pw-7Q");
    login.protocol = Protocol::Irc;
    assert!(matches!(
        connect_err(&login).await,
        ConnectorError::InvalidAccount(_)
    ));
}

#[tokio::test]
async fn a_contact_coming_online_is_reported() {
    let mut ann = connect("ann").await;
    let mut ben = raw_client("ben").await;
    set_presence(&mut ben, Show::Away, "in a meeting").await;

    let event = wait_for(
        &mut ann.events,
        presence_of("ben@localhost", Availability::Away),
    )
    .await;
    assert_eq!(
        event,
        ConnectorEvent::Presence {
            handle: handle("ben@localhost"),
            availability: Availability::Away,
            status: Some("in a meeting".to_owned()),
        }
    );

    ben.send_end().await.unwrap();
    wait_for(
        &mut ann.events,
        presence_of("ben@localhost", Availability::Offline),
    )
    .await;
    ann.disconnect().await;
}

#[tokio::test]
async fn contacts_already_online_are_reported_after_login() {
    let mut cid = raw_client("cid").await;
    set_presence(&mut cid, Show::Dnd, "focus").await;

    let mut ann = connect("ann").await;
    let event = wait_for(
        &mut ann.events,
        presence_of("cid@localhost", Availability::DoNotDisturb),
    )
    .await;
    assert_eq!(
        event,
        ConnectorEvent::Presence {
            handle: handle("cid@localhost"),
            availability: Availability::DoNotDisturb,
            status: Some("focus".to_owned()),
        }
    );
    ann.disconnect().await;
    cid.send_end().await.unwrap();
}

#[tokio::test]
async fn close_and_drop_log_out() {
    let mut eve = connect("eve").await;

    let mut dot = connect("dot").await;
    wait_for(
        &mut eve.events,
        presence_of("dot@localhost", Availability::Online),
    )
    .await;
    dot.shutdown.close().await;
    // The session task is gone, and its event sender with it: the channel ends once the
    // events queued before the close are read.
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while dot.events.recv().await.is_some() {}
    })
    .await
    .expect("the event channel stays open after close");
    dot.shutdown.close().await; // idempotent
    wait_for(
        &mut eve.events,
        presence_of("dot@localhost", Availability::Offline),
    )
    .await;

    let dot = connect("dot").await;
    wait_for(
        &mut eve.events,
        presence_of("dot@localhost", Availability::Online),
    )
    .await;
    drop(dot);
    wait_for(
        &mut eve.events,
        presence_of("dot@localhost", Availability::Offline),
    )
    .await;

    eve.disconnect().await;
}

#[tokio::test]
async fn roster_pushes_are_reported() {
    let mut ann = connect("ann").await;
    let mut editor = raw_client("ann").await;
    let zed = BareJid::new("zed@localhost").unwrap();
    let roster_set = |subscription| Roster {
        ver: None,
        items: vec![Item {
            jid: zed.clone(),
            name: Some("Zed".to_owned()),
            subscription,
            ask: Default::default(),
            groups: Vec::new(),
            approved: None,
        }],
    };
    let zed_entry = RosterEntry {
        handle: handle("zed@localhost"),
        display_name: Some("Zed".to_owned()),
    };

    let answer = editor
        .send_iq(None, IqRequest::Set(roster_set(Subscription::None).into()))
        .await
        .await
        .unwrap();
    assert!(matches!(answer, IqResponse::Result(_)), "{answer:?}");
    let event = wait_for(&mut ann.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(roster) if roster.contains(&zed_entry))
    })
    .await;
    let ConnectorEvent::RosterChanged(roster) = event else {
        unreachable!()
    };
    assert!(roster
        .iter()
        .any(|entry| entry.handle == handle("ben@localhost")));

    let answer = editor
        .send_iq(
            None,
            IqRequest::Set(roster_set(Subscription::Remove).into()),
        )
        .await
        .await
        .unwrap();
    assert!(matches!(answer, IqResponse::Result(_)), "{answer:?}");
    wait_for(&mut ann.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(roster)
            if !roster.iter().any(|entry| entry.handle == zed_entry.handle))
    })
    .await;

    editor.send_end().await.unwrap();
    ann.disconnect().await;
}

/// A scripted server that logs one client in with PLAIN, serves a one-item roster, then ends
/// the connection the way `ending` says: tests what a real server is hard to make do on cue.
async fn scripted_server(ending: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'>";
    let script: [(&str, String); 5] = [
        (
            "<stream:stream",
            format!(
                "{HEADER}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
                 <mechanism>PLAIN</mechanism></mechanisms></stream:features>"
            ),
        ),
        (
            "</auth>",
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".to_owned(),
        ),
        (
            "<stream:stream",
            format!(
                "{HEADER}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
                 </stream:features>"
            ),
        ),
        (
            "</iq>",
            "<iq type='result' id='switchboard-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <jid>frank@localhost/x</jid></bind></iq>"
                .to_owned(),
        ),
        (
            "</iq>",
            "<iq type='result' id='switchboard-roster'><query xmlns='jabber:iq:roster'>\
             <item jid='ben@localhost' name='Ben' subscription='both'/></query></iq>"
                .to_owned(),
        ),
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = String::new();
        let mut buffer = [0u8; 4096];
        let mut expect = async |socket: &mut tokio::net::TcpStream, needle: &str| loop {
            if let Some(at) = received.find(needle) {
                // Through the end of the element that contains the needle.
                let end = received[at..]
                    .find('>')
                    .map_or(received.len(), |i| at + i + 1);
                received.drain(..end);
                return;
            }
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(
                read > 0,
                "client hung up while the server waited for {needle}"
            );
            received.push_str(std::str::from_utf8(&buffer[..read]).unwrap());
        };
        for (needle, reply) in script {
            expect(&mut socket, needle).await;
            socket.write_all(reply.as_bytes()).await.unwrap();
        }
        expect(&mut socket, "</presence>").await;
        socket.write_all(ending).await.unwrap();
        // Dropping the socket closes the connection.
    });
    address
}

async fn connect_to_script(ending: &'static [u8]) -> LiveSession {
    let mut login = login_as("frank", "frank-pw");
    login.server = scripted_server(ending).await;
    XmppConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect("scripted login")
}

#[tokio::test]
async fn a_stream_error_ends_the_session() {
    let mut session = connect_to_script(
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\
          </stream:stream>",
    )
    .await;
    assert_eq!(session.roster.len(), 1);
    let event = wait_for(&mut session.events, |_| true).await;
    assert!(
        matches!(&event, ConnectorEvent::Disconnected { reason } if reason.contains("conflict")),
        "{event:?}"
    );
    assert_eq!(session.events.recv().await, None);
}

#[tokio::test]
async fn a_lost_connection_ends_the_session() {
    let mut session = connect_to_script(b"").await;
    let event = wait_for(&mut session.events, |_| true).await;
    assert!(
        matches!(event, ConnectorEvent::Disconnected { .. }),
        "{event:?}"
    );
    assert_eq!(session.events.recv().await, None);
}
