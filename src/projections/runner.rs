//! Catch-up projection runner: reads the events table in commit order and writes each batch's
//! view rows and checkpoint in one transaction, so no event is skipped or applied twice, even
//! across crashes or several nodes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{broadcast, watch};

use crate::domain::ids::UserId;
use crate::domain::user::User;
use crate::projections::horizon::read_horizon;
use crate::projections::notify::ViewChanged;
use crate::store::event_store::{decode, upcasters, StoredEvent, EVENT_COLUMNS};

/// How many events one transaction applies at most.
pub const BATCH: i64 = 500;
/// The same for a rebuild, which nobody waits on event by event: bigger transactions spread
/// the per-batch costs (the horizon's lock-table read, the view rows' reads and writes, the
/// commit) over more events.
pub const REBUILD_BATCH: i64 = 5_000;
/// How often to look again when a notification may have come before its rows were readable
/// (an older transaction writing events was still open).
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} cannot be decoded: {reason}")]
    Decode { position: String, reason: String },
}

/// One read model built from the events.
#[async_trait]
pub trait Projection: Send + Sync {
    /// The checkpoint's name, and the view name sent to subscribers.
    fn name(&self) -> &'static str;
    /// Applies one event inside the batch's transaction.
    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error>;
    /// Applies a batch in commit order; a projection whose rows do not depend on each other
    /// can do it in one statement.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), sqlx::Error> {
        for event in events {
            self.apply(conn, event).await?;
        }
        Ok(())
    }
    /// Empties the views so the projection can be rebuilt from the first event.
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error>;
}

