//! The IRC connector against real servers that scripts/test.sh starts on loopback, with an
//! independent raw-socket IRC client written here on the other side to prove that presence and
//! messages really cross. Two server implementations stand behind the interop tests: ngIRCd (no
//! services: a server password, presence by ISON and USERHOST polling) and InspIRCd with Atheme
//! services (SASL PLAIN accounts ann, ben, cid, dot, eve with password `<name>-pw-7Q`, MONITOR,
//! away-notify with extended-monitor). Each test body runs once per server as `body::ngircd` and
//! `body::inspircd` (see [`against_both`]). On InspIRCd each test logs in as its own account, so
//! the tests can run in parallel; on ngIRCd, which has no accounts, nicks get a random suffix.
//! The raw clients never log in to an account. InspIRCd also has a TLS port
//! (`ircs://localhost:PORT`, certificate from a throwaway CA) and a sixth account, fay, for the
//! TLS test. The last tests use a scripted server for what a real server will not do on demand
//! (silence, a bare ERROR, no CAP support).

mod common;
use common::{complete, env};

use std::time::{Duration, Instant};

use switchboard::connectors::irc::IrcConnector;
use switchboard::connectors::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, Credential, LiveSession,
    RosterEntry,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// ISON polling interval on ngIRCd in these tests (the default is 30 s).
const ISON_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// ngIRCd: server password, ISON.
    Ngircd,
    /// InspIRCd + Atheme: SASL accounts, MONITOR.
    Inspircd,
}

/// One of the two servers, and how to log in there.
#[derive(Debug, Clone)]
struct Server {
    kind: Kind,
    addr: String,
}

fn ngircd() -> Server {
    Server {
        kind: Kind::Ngircd,
        addr: env("SWITCHBOARD_TEST_NGIRCD_SERVER"),
    }
}

fn inspircd() -> Server {
    Server {
        kind: Kind::Inspircd,
        addr: env("SWITCHBOARD_TEST_INSPIRCD_SERVER"),
    }
}

impl Server {
    /// The nick a test logs its account in as: the Atheme account itself on InspIRCd, a fresh
    /// nick on ngIRCd (where any nick will do).
    fn account(&self, name: &str) -> String {
        match self.kind {
            Kind::Inspircd => name.to_owned(),
            Kind::Ngircd => unique(name),
        }
    }

    /// The right password for `nick`: the server password on ngIRCd, the account's on InspIRCd.
    fn password(&self, nick: &str) -> String {
        match self.kind {
            Kind::Ngircd => env("SWITCHBOARD_TEST_NGIRCD_PASSWORD"),
            Kind::Inspircd => format!("{nick}-pw-7Q"),
        }
    }

    fn login(&self, nick: &str, password: &str) -> AccountLogin {
        login_at(&self.addr, nick, password)
    }

    /// The server password raw clients need, if any.
    fn raw_password(&self) -> Option<String> {
        (self.kind == Kind::Ngircd).then(|| env("SWITCHBOARD_TEST_NGIRCD_PASSWORD"))
    }
}

/// Runs each test body given, an `async fn(Server)`, against both servers: as the tests
/// `body::ngircd` and `body::inspircd`.
macro_rules! against_both {
    ($($body:ident),+ $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn ngircd() {
                super::$body(super::ngircd()).await;
            }

            #[tokio::test]
            async fn inspircd() {
                super::$body(super::inspircd()).await;
            }
        }
    )+};
}

against_both!(
    login_works_and_close_is_clean_and_idempotent,
    a_wrong_password_is_refused,
    a_watched_nick_coming_and_going_is_reported,
    watch_replaces_the_watched_set,
    messages_cross_both_ways,
    a_taken_nick_is_handled,
);

