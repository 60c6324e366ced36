//! The live upstream connections of logged-in users, and the presence they report.
//!
//! This is node-local state: which node holds a user's connections will sit behind a lease in
//! PostgreSQL once several nodes run (see the README).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::connectors::{Availability, SessionControl};
use crate::domain::ids::{AccountId, Handle, UserId};

/// What a contact's handle was last seen as on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub availability: Availability,
    pub status: Option<String>,
}

struct Connection {
    control: Arc<dyn SessionControl>,
    /// Forwards the connection's events; aborted on disconnect.
    pump: JoinHandle<()>,
}

#[derive(Default)]
struct Inner {
    connections: HashMap<(UserId, AccountId), Connection>,
    presence: HashMap<(UserId, AccountId), HashMap<Handle, Presence>>,
}

/// Live connections and presence, per user and account.
#[derive(Clone, Default)]
pub struct LiveConnections {
    inner: Arc<Mutex<Inner>>,
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind; keep serving them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a new connection, closing any earlier one of the same account.
    pub async fn attach(
        &self,
        user: UserId,
        account: AccountId,
        control: Arc<dyn SessionControl>,
        pump: JoinHandle<()>,
    ) {
        let old = self
            .lock()
            .connections
            .insert((user, account), Connection { control, pump });
        if let Some(old) = old {
            close(old).await;
        }
    }

    pub fn is_connected(&self, user: UserId, account: AccountId) -> bool {
        self.lock().connections.contains_key(&(user, account))
    }

    /// Closes one account's connection and forgets its presence.
    pub async fn detach(&self, user: UserId, account: AccountId) {
        let old = {
            let mut inner = self.lock();
            inner.presence.remove(&(user, account));
            inner.connections.remove(&(user, account))
        };
        if let Some(old) = old {
            close(old).await;
        }
    }

    /// Closes every connection of a user.
    pub async fn detach_user(&self, user: UserId) {
        let accounts: Vec<AccountId> = self
            .lock()
            .connections
            .keys()
            .filter(|(u, _)| *u == user)
            .map(|(_, a)| *a)
            .collect();
        for account in accounts {
            self.detach(user, account).await;
        }
    }

    /// Closes everything (server shutdown).
    pub async fn detach_all(&self) {
        let all: Vec<Connection> = self.lock().connections.drain().map(|(_, c)| c).collect();
        for connection in all {
            close(connection).await;
        }
    }

    pub fn set_presence(
        &self,
        user: UserId,
        account: AccountId,
        handle: Handle,
        presence: Presence,
    ) {
        self.lock()
            .presence
            .entry((user, account))
            .or_default()
            .insert(handle, presence);
    }

    pub fn presence(&self, user: UserId, account: AccountId, handle: &Handle) -> Option<Presence> {
        self.lock()
            .presence
            .get(&(user, account))
            .and_then(|m| m.get(handle))
            .cloned()
    }

    /// Marks an account's connection as gone without closing it (it dropped by itself).
    pub fn dropped(&self, user: UserId, account: AccountId) {
        let mut inner = self.lock();
        inner.connections.remove(&(user, account));
        inner.presence.remove(&(user, account));
    }
}

async fn close(connection: Connection) {
    connection.control.close().await;
    connection.pump.abort();
}
