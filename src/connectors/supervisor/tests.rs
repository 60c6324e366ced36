//! The supervisor's state machine against a scripted fake connector, on a paused clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::*;
use crate::connectors::{Credential, OutgoingMessage, Roster, RosterEntry, Sent};
use crate::domain::ids::{Handle, Protocol};
use crate::secret::Secret;

/// A connector that answers each login from a script; every session it hands out can be
/// made to drop by the test.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Result<(), ConnectorError>>>,
    calls: AtomicUsize,
    /// When each login started, on the paused clock.
    logins: Mutex<Vec<tokio::time::Instant>>,
    /// How long the next sessions last before the server drops them, in order; once empty,
    /// sessions last until the test drops them.
    lifetimes: Mutex<VecDeque<Duration>>,
    /// The event senders of the sessions handed out, newest last.
    sessions: Mutex<Vec<(mpsc::Sender<ConnectorEvent>, Arc<FakeControl>)>>,
}

#[derive(Default)]
struct FakeControl {
    closed: AtomicBool,
}

#[async_trait]
impl SessionControl for FakeControl {
    async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
    async fn send_message(&self, _: &OutgoingMessage) -> Result<Sent, ConnectorError> {
        Ok(Sent::default())
    }
}

impl Scripted {
    fn new(script: Vec<Result<(), ConnectorError>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            ..Self::default()
        })
    }

    fn session(&self) -> LiveSession {
        let (tx, events) = mpsc::channel(8);
        if let Some(lifetime) = self.lifetimes.lock().unwrap().pop_front() {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(lifetime).await;
                let reason = "kicked right after login".to_owned();
                let _ = tx.send(ConnectorEvent::Disconnected { reason }).await;
            });
        }
        let control = Arc::new(FakeControl::default());
        self.sessions
            .lock()
            .unwrap()
            .push((tx, Arc::clone(&control)));
        LiveSession {
            roster: Roster::Complete(vec![RosterEntry {
                handle: Handle::parse(Protocol::Xmpp, "bob@example.org").unwrap(),
                display_name: None,
            }]),
            events,
            control,
            session_credential: None,
        }
    }

    fn last(&self) -> (mpsc::Sender<ConnectorEvent>, Arc<FakeControl>) {
        self.sessions.lock().unwrap().last().cloned().unwrap()
    }
}

#[async_trait]
impl Connector for Scripted {
    fn protocol(&self) -> Protocol {
        Protocol::Xmpp
    }

    async fn connect(&self, _: &AccountLogin, _: Duration) -> Result<LiveSession, ConnectorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.logins
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(Ok(())) => Ok(self.session()),
            Some(Err(e)) => Err(e),
            // Out of script: hang like an unanswering server until stopped.
            None => std::future::pending().await,
        }
    }
}

/// Records every status and observation.
struct Recorder {
    statuses: mpsc::UnboundedSender<LinkStatus>,
    observed: mpsc::UnboundedSender<Vec<ConnectorEvent>>,
}

#[async_trait]
impl AccountHost for Recorder {
    async fn login(&self) -> Result<AccountLogin, HostError> {
        Ok(AccountLogin {
            protocol: Protocol::Xmpp,
            server: "127.0.0.1:1".into(),
            handle: Handle::parse(Protocol::Xmpp, "me@example.org").unwrap(),
            credential: Credential::Password(Secret::new("pw")),
            contacts: Vec::new(),
            message_cursor: None,
        })
    }
    async fn report(&self, status: LinkStatus) {
        let _ = self.statuses.send(status);
    }
    async fn online(&self, _: &mut LiveSession) -> Result<(), HostError> {
        Ok(())
    }
    async fn observe(&self, events: Vec<ConnectorEvent>) {
        let _ = self.observed.send(events);
    }
}

struct Harness {
    connector: Arc<Scripted>,
    supervisor: Option<Supervisor>,
    statuses: mpsc::UnboundedReceiver<LinkStatus>,
    observed: mpsc::UnboundedReceiver<Vec<ConnectorEvent>>,
}

fn start(script: Vec<Result<(), ConnectorError>>, adopted: bool) -> Harness {
    start_paced(script, adopted, Arc::new(Pacer::unlimited()), false)
}

fn start_paced(
    script: Vec<Result<(), ConnectorError>>,
    adopted: bool,
    pacer: Arc<Pacer>,
    reconnecting: bool,
) -> Harness {
    let connector = Scripted::new(script);
    let (statuses_tx, statuses) = mpsc::unbounded_channel();
    let (observed_tx, observed) = mpsc::unbounded_channel();
    let host = Arc::new(Recorder {
        statuses: statuses_tx,
        observed: observed_tx,
    });
    let session = adopted.then(|| connector.session());
    let supervisor = Supervisor::start(
        Arc::clone(&connector) as Arc<dyn Connector>,
        host,
        SupervisorSettings::default(),
        Launch {
            session,
            pacer,
            reconnecting,
        },
    );
    Harness {
        connector,
        supervisor: Some(supervisor),
        statuses,
        observed,
    }
}

