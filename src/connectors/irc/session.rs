//! A registered IRC connection's life: presence of watched nicks (MONITOR or ISON), private
//! messages both ways, keepalive pings, and the end (QUIT, ERROR, KILL, silence).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::proto::{self, Isupport, Line, MAX_LINE};
use super::{safe_text, Connection, Keepalive, Registered};
use crate::connectors::task::{self, TaskControl};
use crate::connectors::{
    Availability, ConnectorError, ConnectorEvent, IncomingMessage, LiveSession, OutgoingMessage,
    Roster, RosterEntry, Sent, SessionControl,
};
use crate::domain::ids::{Handle, Protocol};

/// Events a session may queue before the consumer reads them; beyond that the session waits
/// (and stops reading the socket) rather than dropping presence updates.
const EVENT_QUEUE: usize = 64;
/// Requests (messages, watch lists) that may wait for the session task.
const REQUEST_QUEUE: usize = 16;
/// How long a closing session waits for the server to acknowledge its QUIT.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// Upper bound for [`SessionControl::close`]: the goodbye plus a blocked socket write.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write the server does not take within this long means the connection is dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Targets per MONITOR or ISON line, in bytes: well inside the 512-byte line.
const TARGETS_PER_LINE: usize = 400;
/// Nicks per ISON line: each is a parameter, and servers take at most 15 parameters (RFC 2812
/// §2.3; ngIRCd silently drops the rest). One spare.
const ISON_NICKS: usize = 14;
/// ISON polls that may be unanswered before the next one is skipped.
const ISON_BACKLOG: usize = 4;
/// What the relaying server puts before our text (`:nick!user@host `), beyond the nick:
/// USERLEN 10 and a 63-byte host name (RFC 1035), plus the punctuation.
const SOURCE_OVERHEAD: usize = 1 + 1 + 10 + 1 + 63 + 1;
/// The gap between two NickServ REGAIN requests for the account's nick.
const REGAIN_INTERVAL: Duration = Duration::from_secs(30);
/// Nicks per USERHOST command (RFC 2812 §4.8).
const USERHOST_NICKS: usize = 5;
/// The PING token of keepalive pings; sends use `sb<number>`.
const KEEPALIVE_TOKEN: &str = "sb-keepalive";

pub(super) fn start(
    registered: Registered,
    contacts: &[RosterEntry],
    ison_interval: Duration,
    keepalive: Keepalive,
) -> LiveSession {
    let Registered {
        connection,
        nick,
        wanted,
        sasl,
        away_notify,
        isupport,
        backlog,
    } = registered;
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    // Dropping the control (with the LiveSession) stops the session just like a close.
    let (control, inbox) = TaskControl::new("irc", REQUEST_QUEUE, CLOSE_TIMEOUT);
    let now = Instant::now();
    let session = Session {
        connection,
        nick,
        wanted,
        sasl,
        away_notify,
        isupport,
        watched: HashMap::new(),
        monitored: 0,
        ison_asked: VecDeque::new(),
        userhost_asked: VecDeque::new(),
        ison_interval,
        next_ison: now,
        keepalive,
        last_heard: now,
        pinged: None,
        pending: VecDeque::new(),
        sent: 0,
        killed: None,
        last_regain: None,
        events: events_tx,
        stop: inbox.stop,
        requests: inbox.requests,
    };
    control.attach(tokio::spawn(session.run(contacts.to_vec(), backlog)));
    LiveSession {
        // IRC keeps no contact list: the watched nicks are Switchboard's own (RosterSource::Local).
        roster: Roster::Complete(Vec::new()),
        events,
        control: Arc::new(IrcSessionControl(control)),
        session_credential: None,
    }
}

/// Why the session ended.
enum End {
    /// Switchboard closed it (or dropped it, or stopped reading events).
    Local,
    /// The server or the network ended it; the reason is safe to log.
    Remote(String),
}

/// A watched nick.
struct Watched {
    handle: Handle,
    /// Followed with MONITOR (else polled with ISON).
    monitored: bool,
    /// What was last reported, `None` before the first report.
    reported: Option<(Availability, Option<String>)>,
}

impl Watched {
    fn known_online(&self) -> bool {
        self.reported
            .as_ref()
            .is_some_and(|(availability, _)| *availability != Availability::Offline)
    }
}

/// A message sent, waiting for the PONG that says the server has processed it.
struct PendingSend {
    token: String,
    /// The addressee, case-folded, to match error numerics against.
    target: String,
    error: Option<ConnectorError>,
    done: oneshot::Sender<Result<(), ConnectorError>>,
}

