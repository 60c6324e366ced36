//! The XMPP connector against real servers that scripts/test.sh starts on loopback, with a
//! second, independent client (raw tokio-xmpp) on the other side to prove that presence really
//! crosses. Two independent server implementations stand behind every interop test: Prosody (Lua)
//! and ejabberd (Erlang); each test body takes the server's address and runs once against each,
//! as `body::prosody` and `body::ejabberd` (see [`against_both_servers`]). On both, users ann,
//! ben, cid, dot and eve (password `<name>-pw-7Q`) have the other four as contacts (roster group
//! "Pals", names "Ann", "Ben", …); each test uses its own users for anything that changes
//! presence, so the tests can run in parallel, and the two servers share nothing. A second
//! Prosody with the same users requires STARTTLS, with a certificate from a throwaway CA. The last
//! tests use a scripted server for the failure paths a real server will not produce on demand.

mod common;
use common::xmpp_client::set_roster_item as edit_roster;
use common::{complete, env};

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, Credential, LiveSession,
    RosterEntry,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;
use tokio::sync::mpsc;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Show};
use tokio_xmpp::parsers::roster::Subscription;
use tokio_xmpp::{Client, Event, Stanza};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The plain Prosody that scripts/test.sh starts.
fn prosody() -> String {
    env("SWITCHBOARD_TEST_XMPP_SERVER")
}

/// The ejabberd that scripts/test.sh starts: the second, independent implementation (plain TCP).
fn ejabberd() -> String {
    env("SWITCHBOARD_TEST_EJABBERD_SERVER")
}

/// Runs each test body given, an `async fn(server: &str)`, against both real servers: as the
/// tests `body::prosody` and `body::ejabberd`.
macro_rules! against_both_servers {
    ($($body:ident),+ $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn prosody() {
                super::$body(&super::prosody()).await;
            }

            #[tokio::test]
            async fn ejabberd() {
                super::$body(&super::ejabberd()).await;
            }
        }
    )+};
}

against_both_servers!(
    login_reads_the_roster,
    a_wrong_password_fails_promptly,
    an_unknown_user_fails_like_a_wrong_password,
    an_unserved_domain_is_an_invalid_account,
    a_contact_coming_online_is_reported,
    contacts_already_online_are_reported_after_login,
    close_and_drop_log_out,
    roster_pushes_are_reported,
    silent_contacts_are_reported_offline,
    direct_messages_cross_both_ways,
);

/// The Prosody that requires STARTTLS, and the PEM file of the CA that issued its certificate.
fn tls_server() -> (String, Vec<u8>) {
    let server = std::env::var("SWITCHBOARD_TEST_XMPP_TLS_SERVER").expect(
        "SWITCHBOARD_TEST_XMPP_TLS_SERVER is not set: run the tests through scripts/test.sh",
    );
    let ca = std::env::var("SWITCHBOARD_TEST_XMPP_TLS_CA")
        .expect("SWITCHBOARD_TEST_XMPP_TLS_CA is not set: run the tests through scripts/test.sh");
    let pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("cannot read {ca}: {e}"));
    (server, pem)
}

fn handle(raw: &str) -> Handle {
    Handle::parse(Protocol::Xmpp, raw).unwrap()
}

fn login_as(server: &str, user: &str, password: &str) -> AccountLogin {
    AccountLogin {
        protocol: Protocol::Xmpp,
        server: server.to_owned(),
        handle: handle(&format!("{user}@localhost")),
        credential: Credential::Password(Secret::new(password)),
        contacts: Vec::new(),
    }
}