impl Harness {
    fn supervisor(&self) -> &Supervisor {
        self.supervisor.as_ref().expect("not stopped yet")
    }

    async fn stop(&mut self) {
        self.supervisor.take().expect("stopped once").stop().await;
    }
    async fn next(&mut self) -> LinkStatus {
        self.statuses.recv().await.expect("the supervisor reports")
    }

    /// The next status, asserting its state, attempt and whether a retry time is set.
    async fn expect(&mut self, state: LinkState, attempt: u32, retry_set: bool) -> LinkStatus {
        let status = self.next().await;
        assert_eq!(
            (status.state, status.attempt, status.next_retry_at.is_some()),
            (state, attempt, retry_set),
            "{status:?}"
        );
        status
    }
}

fn unreachable() -> Result<(), ConnectorError> {
    Err(ConnectorError::Unreachable("connection refused".into()))
}

#[test]
fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
    let b = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
        factor: 2.0,
        jitter: 0.5,
    };
    let secs = |attempt, unit| b.delay(attempt, unit).as_secs_f64();
    assert_eq!(
        [secs(1, 0.0), secs(2, 0.0), secs(3, 0.0), secs(5, 0.0)],
        [1.0, 2.0, 4.0, 16.0]
    );
    assert_eq!(secs(6, 0.0), 30.0, "capped");
    assert_eq!(secs(1000, 0.0), 30.0, "no overflow on long outages");
    assert!(
        (secs(3, 0.999_999) - 2.000_002).abs() < 1e-6,
        "jitter takes at most half"
    );
    assert!(secs(6, 0.5) < 30.0 && secs(6, 0.5) >= 15.0);
    let unit = random_unit();
    assert!((0.0..1.0).contains(&unit), "{unit}");
}