enum Request {
    Send {
        to: Handle,
        body: String,
        done: oneshot::Sender<Result<(), ConnectorError>>,
    },
    Watch {
        contacts: Vec<RosterEntry>,
        done: oneshot::Sender<()>,
    },
}

struct Session {
    connection: Connection,
    /// Our nick now, perhaps a stand-in.
    nick: String,
    /// The account's own nick.
    wanted: String,
    sasl: bool,
    /// Monitored nicks' AWAY changes are pushed to us (away-notify + extended-monitor).
    away_notify: bool,
    isupport: Isupport,
    /// Watched nicks by case-folded nick.
    watched: HashMap<String, Watched>,
    /// How many of them are monitored (the others are polled): kept up to date rather than
    /// counted, since every line received asks whether there is anything to poll.
    monitored: usize,
    /// The case-folded nicks of each ISON sent and not answered yet, oldest first.
    ison_asked: VecDeque<Vec<String>>,
    /// The same for USERHOST, which tells online nicks' away state.
    userhost_asked: VecDeque<Vec<String>>,
    ison_interval: Duration,
    next_ison: Instant,
    keepalive: Keepalive,
    last_heard: Instant,
    /// When the unanswered keepalive PING went out.
    pinged: Option<Instant>,
    pending: VecDeque<PendingSend>,
    /// Messages sent so far, for PING tokens.
    sent: u64,
    /// Why the server killed us, if it said so before closing.
    killed: Option<String>,
    last_regain: Option<Instant>,
    events: mpsc::Sender<ConnectorEvent>,
    stop: mpsc::Receiver<()>,
    requests: mpsc::Receiver<Box<Request>>,
}

impl Session {
    async fn run(mut self, contacts: Vec<RosterEntry>, backlog: Vec<Line>) {
        let Err(end) = self.drive(contacts, backlog).await;
        match end {
            End::Local => self.say_goodbye().await,
            End::Remote(reason) => {
                info!(%reason, "irc session lost");
                // Messages still waiting learn that the session is closed.
                self.pending.clear();
                let _ = self.emit(ConnectorEvent::Disconnected { reason }).await;
            }
        }
    }

