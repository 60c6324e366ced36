//! IRC connector: logs a nick into one IRC server and reports the presence of the nicks the
//! user watches and the private messages sent to it.
//!
//! A small line-based client written here over tokio, not the `irc` crate: that crate (1.1) has
//! no SASL and only flushes what it sends while its stream is being polled, and the few commands
//! needed (CAP, AUTHENTICATE, NICK/USER, MONITOR, ISON, USERHOST, PRIVMSG, PING) are simpler to
//! own than to work around.
//!
//! Presence: IRC has no contact list ([`RosterSource::Local`]): the watched nicks come from
//! Switchboard. They are followed with MONITOR where RPL_ISUPPORT offers it (up to its limit),
//! the rest by ISON polling; a nick found online is reported once USERHOST has said whether it is
//! away. Away changes are pushed for monitored nicks when the server grants `away-notify` with
//! `extended-monitor` (with the away message), and re-read with USERHOST at every poll otherwise.
//! A watched nick that changes its nick goes offline, as the nick is then free.
//! The login's roster is an empty [`Roster::Complete`](super::Roster::Complete): there is no
//! list upstream to be absent, and Switchboard never syncs a local one against it.
//!
//! Login: `CAP LS 302`; when the server offers SASL with PLAIN, the account logs in with SASL
//! PLAIN (account name = the nick), otherwise the password is sent as the server password
//! (`PASS`), which is what ngIRCd-style servers without services check. An empty password logs
//! in with neither. A nick held by another connection: with SASL (services hold the account) the
//! connector takes a stand-in nick (`nick_`) and asks NickServ to `REGAIN` the real one; without
//! services there is nothing that could free it, so the login fails with
//! [`ConnectorError::Refused`] (retried by the caller's supervisor: it is usually the previous
//! session of the same account, which the server drops on its next ping timeout).
//!
//! Transport: `ircs://host:port` is TLS from the first byte (the certificate must chain to the
//! public web PKI roots or to extra roots the connector was given, and be valid for `host`);
//! `host:port` or `irc://host:port` is plain TCP, where the connector sends no password (neither
//! PASS nor SASL PLAIN) except to a loopback address: it would cross the network in the clear.
//! No STARTTLS: hardly any network offers it, and it can be stripped.

mod proto;
mod session;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::ClientConfig;
use tracing::debug;

use super::net::UpstreamPolicy;
use super::net::{invalid, parse_host_port, require_protocol};
use super::tls;
use super::{AccountLogin, Connector, ConnectorError, ExtraRootsError, LiveSession, RosterSource};
use crate::domain::ids::Protocol;
use crate::secret::Secret;
use proto::{Isupport, Line, MAX_INCOMING};

/// How often nicks are polled with ISON on servers without MONITOR.
const ISON_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which the session pings the server, and how long it then waits for any line
/// before it declares the connection dead: a dead TCP peer is otherwise never noticed.
const KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(60),
    answer: Duration::from_secs(30),
};
/// How long to wait for an answer to `CAP LS` before registering without capabilities.
const CAP_WAIT: Duration = Duration::from_secs(3);
/// Stand-in nicks tried while the account's nick is taken, before giving up.
const NICK_ATTEMPTS: usize = 5;

/// When to ping a quiet server and how long to wait for it.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    idle: Duration,
    answer: Duration,
}

/// Logs IRC accounts in; one instance serves every account.
#[derive(Debug, Clone)]
pub struct IrcConnector {
    ison_interval: Duration,
    keepalive: Keepalive,
    /// What `ircs://` trusts.
    tls: Arc<ClientConfig>,
    /// Where no connection may go.
    upstream: UpstreamPolicy,
}

/// Trusts the public web PKI roots only.
impl Default for IrcConnector {
    fn default() -> Self {
        Self {
            ison_interval: ISON_INTERVAL,
            keepalive: KEEPALIVE,
            tls: tls::client_config(tls::public_roots()),
            upstream: UpstreamPolicy::default(),
        }
    }
}

impl IrcConnector {
    /// Trusts the public web PKI roots plus every certificate in `pem` (one or more
    /// `CERTIFICATE` blocks; other blocks are ignored), e.g. a private CA's.
    pub fn with_extra_roots(pem: &[u8]) -> Result<Self, ExtraRootsError> {
        Ok(Self {
            tls: tls::client_config(tls::roots_with(pem)?),
            ..Self::default()
        })
    }

