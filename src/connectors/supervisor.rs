//! The supervisor of one bound account's connection: logs in, keeps the session, and after a
//! drop or a failed attempt tries again with exponential backoff and jitter. A session that
//! drops before it was stable counts as one more failure, so a server that lets us log in and
//! then kicks us at once is retried ever more slowly, not every second. A refused credential
//! stops it for good (retrying a revoked password only gets accounts locked).
//!
//! It knows nothing of users, vaults or views: an [`AccountHost`] gives it the login and takes
//! what it sees. That keeps the retry logic testable with a fake connector.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::pacer::{Pacer, Pass};
use super::{AccountLogin, Connector, ConnectorError, ConnectorEvent, LiveSession, SessionControl};

/// The most events handed to [`AccountHost::observe`] at once.
const OBSERVE_BATCH: usize = 256;

/// Where an account's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// The first login attempt is under way.
    Connecting,
    Online,
    /// The server refused the credentials; no more attempts until the user logs in again.
    AuthFailed,
    /// The first attempts failed (network, timeout, server error); retrying.
    Unreachable,
    /// Not connected and not trying: logged out, or not logged in on any node.
    Disconnected,
    /// The connection dropped after being online (here, or on a node that stopped); retrying.
    Reconnecting,
    /// Waiting for its turn to log in: the node paces logins (many users resuming at once).
    Waiting,
}

impl LinkState {
    /// The stable name stored and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "CONNECTING",
            LinkState::Online => "ONLINE",
            LinkState::AuthFailed => "AUTH_FAILED",
            LinkState::Unreachable => "UNREACHABLE",
            LinkState::Disconnected => "DISCONNECTED",
            LinkState::Reconnecting => "RECONNECTING",
            LinkState::Waiting => "WAITING",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        [
            LinkState::Connecting,
            LinkState::Online,
            LinkState::AuthFailed,
            LinkState::Unreachable,
            LinkState::Disconnected,
            LinkState::Reconnecting,
            LinkState::Waiting,
        ]
        .into_iter()
        .find(|s| s.as_str() == stored)
    }
}

/// One report of an account's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub state: LinkState,
    /// Failed attempts since the connection was last stable (0 while online): a login that
    /// failed, or a session that dropped within [`SupervisorSettings::stable_after`].
    pub attempt: u32,
    /// When the next attempt starts, while waiting for one.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Why it is not online, safe to show (never a secret).
    pub detail: Option<String>,
}

impl LinkStatus {
    fn new(state: LinkState, attempt: u32, detail: Option<String>) -> Self {
        Self {
            state,
            attempt,
            next_retry_at: None,
            detail,
        }
    }
}