    async fn drive(
        &mut self,
        contacts: Vec<RosterEntry>,
        backlog: Vec<Line>,
    ) -> Result<Infallible, End> {
        if self.sasl && !self.is_wanted(&self.nick) {
            self.regain().await?;
        }
        self.watch(&contacts).await?;
        for line in backlog {
            self.handle_line(line).await?;
        }
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = self.stop.recv() => return Err(End::Local),
                line = self.connection.reader.next() => match line {
                    Ok(Some(line)) => {
                        self.last_heard = Instant::now();
                        self.pinged = None;
                        self.handle_line(line).await?;
                    }
                    Ok(None) => {
                        return Err(End::Remote(self.killed.clone().unwrap_or_else(|| {
                            "the server closed the connection".to_owned()
                        })));
                    }
                    Err(e) => return Err(End::Remote(format!("the connection failed: {e}"))),
                },
                request = self.requests.recv() => match request {
                    Some(request) => self.handle_request(*request).await?,
                    None => return Err(End::Local),
                },
                _ = tokio::time::sleep_until(deadline) => self.on_timer().await?,
            }
        }
    }

    /// The next moment a poll or keepalive step is due.
    fn next_deadline(&self) -> Instant {
        let keepalive = match self.pinged {
            Some(pinged) => pinged + self.keepalive.answer,
            None => self.last_heard + self.keepalive.idle,
        };
        if self.watched.len() > self.monitored {
            keepalive.min(self.next_ison)
        } else {
            keepalive
        }
    }

    async fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if let Some(pinged) = self.pinged {
            if now >= pinged + self.keepalive.answer {
                return Err(End::Remote(format!(
                    "no answer from the server for {} s",
                    (now - self.last_heard).as_secs()
                )));
            }
        } else if now >= self.last_heard + self.keepalive.idle {
            self.pinged = Some(now);
            self.send(&format!("PING :{KEEPALIVE_TOKEN}")).await?;
        }
        if now >= self.next_ison {
            self.next_ison = now + self.ison_interval;
            self.poll_ison().await?;
        }
        Ok(())
    }

    async fn handle_request(&mut self, request: Request) -> Result<(), End> {
        match request {
            Request::Send { to, body, done } => self.send_message(&to, &body, done).await,
            Request::Watch { contacts, done } => {
                self.watch(&contacts).await?;
                let _ = done.send(());
                Ok(())
            }
        }
    }

    async fn send_message(
        &mut self,
        to: &Handle,
        body: &str,
        done: oneshot::Sender<Result<(), ConnectorError>>,
    ) -> Result<(), End> {
        let target = to.as_str();
        if !proto::valid_nick(target) {
            let _ = done.send(Err(ConnectorError::Refused(format!(
                "{target} is not an IRC nick"
            ))));
            return Ok(());
        }
        let overhead = "PRIVMSG ".len() + target.len() + " :".len() + 2;
        let room = MAX_LINE.saturating_sub(overhead + SOURCE_OVERHEAD + self.nick.len());
        let texts = proto::split_body(body, room);
        if texts.is_empty() {
            let _ = done.send(Err(ConnectorError::Refused(
                "the message is empty".to_owned(),
            )));
            return Ok(());
        }
        for text in texts {
            self.send(&format!("PRIVMSG {target} :{text}")).await?;
        }
        // The server answers commands in order: its PONG comes after any error about the
        // message, so it marks the moment the message has been handled.
        self.sent += 1;
        let token = format!("sb{}", self.sent);
        self.send(&format!("PING :{token}")).await?;
        self.pending.push_back(PendingSend {
            token,
            target: self.fold(target),
            error: None,
            done,
        });
        Ok(())
    }

    /// Replaces the watched set: stops following nicks no longer in it, starts on new ones.
    async fn watch(&mut self, contacts: &[RosterEntry]) -> Result<(), End> {
        let mut wanted: HashMap<String, Handle> = HashMap::new();
        for contact in contacts {
            let nick = contact.handle.as_str();
            if !proto::valid_nick(nick) {
                warn!(handle = %contact.handle, "not an IRC nick; not watched");
                continue;
            }
            let folded = self.fold(nick);
            if folded != self.fold(&self.wanted) {
                wanted.insert(folded, contact.handle.clone());
            }
        }
        let dropped: Vec<String> = self
            .watched
            .keys()
            .filter(|folded| !wanted.contains_key(*folded))
            .cloned()
            .collect();
        let mut unmonitor = Vec::new();
        for folded in dropped {
            if let Some(watched) = self.watched.remove(&folded) {
                if watched.monitored {
                    self.monitored -= 1;
                    unmonitor.push(watched.handle.as_str().to_owned());
                }
            }
        }
        self.send_targets("MONITOR - ", ",", &unmonitor).await?;

        let mut room = match self.isupport.monitor {
            Some(Some(limit)) => limit.saturating_sub(self.monitored),
            Some(None) => usize::MAX,
            None => 0,
        };
        let mut monitor = Vec::new();
        let mut polled = false;
        for (folded, handle) in wanted {
            if self.watched.contains_key(&folded) {
                continue;
            }
            let monitored = room > 0;
            if monitored {
                room -= 1;
                self.monitored += 1;
                monitor.push(handle.as_str().to_owned());
            } else {
                polled = true;
            }
            self.watched.insert(
                folded,
                Watched {
                    handle,
                    monitored,
                    reported: None,
                },
            );
        }
        self.send_targets("MONITOR + ", ",", &monitor).await?;
        if polled {
            // New nicks get their first report now rather than at the next regular poll.
            self.next_ison = Instant::now();
        }
        Ok(())
    }

    async fn poll_ison(&mut self) -> Result<(), End> {
        let nicks: Vec<String> = self
            .watched
            .values()
            .filter(|watched| !watched.monitored)
            .map(|watched| watched.handle.as_str().to_owned())
            .collect();
        let chunks = chunk_targets(&nicks, " ", ISON_NICKS);
        if self.ison_asked.len() >= ISON_BACKLOG * chunks.len().max(1) {
            debug!("irc server slow to answer ISON; skipping a poll");
            return Ok(());
        }
        for chunk in chunks {
            self.ison_asked
                .push_back(chunk.iter().map(|nick| self.fold(nick)).collect());
            self.send(&format!("ISON {}", chunk.join(" "))).await?;
        }
        Ok(())
    }

    /// Sends `prefix` + targets joined by `separator`, in as many lines as needed.
    async fn send_targets(
        &mut self,
        prefix: &str,
        separator: &str,
        targets: &[String],
    ) -> Result<(), End> {
        // One comma-separated parameter: only the line length limits it.
        for chunk in chunk_targets(targets, separator, usize::MAX) {
            self.send(&format!("{prefix}{}", chunk.join(separator)))
                .await?;
        }
        Ok(())
    }

    async fn handle_line(&mut self, line: Line) -> Result<(), End> {
        match line.command.as_str() {
            "PING" => self.send(&format!("PONG :{}", line.text())).await?,
            "PONG" => self.answered(line.text()),
            "PRIVMSG" => self.incoming_message(&line).await?,
            // RPL_MONONLINE: `nick!user@host,...`; RPL_MONOFFLINE: `nick,...`.
            // A nick coming online is reported once USERHOST has said whether it is away.
            "730" => {
                let unknown: Vec<String> = line
                    .param(1)
                    .split(',')
                    .map(|target| target.split('!').next().unwrap_or_default())
                    .map(|nick| self.fold(nick))
                    .filter(|folded| {
                        self.watched
                            .get(folded)
                            .is_some_and(|watched| !watched.known_online())
                    })
                    .collect();
                self.ask_userhost(unknown).await?;
            }
            "731" => {
                for nick in line.param(1).split(',') {
                    self.report(&self.fold(nick), Availability::Offline, None)
                        .await?;
                }
            }
            // RPL_USERHOST: which asked nicks are online, and whether they are away.
            "302" => {
                let Some(asked) = self.userhost_asked.pop_front() else {
                    return Ok(());
                };
                let present: HashMap<String, bool> = proto::userhost_reply(line.text())
                    .into_iter()
                    .map(|(nick, away)| (self.fold(nick), away))
                    .collect();
                for folded in asked {
                    let (availability, status) = match present.get(&folded) {
                        None => (Availability::Offline, None),
                        Some(false) => (Availability::Online, None),
                        // USERHOST has no away message: keep one AWAY told us.
                        Some(true) => (Availability::Away, self.away_message(&folded)),
                    };
                    self.report(&folded, availability, status).await?;
                }
            }
            // away-notify (for monitored nicks, via extended-monitor): away with a message, or
            // back without one.
            "AWAY" if self.away_notify => {
                let Some(nick) = line.source_nick() else {
                    return Ok(());
                };
                let folded = self.fold(nick);
                if self.watched.get(&folded).is_some_and(Watched::known_online) {
                    let (availability, status) = match line.params.first() {
                        Some(text) if !text.is_empty() => (
                            Availability::Away,
                            Some(safe_text(text)).filter(|t| !t.is_empty()),
                        ),
                        _ => (Availability::Online, None),
                    };
                    self.report(&folded, availability, status).await?;
                }
            }
            // ERR_MONLISTFULL: these targets were not added; poll them instead.
            "734" => {
                for nick in line.param(2).split(',') {
                    let folded = self.fold(nick);
                    if let Some(watched) = self.watched.get_mut(&folded) {
                        if std::mem::take(&mut watched.monitored) {
                            self.monitored -= 1;
                        }
                        self.next_ison = Instant::now();
                    }
                }
            }
            // RPL_ISON: which of the asked nicks are online.
            "303" => {
                let Some(asked) = self.ison_asked.pop_front() else {
                    return Ok(());
                };
                let online: HashSet<String> = line
                    .text()
                    .split(' ')
                    .filter(|nick| !nick.is_empty())
                    .map(|nick| self.fold(nick))
                    .collect();
                // Online ones are asked about with USERHOST at every poll: away changes of
                // nicks we share no channel with are not pushed to us.
                let mut present = Vec::new();
                for folded in asked {
                    let polled = self.watched.get(&folded).is_some_and(|w| !w.monitored);
                    if !polled {
                        continue;
                    }
                    if online.contains(&folded) {
                        present.push(folded);
                    } else {
                        self.report(&folded, Availability::Offline, None).await?;
                    }
                }
                self.ask_userhost(present).await?;
            }
            "NICK" => self.nick_change(&line).await?,
            "KILL" if self.is_me(line.param(0)) => {
                let by = line.source_nick().or(line.source.as_deref()).unwrap_or("?");
                self.killed = Some(format!(
                    "killed by {}: {}",
                    safe_text(by),
                    safe_text(line.text())
                ));
            }
            "ERROR" => {
                let reason = match &self.killed {
                    Some(killed) => killed.clone(),
                    None => format!("the server closed the link: {}", safe_text(line.text())),
                };
                return Err(End::Remote(reason));
            }
            // Errors about a message we sent: no such nick, cannot send, no text, …
            "401" | "404" | "406" | "407" | "411" | "412" | "413" | "414" | "492" => {
                let target = self.fold(line.param(1));
                let reason = format!("{}: {}", safe_text(line.param(1)), safe_text(line.text()));
                let pending = self
                    .pending
                    .iter_mut()
                    .find(|pending| pending.target == target && pending.error.is_none());
                if let Some(pending) = pending {
                    pending.error = Some(ConnectorError::Refused(reason));
                }
            }
            "005" => self.isupport.apply(&line),
            _ => {}
        }
        Ok(())
    }

    /// A PONG: completes the sends up to its token, or ends a keepalive wait.
    fn answered(&mut self, token: &str) {
        let Some(at) = self.pending.iter().position(|p| p.token == token) else {
            return;
        };
        for pending in self.pending.drain(..=at) {
            let outcome = match pending.error {
                Some(error) => Err(error),
                None => Ok(()),
            };
            let _ = pending.done.send(outcome);
        }
    }

    async fn incoming_message(&mut self, line: &Line) -> Result<(), End> {
        // Only users' messages addressed to our nick: not channels, not server notices.
        let Some(from) = line.source_nick() else {
            return Ok(());
        };
        if line.params.len() < 2 || !self.is_me(line.param(0)) || self.is_me(from) {
            return Ok(());
        }
        let text = line.param(1);
        let body = match text.strip_prefix('\u{1}') {
            // CTCP: only ACTION (`/me waves`) is a message; VERSION, PING etc. are not answered.
            Some(ctcp) => {
                let ctcp = ctcp.strip_suffix('\u{1}').unwrap_or(ctcp);
                match ctcp.split_once(' ') {
                    Some((verb, action)) if verb.eq_ignore_ascii_case("ACTION") => {
                        format!("/me {action}")
                    }
                    _ => return Ok(()),
                }
            }
            None => text.to_owned(),
        };
        let folded = self.fold(from);
        let handle = match self.watched.get(&folded) {
            Some(watched) => watched.handle.clone(),
            None => match Handle::parse(Protocol::Irc, from) {
                Ok(handle) => handle,
                Err(_) => return Ok(()),
            },
        };
        self.emit(ConnectorEvent::Message(IncomingMessage {
            from: handle,
            body,
            sent_at: Utc::now(),
            id: None,
        }))
        .await
    }

    async fn nick_change(&mut self, line: &Line) -> Result<(), End> {
        let (Some(old), new) = (line.source_nick(), line.param(0)) else {
            return Ok(());
        };
        if new.is_empty() || !self.is_me(old) {
            return Ok(());
        }
        let was_wanted = self.is_wanted(old);
        self.nick = new.to_owned();
        if self.is_wanted(new) {
            info!(nick = %self.nick, "irc nick regained");
        } else if was_wanted && self.sasl {
            // Services renamed us (or an oper did): ask for the account's nick back.
            self.regain().await?;
        }
        Ok(())
    }

    /// Asks NickServ (Atheme, Anope) to free the account's nick and give it to us; at most
    /// once per [`REGAIN_INTERVAL`].
    async fn regain(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self
            .last_regain
            .is_some_and(|last| now < last + REGAIN_INTERVAL)
        {
            return Ok(());
        }
        self.last_regain = Some(now);
        info!(nick = %self.nick, wanted = %self.wanted, "irc nick taken; asking NickServ to regain it");
        let wanted = self.wanted.clone();
        self.send(&format!("PRIVMSG NickServ :REGAIN {wanted}"))
            .await
    }

    /// Asks USERHOST about these (case-folded) nicks, five at a time.
    async fn ask_userhost(&mut self, nicks: Vec<String>) -> Result<(), End> {
        for batch in nicks.chunks(USERHOST_NICKS) {
            let names: Vec<String> = batch
                .iter()
                .filter_map(|folded| self.watched.get(folded))
                .map(|watched| watched.handle.as_str().to_owned())
                .collect();
            if names.is_empty() {
                continue;
            }
            self.userhost_asked.push_back(batch.to_vec());
            self.send(&format!("USERHOST {}", names.join(" "))).await?;
        }
        Ok(())
    }

    /// The away message last reported for a watched nick, if it is reported away.
    fn away_message(&self, folded: &str) -> Option<String> {
        match &self.watched.get(folded)?.reported {
            Some((Availability::Away, status)) => status.clone(),
            _ => None,
        }
    }

    /// Reports a watched nick's presence if it changed since the last report.
    async fn report(
        &mut self,
        folded: &str,
        availability: Availability,
        status: Option<String>,
    ) -> Result<(), End> {
        let Some(watched) = self.watched.get_mut(folded) else {
            return Ok(());
        };
        let now = (availability, status);
        if watched.reported.as_ref() == Some(&now) {
            return Ok(());
        }
        watched.reported = Some(now.clone());
        let handle = watched.handle.clone();
        let (availability, status) = now;
        self.emit(ConnectorEvent::Presence {
            handle,
            availability,
            status,
        })
        .await
    }

    fn fold(&self, nick: &str) -> String {
        self.isupport.casemapping.fold(nick)
    }

    fn is_me(&self, nick: &str) -> bool {
        self.fold(nick) == self.fold(&self.nick)
    }

    fn is_wanted(&self, nick: &str) -> bool {
        self.fold(nick) == self.fold(&self.wanted)
    }

    async fn send(&mut self, line: &str) -> Result<(), End> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.connection.send(line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Remote(format!("the connection failed: {e}"))),
            Err(_) => Err(End::Remote("the server stopped reading".to_owned())),
        }
    }

    /// Queues an event; gives up when Switchboard stops the session or stops listening.
    async fn emit(&mut self, event: ConnectorEvent) -> Result<(), End> {
        task::emit(&self.events, &mut self.stop, event)
            .await
            .map_err(|task::Stopped| End::Local)
    }

    /// Logs out: QUIT, then a short wait for the server's ERROR (or the end of the stream), so
    /// it has processed the QUIT before the socket goes.
    async fn say_goodbye(mut self) {
        let goodbye = async {
            self.connection
                .send("QUIT :Switchboard signing off")
                .await?;
            while let Some(line) = self.connection.reader.next().await? {
                if line.command == "ERROR" {
                    break;
                }
            }
            std::io::Result::Ok(())
        };
        match tokio::time::timeout(GOODBYE_GRACE, goodbye).await {
            Ok(Ok(())) => debug!("irc session closed"),
            Ok(Err(e)) => debug!("irc session closed uncleanly: {e}"),
            Err(_) => debug!("irc server did not acknowledge the QUIT in time"),
        }
    }
}