/// A nick no other test uses: `base` plus four random letters.
fn unique(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let counter = {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
    let mut n = nanos ^ counter.wrapping_mul(2_654_435_761);
    let mut suffix = String::new();
    for _ in 0..4 {
        suffix.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    format!("{base}{suffix}")
}

/// A login at any address, for the tests that need no real server.
fn login_at(addr: &str, nick: &str, password: &str) -> AccountLogin {
    AccountLogin {
        protocol: Protocol::Irc,
        server: addr.to_owned(),
        handle: handle(nick),
        credential: Credential::Password(Secret::new(password)),
        contacts: Vec::new(),
        message_cursor: None,
    }
}

fn handle(nick: &str) -> Handle {
    Handle::parse(Protocol::Irc, nick).unwrap()
}

fn entry(nick: &str) -> RosterEntry {
    RosterEntry {
        handle: handle(nick),
        display_name: None,
    }
}

fn connector() -> IrcConnector {
    // SWITCHBOARD_TEST_LOG=switchboard::connectors::irc=debug shows every line on the wire
    // (passwords excepted).
    if let Ok(filter) = std::env::var("SWITCHBOARD_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    IrcConnector::default().with_ison_interval(ISON_INTERVAL)
}

async fn connect_watching(server: &Server, nick: &str, watched: &[&str]) -> LiveSession {
    let mut login = server.login(nick, &server.password(nick));
    login.contacts = watched.iter().map(|nick| entry(nick)).collect();
    connector()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{nick} cannot log in at {}: {e}", server.addr))
}

async fn connect(server: &Server, nick: &str) -> LiveSession {
    connect_watching(server, nick, &[]).await
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

/// A plain IRC client over a socket, for driving the other side of a test.
struct RawClient {
    nick: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl RawClient {
    /// Connects and registers as `nick` (with the server password, if the server has one).
    async fn connect(server: &Server, nick: &str) -> RawClient {
        let mut client = Self::open(&server.addr, nick).await;
        if let Some(password) = server.raw_password() {
            client.send(&format!("PASS {password}")).await;
        }
        client.send(&format!("NICK {nick}")).await;
        client
            .send(&format!("USER {nick} 0 * :raw test client"))
            .await;
        client.expect(|words| words.get(1) == Some(&"001")).await;
        client
    }

    async fn open(addr: &str, nick: &str) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        RawClient {
            nick: nick.to_owned(),
            reader: BufReader::new(read),
            writer: write,
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Reads lines (answering PINGs) until one whose space-separated words satisfy `wanted`;
    /// returns that line. Panics at the end of the stream or after the event timeout.
    async fn expect(&mut self, wanted: impl Fn(&[&str]) -> bool) -> String {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line).await.unwrap() == 0 {
                    return None;
                }
                let line = line.trim_end().to_owned();
                let words: Vec<&str> = line.split(' ').collect();
                if words[0] == "PING" {
                    let pong = format!("PONG {}", words.get(1).unwrap_or(&""));
                    self.send(&pong).await;
                    continue;
                }
                if wanted(&words) {
                    return Some(line);
                }
                seen.push(line);
            }
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{}: connection closed; lines seen: {seen:#?}", self.nick),
            Err(_) => panic!(
                "{}: no matching line in time; lines seen: {seen:#?}",
                self.nick
            ),
        }
    }

    /// Reads until the server closes the connection; returns everything read.
    async fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                let mut line = String::new();
                match self.reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => lines.push(line.trim_end().to_owned()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}: still connected; lines: {lines:#?}", self.nick));
        lines
    }

    async fn quit(mut self) {
        self.send("QUIT :bye").await;
        self.until_closed().await;
    }

    /// Asks the server with ISON whether `nick` is online.
    async fn is_online(&mut self, nick: &str) -> bool {
        self.send(&format!("ISON {nick}")).await;
        let reply = self
            .expect(|words| words.get(1) == Some(&"303"))
            .await
            .to_lowercase();
        let online = reply.split_once(" :").map_or("", |(_, nicks)| nicks);
        online.split(' ').any(|n| n == nick.to_lowercase())
    }
}

async fn login_works_and_close_is_clean_and_idempotent(server: Server) {
    let nick = server.account("ann");
    let started = Instant::now();
    let session = connect(&server, &nick).await;
    eprintln!(
        "{:?}: {nick} logged in in {:?}",
        server.kind,
        started.elapsed()
    );
    assert!(
        complete(&session.roster).is_empty(),
        "IRC has no server-side contact list"
    );
    let mut observer = RawClient::connect(&server, &unique("obs")).await;
    assert!(observer.is_online(&nick).await, "{nick} should be online");

    let LiveSession {
        control,
        mut events,
        ..
    } = session;
    let closing = Instant::now();
    control.close().await;
    control.close().await;
    assert!(
        closing.elapsed() < Duration::from_secs(6),
        "{:?}",
        closing.elapsed()
    );
    // After close the session emits nothing, not even Disconnected, and sends nothing.
    let after = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
    assert!(matches!(after, Ok(None)), "{after:?}");
    let sent = control.send_text(&handle("nobody"), "hello").await;
    assert!(matches!(sent, Err(ConnectorError::Closed)), "{sent:?}");
    // The QUIT reached the server: the nick is gone at once.
    assert!(!observer.is_online(&nick).await, "{nick} should be gone");
    observer.quit().await;
}

async fn a_wrong_password_is_refused(server: Server) {
    let nick = server.account("ann");
    let login = server.login(&nick, "not-the-password");
    let started = Instant::now();
    let error = connector()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect_err("login should fail");
    assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(!format!("{error:?} {error}").contains("not-the-password"));
    if server.kind == Kind::Inspircd {
        // No such account: SASL fails the same way.
        let error = connector()
            .connect(&server.login(&unique("nobody"), "whatever"), LOGIN_TIMEOUT)
            .await
            .expect_err("no such account");
        assert!(matches!(error, ConnectorError::AuthFailed), "{error:?}");
    }
}

async fn a_watched_nick_coming_and_going_is_reported(server: Server) {
    let me = server.account("ben");
    let pal = unique("pal");
    let stranger = unique("str");
    let mut session = connect_watching(&server, &me, &[&pal]).await;
    // Reported once after login, offline included.
    wait_for(
        &mut session.events,
        presence_of(&pal, Availability::Offline),
    )
    .await;

    let mut raw = RawClient::connect(&server, &pal).await;
    let stranger_client = RawClient::connect(&server, &stranger).await;
    wait_for(&mut session.events, presence_of(&pal, Availability::Online)).await;
    // A nick change leaves the watched nick empty: offline, until the nick comes back.
    raw.send(&format!("NICK {}", unique("alt"))).await;
    wait_for(
        &mut session.events,
        presence_of(&pal, Availability::Offline),
    )
    .await;
    raw.send(&format!("NICK {pal}")).await;
    wait_for(&mut session.events, presence_of(&pal, Availability::Online)).await;
    // Away and back: pushed with its message where the server offers away-notify with
    // extended-monitor (InspIRCd), seen by polling USERHOST otherwise (ngIRCd, no message).
    raw.send("AWAY :gone fishing").await;
    let away = wait_for(&mut session.events, presence_of(&pal, Availability::Away)).await;
    if server.kind == Kind::Inspircd {
        assert!(
            matches!(&away, ConnectorEvent::Presence { status: Some(s), .. } if s == "gone fishing"),
            "{away:?}"
        );
    }
    raw.send("AWAY").await;
    wait_for(&mut session.events, presence_of(&pal, Availability::Online)).await;
    raw.quit().await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Presence { .. })
    })
    .await;
    assert!(
        presence_of(&pal, Availability::Offline)(&event),
        "only the watched nick is reported, and it went offline: {event:?}"
    );
    stranger_client.quit().await;
    session.disconnect().await;
}

async fn watch_replaces_the_watched_set(server: Server) {
    let me = server.account("cid");
    let first = unique("one");
    let second = unique("two");
    let first_client = RawClient::connect(&server, &first).await;
    let second_client = RawClient::connect(&server, &second).await;
    let mut session = connect(&server, &me).await;

    session.control.watch(&[entry(&first)]).await.unwrap();
    wait_for(
        &mut session.events,
        presence_of(&first, Availability::Online),
    )
    .await;

    session.control.watch(&[entry(&second)]).await.unwrap();
    wait_for(
        &mut session.events,
        presence_of(&second, Availability::Online),
    )
    .await;

    // `first` is no longer watched: its going away is not reported, `second`'s is.
    first_client.quit().await;
    second_client.quit().await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Presence { .. })
    })
    .await;
    assert!(
        presence_of(&second, Availability::Offline)(&event),
        "expected only {second} going offline, got {event:?}"
    );

    // More nicks than MONITOR takes (30 on InspIRCd): every one is reported, and the one past
    // the limit still comes online (polled with ISON instead).
    let mut many: Vec<String> = (0..30).map(|_| unique("many")).collect();
    let entries = |nicks: &[String]| nicks.iter().map(|nick| entry(nick)).collect::<Vec<_>>();
    session.control.watch(&entries(&many)).await.unwrap();
    let mut unreported: std::collections::HashSet<Handle> =
        many.iter().map(|nick| handle(nick)).collect();
    while !unreported.is_empty() {
        let event = wait_for(&mut session.events, |event| {
            matches!(event, ConnectorEvent::Presence { .. })
        })
        .await;
        let ConnectorEvent::Presence {
            handle,
            availability,
            ..
        } = event
        else {
            unreachable!()
        };
        assert_eq!(availability, Availability::Offline, "{handle}");
        assert!(
            unreported.remove(&handle),
            "{handle} reported twice or not watched"
        );
    }
    let late = unique("late");
    many.push(late.clone());
    session.control.watch(&entries(&many)).await.unwrap();
    wait_for(
        &mut session.events,
        presence_of(&late, Availability::Offline),
    )
    .await;
    let late_client = RawClient::connect(&server, &late).await;
    wait_for(
        &mut session.events,
        presence_of(&late, Availability::Online),
    )
    .await;
    late_client.quit().await;
    session.disconnect().await;
}