#[tokio::test(start_paused = true)]
async fn failed_first_logins_are_unreachable_and_retried_with_growing_waits() {
    let mut h = start(vec![unreachable(), unreachable(), Ok(())], false);
    h.expect(LinkState::Connecting, 0, false).await;
    let first = h.expect(LinkState::Unreachable, 1, true).await;
    assert_eq!(
        first.detail.as_deref(),
        Some("the server is unreachable: connection refused")
    );
    h.expect(LinkState::Unreachable, 1, false).await;
    let second = h.expect(LinkState::Unreachable, 2, true).await;
    h.expect(LinkState::Unreachable, 2, false).await;
    h.expect(LinkState::Online, 0, false).await;
    assert_eq!(h.connector.calls.load(Ordering::SeqCst), 3);
    // The second wait is longer than the first (1 s then 2 s, less at most 25 % jitter).
    let waits = [first, second].map(|s| s.next_retry_at.unwrap());
    assert!(waits[1] > waits[0]);
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_stop_retrying_and_say_so() {
    let mut h = start(vec![Err(ConnectorError::AuthFailed), Ok(())], false);
    h.expect(LinkState::Connecting, 0, false).await;
    let failed = h.expect(LinkState::AuthFailed, 1, false).await;
    assert_eq!(
        failed.detail.as_deref(),
        Some("the server refused the credentials")
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(h.supervisor().is_finished());
    assert_eq!(h.connector.calls.load(Ordering::SeqCst), 1, "never retried");
    assert!(
        h.statuses.try_recv().is_err(),
        "AUTH_FAILED stays the last word"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_session_is_reconnected_and_its_events_pass_through() {
    let mut h = start(vec![Ok(()), unreachable(), Ok(())], false);
    h.expect(LinkState::Connecting, 0, false).await;
    h.expect(LinkState::Online, 0, false).await;
    assert!(h.supervisor().session().is_some());

    let (events, control) = h.connector.last();
    let presence = ConnectorEvent::Presence {
        handle: Handle::parse(Protocol::Xmpp, "bob@example.org").unwrap(),
        availability: crate::connectors::Availability::Away,
        status: None,
    };
    events.send(presence.clone()).await.unwrap();
    assert_eq!(h.observed.recv().await, Some(vec![presence.clone()]));
    // What queued up while the host was busy arrives as one batch, in order, and a
    // disconnection behind it is still noticed.
    let burst: Vec<ConnectorEvent> = (0..3)
        .map(|i| ConnectorEvent::Presence {
            handle: Handle::parse(Protocol::Xmpp, &format!("c{i}@example.org")).unwrap(),
            availability: crate::connectors::Availability::Online,
            status: None,
        })
        .collect();
    for event in &burst {
        events.send(event.clone()).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < burst.len() {
        got.extend(h.observed.recv().await.unwrap());
    }
    assert_eq!(got, burst);

    events
        .send(ConnectorEvent::Disconnected {
            reason: "server shut down".into(),
        })
        .await
        .unwrap();
    let dropped = h.expect(LinkState::Reconnecting, 1, true).await;
    assert_eq!(dropped.detail.as_deref(), Some("server shut down"));
    assert!(
        control.closed.load(Ordering::SeqCst),
        "the dead session is closed"
    );
    assert!(h.supervisor().session().is_none());
    h.expect(LinkState::Reconnecting, 1, false).await;
    h.expect(LinkState::Reconnecting, 2, true).await;
    h.expect(LinkState::Reconnecting, 2, false).await;
    h.expect(LinkState::Online, 0, false).await;
    assert_eq!(h.connector.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_adopted_session_is_kept_without_logging_in_again_and_stop_logs_out() {
    let mut h = start(vec![], true);
    h.expect(LinkState::Online, 0, false).await;
    assert_eq!(h.connector.calls.load(Ordering::SeqCst), 0);
    let (_, control) = h.connector.last();
    h.stop().await;
    assert!(control.closed.load(Ordering::SeqCst));
    h.expect(LinkState::Disconnected, 0, false).await;
}

#[tokio::test(start_paused = true)]
async fn stop_interrupts_a_hanging_login_and_a_backoff_wait() {
    // The script is empty: the login hangs.
    let mut h = start(vec![], false);
    h.expect(LinkState::Connecting, 0, false).await;
    h.stop().await;
    h.expect(LinkState::Disconnected, 0, false).await;

    let mut h = start(vec![unreachable()], false);
    h.expect(LinkState::Connecting, 0, false).await;
    h.expect(LinkState::Unreachable, 1, true).await;
    h.stop().await;
    h.expect(LinkState::Disconnected, 0, false).await;
    assert_eq!(h.connector.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_login_waits_for_the_pacer_and_says_so() {
    // One login at a time, one per second: the second supervisor waits its turn.
    let pacer = Arc::new(Pacer::new(1, 1.0));
    let mut first = start_paced(vec![Ok(())], false, Arc::clone(&pacer), false);
    first.expect(LinkState::Connecting, 0, false).await;
    first.expect(LinkState::Online, 0, false).await;
    let started = tokio::time::Instant::now();
    let mut second = start_paced(vec![Ok(())], false, pacer, true);
    second.expect(LinkState::Waiting, 0, false).await;
    // Resumed from a node that stopped: a reconnection, not a first login.
    second.expect(LinkState::Reconnecting, 0, false).await;
    assert!(started.elapsed() >= Duration::from_millis(999));
    second.expect(LinkState::Online, 0, false).await;
}

#[tokio::test(start_paused = true)]
async fn a_hand_over_logs_out_and_leaves_the_account_reconnecting() {
    let mut h = start(vec![Ok(())], false);
    h.expect(LinkState::Connecting, 0, false).await;
    h.expect(LinkState::Online, 0, false).await;
    let (_, control) = h.connector.last();
    h.supervisor.take().unwrap().hand_over().await;
    assert!(control.closed.load(Ordering::SeqCst), "logged out");
    let last = h.expect(LinkState::Reconnecting, 0, false).await;
    assert!(last.detail.unwrap().contains("another node"));
}

#[tokio::test(start_paused = true)]
async fn sessions_that_drop_soon_after_login_back_off_until_one_is_stable() {
    // The server accepts every login but kicks the first eight sessions after 1 s.
    let mut h = start((0..10).map(|_| Ok(())).collect(), false);
    h.connector
        .lifetimes
        .lock()
        .unwrap()
        .extend([Duration::from_secs(1); 8]);
    tokio::time::sleep(Duration::from_secs(300)).await;

    let logins = h.connector.logins.lock().unwrap().clone();
    let gaps: Vec<Duration> = logins.windows(2).map(|w| w[1] - w[0]).collect();
    // 1 s online plus 1, 2, 4 … 32 s of backoff (less at most 25 % jitter) instead of ~2 s
    // each time: a kicked session is a failure like a refused connection.
    assert!(gaps.len() >= 6, "{gaps:?}");
    assert!(gaps[5] >= gaps[0] * 8, "{gaps:?}");
    assert_eq!(
        logins.len(),
        9,
        "eight kicks, then a session that stays: {gaps:?}"
    );

    let mut statuses = Vec::new();
    while let Ok(status) = h.statuses.try_recv() {
        statuses.push(status);
    }
    let counted: Vec<u32> = statuses
        .iter()
        .filter(|s| s.state == LinkState::Reconnecting && s.next_retry_at.is_some())
        .map(|s| s.attempt)
        .collect();
    assert_eq!(counted, (1..=8).collect::<Vec<_>>(), "{statuses:?}");
    assert_eq!(statuses.last().map(|s| s.state), Some(LinkState::Online));

    // The ninth session outlives `stable_after`; its drop starts again from the first wait.
    let ninth = *logins.last().unwrap();
    let stable_after = SupervisorSettings::default().stable_after;
    tokio::time::sleep_until(ninth + stable_after + Duration::from_secs(1)).await;
    let (events, _) = h.connector.last();
    let dropped_at = tokio::time::Instant::now();
    events
        .send(ConnectorEvent::Disconnected {
            reason: "server restart".into(),
        })
        .await
        .unwrap();
    h.expect(LinkState::Reconnecting, 1, true).await;
    h.expect(LinkState::Reconnecting, 1, false).await;
    h.expect(LinkState::Online, 0, false).await;
    let tenth = *h.connector.logins.lock().unwrap().last().unwrap();
    assert!(tenth - dropped_at <= Duration::from_secs(1));
}