    /// Never connects to the networks `upstream` denies.
    pub fn with_upstream(mut self, upstream: UpstreamPolicy) -> Self {
        self.upstream = upstream;
        self
    }

    /// Polls watched nicks with ISON this often on servers without MONITOR (default 30 s).
    pub fn with_ison_interval(mut self, interval: Duration) -> Self {
        self.ison_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Pings the server after `idle` without a line from it, and declares the connection dead
    /// when nothing arrives within `answer` after that (defaults 60 s and 30 s).
    pub fn with_keepalive(mut self, idle: Duration, answer: Duration) -> Self {
        let floor = Duration::from_millis(100);
        self.keepalive = Keepalive {
            idle: idle.max(floor),
            answer: answer.max(floor),
        };
        self
    }
}

#[async_trait]
impl Connector for IrcConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Irc
    }

    fn roster_source(&self) -> RosterSource {
        RosterSource::Local
    }

    async fn connect(
        &self,
        login: &AccountLogin,
        timeout: Duration,
    ) -> Result<LiveSession, ConnectorError> {
        let target = Target::parse(login)?;
        let password = login.credential.password()?;
        // They could not be sent as PASS, and would inject commands if they were.
        if password.expose().contains(['\r', '\n', '\0']) {
            return Err(invalid("the password must not contain line breaks or NUL"));
        }
        let registered = tokio::time::timeout(
            timeout,
            log_in(&target, password, &self.tls, &self.upstream),
        )
        .await
        .map_err(|_| ConnectorError::Unreachable("timed out".to_owned()))??;
        debug!(server = %target.server, nick = %registered.nick, sasl = registered.sasl,
            "irc session online");
        Ok(session::start(
            registered,
            &login.contacts,
            self.ison_interval,
            self.keepalive,
        ))
    }
}

/// Where and as whom to log in, validated before any network traffic.
struct Target {
    host: String,
    port: u16,
    /// `ircs://`: TLS from the first byte.
    tls: bool,
    /// `host:port` as configured, for messages.
    server: String,
    nick: String,
}

impl Target {
    fn parse(login: &AccountLogin) -> Result<Self, ConnectorError> {
        require_protocol(login, Protocol::Irc)?;
        let nick = login.handle.as_str().to_owned();
        if !proto::valid_nick(&nick) || nick.len() > 64 {
            return Err(invalid(
                "the handle must be an IRC nick of at most 64 characters: a letter or one of \
                 [ ] \\ ` _ ^ { | } first, then letters, digits, those or '-'",
            ));
        }
        let server = login.server.trim();
        let (address, tls) = match server.split_once("://") {
            Some((scheme, address)) if scheme.eq_ignore_ascii_case("ircs") => (address, true),
            Some((scheme, address)) if scheme.eq_ignore_ascii_case("irc") => (address, false),
            Some(_) => return Err(invalid("the server must be host:port or ircs://host:port")),
            None => (server, false),
        };
        let (host, port) = parse_host_port(address).ok_or_else(|| {
            invalid("the server must be host:port or ircs://host:port (IPv6 addresses in brackets)")
        })?;
        Ok(Self {
            host,
            port,
            tls,
            server: login.server.clone(),
            nick,
        })
    }
}

/// The connection (TCP or TLS), split, with line framing on the read side.
struct Connection {
    reader: LineReader,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl Connection {
    /// Writes one command line; `line` must hold no CR, LF or NUL (callers build it from
    /// validated nicks and [`proto::split_body`] texts).
    async fn send(&mut self, line: &str) -> std::io::Result<()> {
        if !line.starts_with("PASS ") && !line.starts_with("AUTHENTICATE ") {
            debug!(line, "irc >");
        }
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await
    }
}

/// Reads CR LF (or bare LF) terminated lines. Cancel-safe: bytes read stay in the buffer, so
/// it can sit in a `select!` next to other branches.
struct LineReader {
    stream: Box<dyn AsyncRead + Send + Unpin>,
    buffer: Vec<u8>,
    /// Set while skipping the rest of an overlong line.
    discarding: bool,
}

impl LineReader {
    fn new(stream: Box<dyn AsyncRead + Send + Unpin>) -> Self {
        Self {
            stream,
            buffer: Vec::with_capacity(1024),
            discarding: false,
        }
    }