async fn messages_cross_both_ways(server: Server) {
    let me = server.account("dot");
    let pal = unique("msg");
    let mut session = connect_watching(&server, &me, &[&pal]).await;
    let mut raw = RawClient::connect(&server, &pal).await;

    raw.send(&format!("PRIVMSG {me} :hello from the raw side"))
        .await;
    raw.send(&format!("PRIVMSG {me} :\u{1}ACTION waves\u{1}"))
        .await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Message(_))
    })
    .await;
    let ConnectorEvent::Message(message) = event else {
        unreachable!()
    };
    assert_eq!(message.from, handle(&pal));
    assert_eq!(message.body, "hello from the raw side");
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Message(_))
    })
    .await;
    assert!(
        matches!(&event, ConnectorEvent::Message(m) if m.body == "/me waves"),
        "{event:?}"
    );

    // Two lines become two PRIVMSGs; nothing of the second leaks into a command.
    session
        .control
        .send_text(&handle(&pal), "hi raw\r\nQUIT :injected")
        .await
        .unwrap();
    let first = raw.expect(|words| words.get(1) == Some(&"PRIVMSG")).await;
    assert!(first.ends_with(" :hi raw"), "{first}");
    assert!(first.starts_with(&format!(":{me}!")), "{first}");
    let second = raw.expect(|words| words.get(1) == Some(&"PRIVMSG")).await;
    assert!(second.ends_with(" :QUIT :injected"), "{second}");

    // A long body arrives whole, cut into lines the server accepts.
    let long: String = (0..300).map(|i| format!("w{i} ")).collect();
    session
        .control
        .send_text(&handle(&pal), &long)
        .await
        .unwrap();
    let mut received = String::new();
    while received.split_whitespace().count() < 300 {
        let line = raw.expect(|words| words.get(1) == Some(&"PRIVMSG")).await;
        assert!(line.len() + 2 <= 512, "{} bytes", line.len());
        received.push_str(line.split_once(" :").unwrap().1);
        received.push(' ');
    }
    assert_eq!(
        received.split_whitespace().collect::<Vec<_>>(),
        long.split_whitespace().collect::<Vec<_>>()
    );

    let missing = session
        .control
        .send_text(&handle(&unique("gone")), "anyone?")
        .await;
    assert!(
        matches!(missing, Err(ConnectorError::Refused(_))),
        "{missing:?}"
    );
    // Channels are not contacts: refused before anything is sent.
    let channel = session
        .control
        .send_text(&Handle::from_stored("#lobby"), "hello all")
        .await;
    assert!(
        matches!(channel, Err(ConnectorError::Refused(_))),
        "{channel:?}"
    );
    raw.quit().await;
    session.disconnect().await;
}

