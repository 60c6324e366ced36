//! The application layer: use cases that the API calls. It turns requests into commands,
//! talks to connectors and the vault, and reads the views. No HTTP or GraphQL here.

mod accounts;
pub mod audit;
mod bindings;
pub mod chat;
mod commands;
pub mod error;
pub mod limits;
mod link;
pub mod live;
mod matching;
pub mod outbox;
pub mod password;
mod presence_feed;
mod reads;
mod reports;
mod resume;
mod session;
mod subscribers;
mod supervision;
mod throttle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::connectors::pacer::Pacer;
use crate::connectors::supervisor::SupervisorSettings;
use crate::connectors::ConnectorRegistry;
use crate::domain::ids::{AccountId, Handle, Protocol, UserId};
use crate::domain::presence::Presence;
use crate::projections::live::{AccountStatus, LiveViews};
use crate::projections::notify::ViewChanges;
use crate::secret::Secret;
use crate::store::event_store::UserStore;
use crate::store::intake::Intake;
use crate::store::lease::Leases;
use crate::store::messages::MessageStore;
use crate::store::sessions::SessionStore;
use crate::store::vault::Vault;

pub use crate::store::sessions::{Origin, SessionInfo};
pub use error::AppError;
use live::LiveConnections;
pub use presence_feed::{ContactPresence, ContactRef, MemberPresence, PresenceChanges};
pub use reports::{AccountReport, LoginReport};
pub use subscribers::SubscriptionSlot;

/// The presence of contact handles, by account and handle.
pub type PresenceMap = HashMap<(AccountId, Handle), Presence>;

/// Tunables of the application layer.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Login deadline and reconnection backoff of the account supervisors.
    pub supervisor: SupervisorSettings,
    /// How long a mutation waits for the views to show its effect before answering.
    pub view_wait: Duration,
    /// How long a node's hold on a user's connections lasts without renewal.
    pub lease_ttl: Duration,
    /// Login attempts of this node's accounts in flight at most.
    pub login_concurrency: usize,
    /// Login attempts this node starts per second at most.
    pub login_rate: f64,
    /// Password hashes computed at once at most.
    pub hash_concurrency: usize,
    /// Subscriptions open at once per session at most.
    pub max_subscriptions: usize,
    /// The first delay of login and registration throttling; each further attempt doubles it.
    pub throttle_base: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            supervisor: SupervisorSettings::default(),
            view_wait: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            login_concurrency: 16,
            login_rate: 20.0,
            hash_concurrency: 2,
            max_subscriptions: 32,
            throttle_base: Duration::from_secs(1),
        }
    }
}

/// An account to bind, as a client gives it.
#[derive(Debug, Clone)]
pub struct AccountInput {
    pub protocol: Protocol,
    pub server: String,
    pub handle: String,
    pub secret: Secret,
}

/// A bound account as the views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub account_id: AccountId,
    pub protocol: String,
    pub server: String,
    pub handle: String,
    pub bound_at: DateTime<Utc>,
    /// The connection's state, from the node holding the user's connections.
    pub status: AccountStatus,
}

/// A logged-in session.
#[derive(Debug)]
pub struct LoginResult {
    pub token: String,
    /// This login's id: its accounts' reconciliations carry it (see `login_report`).
    pub login_id: Uuid,
    pub user_id: UserId,
    pub user_name: String,
    /// Every bound account with its connection status at the time of the answer.
    pub accounts: Vec<AccountView>,
}

/// Who makes a request, and which request it is.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user: UserId,
    /// The session the request came with.
    pub session: Uuid,
    pub request_id: Uuid,
}

pub struct Switchboard {
    pool: PgPool,
    store: UserStore,
    vault: Vault,
    sessions: SessionStore,
    /// Hashes and checks Switchboard's own passwords, a bounded number at once.
    hasher: password::Hasher,
    /// What `/metrics` exports.
    metrics: Arc<crate::metrics::Metrics>,
    /// Auditors and their sessions.
    auditors: crate::store::auditors::AuditorStore,
    /// Attempt counters of login and registration throttling.
    throttle: crate::store::throttle::ThrottleStore,
    /// The sessions with open subscriptions on this node.
    subscribers: subscribers::Subscribers,
    /// One shared `presenceChanged` feed per user with subscribers on this node.
    presence_feeds: presence_feed::PresenceFeeds,
    connectors: ConnectorRegistry,
    live: LiveConnections,
    live_views: LiveViews,
    leases: Leases,
    /// Direct messages in and out.
    messages: MessageStore,
    /// Where what the connections receive is stored, in shared commits.
    intake: Intake,
    /// Paces this node's login attempts.
    pacer: Arc<Pacer>,
    /// When this node last renewed its leases: past the lease time less one renewal period
    /// without success, it closes every connection before another node may take them.
    renewed: std::sync::Mutex<std::time::Instant>,
    /// One outbox round per user at a time on this node.
    outbox_turns: std::sync::Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
    views: ViewChanges,
    settings: ServiceSettings,
    /// One writer per user at a time on this node, so parallel account logins do not fight
    /// over the stream's next sequence (across nodes, conflicts are retried).
    writers: std::sync::Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A listener on `channel`, or `None` (logged) when it cannot listen: its user then relies on
/// its periodic rounds alone.
async fn listen(pool: &PgPool, channel: &str) -> Option<sqlx::postgres::PgListener> {
    let listening = async {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match listening.await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(%channel, error = %e, "cannot LISTEN; relying on periodic rounds");
            None
        }
    }
}

impl Switchboard {
    pub fn new(
        pool: PgPool,
        vault: Vault,
        connectors: ConnectorRegistry,
        views: ViewChanges,
        settings: ServiceSettings,
    ) -> Arc<Self> {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let store = UserStore::new(pool.clone()).counting(metrics.events_appended.clone());
        let messages = MessageStore::new(pool.clone());
        Arc::new(Self {
            store,
            sessions: SessionStore::new(pool.clone()),
            hasher: password::Hasher::new(settings.hash_concurrency),
            subscribers: subscribers::Subscribers::default(),
            presence_feeds: presence_feed::PresenceFeeds::default(),
            throttle: crate::store::throttle::ThrottleStore::new(pool.clone()),
            auditors: crate::store::auditors::AuditorStore::new(pool.clone()),
            metrics,
            vault,
            connectors,
            live: LiveConnections::default(),
            live_views: LiveViews::new(pool.clone()),
            leases: Leases::new(pool.clone(), Uuid::new_v4(), settings.lease_ttl),
            pool,
            intake: Intake::start(messages.clone()),
            pacer: Arc::new(Pacer::new(settings.login_concurrency, settings.login_rate)),
            messages,
            outbox_turns: std::sync::Mutex::new(HashMap::new()),
            renewed: std::sync::Mutex::new(std::time::Instant::now()),
            views,
            settings,
            writers: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn views(&self) -> &ViewChanges {
        &self.views
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }
}