async fn connect(server: &str, user: &str) -> LiveSession {
    XmppConnector::default()
        .connect(
            &login_as(server, user, &format!("{user}-pw-7Q")),
            LOGIN_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in at {server}: {e}"))
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
    common::wait_within(events, EVENT_TIMEOUT, wanted).await
}

fn presence_of(who: &str, availability: Availability) -> impl Fn(&ConnectorEvent) -> bool {
    common::presence_is(handle(who), availability)
}

/// A plain tokio-xmpp client, online, for driving the other side of a test.
async fn raw_client(server: &str, user: &str) -> Client {
    common::xmpp_client::raw_client(server, user, &format!("{user}-pw-7Q")).await
}

async fn set_presence(client: &mut Client, show: Show, status: &str) {
    let mut presence = Presence::available().with_show(show);
    presence.set_status("", status);
    client.send_stanza(presence.into()).await.unwrap();
}

async fn login_reads_the_roster(server: &str) {
    let session = connect(server, "ann").await;
    let ben = RosterEntry {
        handle: handle("ben@localhost"),
        display_name: Some("Ben".to_owned()),
    };
    let cid = RosterEntry {
        handle: handle("cid@localhost"),
        display_name: Some("Cid".to_owned()),
    };
    let roster = complete(&session.roster);
    assert!(roster.contains(&ben), "{roster:?}");
    assert!(roster.contains(&cid), "{roster:?}");
    assert!(
        !roster
            .iter()
            .any(|entry| entry.handle == handle("ann@localhost")),
        "the account itself is not its own contact: {roster:?}"
    );
    session.disconnect().await;
}

async fn a_wrong_password_fails_promptly(server: &str) {
    let started = Instant::now();
    let error = connect_err(&login_as(server, "ann", "not-the-password")).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!error.to_string().contains("not-the-password"));
}

async fn an_unknown_user_fails_like_a_wrong_password(server: &str) {
    let error = connect_err(&login_as(server, "nobody", "whatever")).await;
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let mut login = login_as(&prosody(), "ann", "ann-pw-7Q");
    login.server = "127.0.0.1:1".to_owned();
    let error = connect_err(&login).await;
    assert!(matches!(error, ConnectorError::Unreachable(_)), "{error:?}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts TCP but never speaks XMPP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut login = login_as(&prosody(), "ann", "ann-pw-7Q");
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

async fn an_unserved_domain_is_an_invalid_account(server: &str) {
    let mut login = login_as(server, "ann", "ann-pw-7Q");
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
        let mut login = login_as(&prosody(), "ann", "ann-pw-7Q");
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
        let mut login = login_as(&prosody(), "ann", "ann-pw-7Q");
        login.server = bad_server.to_owned();
        let error = connect_err(&login).await;
        assert!(
            matches!(error, ConnectorError::InvalidAccount(_)),
            "{bad_server}: {error:?}"
        );
    }
    let mut login = login_as(&prosody(), "ann", "ann-pw-7Q");
    login.protocol = Protocol::Irc;
    assert!(matches!(
        connect_err(&login).await,
        ConnectorError::InvalidAccount(_)
    ));
}

async fn a_contact_coming_online_is_reported(server: &str) {
    let mut ann = connect(server, "ann").await;
    let mut ben = raw_client(server, "ben").await;
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

async fn contacts_already_online_are_reported_after_login(server: &str) {
    let mut cid = raw_client(server, "cid").await;
    set_presence(&mut cid, Show::Dnd, "focus").await;

    let mut ann = connect(server, "ann").await;
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

async fn close_and_drop_log_out(server: &str) {
    let mut eve = connect(server, "eve").await;

    let mut dot = connect(server, "dot").await;
    wait_for(
        &mut eve.events,
        presence_of("dot@localhost", Availability::Online),
    )
    .await;
    dot.control.close().await;
    // The session task is gone, and its event sender with it: the channel ends once the
    // events queued before the close are read.
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while dot.events.recv().await.is_some() {}
    })
    .await
    .expect("the event channel stays open after close");
    dot.control.close().await; // idempotent
    wait_for(
        &mut eve.events,
        presence_of("dot@localhost", Availability::Offline),
    )
    .await;

    let dot = connect(server, "dot").await;
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

async fn roster_pushes_are_reported(server: &str) {
    let mut ann = connect(server, "ann").await;
    let mut editor = raw_client(server, "ann").await;
    let zed_entry = RosterEntry {
        handle: handle("zed@localhost"),
        display_name: Some("Zed".to_owned()),
    };

    edit_roster(&mut editor, "zed@localhost", "Zed", Subscription::None).await;
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

    edit_roster(&mut editor, "zed@localhost", "Zed", Subscription::Remove).await;
    wait_for(&mut ann.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(roster)
            if !roster.iter().any(|entry| entry.handle == zed_entry.handle))
    })
    .await;

    editor.send_end().await.unwrap();
    ann.disconnect().await;
}