/// Exponential backoff: `initial · factor^(attempt-1)`, capped at `max`, then shortened by a
/// random part of up to `jitter` (0..1) so that many accounts of one failed server do not all
/// come back at the same instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(120),
            factor: 2.0,
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1`, given `attempt` failures so far (at least 1) and a
    /// random `unit` in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let full = self.initial.as_secs_f64() * self.factor.powi(exponent);
        let capped = full.min(self.max.as_secs_f64());
        let shortened = capped * (1.0 - self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0));
        Duration::from_secs_f64(shortened.max(0.0))
    }
}

/// A random number in [0, 1) without a random-number crate: std's per-process random hash
/// keys, mixed with the clock. Jitter needs spread, not cryptographic quality.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Why the host could not do its part; ends the supervision when `fatal`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub message: String,
    /// True when trying again cannot help (the account is gone, its secret is missing).
    pub fatal: bool,
}

/// The supervisor's view of the rest of Switchboard, for one account.
#[async_trait]
pub trait AccountHost: Send + Sync + 'static {
    /// What to log in with, read afresh for each attempt (a session token may have replaced
    /// the password; the watch list may have changed).
    async fn login(&self) -> Result<AccountLogin, HostError>;
    /// A new status; called on every change.
    async fn report(&self, status: LinkStatus);
    /// A session is up: import its roster, keep its session credential. An error closes the
    /// session and counts as a failed attempt.
    async fn online(&self, session: &mut LiveSession) -> Result<(), HostError>;
    /// What the live session saw (presence, roster changes, messages), in order: everything
    /// that was queued at once, so that a burst (the presence of a whole roster after login)
    /// can be written in one go.
    async fn observe(&self, events: Vec<ConnectorEvent>);
}

/// Tunables of the supervisors.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorSettings {
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    /// How long a session must stay up before a drop starts the backoff afresh from
    /// `backoff.initial`. A session that drops sooner counts as a failed attempt: the failures
    /// before it are kept and the next wait grows (up to `backoff.max`).
    pub stable_after: Duration,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// How a supervisor starts.
pub struct Launch {
    /// The account is already logged in (a bind or a registration checked the credentials just
    /// before): that session is adopted as is.
    pub session: Option<LiveSession>,
    /// Every login attempt waits for a pass from the node's pacer.
    pub pacer: Arc<Pacer>,
    /// It was online before, on a node that stopped: its first attempt is a reconnection.
    pub reconnecting: bool,
}

/// Whether and how a supervisor is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    Running,
    /// Log out and leave the account disconnected.
    Stop,
    /// Log out; another node takes the connection over (graceful shutdown).
    HandOver,
}

/// The handle of a running supervisor. Dropping it stops the supervision too, without waiting
/// for the logout; [`Supervisor::stop`] waits.
pub struct Supervisor {
    stop: watch::Sender<Halt>,
    session: Arc<Mutex<Option<Arc<dyn SessionControl>>>>,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Starts supervising.
    pub fn start(
        connector: Arc<dyn Connector>,
        host: Arc<dyn AccountHost>,
        settings: SupervisorSettings,
        launch: Launch,
    ) -> Self {
        let (stop, stopped) = watch::channel(Halt::Running);
        let current = Arc::new(Mutex::new(None));
        let run = Run {
            connector,
            host,
            settings,
            stopped,
            current: Arc::clone(&current),
            pacer: launch.pacer,
        };
        let task = tokio::spawn(run.run(launch.session, launch.reconnecting));
        Self {
            stop,
            session: current,
            task,
        }
    }

    /// The live session, while online: for sending and for changing the watch list.
    pub fn session(&self) -> Option<Arc<dyn SessionControl>> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether it has ended by itself (refused credentials, fatal host error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Logs out (if online), stops retrying, and waits for the task to end; the last status
    /// reported is `Disconnected`.
    pub async fn stop(self) {
        self.halt(Halt::Stop).await;
    }

    /// Logs out (if online) and stops, reporting `Reconnecting`: the node is shutting down
    /// and another takes the connection over.
    pub async fn hand_over(self) {
        self.halt(Halt::HandOver).await;
    }

    async fn halt(self, how: Halt) {
        let _ = self.stop.send(how);
        if let Err(e) = self.task.await {
            if e.is_panic() {
                tracing::error!("account supervisor panicked: {e}");
            }
        }
    }
}

/// The supervisor task's state.
struct Run {
    connector: Arc<dyn Connector>,
    host: Arc<dyn AccountHost>,
    settings: SupervisorSettings,
    stopped: watch::Receiver<Halt>,
    current: Arc<Mutex<Option<Arc<dyn SessionControl>>>>,
    pacer: Arc<Pacer>,
}

/// How one stretch of the loop ended.
enum Next {
    /// Try again after `attempt` failures; `was_online` picks RECONNECTING over UNREACHABLE.
    Retry {
        attempt: u32,
        detail: String,
    },
    /// Stop supervising, leaving `status` as the last word (unless stopped by the caller).
    Finish(LinkStatus),
    Stopped,
}

impl Run {
    async fn run(mut self, mut adopted: Option<LiveSession>, reconnecting: bool) {
        let mut attempt = 0u32;
        let mut was_online = reconnecting;
        let end = loop {
            let outcome = match adopted.take() {
                Some(session) => self.hold(session, attempt, &mut was_online).await,
                None => {
                    let Some(pass) = self.pass(attempt).await else {
                        break None;
                    };
                    let state = match (attempt, was_online) {
                        (_, true) => LinkState::Reconnecting,
                        (0, false) => LinkState::Connecting,
                        (_, false) => LinkState::Unreachable,
                    };
                    self.host
                        .report(LinkStatus::new(state, attempt, None))
                        .await;
                    self.attempt(attempt, &mut was_online, pass).await
                }
            };
            match outcome {
                Next::Retry {
                    attempt: failures,
                    detail,
                } => {
                    attempt = failures;
                    let delay = self.settings.backoff.delay(attempt, random_unit());
                    let state = if was_online {
                        LinkState::Reconnecting
                    } else {
                        LinkState::Unreachable
                    };
                    let next_retry_at = Utc::now()
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    self.host
                        .report(LinkStatus {
                            state,
                            attempt,
                            next_retry_at: Some(next_retry_at),
                            detail: Some(detail),
                        })
                        .await;
                    if self.sleep(delay).await {
                        break None;
                    }
                }
                Next::Finish(status) => break Some(status),
                Next::Stopped => break None,
            }
        };
        match end {
            // Ended by itself: leave the reason showing until the user logs in again.
            Some(status) => self.host.report(status).await,
            None if *self.stopped.borrow() == Halt::HandOver => {
                let detail = "this node is shutting down; another node takes the connection over";
                self.host
                    .report(LinkStatus::new(
                        LinkState::Reconnecting,
                        0,
                        Some(detail.to_owned()),
                    ))
                    .await
            }
            None => {
                self.host
                    .report(LinkStatus::new(LinkState::Disconnected, 0, None))
                    .await
            }
        }
    }

    /// Leave from the node's pacer for the next attempt; says `Waiting` if it is not free at
    /// once. `None` when stopped meanwhile.
    async fn pass(&mut self, attempt: u32) -> Option<Pass> {
        if let Some(pass) = self.pacer.try_enter() {
            return Some(pass);
        }
        self.host
            .report(LinkStatus::new(LinkState::Waiting, attempt, None))
            .await;
        let pacer = Arc::clone(&self.pacer);
        tokio::select! {
            pass = pacer.enter() => Some(pass),
            _ = self.stopped.wait_for(|h| *h != Halt::Running) => None,
        }
    }

    /// One login attempt after `failures` failed ones, under the pacer's `pass` (given back
    /// once the login is over).
    async fn attempt(&mut self, failures: u32, was_online: &mut bool, pass: Pass) -> Next {
        let login = match self.host.login().await {
            Ok(login) => login,
            Err(e) if e.fatal => {
                return Next::Finish(LinkStatus::new(
                    LinkState::Disconnected,
                    failures,
                    Some(e.message),
                ))
            }
            Err(e) => {
                return Next::Retry {
                    attempt: failures + 1,
                    detail: e.message,
                }
            }
        };
        let connect = self
            .connector
            .connect(&login, self.settings.connect_timeout);
        let result = tokio::select! {
            result = connect => result,
            _ = self.stopped.wait_for(|h| *h != Halt::Running) => return Next::Stopped,
        };
        drop(pass);
        match result {
            Ok(session) => self.hold(session, failures, was_online).await,
            Err(ConnectorError::AuthFailed) => Next::Finish(LinkStatus::new(
                LinkState::AuthFailed,
                failures + 1,
                Some(ConnectorError::AuthFailed.to_string()),
            )),
            Err(e @ (ConnectorError::InvalidAccount(_) | ConnectorError::Unsupported(_))) => {
                Next::Finish(LinkStatus::new(
                    LinkState::Disconnected,
                    failures + 1,
                    Some(e.to_string()),
                ))
            }
            Err(e) => Next::Retry {
                attempt: failures + 1,
                detail: e.to_string(),
            },
        }
    }

    /// Keeps a logged-in session until it drops or the supervisor is stopped. `failures` are
    /// those before this login: a drop within `stable_after` adds one to them, a later drop
    /// leaves one (itself).
    async fn hold(
        &mut self,
        mut session: LiveSession,
        failures: u32,
        was_online: &mut bool,
    ) -> Next {
        if let Err(e) = self.host.online(&mut session).await {
            session.disconnect().await;
            return if e.fatal {
                Next::Finish(LinkStatus::new(LinkState::Disconnected, 0, Some(e.message)))
            } else {
                Next::Retry {
                    attempt: failures + 1,
                    detail: e.message,
                }
            };
        }
        let up_since = tokio::time::Instant::now();
        *was_online = true;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::clone(&session.control));
        self.host
            .report(LinkStatus::new(LinkState::Online, 0, None))
            .await;
        let reason = loop {
            let first = tokio::select! {
                event = session.events.recv() => Some(event),
                _ = self.stopped.wait_for(|h| *h != Halt::Running) => None,
            };
            let Some(first) = first else {
                self.forget_session();
                session.disconnect().await;
                return Next::Stopped;
            };
            let mut batch = Vec::new();
            let mut end = None;
            let mut next = first;
            loop {
                match next {
                    Some(ConnectorEvent::Disconnected { reason }) => end = Some(reason),
                    Some(event) => batch.push(event),
                    None => end = Some("the connection ended".to_owned()),
                }
                if end.is_some() || batch.len() >= OBSERVE_BATCH {
                    break;
                }
                match session.events.try_recv() {
                    Ok(event) => next = Some(event),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => next = None,
                }
            }
            if !batch.is_empty() {
                self.host.observe(batch).await;
            }
            if let Some(reason) = end {
                break reason;
            }
        };
        self.forget_session();
        // Make sure the dead session's task is gone before a new one starts.
        session.disconnect().await;
        let stable = up_since.elapsed() >= self.settings.stable_after;
        Next::Retry {
            attempt: if stable { 1 } else { failures + 1 },
            detail: reason,
        }
    }

    fn forget_session(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Waits `delay`; true when stopped meanwhile.
    async fn sleep(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.stopped.wait_for(|h| *h != Halt::Running) => true,
        }
    }
}

#[cfg(test)]
mod tests;
