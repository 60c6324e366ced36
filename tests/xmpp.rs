//! The XMPP connector against real servers that scripts/test.sh starts on loopback, with a
//! second, independent client (raw tokio-xmpp) on the other side to prove that presence really
//! crosses. Two independent server implementations stand behind every interop test: Prosody (Lua)
//! and ejabberd (Erlang); each test body takes the server's address and runs once against each,
//! as `body::prosody` and `body::ejabberd` (see [`against_both_servers`]). On both, users ann,
//! ben, cid, dot and eve (password `<name>-pw-7Q`) have the other four as contacts (roster group
//! "Pals", names "Ann", "Ben", …); each test uses its own users for anything that changes
//! presence, so the tests can run in parallel, and the two servers share nothing. A second
//! Prosody with the same users requires STARTTLS, with a certificate from a throwaway CA; it also
//! has a direct TLS port and a second domain, switchboard.test (users ann and ben, no contacts),
//! whose SRV records a DNS server on loopback serves (scripts/servers/dns.sh): the transport
//! tests find it the way an account given only as a domain is found. The last tests use a
//! scripted server for the failure paths a real server will not produce on demand.
//! vCards: both servers serve them (Prosody mod_vcard_legacy, ejabberd mod_vcard) and nobody has
//! one at start; the vCard tests publish eve's and ann's as those users and empty them again.
//! eve and ann are the contacts there because no other test watches their presence.

mod common;
use common::xmpp_client::set_roster_item as edit_roster;
use common::xmpp_client::set_vcard;
use common::{complete, env};

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard::app::error::AppError;
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, ConnectorOptions,
    ContactProfile, Credential, LiveSession, RequireTls, RosterEntry,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::domain::matching::Profile;
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
    contact_vcards_are_reported,
    a_new_avatar_brings_the_new_vcard,
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
        message_cursor: None,
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
        "localhost:",
        "localhost:0",
        "localhost:x",
        ":5222",
        "::1:5222",
        "xmpps://localhost",
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
    refuses_a_wrong_password(&connector, login_as(&server, "ann", "ann-pw-7Q")).await;
}