/// Contacts no presence arrives for are offline, and are reported so: after login and when a
/// roster push adds one. Servers differ here: for a subscribed contact that is offline, Prosody
/// answers the login's presence probe with `unavailable` while ejabberd says nothing (RFC 6121
/// §4.3.2 only recommends the answer), and for a contact without a presence subscription
/// neither says anything. The contacts below never log in and have no subscription.
async fn silent_contacts_are_reported_offline(server: &str) {
    // Names of their own: other tests edit ann's roster at the same time.
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (quiet, later) = (
        format!("quiet-{tag}@localhost"),
        format!("later-{tag}@localhost"),
    );
    let mut editor = raw_client(server, "ann").await;
    edit_roster(&mut editor, &quiet, "Quiet", Subscription::None).await;

    let mut ann = connect(server, "ann").await;
    let roster = complete(&ann.roster);
    assert!(
        roster.iter().any(|entry| entry.handle == handle(&quiet)),
        "{roster:?}"
    );
    let event = wait_for(&mut ann.events, presence_of(&quiet, Availability::Offline)).await;
    assert_eq!(
        event,
        ConnectorEvent::Presence {
            handle: handle(&quiet),
            availability: Availability::Offline,
            status: None,
        }
    );

    edit_roster(&mut editor, &later, "Later", Subscription::None).await;
    wait_for(&mut ann.events, |event| {
        matches!(event, ConnectorEvent::RosterChanged(roster)
            if roster.iter().any(|entry| entry.handle == handle(&later)))
    })
    .await;
    wait_for(&mut ann.events, presence_of(&later, Availability::Offline)).await;

    for jid in [&quiet, &later] {
        edit_roster(&mut editor, jid, "", Subscription::Remove).await;
    }
    editor.send_end().await.unwrap();
    ann.disconnect().await;
}

#[tokio::test]
async fn starttls_with_the_ca_trusted_logs_in_and_reads_the_roster() {
    let (server, ca) = tls_server();
    let connector = XmppConnector::with_extra_roots(&ca).expect("the test CA is usable");
    let login = login_as(&server, "ann", "ann-pw-7Q");
    let session = connector
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ann cannot log in over STARTTLS: {e}"));
    let mut roster = complete(&session.roster);
    roster.sort_by(|a, b| a.handle.as_str().cmp(b.handle.as_str()));
    let expected: Vec<RosterEntry> = ["Ben", "Cid", "Dot", "Eve"]
        .into_iter()
        .map(|name| RosterEntry {
            handle: handle(&format!("{}@localhost", name.to_lowercase())),
            display_name: Some(name.to_owned()),
        })
        .collect();
    assert_eq!(roster, expected);
    session.disconnect().await;

    // The password is still checked once the stream is encrypted.
    let wrong = login_as(&server, "ann", "not-the-password");
    let error = connector
        .connect(&wrong, LOGIN_TIMEOUT)
        .await
        .expect_err("a wrong password must fail");
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
}

#[tokio::test]
async fn starttls_with_an_untrusted_certificate_is_unreachable() {
    let (server, _) = tls_server();
    let login = login_as(&server, "ben", "ben-pw-7Q");
    // Public web PKI roots only: the throwaway CA is not among them.
    let started = Instant::now();
    let error = connect_err(&login).await;
    assert!(
        matches!(&error, ConnectorError::Unreachable(reason)
            if reason.contains("TLS handshake with localhost failed")
                && reason.contains("certificate not trusted")),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!error.to_string().contains("ben-pw-7Q"));
}

#[tokio::test]
async fn starttls_checks_the_certificate_against_the_jid_domain() {
    // The certificate is for "localhost"; a JID domain the certificate does not name fails even
    // though the TCP connection reaches the same server. Prosody only hosts "localhost", so the
    // scripted server below offers STARTTLS for another domain and forwards the TLS bytes.
    let (server, ca) = tls_server();
    let connector = XmppConnector::with_extra_roots(&ca).expect("the test CA is usable");
    let mut login = login_as(&server, "ann", "ann-pw-7Q");
    login.server = starttls_forwarder(server).await;
    login.handle = handle("ann@example.org");
    let error = connector
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect_err("a certificate for another name must fail");
    assert!(
        matches!(&error, ConnectorError::Unreachable(reason)
            if reason.contains("TLS handshake with example.org failed")
                && reason.contains("certificate not valid for name")),
        "{error:?}"
    );
}