/// Groups targets so each group joined by `separator` stays within [`TARGETS_PER_LINE`] bytes
/// and `max_count` targets.
fn chunk_targets<'a>(
    targets: &'a [String],
    separator: &str,
    max_count: usize,
) -> Vec<Vec<&'a str>> {
    let mut chunks: Vec<Vec<&str>> = Vec::new();
    let mut length = 0;
    for target in targets {
        let extra = target.len() + separator.len();
        match chunks.last_mut() {
            Some(chunk) if length + extra <= TARGETS_PER_LINE && chunk.len() < max_count => {
                chunk.push(target);
                length += extra;
            }
            _ => {
                chunks.push(vec![target]);
                length = target.len();
            }
        }
    }
    chunks
}

/// The control side of a session: queues requests, stops its task and waits for the logout.
struct IrcSessionControl(TaskControl<Request>);

#[async_trait]
impl SessionControl for IrcSessionControl {
    async fn close(&self) {
        self.0.close().await;
    }

    async fn send_message(&self, message: &OutgoingMessage) -> Result<Sent, ConnectorError> {
        // IRC has no message ids: a retry after a lost answer may repeat the message.
        self.0
            .ask(|done| Request::Send {
                to: message.to.clone(),
                body: message.body.clone(),
                done,
            })
            .await?
            .map(|()| Sent::default())
    }

    async fn watch(&self, contacts: &[RosterEntry]) -> Result<(), ConnectorError> {
        self.0
            .ask(|done| Request::Watch {
                contacts: contacts.to_vec(),
                done,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_chunked_within_a_line() {
        let nicks: Vec<String> = (0..100).map(|i| format!("nick{i:04}")).collect();
        let chunks = chunk_targets(&nicks, ",", usize::MAX);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.join(",").len() <= TARGETS_PER_LINE));
        assert_eq!(
            chunks.concat(),
            nicks.iter().map(String::as_str).collect::<Vec<_>>()
        );
        let chunks = chunk_targets(&nicks[..20], " ", ISON_NICKS);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [14, 6]);
        assert!(chunk_targets(&[], " ", 1).is_empty());
    }
}