/// `login` with another password fails as a wrong password.
async fn refuses_a_wrong_password(connector: &XmppConnector, mut login: AccountLogin) {
    login.credential = Credential::Password(Secret::new("not-the-password"));
    let error = connector
        .connect(&login, LOGIN_TIMEOUT)
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

/// The expected roster of ann@localhost: the other four Pals.
fn pals_of_ann() -> Vec<RosterEntry> {
    ["Ben", "Cid", "Dot", "Eve"]
        .into_iter()
        .map(|name| RosterEntry {
            handle: handle(&format!("{}@localhost", name.to_lowercase())),
            display_name: Some(name.to_owned()),
        })
        .collect()
}

/// A connector trusting the test CA, asking the loopback DNS server, requiring TLS as said.
fn connector_with(require_tls: RequireTls) -> XmppConnector {
    let (_, ca) = tls_server();
    let dns_server = env("SWITCHBOARD_TEST_DNS_SERVER");
    XmppConnector::with_options(&ConnectorOptions {
        extra_roots_pem: Some(ca),
        xmpp_require_tls: require_tls,
        dns_server: Some(dns_server.parse().expect("the DNS server is ip:port")),
        ..ConnectorOptions::default()
    })
    .expect("the test CA is usable")
}

/// The domain the TLS Prosody hosts besides localhost, with SRV records on the test DNS.
fn srv_domain() -> String {
    env("SWITCHBOARD_TEST_XMPP_SRV_DOMAIN")
}

/// `user@domain` (password `<user>-pw-7Q`) with this server field.
fn login_at(server: &str, user: &str, domain: &str) -> AccountLogin {
    let mut login = login_as(server, user, &format!("{user}-pw-7Q"));
    login.handle = handle(&format!("{user}@{domain}"));
    login
}

#[tokio::test]
async fn required_tls_refuses_a_server_without_starttls_before_any_credential() {
    // The plain Prosody offers no STARTTLS: what a client sees when an attacker on the path
    // strips the offer. A tap between them keeps what the connector sent.
    let tap = common::tap::Tap::start(&prosody()).await;
    let login = login_as(&tap.address, "ann", "ann-pw-7Q");
    let error = connector_with(RequireTls::Always)
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect_err("a login without TLS must be refused when TLS is required");
    assert!(
        matches!(&error, ConnectorError::Unreachable(why)
            if why == "the server did not offer STARTTLS and TLS is required (require_tls)"),
        "{error:?}"
    );
    assert_eq!(AppError::from(error).code(), "UPSTREAM_UNAVAILABLE");
    let sent = tap.sent().await;
    assert!(sent.contains("<stream:stream"), "{sent}");
    // The password, raw or in a SASL PLAIN message, or any SASL exchange at all.
    for secret in ["<auth", "<response", "ann-pw-7Q", "AGFubgBhbm4tcHctN1E="] {
        assert!(
            !sent.contains(secret),
            "{secret} went out in the clear: {sent}"
        );
    }
}

#[tokio::test]
async fn by_default_tls_is_not_required_from_a_server_named_on_loopback() {
    // `auto`: the plain Prosody is 127.0.0.1, so the login goes on without TLS, using SCRAM
    // (PLAIN in the clear would be allowed only on loopback too).
    let session = connector_with(RequireTls::Auto)
        .connect(&login_as(&prosody(), "ann", "ann-pw-7Q"), LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ann cannot log in on loopback without TLS: {e}"));
    assert_eq!(sorted(complete(&session.roster)), pals_of_ann());
    session.disconnect().await;
}

fn sorted(mut entries: Vec<RosterEntry>) -> Vec<RosterEntry> {
    entries.sort_by(|a, b| a.handle.as_str().cmp(b.handle.as_str()));
    entries
}

#[tokio::test]
async fn an_account_given_as_a_domain_is_found_through_srv_and_logs_in_over_direct_tls() {
    // switchboard.test has two _xmpps-client records: priority 5, a port where nothing listens,
    // then priority 10, the TLS Prosody's direct TLS port; nothing else. So a login must pass
    // the first and can only succeed over direct TLS.
    let domain = srv_domain();
    let connector = connector_with(RequireTls::Always);
    for server in ["", domain.as_str()] {
        let started = Instant::now();
        let session = connector
            .connect(&login_at(server, "ann", &domain), LOGIN_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("ann@{domain} (server {server:?}) cannot log in: {e}"));
        assert_eq!(complete(&session.roster), [], "no contacts on {domain}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        session.disconnect().await;
    }
    // The password is checked there as anywhere.
    refuses_a_wrong_password(&connector, login_at("", "ben", &domain)).await;
}

#[tokio::test]
async fn every_srv_target_is_tried_in_order_and_each_failure_told() {
    // Without the test CA, neither target can be used: the error names both, in SRV order.
    let domain = srv_domain();
    let dns_server = env("SWITCHBOARD_TEST_DNS_SERVER").parse().unwrap();
    let connector = XmppConnector::with_options(&ConnectorOptions {
        dns_server: Some(dns_server),
        ..ConnectorOptions::default()
    })
    .unwrap();
    let error = connector
        .connect(&login_at("", "ann", &domain), LOGIN_TIMEOUT)
        .await
        .expect_err("no target is usable without the test CA");
    let ConnectorError::Unreachable(why) = &error else {
        panic!("{error:?}")
    };
    let dead = why
        .find(&format!("xmpps://dead.{domain}:"))
        .unwrap_or_else(|| panic!("the first target is not told: {why}"));
    let direct = why
        .find(&format!("xmpps://xmpp.{domain}:"))
        .unwrap_or_else(|| panic!("the second target is not told: {why}"));
    assert!(dead < direct, "{why}");
    assert!(
        why.starts_with(&format!("no server of {domain} could be used: ")),
        "{why}"
    );
    assert!(why.contains("certificate not trusted"), "{why}");
    assert!(!why.contains("ann-pw-7Q"), "{why}");
}

#[tokio::test]
async fn a_domain_with_xmpp_client_records_logs_in_over_starttls() {
    // The server field names another domain to look up: starttls.switchboard.test has one
    // _xmpp-client record, the TLS Prosody's STARTTLS port. The certificate is still checked
    // for the JID's domain.
    let domain = srv_domain();
    let server = env("SWITCHBOARD_TEST_XMPP_STARTTLS_SRV_DOMAIN");
    let session = connector_with(RequireTls::Always)
        .connect(&login_at(&server, "ann", &domain), LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ann@{domain} cannot log in through {server}: {e}"));
    assert_eq!(complete(&session.roster), []);
    session.disconnect().await;
}

#[tokio::test]
async fn xmpps_names_a_direct_tls_server() {
    let server = format!("xmpps://{}", env("SWITCHBOARD_TEST_XMPP_DIRECT_TLS_SERVER"));
    let connector = connector_with(RequireTls::Always);
    let session = connector
        .connect(&login_as(&server, "ann", "ann-pw-7Q"), LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ann cannot log in at {server}: {e}"));
    assert_eq!(sorted(complete(&session.roster)), pals_of_ann());
    session.disconnect().await;

    // Direct TLS to a port that does not speak it fails as a TLS failure, not as XMPP.
    let plain = format!("xmpps://{}", prosody());
    let error = connector
        .connect(&login_as(&plain, "ann", "ann-pw-7Q"), LOGIN_TIMEOUT)
        .await
        .expect_err("the plain port speaks no TLS");
    assert!(
        matches!(&error, ConnectorError::Unreachable(why) if why.contains("TLS handshake with localhost failed")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_domain_without_srv_records_is_tried_on_5222_and_auto_requires_tls_there() {
    // fallback.switchboard.test has an address (127.0.0.1) but no SRV records: the client
    // must go to that address on port 5222, where this test listens, offering no STARTTLS. The
    // account names no loopback server, so `auto` requires TLS although DNS pointed to loopback.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let domain = env("SWITCHBOARD_TEST_XMPP_NO_SRV_DOMAIN");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:5222")
        .await
        .expect("this test needs 127.0.0.1:5222 free (the fallback port of RFC 6120)");
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&received).contains("<stream:stream") {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the client hung up before its stream header");
            received.extend_from_slice(&buffer[..read]);
        }
        socket
            .write_all(
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'                   xmlns:stream='http://etherx.jabber.org/streams' id='f1'                   from='fallback.switchboard.test' version='1.0'><stream:features>                  <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1                  </mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
            )
            .await
            .unwrap();
        while let Ok(read @ 1..) = socket.read(&mut buffer).await {
            received.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8_lossy(&received).into_owned()
    });
    let error = connector_with(RequireTls::Auto)
        .connect(&login_at("", "ann", &domain), LOGIN_TIMEOUT)
        .await
        .expect_err("a server without STARTTLS must be refused");
    assert!(
        matches!(&error, ConnectorError::Unreachable(why) if why.contains("did not offer STARTTLS and TLS is required")),
        "{error:?}"
    );
    let received = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the client did not hang up")
        .unwrap();
    assert!(
        received.contains(&format!("to='{domain}'"))
            || received.contains(&format!("to=\"{domain}\"")),
        "{received}"
    );
    assert!(!received.contains("<auth"), "{received}");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut peer = ScriptedPeer::log_in(listener, roster_answer).await;
        peer.send(ending).await;
        if let Some(needle) = last_words {
            peer.expect(needle).await;
        }
        peer.hang_up().await;
    });
    address
}

/// The server's side of a scripted connection, after login: reads what the client sends and
/// writes what the script says.
struct ScriptedPeer {
    socket: tokio::net::TcpStream,
    /// Read and not yet consumed by [`expect`](Self::expect).
    received: String,
}

impl ScriptedPeer {
    /// Accepts one client and logs it in with PLAIN: binds its resource, answers its roster
    /// request with `roster_answer` and waits for its initial presence.
    async fn log_in(listener: tokio::net::TcpListener, roster_answer: &str) -> Self {
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
        let (socket, _) = listener.accept().await.unwrap();
        let mut peer = Self {
            socket,
            received: String::new(),
        };
        for (needle, reply) in script {
            peer.expect(needle).await;
            peer.send(reply.as_bytes()).await;
        }
        peer.expect("</presence>").await;
        peer
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.socket.write_all(bytes).await.unwrap();
    }

    async fn read_more(&mut self, waiting_for: &str) {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        let read = self.socket.read(&mut buffer).await.unwrap();
        assert!(
            read > 0,
            "client hung up while the server waited for {waiting_for}"
        );
        self.received
            .push_str(std::str::from_utf8(&buffer[..read]).unwrap());
    }

    /// Reads until `needle` arrives; consumes everything through the end of the tag holding it.
    async fn expect(&mut self, needle: &str) {
        loop {
            if let Some(at) = self.received.find(needle) {
                let end = self.received[at..]
                    .find('>')
                    .map_or(self.received.len(), |i| at + i + 1);
                self.received.drain(..end);
                return;
            }
            self.read_more(needle).await;
        }
    }

    /// Reads until a whole vCard request arrives (skipping other IQs); returns its id and
    /// recipient.
    async fn vcard_request(&mut self) -> (String, String) {
        loop {
            if let Some(start) = self.received.find("<iq") {
                let tag_end = self.received[start..].find('>').map(|i| start + i + 1);
                let end = match tag_end {
                    Some(end) if self.received[..end].ends_with("/>") => Some(end),
                    Some(end) => self.received[end..]
                        .find("</iq>")
                        .map(|i| end + i + "</iq>".len()),
                    None => None,
                };
                if let Some(end) = end {
                    let iq = self.received[start..end].to_owned();
                    self.received.drain(..end);
                    if iq.contains("vcard-temp") {
                        let attribute = |name: &str| {
                            let at = iq.find(&format!(" {name}=")).expect(name) + name.len() + 2;
                            let quote = &iq[at..=at];
                            iq[at + 1..][..iq[at + 1..].find(quote).unwrap()].to_owned()
                        };
                        return (attribute("id"), attribute("to"));
                    }
                    continue;
                }
            }
            self.read_more("a vCard request").await;
        }
    }

    /// Closes the connection once the client has gone quiet: closing with unread data makes
    /// the kernel reset the connection, which may lose what was written last.
    async fn hang_up(mut self) {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        while let Ok(Ok(1..)) =
            tokio::time::timeout(Duration::from_millis(200), self.socket.read(&mut buffer)).await
        {
        }
    }
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
/// roster, but the contact it names is followed; so are the contacts Switchboard holds for the
/// account, whose presence goes on being reported.
#[tokio::test]
async fn a_roster_answer_without_a_roster_is_absent_not_empty() {
    const PUSH: &[u8] = b"<iq type='set' id='push-1'><query xmlns='jabber:iq:roster'>\
        <item jid='zed@localhost' name='Zed' subscription='none'/></query></iq>\
        <presence from='kay@localhost/phone'/>";
    for answer in [
        "<iq type='result' id='switchboard-roster'/>",
        "<iq type='error' id='switchboard-roster'><error type='cancel'>\
         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    ] {
        let server = scripted_server_with(answer, PUSH, Some("push-1")).await;
        let mut login = login_as(&server, "frank", "frank-pw");
        login.contacts = vec![RosterEntry {
            handle: handle("kay@localhost"),
            display_name: Some("Kay".to_owned()),
        }];
        let mut session = XmppConnector::default()
            .connect(&login, LOGIN_TIMEOUT)
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
        assert!(
            events.contains(&ConnectorEvent::Presence {
                handle: handle("kay@localhost"),
                availability: Availability::Online,
                status: None,
            }),
            "{answer}: a kept contact's presence: {events:?}"
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
        .send_text(&handle("eve@localhost"), "hi eve <&> \"quoted\"")
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
        .send_text(&Handle::from_stored("not a jid@@"), "x")
        .await;
    assert!(
        matches!(refused, Err(ConnectorError::Refused(_))),
        "{refused:?}"
    );
    dot.control
        .send_text(&handle("eve@localhost"), "still here")
        .await
        .expect("the session survived the refusal");
    dot.control.close().await;
    let late = dot
        .control
        .send_text(&handle("eve@localhost"), "late")
        .await;
    assert!(matches!(late, Err(ConnectorError::Closed)), "{late:?}");
    eve.send_end().await.unwrap();
}

/// Every event until `done` says the ones seen so far are enough (the last one included); panics
/// with them if that takes longer than [`EVENT_TIMEOUT`] or the session ends.
async fn events_until(
    events: &mut mpsc::Receiver<ConnectorEvent>,
    mut done: impl FnMut(&[ConnectorEvent]) -> bool,
) -> Vec<ConnectorEvent> {
    let mut seen = Vec::new();
    let finished = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            seen.push(event);
            if done(&seen) {
                return true;
            }
        }
        false
    })
    .await;
    match finished {
        Ok(true) => seen,
        Ok(false) => panic!("the session ended; events seen: {seen:?}"),
        Err(_) => panic!("not everything expected arrived in time; events seen: {seen:?}"),
    }
}

/// The profiles of every `Profiles` event among `events`, in order.
fn profiles_in(events: &[ConnectorEvent]) -> Vec<ContactProfile> {
    events
        .iter()
        .filter_map(|event| match event {
            ConnectorEvent::Profiles(profiles) => Some(profiles.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn profile(nickname: &str, emails: &[&str]) -> Profile {
    Profile {
        nickname: Some(nickname.to_owned()),
        emails: emails.iter().map(|email| (*email).to_owned()).collect(),
        verified_address: None,
    }
}

/// A vCard the contact's own client publishes, without a photo.
const EVE_VCARD: &str = "<vCard xmlns='vcard-temp'><FN>Eve Example</FN><NICKNAME>Evie</NICKNAME>\
    <EMAIL><INTERNET/><PREF/><USERID> Eve@Example.ORG </USERID></EMAIL>\
    <EMAIL><HOME/><INTERNET/><USERID>eve.home@example.com</USERID></EMAIL>\
    <EMAIL><INTERNET/><USERID>eve@example.org</USERID></EMAIL>\
    <EMAIL><INTERNET/><USERID>not an address</USERID></EMAIL></vCard>";
const EMPTY_VCARD: &str = "<vCard xmlns='vcard-temp'/>";

/// eve publishes her vCard the way her own client would, without going online (other tests
/// watch presence). ann's session fetches its contacts' vCards after login and reports eve's —
/// nickname and addresses, cleaned — and nothing for ben, cid and dot, who have none (the
/// server answers with an empty vCard or an error). Presence flows as before: eve, online with
/// a negative priority (so no test's messages to her bare JID land here), is reported.
async fn contact_vcards_are_reported(server: &str) {
    let mut eve = raw_client(server, "eve").await;
    set_vcard(&mut eve, EVE_VCARD).await;

    let mut ann = connect(server, "ann").await;
    eve.send_stanza(Presence::available().with_priority(-1).into())
        .await
        .unwrap();
    let eve_online = presence_of("eve@localhost", Availability::Online);
    let events = events_until(&mut ann.events, |seen| {
        seen.iter()
            .any(|e| matches!(e, ConnectorEvent::Profiles(_)))
            && seen.iter().any(&eve_online)
    })
    .await;
    // Only contacts with something are reported, all in one event.
    let batches = events
        .iter()
        .filter(|e| matches!(e, ConnectorEvent::Profiles(_)))
        .count();
    assert_eq!(batches, 1, "{events:?}");
    assert_eq!(
        profiles_in(&events),
        [ContactProfile {
            handle: handle("eve@localhost"),
            profile: profile("Evie", &["eve@example.org", "eve.home@example.com"]),
        }],
        "{events:?}"
    );

    // What other tests may find: no vCard, as at start.
    set_vcard(&mut eve, EMPTY_VCARD).await;
    eve.send_end().await.unwrap();
    ann.disconnect().await;
}

/// XEP-0054 has no change notification, but a vCard-based avatar (XEP-0153) announces its hash
/// in presence: a new hash makes the session fetch the vCard again and report what it reads.
/// ann plays the contact, online with a negative priority (no other test watches her presence or
/// sends her messages); eve's session watches.
async fn a_new_avatar_brings_the_new_vcard(server: &str) {
    let mut ann = raw_client(server, "ann").await;
    publish_with_avatar(&mut ann, "Ann One", b"first photo").await;

    let mut eve = connect(server, "eve").await;
    let ann_named = |name: &'static str| {
        move |event: &ConnectorEvent| {
            matches!(event, ConnectorEvent::Profiles(profiles) if profiles.iter().any(|p|
                p.handle == handle("ann@localhost") && p.profile.nickname.as_deref() == Some(name)))
        }
    };
    // The first hash the session sees goes with what it fetched after login; a change must come
    // after it, so wait for ann's presence too.
    let first = ann_named("Ann One");
    let ann_online = presence_of("ann@localhost", Availability::Online);
    events_until(&mut eve.events, |seen| {
        seen.iter().any(&first) && seen.iter().any(&ann_online)
    })
    .await;

    publish_with_avatar(&mut ann, "Ann Two", b"second photo").await;
    let event = wait_for(&mut eve.events, ann_named("Ann Two")).await;
    let ConnectorEvent::Profiles(profiles) = event else {
        unreachable!()
    };
    assert!(
        profiles.contains(&ContactProfile {
            handle: handle("ann@localhost"),
            profile: Profile {
                nickname: Some("Ann Two".to_owned()),
                emails: vec!["ann@example.org".to_owned()],
                verified_address: None,
            },
        }),
        "{profiles:?}"
    );

    set_vcard(&mut ann, EMPTY_VCARD).await;
    ann.send_end().await.unwrap();
    eve.disconnect().await;
}

/// Publishes a vCard with this nickname and photo, then announces the photo's hash in an
/// available presence of priority -1 (XEP-0153), as a client with vCard avatars does.
async fn publish_with_avatar(client: &mut Client, nickname: &str, photo: &[u8]) {
    use base64::Engine;
    use sha1::Digest;

    let binval = base64::engine::general_purpose::STANDARD.encode(photo);
    set_vcard(
        client,
        &format!(
            "<vCard xmlns='vcard-temp'><NICKNAME>{nickname}</NICKNAME>\
             <EMAIL><INTERNET/><USERID>ann@example.org</USERID></EMAIL>\
             <PHOTO><TYPE>image/png</TYPE><BINVAL>{binval}</BINVAL></PHOTO></vCard>"
        ),
    )
    .await;
    let hash: String = sha1::Sha1::digest(photo)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let update: tokio_xmpp::minidom::Element =
        format!("<x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x>")
            .parse()
            .unwrap();
    let presence = Presence::available()
        .with_priority(-1)
        .with_payloads(vec![update]);
    client.send_stanza(presence.into()).await.unwrap();
}

/// What real servers will not do on cue: a contact whose vCard request is never answered, an
/// answer from someone else than the contact asked, a contact added by a roster push. The
/// pending request holds up neither presence nor the other profiles, which come in one event
/// once the slow one has had its share of waiting.
#[tokio::test]
async fn vcards_load_beside_presence_and_roster_pushes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let (finished, hang_up) = tokio::sync::oneshot::channel::<()>();
    let script = tokio::spawn(async move {
        let mut peer = ScriptedPeer::log_in(
            listener,
            "<iq type='result' id='switchboard-roster'><query xmlns='jabber:iq:roster'>\
             <item jid='ben@localhost' name='Ben' subscription='both'/>\
             <item jid='cid@localhost' name='Cid' subscription='both'/></query></iq>",
        )
        .await;
        let (ben_id, ben) = peer.vcard_request().await;
        let (_cid_id, cid) = peer.vcard_request().await;
        assert_eq!(
            (ben.as_str(), cid.as_str()),
            ("ben@localhost", "cid@localhost")
        );
        peer.send(
            format!(
                "<iq type='result' id='{ben_id}' from='ben@localhost'><vCard xmlns='vcard-temp'>\
                 <NICKNAME>Benny</NICKNAME></vCard></iq><presence from='cid@localhost/phone'/>\
                 <iq type='set' id='push-1'><query xmlns='jabber:iq:roster'>\
                 <item jid='zed@localhost' name='Zed' subscription='both'/></query></iq>"
            )
            .as_bytes(),
        )
        .await;
        let (zed_id, zed) = peer.vcard_request().await;
        assert_eq!(zed, "zed@localhost");
        peer.send(
            format!(
                "<iq type='result' id='{zed_id}' from='mallory@localhost'>\
                 <vCard xmlns='vcard-temp'><NICKNAME>Mallory</NICKNAME></vCard></iq>\
                 <iq type='result' id='{zed_id}' from='zed@localhost'><vCard xmlns='vcard-temp'>\
                 <FN>Zed</FN><EMAIL><USERID>Zed@Example.org</USERID></EMAIL></vCard></iq>"
            )
            .as_bytes(),
        )
        .await;
        // cid's request stays unanswered until the test is done.
        let _ = hang_up.await;
        peer.hang_up().await;
    });

    let mut session = XmppConnector::default()
        .connect(&login_as(&server, "frank", "frank-pw"), LOGIN_TIMEOUT)
        .await
        .expect("scripted login");
    let cid_online = presence_of("cid@localhost", Availability::Online);
    let events = events_until(&mut session.events, |seen| profiles_in(seen).len() >= 2).await;
    let cid_at = events.iter().position(&cid_online);
    let profiles_at = events
        .iter()
        .position(|e| matches!(e, ConnectorEvent::Profiles(_)));
    assert!(
        cid_at.is_some() && cid_at < profiles_at,
        "presence is not held up by vCards: {events:?}"
    );
    assert_eq!(
        profiles_in(&events),
        [
            ContactProfile {
                handle: handle("ben@localhost"),
                profile: Profile {
                    nickname: Some("Benny".to_owned()),
                    ..Profile::default()
                },
            },
            ContactProfile {
                handle: handle("zed@localhost"),
                profile: profile("Zed", &["zed@example.org"]),
            },
        ],
        "{events:?}"
    );
    session.disconnect().await;
    let _ = finished.send(());
    script.await.expect("the script ran to its end");
}

// Chat: Switchboard's ids on the wire, ids that do not depend on the way a message arrives, and
// the catch-up from the message archive (XEP-0313, on both servers). Users fay, gus, hal and ivy
// have no contacts and appear in no other test: hal's and ivy's archives hold only what these
// tests send them; fay and gus send (without presence, so nothing reaches their raw clients but
// what is addressed to them while available).

against_both_servers!(
    sent_messages_carry_switchboards_id,
    messages_sent_while_logged_out_are_fetched_once_from_the_cursor,
    a_first_login_fetches_nothing_old_but_sets_a_cursor,
);

/// Logs `user` in with the cursor its last session reported.
async fn connect_from(server: &str, user: &str, cursor: Option<String>) -> LiveSession {
    let mut login = login_as(server, user, &format!("{user}-pw-7Q"));
    login.message_cursor = cursor;
    XmppConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in at {server}: {e}"))
}

/// Sends chat messages from a raw client, each with its own stanza id, and returns once the
/// server has handled them (a ping answered after them: a server handles one client's stanzas
/// in order).
async fn send_from(client: &mut Client, to: &str, messages: &[(&str, &str)]) {
    for (id, body) in messages {
        let mut message = Message::chat(Some(Jid::from(BareJid::new(to).unwrap())))
            .with_body(Lang::default(), (*body).to_owned());
        message.id = Some(tokio_xmpp::parsers::message::Id((*id).to_owned()));
        client.send_stanza(message.into()).await.unwrap();
    }
    let ping = tokio_xmpp::IqRequest::Get(tokio_xmpp::parsers::ping::Ping.into());
    let answer = client.send_iq(None, ping).await.await.unwrap();
    assert!(
        matches!(answer, tokio_xmpp::IqResponse::Result(_)),
        "{answer:?}"
    );
}

fn messages_in(events: &[ConnectorEvent]) -> Vec<switchboard::connectors::IncomingMessage> {
    events
        .iter()
        .filter_map(|event| match event {
            ConnectorEvent::Message(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn cursors_in(events: &[ConnectorEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            ConnectorEvent::MessageCursor(cursor) => Some(cursor.clone()),
            _ => None,
        })
        .collect()
}

/// Events until a cursor is reported after `messages` messages (or more) have been.
async fn events_until_cursor_after(
    events: &mut mpsc::Receiver<ConnectorEvent>,
    messages: usize,
) -> Vec<ConnectorEvent> {
    events_until(events, |seen| {
        matches!(seen.last(), Some(ConnectorEvent::MessageCursor(_)))
            && messages_in(seen).len() >= messages
    })
    .await
}

/// No message event comes within a short while (a late duplicate, or the past reported).
async fn no_more_messages(events: &mut mpsc::Receiver<ConnectorEvent>) {
    let late = tokio::time::timeout(Duration::from_millis(1500), async {
        while let Some(event) = events.recv().await {
            if let ConnectorEvent::Message(message) = event {
                return message;
            }
        }
        std::future::pending().await
    })
    .await;
    assert!(late.is_err(), "unexpected message: {late:?}");
}

async fn sent_messages_carry_switchboards_id(server: &str) {
    let fay = connect(server, "fay").await;
    let mut gus = raw_client(server, "gus").await;
    gus.send_stanza(Presence::available().into()).await.unwrap();
    // Presence is handled before the ping's answer: gus is available from here on.
    send_from(&mut gus, "ivy@localhost", &[]).await;

    let outgoing = switchboard::connectors::OutgoingMessage {
        to: handle("gus@localhost"),
        body: "with an id".to_owned(),
        id: format!("sb-{}", uuid::Uuid::new_v4().simple()),
        created_at: chrono::Utc::now(),
    };
    let sent = fay.control.send_message(&outgoing).await.expect("sent");
    assert_eq!(sent.network_id.as_deref(), Some(outgoing.id.as_str()));

    let received = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = gus.next().await {
            if let Event::Stanza(Stanza::Message(m)) = event {
                if m.get_best_body(vec![]).is_some() {
                    return m;
                }
            }
        }
        panic!("gus's client ended");
    })
    .await
    .expect("gus receives fay's message");
    assert_eq!(
        received.from.as_ref().map(|j| j.to_bare().to_string()),
        Some("fay@localhost".to_owned())
    );
    assert_eq!(
        received.id.as_ref().map(|id| id.0.as_str()),
        Some(outgoing.id.as_str())
    );
    let origin_ids: Vec<String> = received
        .payloads
        .iter()
        .filter(|p| p.is("origin-id", "urn:xmpp:sid:0"))
        .filter_map(|p| p.attr("id").map(str::to_owned))
        .collect();
    assert_eq!(origin_ids, [outgoing.id.as_str()], "{received:?}");
    gus.send_end().await.unwrap();
    fay.disconnect().await;
}

/// hal is away while gus writes twice; at the next login, with the cursor of its last session,
/// both messages come from the archive, once each, in order, dated when they were sent, with the
/// archive's ids; a new cursor follows. A live message then comes with the id the archive gave
/// it, which is the next cursor, and a later catch-up from before it brings it with that id.
async fn messages_sent_while_logged_out_are_fetched_once_from_the_cursor(server: &str) {
    let mut hal = connect_from(server, "hal", None).await;
    let first = events_until_cursor_after(&mut hal.events, 0).await;
    assert_eq!(messages_in(&first), [], "a first login fetches nothing old");
    let cursor = cursors_in(&first).pop().unwrap();
    hal.disconnect().await;

    let mut gus = raw_client(server, "gus").await;
    let before = chrono::Utc::now();
    send_from(
        &mut gus,
        "hal@localhost",
        &[
            ("gus-away-1", "while you were out (1)"),
            ("gus-away-2", "(2)"),
        ],
    )
    .await;
    let after = chrono::Utc::now();
    // A message reported as received now would be dated after this.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut hal = connect_from(server, "hal", Some(cursor.clone())).await;
    let events = events_until_cursor_after(&mut hal.events, 2).await;
    let messages = messages_in(&events);
    let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["while you were out (1)", "(2)"], "{events:?}");
    for message in &messages {
        assert_eq!(message.from, handle("gus@localhost"));
        // Stamps may be cut to the second.
        assert!(
            message.sent_at >= before - chrono::Duration::seconds(1) && message.sent_at <= after,
            "dated when sent ({before} .. {after}): {message:?}"
        );
    }
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_deref().unwrap()).collect();
    assert_ne!(ids[0], ids[1]);
    // The archive's ids, not the sender's stanza ids.
    assert!(
        !ids.contains(&"gus-away-1") && !ids.contains(&"gus-away-2"),
        "{ids:?}"
    );
    let caught_up = cursors_in(&events).pop().unwrap();
    assert_eq!(
        caught_up, ids[1],
        "the cursor is the last message's archive id"
    );
    assert_ne!(caught_up, cursor);
    no_more_messages(&mut hal.events).await;

    // Live: reported with the archive's id, which becomes the cursor.
    send_from(&mut gus, "hal@localhost", &[("gus-live", "live one")]).await;
    let events = events_until_cursor_after(&mut hal.events, 1).await;
    let live = messages_in(&events);
    assert_eq!(live.len(), 1, "{events:?}");
    assert_eq!(live[0].body, "live one");
    let live_id = live[0].id.clone().unwrap();
    assert_eq!(cursors_in(&events), [live_id.as_str()]);
    assert!(chrono::Utc::now() - live[0].sent_at < chrono::Duration::seconds(30));
    hal.disconnect().await;

    // From the archive, the same message has the same id.
    let mut hal = connect_from(server, "hal", Some(caught_up)).await;
    let events = events_until_cursor_after(&mut hal.events, 1).await;
    let again = messages_in(&events);
    assert_eq!(again.len(), 1, "{events:?}");
    assert_eq!(again[0].body, "live one");
    assert_eq!(again[0].id.as_deref(), Some(live_id.as_str()));
    assert_eq!(cursors_in(&events), [live_id]);
    gus.send_end().await.unwrap();
    hal.disconnect().await;
}

/// Without a cursor, a login reports none of the archive's past, only a cursor: the newest
/// archived message's id, after which a live message's id comes as the next cursor.
async fn a_first_login_fetches_nothing_old_but_sets_a_cursor(server: &str) {
    let mut fay = raw_client(server, "fay").await;
    send_from(&mut fay, "ivy@localhost", &[("fay-old", "old news")]).await;

    let mut ivy = connect_from(server, "ivy", None).await;
    let events = events_until_cursor_after(&mut ivy.events, 0).await;
    assert_eq!(messages_in(&events), [], "{events:?}");
    let cursor = cursors_in(&events).pop().unwrap();
    assert!(
        !cursor.is_empty(),
        "the archive holds a message: {events:?}"
    );
    no_more_messages(&mut ivy.events).await;

    send_from(&mut fay, "ivy@localhost", &[("fay-new", "news")]).await;
    let events = events_until_cursor_after(&mut ivy.events, 1).await;
    let messages = messages_in(&events);
    assert_eq!(messages.len(), 1, "{events:?}");
    assert_eq!(messages[0].body, "news");
    let id = messages[0].id.clone().unwrap();
    assert_ne!(id, "fay-new", "the archive's id, not the sender's");
    assert_eq!(cursors_in(&events), [id]);
    fay.send_end().await.unwrap();
    ivy.disconnect().await;
}

/// A server with offline storage beside its archive (Prosody's usual set-up; the test servers
/// have no offline storage) delivers a message right after login and its archive has it too:
/// it is reported once, with the archive's id either way, dated by its delay stamp.
#[tokio::test]
async fn a_message_from_offline_storage_and_the_archive_is_reported_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let (finished, hang_up) = tokio::sync::oneshot::channel::<()>();
    let script = tokio::spawn(async move {
        let mut peer = ScriptedPeer::log_in(listener, ONE_ITEM_ROSTER).await;
        peer.send(
            b"<message from='ben@localhost/x' to='frank@localhost/x' type='chat' id='m1'>\
              <body>one</body><delay xmlns='urn:xmpp:delay' stamp='2026-11-01T10:00:00Z'/>\
              <stanza-id xmlns='urn:xmpp:sid:0' by='frank@localhost' id='a1'/></message>",
        )
        .await;
        peer.expect("switchboard-mam-disco").await;
        peer.send(
            b"<iq type='result' id='switchboard-mam-disco' from='frank@localhost'>\
              <query xmlns='http://jabber.org/protocol/disco#info'>\
              <feature var='urn:xmpp:mam:2'/></query></iq>",
        )
        .await;
        peer.expect("<after>c0").await;
        let result = |id: &str, body: &str, stamp: &str| {
            format!(
                "<message to='frank@localhost/x'>\
                 <result xmlns='urn:xmpp:mam:2' queryid='switchboard-mam-1' id='{id}'>\
                 <forwarded xmlns='urn:xmpp:forward:0'>\
                 <delay xmlns='urn:xmpp:delay' stamp='{stamp}'/>\
                 <message xmlns='jabber:client' from='ben@localhost/x' to='frank@localhost' \
                 type='chat'><body>{body}</body></message></forwarded></result></message>"
            )
        };
        let page = format!(
            "{}{}<iq type='result' id='switchboard-mam-1'><fin xmlns='urn:xmpp:mam:2' \
             complete='true'><set xmlns='http://jabber.org/protocol/rsm'><first>a1</first>\
             <last>a2</last></set></fin></iq>",
            result("a1", "one", "2026-11-01T10:00:00Z"),
            result("a2", "two", "2026-11-01T10:00:07Z"),
        );
        peer.send(page.as_bytes()).await;
        let _ = hang_up.await;
        peer.hang_up().await;
    });

    let mut login = login_as(&server, "frank", "frank-pw");
    login.message_cursor = Some("c0".to_owned());
    let mut session = XmppConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect("scripted login");
    let events = events_until_cursor_after(&mut session.events, 2).await;
    let message = |body: &str, id: &str, stamp: &str| switchboard::connectors::IncomingMessage {
        from: handle("ben@localhost"),
        body: body.to_owned(),
        sent_at: stamp.parse().unwrap(),
        id: Some(id.to_owned()),
    };
    assert_eq!(
        messages_in(&events),
        [
            message("one", "a1", "2026-11-01T10:00:00Z"),
            message("two", "a2", "2026-11-01T10:00:07Z")
        ],
        "{events:?}"
    );
    assert_eq!(cursors_in(&events), ["a2"]);
    no_more_messages(&mut session.events).await;
    session.disconnect().await;
    let _ = finished.send(());
    script.await.expect("the script ran to its end");
}