#[test]
fn extra_roots_must_be_pem_certificates() {
    let (_, ca) = tls_server();
    assert!(XmppConnector::with_extra_roots(&ca).is_ok());
    for bad in [
        &b""[..],
        b"not a certificate",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        assert!(
            XmppConnector::with_extra_roots(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// A server that answers the stream header itself, offering STARTTLS, and after `<proceed/>`
/// relays the TLS bytes to the real TLS Prosody, whose certificate is for "localhost": a TLS
/// peer with a trusted certificate for the wrong name.
async fn starttls_forwarder(tls_prosody: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        for (needle, reply) in [
            (
                "<stream:stream",
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                 xmlns:stream='http://etherx.jabber.org/streams' id='f1' from='example.org' \
                 version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\
                 <required/></starttls></stream:features>",
            ),
            (
                "<starttls",
                "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            ),
        ] {
            while !String::from_utf8_lossy(&received).contains(needle) {
                let read = client.read(&mut buffer).await.unwrap();
                assert!(
                    read > 0,
                    "client hung up while the server waited for {needle}"
                );
                received.extend_from_slice(&buffer[..read]);
            }
            received.clear();
            client.write_all(reply.as_bytes()).await.unwrap();
        }
        // Prosody's side of STARTTLS, then the bytes both ways.
        let mut upstream = tokio::net::TcpStream::connect(&tls_prosody).await.unwrap();
        upstream
            .write_all(
                b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
                  xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
            )
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("</stream:features>") {
            let read = upstream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "Prosody hung up before its features");
            seen.extend_from_slice(&buffer[..read]);
        }
        upstream
            .write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .unwrap();
        seen.clear();
        while !String::from_utf8_lossy(&seen).contains("<proceed") {
            let read = upstream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "Prosody hung up before proceeding");
            seen.extend_from_slice(&buffer[..read]);
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    address
}

/// The answer to the roster request of a [`scripted_server`]: one contact, Ben.
const ONE_ITEM_ROSTER: &str = "<iq type='result' id='switchboard-roster'>\
    <query xmlns='jabber:iq:roster'><item jid='ben@localhost' name='Ben' subscription='both'/>\
    </query></iq>";

/// A scripted server that logs one client in with PLAIN, serves a one-item roster, then ends
/// the connection the way `ending` says: tests what a real server is hard to make do on cue.
async fn scripted_server(ending: &'static [u8]) -> String {
    scripted_server_with(ONE_ITEM_ROSTER, ending, None).await
}

/// A [`scripted_server`] that answers the roster request with `roster_answer`, and after
/// `ending` waits for the client to send `last_words` (if any) before it hangs up.
async fn scripted_server_with(
    roster_answer: &'static str,
    ending: &'static [u8],
    last_words: Option<&'static str>,
) -> String {
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
        ("</iq>", roster_answer.to_owned()),
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
        if let Some(needle) = last_words {
            expect(&mut socket, needle).await;
        }
        // Dropping the socket closes the connection.
    });
    address
}

/// Logs in to a [`scripted_server`]; the only contact, who never sends presence, is reported
/// offline first.
async fn connect_to_script(ending: &'static [u8]) -> LiveSession {
    let login = login_as(&scripted_server(ending).await, "frank", "frank-pw");
    let mut session = XmppConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect("scripted login");
    let event = wait_for(&mut session.events, |_| true).await;
    assert_eq!(
        event,
        ConnectorEvent::Presence {
            handle: handle("ben@localhost"),
            availability: Availability::Offline,
            status: None,
        }
    );
    session
}

#[tokio::test]
async fn a_stream_error_ends_the_session() {
    let mut session = connect_to_script(
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\
          </stream:stream>",
    )
    .await;
    assert_eq!(complete(&session.roster).len(), 1);
    let event = wait_for(&mut session.events, |_| true).await;
    assert!(
        matches!(&event, ConnectorEvent::Disconnected { reason } if reason.contains("conflict")),
        "{event:?}"
    );
    assert_eq!(session.events.recv().await, None);
}

/// Every event up to the end of the session, which must end with `Disconnected`.
async fn events_until_disconnected(session: &mut LiveSession) -> Vec<ConnectorEvent> {
    let mut seen = Vec::new();
    loop {
        let event = wait_for(&mut session.events, |_| true).await;
        let last = matches!(event, ConnectorEvent::Disconnected { .. });
        seen.push(event);
        if last {
            return seen;
        }
    }
}

/// RFC 6121 lets a server answer the roster request without a roster (roster versioning; we
/// send no version, so that tells nothing), and a server may refuse the request: either way the
/// login goes on, with the roster absent rather than empty, which would make every contact
/// depart. A roster push then shows one contact, not the whole list: it is not reported as the
/// roster, but the contact it names is followed.
#[tokio::test]
async fn a_roster_answer_without_a_roster_is_absent_not_empty() {
    const PUSH: &[u8] = b"<iq type='set' id='push-1'><query xmlns='jabber:iq:roster'>\
        <item jid='zed@localhost' name='Zed' subscription='none'/></query></iq>";
    for answer in [
        "<iq type='result' id='switchboard-roster'/>",
        "<iq type='error' id='switchboard-roster'><error type='cancel'>\
         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    ] {
        let server = scripted_server_with(answer, PUSH, Some("push-1")).await;
        let mut session = XmppConnector::default()
            .connect(&login_as(&server, "frank", "frank-pw"), LOGIN_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{answer}: the login should go on: {e}"));
        let reason = common::absent(&session.roster);
        assert!(!reason.is_empty(), "{answer}");
        let events = events_until_disconnected(&mut session).await;
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ConnectorEvent::RosterChanged(_))),
            "{answer}: a push is not the whole roster: {events:?}"
        );
        assert!(
            events.contains(&ConnectorEvent::Presence {
                handle: handle("zed@localhost"),
                availability: Availability::Offline,
                status: None,
            }),
            "{answer}: {events:?}"
        );
    }
}

