//! Catch-up projection runner: reads the events table in commit order and writes each batch's
//! view rows and checkpoint in one transaction, so no event is skipped or applied twice, even
//! across crashes or several nodes.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{broadcast, mpsc, watch};

use crate::domain::ids::UserId;
use crate::domain::user::User;
use crate::projections::horizon;
use crate::projections::notify::ViewChanged;
use crate::projections::progress::Progress;
use crate::store::event_store::{decode, upcasters, CommitPoint, StoredEvent, EVENT_COLUMNS};

/// How many events one transaction applies at most.
pub const BATCH: i64 = 500;
/// The same for a rebuild, which nobody waits on event by event: bigger transactions spread
/// the per-batch costs (the horizon's lock-table read, the view rows' reads and writes, the
/// commit) over more events.
pub const REBUILD_BATCH: i64 = 5_000;
/// How often a runner looks for events with no wake-up: commits of other nodes, and rows that
/// were not readable yet at a wake-up (an older transaction writing events was still open).
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} cannot be decoded: {reason}")]
    Decode { position: String, reason: String },
}

/// A round's first statement: the checkpoints' row locks and the horizon (see `horizon`), built
/// once. Row locks serialise runners of one projection across nodes; taken in name order (ORDER
/// BY sorts before locking), so two groups never wait on each other in a cycle.
static LOCK_CHECKPOINTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH cp AS MATERIALIZED (SELECT name, tx_id::text AS tx_id, position \
                                    FROM projection_checkpoints WHERE name = ANY($1) \
                                   ORDER BY name FOR UPDATE), {} \
         SELECT h.*, cp.* FROM (SELECT {}) AS h LEFT JOIN cp ON true",
        horizon::LOCKS,
        horizon::columns()
    )
});

/// A round's read: every stream, so the checkpoint passes other aggregates' rows too (filtering
/// them in SQL would make each later read scan them again). ORDER BY names the table's columns:
/// a bare `tx_id` would be the text output column of EVENT_COLUMNS, which sorts transaction 1000
/// before 999.
static READ_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT aggregate_type, {EVENT_COLUMNS} FROM events \
         WHERE (tx_id, position) > ($1::text::xid8, $2) \
           AND tx_id < $4::text::xid8 \
         ORDER BY events.tx_id, events.position LIMIT $3"
    )
});

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
    /// Views whose secondary indexes (those that back no constraint) a rebuild drops, and
    /// builds once at its end: only for views the projection never reads while it applies.
    fn rebuild_defers_indexes_of(&self) -> &'static [&'static str] {
        &[]
    }
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
    Ok(catch_up_from(pool, projection, upcasters, limit)
        .await?
        .read)
}

/// What one catch-up did.
#[derive(Debug, Clone, Copy)]
pub struct CaughtUp {
    /// Rows read (other aggregates' rows are read and passed over).
    pub read: usize,
    /// The checkpoint after it: everything at or before it is applied.
    pub checkpoint: CommitPoint,
}

/// [`catch_up_limited`], also telling where the checkpoint is now.
pub async fn catch_up_from(
    pool: &PgPool,
    projection: &dyn Projection,
    upcasters: &[Box<dyn EventUpcaster>],
    limit: i64,
) -> Result<CaughtUp, ProjectionError> {
    let together = catch_up_together(pool, &[projection], upcasters, limit).await?;
    Ok(CaughtUp {
        read: together.read,
        checkpoint: together.checkpoints[0],
    })
}

/// What one catch-up of several projections did.
#[derive(Debug, Clone)]
pub struct CaughtUpTogether {
    /// Rows read (other aggregates' rows are read and passed over).
    pub read: usize,
    /// Each projection's checkpoint after it, in the order given.
    pub checkpoints: Vec<CommitPoint>,
}