    /// The next parseable line; `None` at end of stream.
    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buffer.drain(..=end).collect();
                if std::mem::take(&mut self.discarding) {
                    continue;
                }
                let text = proto::decode(&raw);
                if let Some(line) = Line::parse(&text) {
                    debug!(line = %text.trim_end(), "irc <");
                    return Ok(Some(line));
                }
                continue;
            }
            if self.buffer.len() > MAX_INCOMING {
                self.buffer.clear();
                self.discarding = true;
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok(None);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// What a successful registration hands to the session.
struct Registered {
    connection: Connection,
    /// The nick we have now, which may be a stand-in.
    nick: String,
    /// The account's own nick.
    wanted: String,
    /// Logged in with SASL, i.e. the network has services that know the account.
    sasl: bool,
    /// `away-notify` and `extended-monitor` granted: monitored nicks' away changes are pushed.
    away_notify: bool,
    isupport: Isupport,
    /// Lines that arrived during registration that the session should still see.
    backlog: Vec<Line>,
}

/// Where a login stands while the server's answers come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the capability list.
    CapLs,
    /// SASL requested, waiting for ACK / `AUTHENTICATE +` / 903.
    Sasl,
    /// Other capabilities requested (no SASL), waiting for ACK or NAK.
    CapReq,
    /// NICK and USER sent, waiting for 001.
    Registering,
    /// 001 received, waiting for the end of the MOTD (RPL_ISUPPORT comes before it).
    Welcomed,
}

async fn log_in(
    target: &Target,
    password: &Secret,
    tls: &Arc<ClientConfig>,
    upstream: &UpstreamPolicy,
) -> Result<Registered, ConnectorError> {
    let tcp = upstream.connect(&target.host, target.port).await?;
    // Lines are small and latency matters more than packet count.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("cannot disable Nagle's algorithm: {e}");
    }
    let password = password.expose();
    let loopback = tcp.peer_addr().is_ok_and(|peer| peer.ip().is_loopback());
    if !target.tls && !loopback && !password.is_empty() {
        return Err(invalid(
            "the password would cross the network unencrypted: use ircs://host:port",
        ));
    }
    let mut connection = if target.tls {
        let (read, write) = tokio::io::split(tls::handshake(tcp, &target.host, tls).await?);
        Connection {
            reader: LineReader::new(Box::new(read)),
            writer: Box::new(write),
        }
    } else {
        let (read, write) = tcp.into_split();
        Connection {
            reader: LineReader::new(Box::new(read)),
            writer: Box::new(write),
        }
    };
    let io = |e: std::io::Error| ConnectorError::Unreachable(format!("the connection failed: {e}"));
    let wanted = target.nick.clone();
    let mut nick = wanted.clone();
    let mut isupport = Isupport::default();
    let mut backlog = Vec::new();
    let mut phase = Phase::CapLs;
    let mut caps = String::new();
    let mut sasl = false;
    let mut away_notify = false;
    let mut sent_pass = false;
    let mut attempts = 0;
    // Without a nick limit from the server, stand-ins keep to the account nick's length or
    // RFC 1459's nine characters, whichever is more.
    let mut nick_limit = wanted.len().max(9);