async fn a_taken_nick_is_handled(server: Server) {
    let nick = server.account("eve");
    // Someone without the account's password holds the nick.
    let mut squatter = RawClient::connect(&server, &nick).await;
    match server.kind {
        Kind::Ngircd => {
            // No services: nothing can free the nick, so the login fails, saying why.
            let error = connector()
                .connect(&server.login(&nick, &server.password(&nick)), LOGIN_TIMEOUT)
                .await
                .expect_err("the nick is taken");
            assert!(
                matches!(&error, ConnectorError::Refused(text) if text.contains(&nick)),
                "{error:?}"
            );
            assert!(squatter.is_online(&nick).await);
            squatter.quit().await;
        }
        Kind::Inspircd => {
            // SASL logs the account in under a stand-in nick; NickServ REGAIN then frees the
            // nick and gives it to the account.
            let mut session = connect(&server, &nick).await;
            // Atheme renames the squatter to a guest nick (other services kill it).
            let ousted = squatter
                .expect(|words| {
                    words[0] == "ERROR" || matches!(words.get(1), Some(&"NICK") | Some(&"KILL"))
                })
                .await;
            assert!(
                ousted.starts_with(&format!(":{nick}!")) || ousted.starts_with("ERROR"),
                "{ousted}"
            );
            let mut other = RawClient::connect(&server, &unique("knock")).await;
            let deadline = Instant::now() + EVENT_TIMEOUT;
            loop {
                other.send(&format!("PRIVMSG {nick} :are you back?")).await;
                match tokio::time::timeout(Duration::from_millis(500), session.events.recv()).await
                {
                    Ok(Some(ConnectorEvent::Message(message))) => {
                        assert_eq!(message.body, "are you back?");
                        break;
                    }
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => panic!("the session ended"),
                }
                assert!(Instant::now() < deadline, "the nick was not regained");
            }
            other.quit().await;
            session.disconnect().await;
        }
    }
}