/// Applies the next batch of unread events to every projection in `projections`, in one
/// transaction: one horizon, one read and one decoding of the events, one checkpoint statement
/// and one commit serve them all, where a round per projection would repeat each. Projections
/// whose checkpoints differ (one was rebuilt) are served from the oldest: each applies only the
/// events past its own checkpoint, and no checkpoint moves back.
pub async fn catch_up_together(
    pool: &PgPool,
    projections: &[&dyn Projection],
    upcasters: &[Box<dyn EventUpcaster>],
    limit: i64,
) -> Result<CaughtUpTogether, ProjectionError> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    // READ COMMITTED whatever the server's default: the read below must take a newer snapshot
    // than the horizon's statement.
    //
    // No waiting for the disk at commit (synchronous_commit off): the views and their
    // checkpoint are derived from the events, which are durable before this reads them, so a
    // crash can only lose the last few of these commits whole, checkpoint with views, and
    // they are applied again from the events at the next start. Read-your-writes holds: what
    // a client saw committed is what the replay writes again.
    let (mut tx, checkpoints, horizon) = loop {
        let mut tx = pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off")
            .await?;
        // The horizon is read in the same statement (one round trip fewer).
        let rows = sqlx::query(&LOCK_CHECKPOINTS)
            .bind(&names)
            .fetch_all(&mut *tx)
            .await?;
        let mut found = Vec::with_capacity(names.len());
        for name in &names {
            let Some(row) = rows
                .iter()
                .find(|r| r.get::<Option<&str>, _>("name") == Some(*name))
            else {
                break;
            };
            found.push(point(row.try_get("tx_id")?, row.try_get("position")?)?);
        }
        if found.len() == names.len() {
            let horizon = horizon::horizon_of(&rows[0])?;
            break (tx, found, horizon);
        }
        // A first run: the rows are made on their own, so they stay whatever the batch does.
        tx.rollback().await?;
        sqlx::query(
            "INSERT INTO projection_checkpoints (name) SELECT unnest($1::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&names)
        .execute(pool)
        .await?;
    };
    let after = checkpoints.iter().min().copied().unwrap_or_default();
    // Every stream is read; only the user's events are applied.
    let rows = sqlx::query(&READ_EVENTS)
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .bind(limit)
        .bind(horizon.to_string())
        .fetch_all(&mut *tx)
        .await?;
    let Some(last_row) = rows.last() else {
        tx.rollback().await?;
        return Ok(CaughtUpTogether {
            read: 0,
            checkpoints,
        });
    };
    let last = point(last_row.try_get("tx_id")?, last_row.try_get("position")?)?;
    let mut events = Vec::with_capacity(rows.len());
    let mut points = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<String, _>("aggregate_type")? != User::TYPE {
            continue;
        }
        let event = decode(row, upcasters).map_err(|e| ProjectionError::Decode {
            position: row
                .try_get::<i64, _>("position")
                .map(|p| p.to_string())
                .unwrap_or_default(),
            reason: e.to_string(),
        })?;
        points.push(point(&event.tx_id, event.position)?);
        events.push(event);
    }
    // Each projection applies the events past its own checkpoint: a suffix of the batch.
    let mut notices: Vec<(uuid::Uuid, &str)> = Vec::new();
    for (projection, checkpoint) in projections.iter().zip(&checkpoints) {
        let mine = &events[points.partition_point(|at| at <= checkpoint)..];
        projection.apply_batch(&mut tx, mine).await?;
        let touched: BTreeSet<UserId> = mine.iter().map(|e| e.user_id).collect();
        notices.extend(touched.into_iter().map(|u| (u.0, projection.name())));
    }
    let (users, views): (Vec<uuid::Uuid>, Vec<&str>) = notices.into_iter().unzip();
    // The checkpoints, and one notification per user and view for subscribers on every node,
    // in one statement.
    sqlx::query(
        "WITH moved AS (UPDATE projection_checkpoints \
                           SET tx_id = $2::text::xid8, position = $3, updated_at = now() \
                         WHERE name = ANY($1) AND (tx_id, position) < ($2::text::xid8, $3)) \
         SELECT notify_view_change(u, v) FROM unnest($4::uuid[], $5::text[]) AS n(u, v)",
    )
    .bind(&names)
    .bind(last.tx_id.to_string())
    .bind(last.position)
    .bind(&users)
    .bind(&views)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CaughtUpTogether {
        read: rows.len(),
        checkpoints: checkpoints.iter().map(|c| (*c).max(last)).collect(),
    })
}