    connection.send("CAP LS 302").await.map_err(io)?;
    loop {
        // A server that ignores CAP silently would otherwise wait for NICK and USER for ever.
        let next = if phase == Phase::CapLs {
            match tokio::time::timeout(CAP_WAIT, connection.reader.next()).await {
                Ok(next) => next,
                Err(_) => {
                    debug!("no answer to CAP LS; registering without capabilities");
                    phase = Phase::Registering;
                    sent_pass = !password.is_empty();
                    register(&mut connection, &nick, Some(password))
                        .await
                        .map_err(io)?;
                    continue;
                }
            }
        } else {
            connection.reader.next().await
        };
        let Some(line) = next.map_err(io)? else {
            return Err(ConnectorError::Unreachable(
                "the server closed the connection during login".to_owned(),
            ));
        };
        match line.command.as_str() {
            "PING" => {
                connection
                    .send(&format!("PONG :{}", line.text()))
                    .await
                    .map_err(io)?;
            }
            "CAP" => match line.param(1).to_ascii_uppercase().as_str() {
                "LS" if phase == Phase::CapLs => {
                    // `CAP * LS * :caps` continues on the next line; the last has no `*`.
                    let more = line.params.len() > 3 && line.param(2) == "*";
                    caps.push(' ');
                    caps.push_str(line.text());
                    if more {
                        continue;
                    }
                    // Away changes of monitored nicks arrive as AWAY lines only with both.
                    let away = ["away-notify", "extended-monitor"];
                    let mut request: Vec<&str> = Vec::new();
                    if away.iter().all(|cap| proto::cap_offered(&caps, cap)) {
                        request.extend(away);
                    }
                    if !password.is_empty() && proto::sasl_plain_offered(&caps) {
                        phase = Phase::Sasl;
                        request.insert(0, "sasl");
                        register(&mut connection, &nick, None).await.map_err(io)?;
                    } else {
                        phase = Phase::CapReq;
                        sent_pass = !password.is_empty();
                        register(&mut connection, &nick, Some(password))
                            .await
                            .map_err(io)?;
                    }
                    if request.is_empty() {
                        phase = Phase::Registering;
                        connection.send("CAP END").await.map_err(io)?;
                    } else {
                        let request = request.join(" ");
                        connection
                            .send(&format!("CAP REQ :{request}"))
                            .await
                            .map_err(io)?;
                    }
                }
                "ACK" if matches!(phase, Phase::Sasl | Phase::CapReq) => {
                    let acked: Vec<&str> = line.text().split(' ').collect();
                    away_notify =
                        acked.contains(&"away-notify") && acked.contains(&"extended-monitor");
                    if phase == Phase::Sasl {
                        connection.send("AUTHENTICATE PLAIN").await.map_err(io)?;
                    } else {
                        phase = Phase::Registering;
                        connection.send("CAP END").await.map_err(io)?;
                    }
                }
                // A request is granted whole or not at all: SASL alone, or no extras.
                "NAK"
                    if phase == Phase::Sasl && !line.text().trim().eq_ignore_ascii_case("sasl") =>
                {
                    connection.send("CAP REQ :sasl").await.map_err(io)?;
                }
                "NAK" if phase == Phase::Sasl => {
                    return Err(ConnectorError::Protocol(
                        "the server offered SASL, then refused it".to_owned(),
                    ));
                }
                "NAK" if phase == Phase::CapReq => {
                    phase = Phase::Registering;
                    connection.send("CAP END").await.map_err(io)?;
                }
                _ => {}
            },
            "AUTHENTICATE" if phase == Phase::Sasl && line.param(0) == "+" => {
                for payload in proto::sasl_plain_payloads(&wanted, password) {
                    connection
                        .send(&format!("AUTHENTICATE {payload}"))
                        .await
                        .map_err(io)?;
                }
            }
            // RPL_SASLSUCCESS
            "903" if phase == Phase::Sasl => {
                sasl = true;
                phase = Phase::Registering;
                connection.send("CAP END").await.map_err(io)?;
            }
            // ERR_SASLFAIL, ERR_SASLTOOLONG
            "904" | "905" => return Err(ConnectorError::AuthFailed),
            // ERR_SASLABORTED, ERR_SASLALREADY
            "906" | "907" => {
                return Err(ConnectorError::Protocol(format!(
                    "SASL login failed: {}",
                    line.text()
                )));
            }
            // ERR_PASSWDMISMATCH
            "464" => return Err(ConnectorError::AuthFailed),
            // ERR_UNKNOWNCOMMAND / ERR_NOTREGISTERED for CAP: a server without capabilities.
            "421" | "451" if phase == Phase::CapLs && line.param(1).eq_ignore_ascii_case("CAP") => {
                phase = Phase::Registering;
                sent_pass = !password.is_empty();
                register(&mut connection, &nick, Some(password))
                    .await
                    .map_err(io)?;
            }
            // ERR_NICKNAMEINUSE, ERR_NICKCOLLISION; ERR_ERRONEUSNICKNAME for a stand-in too long.
            "433" | "436" | "432" if phase != Phase::Welcomed => {
                let stand_in = nick != wanted;
                let services = sasl || phase == Phase::Sasl;
                // With services, 432 for the account's own nick is most likely a services hold
                // (after a REGAIN or a guest rename), which REGAIN releases.
                if line.command == "432" && !stand_in && !services {
                    return Err(invalid(format!(
                        "the server refuses the nick {wanted}: {}",
                        line.text()
                    )));
                }
                if line.command == "432" && stand_in {
                    nick_limit = nick_limit.saturating_sub(1).max(2);
                }
                // Only services can free a nick someone else holds; a plain server cannot.
                if !services {
                    return Err(nick_taken(&wanted, &target.server));
                }
                attempts += 1;
                if attempts > NICK_ATTEMPTS {
                    return Err(ConnectorError::Refused(format!(
                        "the nick {wanted} and {NICK_ATTEMPTS} stand-ins are all taken on {}",
                        target.server
                    )));
                }
                nick = proto::alternative_nick(&wanted, attempts, nick_limit);
                connection.send(&format!("NICK {nick}")).await.map_err(io)?;
            }
            // RPL_WELCOME: the first parameter is the nick the server gave us.
            "001" => {
                if !line.param(0).is_empty() {
                    nick = line.param(0).to_owned();
                }
                phase = Phase::Welcomed;
            }
            "005" => isupport.apply(&line),
            // End of MOTD, or no MOTD: registration burst over, RPL_ISUPPORT known.
            "376" | "422" if phase == Phase::Welcomed => break,
            "ERROR" => {
                let text = line.text();
                // ngIRCd refuses a wrong server password with ERROR only, no 464.
                if sent_pass && text.to_ascii_lowercase().contains("password") {
                    return Err(ConnectorError::AuthFailed);
                }
                return Err(ConnectorError::Unreachable(format!(
                    "the server closed the connection: {}",
                    safe_text(text)
                )));
            }
            "PRIVMSG" | "NOTICE" | "NICK" | "KILL" => backlog.push(line),
            _ => {}
        }
    }
    Ok(Registered {
        connection,
        nick,
        wanted,
        sasl,
        away_notify,
        isupport,
        backlog,
    })
}