/// Applies the next batch of unread events; returns how many rows it read (other aggregates'
/// rows are read and passed over).
pub async fn catch_up(
    pool: &PgPool,
    projection: &dyn Projection,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<usize, ProjectionError> {
    catch_up_limited(pool, projection, upcasters, BATCH).await
}

/// [`catch_up`] reading at most `limit` rows in its one transaction (a rebuild takes bigger
/// batches than the live runner).
pub async fn catch_up_limited(
    pool: &PgPool,
    projection: &dyn Projection,
    upcasters: &[Box<dyn EventUpcaster>],
    limit: i64,
) -> Result<usize, ProjectionError> {
    let name = projection.name();
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    // READ COMMITTED whatever the server's default: the read below must take a newer snapshot
    // than the horizon's statement.
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await?;
    // The row lock serialises runners of one projection across nodes.
    let checkpoint = sqlx::query(
        "SELECT tx_id::text AS tx_id, position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let after_tx: String = checkpoint.try_get("tx_id")?;
    let after_position: i64 = checkpoint.try_get("position")?;
    let horizon = read_horizon(&mut tx).await?;
    // Every stream is read so the checkpoint passes other aggregates' rows too (filtering them in
    // SQL would make each later read scan them again); only the user's events are applied.
    // ORDER BY names the table's columns: a bare `tx_id` would be the text output column of
    // EVENT_COLUMNS, which sorts transaction 1000 before 999.
    let query = format!(
        "SELECT aggregate_type, {EVENT_COLUMNS} FROM events \
         WHERE (tx_id, position) > ($1::text::xid8, $2) \
           AND tx_id < $4::text::xid8 \
         ORDER BY events.tx_id, events.position LIMIT $3"
    );
    let rows = sqlx::query(&query)
        .bind(&after_tx)
        .bind(after_position)
        .bind(limit)
        .bind(horizon.to_string())
        .fetch_all(&mut *tx)
        .await?;
    let Some(last_row) = rows.last() else {
        tx.rollback().await?;
        return Ok(0);
    };
    let last: (String, i64) = (last_row.try_get("tx_id")?, last_row.try_get("position")?);
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<String, _>("aggregate_type")? != User::TYPE {
            continue;
        }
        events.push(decode(row, upcasters).map_err(|e| {
            ProjectionError::Decode {
                position: row
                    .try_get::<i64, _>("position")
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                reason: e.to_string(),
            }
        })?);
    }
    projection.apply_batch(&mut tx, &events).await?;
    let touched: BTreeSet<UserId> = events.iter().map(|e| e.user_id).collect();
    sqlx::query(
        "UPDATE projection_checkpoints SET tx_id = $2::text::xid8, position = $3, updated_at = now() \
         WHERE name = $1",
    )
    .bind(name)
    .bind(&last.0)
    .bind(last.1)
    .execute(&mut *tx)
    .await?;
    for user in &touched {
        sqlx::query("SELECT notify_view_change($1, $2)")
            .bind(user.0)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Runs every projection until `stop` turns true, woken by the events table's notifications.
pub async fn run(
    pool: PgPool,
    projections: Vec<Arc<dyn Projection>>,
    mut stop: watch::Receiver<bool>,
) {
    let upcasters = upcasters();
    let mut listener = match listen(&pool).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(error = %e, "projections cannot LISTEN; polling only");
            None
        }
    };
    let mut failures = 0u32;
    loop {
        let mut more = false;
        let mut failed = false;
        for projection in &projections {
            match catch_up(&pool, projection.as_ref(), &upcasters).await {
                Ok(n) => more |= n as i64 == BATCH,
                Err(e) => {
                    failed = true;
                    tracing::error!(projection = projection.name(), error = %e, "projection stalled; retrying");
                }
            }
        }
        failures = if failed {
            failures.saturating_add(1)
        } else {
            0
        };
        if more && !failed {
            continue;
        }
        let pause = if failed {
            POLL * 2u32.saturating_pow(failures.min(5))
        } else {
            POLL
        };
        tokio::select! {
            _ = stop.changed() => {}
            _ = wait_for_notification(&mut listener) => {}
            _ = tokio::time::sleep(pause) => {}
        }
        if *stop.borrow() {
            break;
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen("switchboard_events").await?;
    Ok(listener)
}

async fn wait_for_notification(listener: &mut Option<PgListener>) {
    match listener {
        Some(l) => {
            if let Err(e) = l.recv().await {
                tracing::warn!(error = %e, "event notifications interrupted");
                tokio::time::sleep(POLL).await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Rebuilds one projection from the first event, reporting progress as (done, total).
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, ProjectionError> {
    let upcasters = upcasters();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE")
            .bind(projection.name())
            .execute(&mut *tx)
            .await?;
        projection.reset(&mut tx).await?;
        sqlx::query(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) \
             DO UPDATE SET tx_id = '0', position = 0, updated_at = now()",
        )
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let mut done = 0u64;
    loop {
        let n = catch_up_limited(pool, projection, &upcasters, REBUILD_BATCH).await? as u64;
        if n == 0 {
            break;
        }
        done += n;
        progress(done, total.max(0) as u64);
    }
    Ok(done)
}

/// Whether `projection` has applied the event at `sequence` of `user`'s stream.
pub async fn is_applied(
    pool: &PgPool,
    projection: &str,
    user: UserId,
    sequence: usize,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE((SELECT (e.tx_id, e.position) <= (c.tx_id, c.position) \
           FROM events e, projection_checkpoints c \
          WHERE e.aggregate_type = 'User' AND e.aggregate_id = $2 AND e.sequence = $3 \
            AND c.name = $1), false)",
    )
    .bind(projection)
    .bind(user.to_string())
    .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
    .fetch_one(pool)
    .await
}

/// Waits until `projection` has applied every event of `user` up to `sequence`, or `timeout`.
/// Woken by the view-change notifications in `changes` (subscribed before the command ran),
/// and every 50 ms in case one was missed.
pub async fn wait_until_applied(
    pool: &PgPool,
    changes: &mut broadcast::Receiver<ViewChanged>,
    projection: &str,
    user: UserId,
    sequence: usize,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if is_applied(pool, projection, user, sequence).await? {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let next_change = async {
            loop {
                match changes.recv().await {
                    Ok(change) if change.user_id == user => return,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(50)), next_change)
            .await;
    }
}

/// The lag of each of the projections named: the events it has not applied yet, and the age in
/// seconds of the oldest of them (0 when none). One that never ran is behind every event.
pub async fn lags(pool: &PgPool, names: &[&str]) -> Result<Vec<(String, i64, f64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT n.name, count(e.position) AS behind, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(e.recorded_at)), 0)::float8 AS age \
           FROM unnest($1::text[]) AS n(name) \
           LEFT JOIN projection_checkpoints c ON c.name = n.name \
           LEFT JOIN events e ON (e.tx_id, e.position) > \
                                 (COALESCE(c.tx_id, '0'::xid8), COALESCE(c.position, 0)) \
          GROUP BY n.name ORDER BY n.name",
    )
    .bind(names)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("behind")?, r.try_get("age")?)))
        .collect()
}
