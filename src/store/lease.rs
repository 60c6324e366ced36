//! Which node holds a user's live upstream connections: a lease row per user in PostgreSQL.
//!
//! Only the holder runs the user's account supervisors. A node renews its leases while it
//! runs; one that dies stops renewing, and once its leases expire another node may take them.
//! Readers of live state (statuses, presence) trust only rows written under a lease that is
//! still valid, so a dead node's leftovers read as "disconnected" without any cleanup.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::ids::UserId;

/// The lease table, as seen by one node.
#[derive(Debug, Clone)]
pub struct Leases {
    pool: PgPool,
    node: Uuid,
    ttl: Duration,
}

/// What [`Leases::acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// This node holds the lease now (fresh, taken over after expiry, or already its own).
    Held,
    /// Another live node holds it.
    HeldElsewhere(Uuid),
}

impl Leases {
    /// `node` must be unique per running process; a restarted node is a new node.
    pub fn new(pool: PgPool, node: Uuid, ttl: Duration) -> Self {
        Self { pool, node, ttl }
    }

    pub fn node(&self) -> Uuid {
        self.node
    }

    /// How often a holder should renew: well within the lease time.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// Takes the user's lease unless another node holds a valid one.
    pub async fn acquire(&self, user: UserId) -> Result<Acquired, sqlx::Error> {
        let holder: Uuid = sqlx::query_scalar(
            "INSERT INTO live_leases AS l (user_id, node_id, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3)) \
             ON CONFLICT (user_id) DO UPDATE SET node_id = EXCLUDED.node_id, expires_at = EXCLUDED.expires_at \
              WHERE l.node_id = EXCLUDED.node_id OR l.expires_at < now() \
             RETURNING node_id",
        )
        .bind(user.0)
        .bind(self.node)
        .bind(self.ttl_secs())
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or_default();
        if holder == self.node {
            return Ok(Acquired::Held);
        }
        // The conditional update did nothing: someone else holds it. Say who.
        let other: Option<Uuid> =
            sqlx::query_scalar("SELECT node_id FROM live_leases WHERE user_id = $1")
                .bind(user.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match other {
            Some(node) if node == self.node => Acquired::Held,
            Some(node) => Acquired::HeldElsewhere(node),
            None => Acquired::HeldElsewhere(Uuid::nil()),
        })
    }

    /// Extends every lease this node holds; returns the users whose leases it still holds
    /// (a lease that expired and was taken over is gone from the list).
    pub async fn renew(&self) -> Result<Vec<UserId>, sqlx::Error> {
        let users: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE live_leases SET expires_at = now() + make_interval(secs => $2) \
              WHERE node_id = $1 RETURNING user_id",
        )
        .bind(self.node)
        .bind(self.ttl_secs())
        .fetch_all(&self.pool)
        .await?;
        Ok(users.into_iter().map(UserId).collect())
    }

    /// Gives the user's lease up, if this node holds it.
    pub async fn release(&self, user: UserId) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM live_leases WHERE user_id = $1 AND node_id = $2")
            .bind(user.0)
            .bind(self.node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Up to `limit` users (in random order, so nodes looking at once spread them) with a live
    /// session whose connections no node holds: no lease, or an expired one.
    pub async fn orphans(&self, limit: i64) -> Result<Vec<UserId>, sqlx::Error> {
        let users: Vec<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM (SELECT DISTINCT s.user_id FROM sessions s \
               WHERE s.expires_at > now() AND NOT EXISTS (SELECT 1 FROM live_leases l \
                 WHERE l.user_id = s.user_id AND l.expires_at > now())) AS u \
             ORDER BY random() LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(users.into_iter().map(UserId).collect())
    }

    /// Gives up every lease of this node (clean shutdown).
    pub async fn release_all(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM live_leases WHERE node_id = $1")
            .bind(self.node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