/// Sends PASS (when given and not empty), NICK and USER.
async fn register(
    connection: &mut Connection,
    nick: &str,
    password: Option<&str>,
) -> std::io::Result<()> {
    if let Some(password) = password.filter(|password| !password.is_empty()) {
        // The trailing form, so a password may hold spaces (CR, LF, NUL are refused earlier).
        connection.send(&format!("PASS :{password}")).await?;
    }
    connection.send(&format!("NICK {nick}")).await?;
    connection
        .send(&format!("USER {nick} 0 * :Switchboard"))
        .await
}

fn nick_taken(nick: &str, server: &str) -> ConnectorError {
    ConnectorError::Refused(format!(
        "the nick {nick} is in use on {server}, which offers no services to reclaim it"
    ))
}

/// Server-provided text, cut short and stripped of control characters, for errors and events.
fn safe_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::Credential;
    use crate::domain::ids::Handle;

    #[test]
    fn ircs_urls_mean_tls() {
        let login = |server: &str| AccountLogin {
            protocol: Protocol::Irc,
            server: server.to_owned(),
            handle: Handle::parse(Protocol::Irc, "ann").unwrap(),
            credential: Credential::Password(Secret::new("pw")),
            contacts: Vec::new(),
            message_cursor: None,
        };
        let target = Target::parse(&login("ircs://irc.example.org:6697")).unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.tls),
            ("irc.example.org", 6697, true)
        );
        let target = Target::parse(&login("IRC://[::1]:6667")).unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.tls),
            ("::1", 6667, false)
        );
        assert!(!Target::parse(&login("10.0.0.1:6667")).unwrap().tls);
        for bad in [
            "https://irc.example.org:443",
            "ircs://irc.example.org",
            "ircs://",
        ] {
            assert!(
                matches!(
                    Target::parse(&login(bad)),
                    Err(ConnectorError::InvalidAccount(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn handles_must_be_nicks() {
        let login = |handle: &str| AccountLogin {
            protocol: Protocol::Irc,
            server: "127.0.0.1:6667".to_owned(),
            // Unvalidated, as a handle stored before the domain checked IRC nicks would be.
            handle: Handle::from_stored(handle),
            credential: Credential::Password(Secret::new("pw")),
            contacts: Vec::new(),
            message_cursor: None,
        };
        assert_eq!(Target::parse(&login("ann")).unwrap().nick, "ann");
        for bad in ["1ann", "ann@example.org", "#chan"] {
            assert!(
                matches!(
                    Target::parse(&login(bad)),
                    Err(ConnectorError::InvalidAccount(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn server_text_is_tamed() {
        assert_eq!(safe_text(" Closing\u{1} link \r\n"), "Closing link");
        assert_eq!(safe_text(&"x".repeat(500)).len(), 200);
    }
}