/// A roster that lists nobody is read whole: the account really has no contacts.
#[tokio::test]
async fn an_empty_roster_is_complete() {
    let server = scripted_server_with(
        "<iq type='result' id='switchboard-roster'><query xmlns='jabber:iq:roster'/></iq>",
        b"",
        None,
    )
    .await;
    let mut session = XmppConnector::default()
        .connect(&login_as(&server, "frank", "frank-pw"), LOGIN_TIMEOUT)
        .await
        .expect("scripted login");
    assert_eq!(complete(&session.roster), Vec::new());
    let events = events_until_disconnected(&mut session).await;
    assert_eq!(events.len(), 1, "no contacts, no presence: {events:?}");
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

async fn direct_messages_cross_both_ways(server: &str) {
    let mut dot = connect(server, "dot").await;
    let mut eve = raw_client(server, "eve").await;
    // Available, so that messages to eve's bare JID reach this session.
    eve.send_stanza(Presence::available().into()).await.unwrap();

    // eve -> dot: a chat message from an independent client arrives as a Message event.
    let to_dot = Message::chat(Some(Jid::from(BareJid::new("dot@localhost").unwrap())))
        .with_body(Lang::default(), "hello dot \u{1F44B}".to_owned());
    eve.send_stanza(to_dot.into()).await.unwrap();
    let got = wait_for(&mut dot.events, |e| matches!(e, ConnectorEvent::Message(_))).await;
    let ConnectorEvent::Message(message) = got else {
        unreachable!()
    };
    assert_eq!(message.from, handle("eve@localhost"));
    assert_eq!(message.body, "hello dot \u{1F44B}");
    let age = chrono::Utc::now() - message.sent_at;
    assert!(
        age < chrono::Duration::seconds(30),
        "a live message is stamped now: {age}"
    );

    // dot -> eve through the connector: the independent client receives it from dot.
    dot.control
        .send_message(&handle("eve@localhost"), "hi eve <&> \"quoted\"")
        .await
        .expect("sent");
    let received = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = eve.next().await {
            if let Event::Stanza(Stanza::Message(m)) = event {
                if let Some((_, body)) = m.get_best_body(vec![]) {
                    return (m.from.clone(), m.type_.clone(), body.clone());
                }
            }
        }
        panic!("eve's client ended");
    })
    .await
    .expect("eve receives dot's message");
    assert_eq!(
        received.0.map(|j| j.to_bare().to_string()),
        Some("dot@localhost".to_owned())
    );
    assert_eq!(received.1, MessageType::Chat);
    assert_eq!(received.2, "hi eve <&> \"quoted\"");

    // A recipient that is not a JID is refused without ending the session; after close,
    // nothing can be sent.
    let refused = dot
        .control
        .send_message(&Handle::from_stored("not a jid@@"), "x")
        .await;
    assert!(
        matches!(refused, Err(ConnectorError::Refused(_))),
        "{refused:?}"
    );
    dot.control
        .send_message(&handle("eve@localhost"), "still here")
        .await
        .expect("the session survived the refusal");
    dot.control.close().await;
    let late = dot
        .control
        .send_message(&handle("eve@localhost"), "late")
        .await;
    assert!(matches!(late, Err(ConnectorError::Closed)), "{late:?}");
    eve.send_end().await.unwrap();
}