fn point(tx_id: &str, position: i64) -> Result<CommitPoint, ProjectionError> {
    CommitPoint::parse(tx_id, position).map_err(|e| ProjectionError::Decode {
        position: position.to_string(),
        reason: format!("transaction id {tx_id}: {e}"),
    })
}

/// Runs every projection until `stop` turns true: together, in one task whose rounds serve
/// them all in one transaction ([`catch_up_together`]). Woken by `progress` (this node's
/// commits) and by a poll (other nodes' commits: the events table sends no notification, see
/// migrations/0014); each checkpoint is published on `progress` after every round.
///
/// A projection that fails on its own (a bug, an event it cannot apply) must not hold the
/// others back: when a round fails, each projection is tried alone, and those that fail alone
/// leave the group for a task of their own, which retries with backoff. When all fail alone
/// (the database is away) the group stays whole and backs off.
pub async fn run(
    pool: PgPool,
    projections: Vec<Arc<dyn Projection>>,
    progress: Progress,
    mut stop: watch::Receiver<bool>,
) {
    let (split_tx, mut split) = mpsc::unbounded_channel();
    let mut tasks = vec![tokio::spawn(run_group(
        pool.clone(),
        projections,
        progress.clone(),
        stop.clone(),
        split_tx.clone(),
    ))];
    while !*stop.borrow() {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            Some(alone) = split.recv() => tasks.push(tokio::spawn(run_group(
                pool.clone(),
                vec![alone],
                progress.clone(),
                stop.clone(),
                split_tx.clone(),
            ))),
        }
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "projection task ended abnormally");
        }
    }
}

async fn run_group(
    pool: PgPool,
    mut group: Vec<Arc<dyn Projection>>,
    progress: Progress,
    mut stop: watch::Receiver<bool>,
    split: mpsc::UnboundedSender<Arc<dyn Projection>>,
) {
    let upcasters = upcasters();
    let mut wakes = progress.wakes();
    let mut failures = 0u32;
    loop {
        // Marked seen before the read: a commit during it wakes the next round.
        wakes.borrow_and_update();
        let members: Vec<&dyn Projection> = group.iter().map(|p| p.as_ref()).collect();
        let more = match catch_up_together(&pool, &members, &upcasters, BATCH).await {
            Ok(caught) => {
                failures = 0;
                for (projection, checkpoint) in members.iter().zip(&caught.checkpoints) {
                    progress.publish(projection.name(), *checkpoint);
                }
                caught.read as i64 == BATCH
            }
            Err(e) => {
                let names: Vec<&str> = members.iter().map(|p| p.name()).collect();
                tracing::error!(projections = ?names, error = %e, "projections stalled; retrying");
                match failing_alone(&pool, &members, &progress, &upcasters).await {
                    // Each caught up alone: the failure passed.
                    Some(failing) if failing.is_empty() => {
                        failures = 0;
                        false
                    }
                    // Some fail alone: they leave the group, which goes on without them.
                    Some(failing) if failing.len() < group.len() => {
                        let (sick, healthy) =
                            group.into_iter().partition(|p| failing.contains(&p.name()));
                        group = healthy;
                        for projection in sick {
                            tracing::error!(
                                projection = projection.name(),
                                "projection fails on its own; it runs apart from the others now"
                            );
                            // The receiver lives as long as `run`, which outlives this task.
                            let _ = split.send(projection);
                        }
                        failures = 0;
                        continue;
                    }
                    // All fail, alone too, or a group of one: the cause is shared; back off.
                    _ => {
                        failures = failures.saturating_add(1);
                        false
                    }
                }
            }
        };
        if more {
            continue;
        }
        let pause = POLL * 2u32.saturating_pow(failures.min(5));
        tokio::select! {
            _ = stop.changed() => {}
            _ = wakes.changed(), if failures == 0 => {}
            _ = tokio::time::sleep(pause) => {}
        }
        if *stop.borrow() {
            break;
        }
    }
}

