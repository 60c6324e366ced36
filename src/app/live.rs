//! The account supervisors this node runs, one per (user, account) whose lease it holds.
//!
//! Node-local by nature: a supervisor is a task holding sockets. Which node runs a user's
//! supervisors is decided by the lease in PostgreSQL (`store::lease`); statuses and presence
//! go to the live views, where every node reads them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::connectors::supervisor::Supervisor;
use crate::connectors::SessionControl;
use crate::domain::ids::{AccountId, UserId};

#[derive(Default)]
pub struct LiveConnections {
    supervisors: Mutex<HashMap<(UserId, AccountId), Supervisor>>,
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(UserId, AccountId), Supervisor>> {
        // A panic while holding the lock leaves a plain map behind; keep serving it.
        self.supervisors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a new supervisor, stopping any earlier one of the same account.
    pub async fn attach(&self, user: UserId, account: AccountId, supervisor: Supervisor) {
        let old = self.lock().insert((user, account), supervisor);
        if let Some(old) = old {
            old.stop().await;
        }
    }

    /// Whether a supervisor is still at work for the account (connecting, online or waiting to
    /// retry). One that gave up (refused credentials) does not count.
    pub fn is_supervised(&self, user: UserId, account: AccountId) -> bool {
        self.lock()
            .get(&(user, account))
            .is_some_and(|s| !s.is_finished())
    }

    /// The account's live session, while it is online.
    pub fn session(&self, user: UserId, account: AccountId) -> Option<Arc<dyn SessionControl>> {
        self.lock()
            .get(&(user, account))
            .and_then(Supervisor::session)
    }

    /// Stops one account's supervisor (logging out upstream).
    pub async fn detach(&self, user: UserId, account: AccountId) {
        let old = self.lock().remove(&(user, account));
        if let Some(old) = old {
            old.stop().await;
        }
    }

    /// Stops every supervisor of a user, all at once.
    pub async fn detach_user(&self, user: UserId) {
        let stopped: Vec<Supervisor> = {
            let mut map = self.lock();
            let keys: Vec<_> = map.keys().filter(|(u, _)| *u == user).copied().collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        futures::future::join_all(stopped.into_iter().map(Supervisor::stop)).await;
    }

    /// Stops everything, leaving the accounts disconnected (this node lost its leases).
    pub async fn detach_all(&self) {
        self.end_all(Supervisor::stop).await;
    }

    /// Stops everything for another node to take over (server shutdown).
    pub async fn hand_over_all(&self) {
        self.end_all(Supervisor::hand_over).await;
    }

    async fn end_all<F: std::future::Future<Output = ()>>(&self, end: impl Fn(Supervisor) -> F) {
        let all: Vec<Supervisor> = self.lock().drain().map(|(_, s)| s).collect();
        futures::future::join_all(all.into_iter().map(end)).await;
    }

    /// Whether this node runs supervisors of the user (it holds the user's connections).
    pub fn has_user(&self, user: UserId) -> bool {
        self.lock().keys().any(|(u, _)| *u == user)
    }

    /// The users with at least one supervisor here.
    pub fn users(&self) -> Vec<UserId> {
        let mut users: Vec<UserId> = self.lock().keys().map(|(u, _)| *u).collect();
        users.sort();
        users.dedup();
        users
    }
}
