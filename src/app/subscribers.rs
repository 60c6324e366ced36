//! Open subscriptions and the sessions they belong to. A subscription lives only as long as its
//! session: it ends at once when the session is logged out or revoked (on any node: ends are
//! announced on `switchboard_sessions`) and when it expires. A session holds at most
//! `max_subscriptions` of them on a node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::{AppError, Switchboard};
use crate::store::sessions::CHANNEL;

/// How often the sessions of open subscriptions are checked without being told (a missed
/// notification, e.g. while the listener reconnects), and expired sessions and forgotten
/// throttling counters are swept.
const RECHECK: Duration = Duration::from_secs(30);

/// The sessions with open subscriptions on this node.
#[derive(Debug, Default)]
pub(super) struct Subscribers {
    sessions: Mutex<HashMap<Uuid, Watched>>,
}

#[derive(Debug)]
struct Watched {
    open: usize,
    ended: watch::Sender<bool>,
}

/// One open subscription's hold on its session; it is let go when dropped.
pub struct SubscriptionSlot {
    session: Uuid,
    expires_at: DateTime<Utc>,
    ended: watch::Receiver<bool>,
    app: Arc<Switchboard>,
}

impl SubscriptionSlot {
    /// Completes when the session ends: logged out, revoked, or expired.
    pub async fn ended(mut self) {
        let expiry = (self.expires_at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = self.ended.wait_for(|ended| *ended) => {}
            () = tokio::time::sleep(expiry) => {}
        }
    }
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut sessions = self.app.subscribers.sessions.lock().expect("not poisoned");
        if let Some(watched) = sessions.get_mut(&self.session) {
            watched.open -= 1;
            if watched.open == 0 {
                sessions.remove(&self.session);
            }
        }
    }
}

impl Subscribers {
    fn end(&self, session: Uuid) {
        if let Some(watched) = self.sessions.lock().expect("not poisoned").get(&session) {
            let _ = watched.ended.send(true);
        }
    }

    fn watched(&self) -> Vec<Uuid> {
        self.sessions
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect()
    }
}

impl Switchboard {
    /// A slot for one more subscription of the session (a user's or an auditor's) `token`
    /// opens: `UNAUTHENTICATED` if the session is not live, `LIMIT_EXCEEDED` if it already has its most subscriptions here.
    pub async fn open_subscription(
        self: &Arc<Self>,
        token: &str,
    ) -> Result<SubscriptionSlot, AppError> {
        let (session, expires_at) = self.any_session(token).await?;
        let max = self.settings.max_subscriptions;
        let mut sessions = self.subscribers.sessions.lock().expect("not poisoned");
        let watched = sessions.entry(session).or_insert_with(|| Watched {
            open: 0,
            ended: watch::channel(false).0,
        });
        if watched.open >= max {
            return Err(AppError::LimitExceeded(format!(
                "a session may hold at most {max} subscriptions at once"
            )));
        }
        watched.open += 1;
        let ended = watched.ended.subscribe();
        drop(sessions);
        Ok(SubscriptionSlot {
            session,
            expires_at,
            ended,
            app: self.clone(),
        })
    }

    /// Ends this node's subscriptions of sessions ended anywhere, until `stop`; sweeps expired
    /// sessions now and then.
    pub async fn run_session_watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut listener = super::listen(&self.pool, CHANNEL).await;
        let mut recheck = tokio::time::interval(RECHECK);
        loop {
            let told = async {
                match listener.as_mut() {
                    Some(listener) => match listener.recv().await {
                        Ok(notification) => Uuid::parse_str(notification.payload()).ok(),
                        Err(_) => {
                            // PgListener reconnects; the recheck covers what was missed.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            None
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                ended = told => {
                    if let Some(session) = ended {
                        self.subscribers.end(session);
                    }
                }
                _ = recheck.tick() => self.housekeeping().await,
            }
        }
    }

    async fn housekeeping(&self) {
        let watched = self.subscribers.watched();
        match self.sessions.gone(&watched).await {
            Ok(gone) => gone.into_iter().for_each(|s| self.subscribers.end(s)),
            Err(e) => tracing::warn!(error = %e, "cannot check the sessions of subscriptions"),
        }
        if let Err(e) = self.auditors.sweep_expired().await {
            tracing::warn!(error = %e, "cannot sweep expired auditor sessions");
        }
        match self.sessions.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "swept expired sessions"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep expired sessions"),
        }
        let forgotten = chrono::Utc::now()
            - chrono::Duration::from_std(super::throttle::FORGET).expect("small");
        if let Err(e) = self.throttle.sweep(forgotten).await {
            tracing::warn!(error = %e, "cannot sweep throttling counters");
        }
    }
}