/// After a failed round of a group: catches up each member alone, publishing those that
/// succeed, and names those that fail alone too (`None` for a group of one: nothing to learn).
async fn failing_alone(
    pool: &PgPool,
    members: &[&dyn Projection],
    progress: &Progress,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Option<Vec<&'static str>> {
    if members.len() < 2 {
        return None;
    }
    let mut failing = Vec::new();
    for projection in members {
        match catch_up_from(pool, *projection, upcasters, BATCH).await {
            Ok(caught) => progress.publish(projection.name(), caught.checkpoint),
            Err(e) => {
                tracing::error!(projection = projection.name(), error = %e, "projection fails alone");
                failing.push(projection.name());
            }
        }
    }
    Some(failing)
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
        defer_indexes(&mut tx, projection).await?;
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
    restore_indexes(pool).await?;
    Ok(done)
}

/// Keeps the definitions of the secondary indexes of the views `projection` lets a rebuild
/// defer, and drops those indexes (in the rebuild's reset transaction).
async fn defer_indexes(
    conn: &mut PgConnection,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    let tables = projection.rebuild_defers_indexes_of();
    if tables.is_empty() {
        return Ok(());
    }
    // An index that backs a constraint (a primary key, a unique key an upsert relies on) stays.
    let deferred: Vec<String> = sqlx::query_scalar(
        "INSERT INTO projection_deferred_indexes (name, projection, definition) \
         SELECT i.indexname, $1, i.indexdef FROM pg_indexes i \
          WHERE i.schemaname = current_schema() AND i.tablename = ANY($2) \
            AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
                             WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass) \
         ON CONFLICT (name) DO NOTHING RETURNING name",
    )
    .bind(projection.name())
    .bind(tables)
    .fetch_all(&mut *conn)
    .await?;
    for name in deferred {
        sqlx::query(&format!("DROP INDEX IF EXISTS {}", quote_ident(&name)))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Builds every index a rebuild deferred and has not built yet: at a rebuild's end, and at
/// start-up after a rebuild that was cut short.
pub async fn restore_indexes(pool: &PgPool) -> Result<(), sqlx::Error> {
    let waiting: Vec<(String, String)> =
        sqlx::query_as("SELECT name, definition FROM projection_deferred_indexes ORDER BY name")
            .fetch_all(pool)
            .await?;
    for (name, definition) in waiting {
        let mut tx = pool.begin().await?;
        // The row lock makes a second node wait rather than build the same index again.
        let still: Option<String> = sqlx::query_scalar(
            "DELETE FROM projection_deferred_indexes WHERE name = $1 RETURNING name",
        )
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await?;
        if still.is_none() {
            continue;
        }
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass(format('%I', $1::text)) IS NOT NULL")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            tracing::info!(index = %name, "building a deferred index");
            sqlx::query(&definition).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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

/// Waits until `projection` has applied the event of `user` at `sequence`, whose commit point
/// this node knows, or `timeout`: on this node's published checkpoint, without a round trip.
/// The database is asked too every 100 ms, for a runner that works on another node.
pub async fn wait_for_point(
    pool: &PgPool,
    progress: &Progress,
    projection: &str,
    user: UserId,
    sequence: usize,
    point: CommitPoint,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut checkpoint = progress.watch(projection);
    loop {
        if *checkpoint.borrow_and_update() >= point {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        match tokio::time::timeout(wait, checkpoint.changed()).await {
            Ok(Ok(())) => {}
            // Timed out, or no runner publishes on this node: ask the database.
            Ok(Err(_)) | Err(_) => {
                if is_applied(pool, projection, user, sequence).await? {
                    return Ok(true);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
            }
        }
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