#[tokio::test]
async fn an_oper_kill_disconnects() {
    let server = ngircd();
    let nick = server.account("kil");
    let mut session = connect(&server, &nick).await;
    let mut oper = RawClient::connect(&server, &unique("op")).await;
    oper.send(&format!(
        "OPER {} {}",
        env("SWITCHBOARD_TEST_NGIRCD_OPER"),
        env("SWITCHBOARD_TEST_NGIRCD_OPER_PASSWORD")
    ))
    .await;
    oper.expect(|words| words.get(1) == Some(&"381")).await;
    oper.send(&format!("KILL {nick} :test over")).await;
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Disconnected { .. })
    })
    .await;
    let ConnectorEvent::Disconnected { reason } = event else {
        unreachable!()
    };
    assert!(reason.to_lowercase().contains("kill"), "{reason}");
    assert!(reason.contains("test over"), "{reason}");
    // The session is over: nothing more arrives, sending fails.
    assert!(session.events.recv().await.is_none());
    let sent = session.control.send_text(&handle("op"), "hi").await;
    assert!(matches!(sent, Err(ConnectorError::Closed)), "{sent:?}");
    oper.quit().await;
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let login = login_at("127.0.0.1:1", "ann", "pw");
    let error = connector()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(error, ConnectorError::Unreachable(_)), "{error:?}");
}

#[tokio::test]
async fn a_bad_handle_or_server_is_an_invalid_account() {
    // The domain refuses such handles already; the connector checks again (stored data, other
    // callers).
    for (nick, addr) in [("#channel", "127.0.0.1:6667"), ("ann", "no-port")] {
        let login = AccountLogin {
            handle: Handle::from_stored(nick),
            ..login_at(addr, "ann", "pw")
        };
        let error = connector()
            .connect(&login, LOGIN_TIMEOUT)
            .await
            .expect_err("invalid");
        assert!(
            matches!(error, ConnectorError::InvalidAccount(_)),
            "{nick} {addr}: {error:?}"
        );
    }
}

