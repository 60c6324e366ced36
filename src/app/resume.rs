//! Connections that outlive restarts. A user with a live session is connected: every node looks
//! for such users whose connections no node holds (no lease, or an expired one) and takes them
//! over, at start-up, when another node hands its users over on a graceful shutdown (it
//! notifies `switchboard_leases`), and every [`RESUME_TICK`] (a dead node's leases expire).
//! The lease decides which node wins a user; the node's [`Pacer`](crate::connectors::pacer::Pacer)
//! paces the logins. A user's connections end with their last session: at `logout`, or when the
//! last one expires (seen at lease renewal).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::{AppError, Switchboard};
use crate::domain::ids::UserId;

/// How often a node looks for users whose connections nobody holds, without being told.
pub const RESUME_TICK: Duration = Duration::from_secs(2);
/// Users taken over per look at most: nodes that look at the same time share the rest.
const RESUME_BATCH: i64 = 64;
/// Where a node that gives leases up says so.
pub(super) const LEASES_CHANNEL: &str = "switchboard_leases";

impl Switchboard {
    /// This node's share of resumption, until `stop`: looks at start, when told that leases
    /// were given up, and every [`RESUME_TICK`].
    pub async fn run_resumption(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut listener = super::listen(&self.pool, LEASES_CHANNEL).await;
        loop {
            // More to take than one batch: look again at once.
            let more = match self.resume_orphans().await {
                Ok(taken) => taken >= RESUME_BATCH as usize,
                Err(e) => {
                    tracing::warn!(error = %e, "resumption round failed; the next one retries");
                    false
                }
            };
            if more {
                if *stop.borrow() {
                    return;
                }
                continue;
            }
            let told = async {
                match listener.as_mut() {
                    Some(listener) => {
                        if listener.recv().await.is_err() {
                            // The connection dropped: PgListener reconnects; poll meanwhile.
                            tokio::time::sleep(RESUME_TICK).await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                () = told => {}
                () = tokio::time::sleep(RESUME_TICK) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Takes over the connections of users with a live session that no node holds (at most
    /// one batch); returns how many were found.
    pub async fn resume_orphans(self: &Arc<Self>) -> Result<usize, AppError> {
        let users = self.leases.orphans(RESUME_BATCH).await?;
        let found = users.len();
        for user in users {
            if self.hold_lease(user).await? {
                if let Err(e) = self.resume(user).await {
                    tracing::warn!(%user, error = %e, "connections not resumed; the lease expires and another round retries");
                }
            }
        }
        Ok(found)
    }

    /// Starts the supervisors of a user whose lease this node just took. Each account waits
    /// for its turn at the node's pacer (`WAITING` while it waits), then logs in as a
    /// reconnection (`RECONNECTING`).
    async fn resume(self: &Arc<Self>, user: UserId) -> Result<(), AppError> {
        let state = self.load(user).await?;
        let resumed = self
            .supervise_all(user, &state, Uuid::now_v7(), true)
            .await?;
        tracing::info!(%user, accounts = resumed, "took the user's connections over");
        Ok(())
    }

    /// Tells the other nodes that leases were given up, so they take the users over now.
    pub(super) async fn announce_released_leases(&self) {
        let told = sqlx::query("SELECT pg_notify($1, '')")
            .bind(LEASES_CHANNEL)
            .execute(&self.pool)
            .await;
        if let Err(e) = told {
            tracing::warn!(error = %e, "released leases not announced; other nodes find them within a tick");
        }
    }
}