/// A scripted server: accepts one client, welcomes whoever registers, and returns the socket
/// halves with the lines the client sent so far.
async fn scripted_server() -> (
    String,
    tokio::task::JoinHandle<(BufReader<OwnedReadHalf>, OwnedWriteHalf)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut nick = String::new();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).await.unwrap() > 0);
            if let Some(rest) = line.strip_prefix("NICK ") {
                nick = rest.trim().to_owned();
            }
            if line.starts_with("CAP LS") {
                write
                    .write_all(b":fake CAP * LS :multi-prefix\r\n")
                    .await
                    .unwrap();
            }
            if line.starts_with("USER ") {
                let welcome = format!(
                    ":fake 001 {nick} :Welcome\r\n:fake 005 {nick} NICKLEN=30 :are supported\r\n\
                     :fake 422 {nick} :No MOTD\r\n"
                );
                write.write_all(welcome.as_bytes()).await.unwrap();
                return (reader, write);
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_silent_server_is_pinged_then_declared_dead() {
    let (addr, server) = scripted_server().await;
    let login = login_at(&addr, "ann", "");
    let mut session = IrcConnector::default()
        .with_keepalive(Duration::from_millis(500), Duration::from_millis(700))
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap();
    let (mut reader, _write) = server.await.unwrap();
    // The connector pings after the silence...
    let ping = tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).await.unwrap() > 0);
            if line.starts_with("PING ") {
                return line;
            }
        }
    })
    .await
    .expect("no keepalive PING");
    assert!(ping.trim_end().len() > "PING ".len(), "{ping}");
    // ...and without an answer gives up on the connection.
    let event = wait_for(&mut session.events, |event| {
        matches!(event, ConnectorEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(&event, ConnectorEvent::Disconnected { reason } if reason.contains("no answer")),
        "{event:?}"
    );
}

#[tokio::test]
async fn an_answered_ping_keeps_the_session_and_server_pings_are_answered() {
    let (addr, server) = scripted_server().await;
    let login = login_at(&addr, "ann", "");
    let mut session = IrcConnector::default()
        .with_keepalive(Duration::from_millis(300), Duration::from_millis(600))
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap();
    let (mut reader, mut write) = server.await.unwrap();
    write.write_all(b"PING :check-1\r\n").await.unwrap();
    let mut pongs = 0;
    let mut pings = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line))
            .await
            .expect("the connector went silent")
            .unwrap();
        assert!(read > 0, "the connector hung up");
        if line.trim_end() == "PONG :check-1" {
            pongs += 1;
        }
        if let Some(token) = line.trim_end().strip_prefix("PING ") {
            pings += 1;
            write
                .write_all(format!(":fake PONG fake {token}\r\n").as_bytes())
                .await
                .unwrap();
        }
    }
    assert_eq!(pongs, 1);
    assert!(pings >= 2, "{pings} keepalive pings in 3 s");
    assert!(session.events.try_recv().is_err(), "no event expected");
    write
        .write_all(b"ERROR :Closing link: (test) [shutting down]\r\n")
        .await
        .unwrap();
    let event = wait_for(&mut session.events, |_| true).await;
    assert!(
        matches!(&event, ConnectorEvent::Disconnected { reason } if reason.contains("shutting down")),
        "{event:?}"
    );
}

#[tokio::test]
async fn tls_logins_need_a_trusted_certificate() {
    let server = env("SWITCHBOARD_TEST_INSPIRCD_TLS_SERVER");
    let ca_file = env("SWITCHBOARD_TEST_INSPIRCD_TLS_CA");
    let ca = std::fs::read(&ca_file).unwrap_or_else(|e| panic!("cannot read {ca_file}: {e}"));
    let pal = unique("tls");
    let mut login = login_at(&server, "fay", "fay-pw-7Q");
    login.contacts = vec![entry(&pal)];

    // The machine's public roots do not know the throwaway CA: no login, nothing sent.
    let error = IrcConnector::default()
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .expect_err("the certificate is not trusted");
    assert!(
        matches!(&error, ConnectorError::Unreachable(text) if text.contains("certificate")),
        "{error:?}"
    );

    let mut session = IrcConnector::with_extra_roots(&ca)
        .unwrap()
        .with_ison_interval(ISON_INTERVAL)
        .connect(&login, LOGIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("fay cannot log in at {server}: {e}"));
    wait_for(
        &mut session.events,
        presence_of(&pal, Availability::Offline),
    )
    .await;
    let raw = RawClient::connect(&inspircd(), &pal).await;
    wait_for(&mut session.events, presence_of(&pal, Availability::Online)).await;
    raw.quit().await;
    session.disconnect().await;
}

#[tokio::test]
async fn a_server_without_capabilities_gets_pass_nick_user() {
    // An old-style server: answers nothing to CAP, wants PASS before NICK and USER.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut received = Vec::new();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).await.unwrap() > 0);
            let line = line.trim_end().to_owned();
            received.push(line.clone());
            if line.starts_with("USER ") {
                write
                    .write_all(b":old 001 ann :Welcome\r\n:old 376 ann :End of MOTD\r\n")
                    .await
                    .unwrap();
                return (received, reader, write);
            }
        }
    });
    let session = connector()
        .connect(&login_at(&addr, "ann", "server secret"), LOGIN_TIMEOUT)
        .await
        .unwrap();
    let (received, _reader, _write) = server.await.unwrap();
    assert_eq!(
        received,
        [
            "CAP LS 302",
            "PASS :server secret",
            "NICK ann",
            "USER ann 0 * :Switchboard"
        ]
    );
    session.disconnect().await;
}
