//! How far a catch-up reader may read: below the oldest transaction that can still add rows to
//! `events`, and no further back, so that unrelated open transactions never hold it up.
//!
//! A reader that moved its checkpoint past an event whose transaction commits later would skip
//! that event for ever. The cluster-wide snapshot `xmin` is safe but too strict: *any* open
//! transaction on the cluster, in any database, holds it back. What matters is only the
//! transactions that may still write events, and PostgreSQL knows them: they hold a lock on the
//! `events` table. So the horizon is
//!
//! > min( the statement snapshot's `xmax`, the transaction ids of every holder of a lock on
//! > `events` that allows writing )
//!
//! and the reader then reads rows with `tx_id` below it in a *later* statement (a newer
//! snapshot). Why nothing can be skipped: a row with `tx_id = X < horizon` that the reader's
//! snapshot cannot see belongs to a transaction X still in progress. X is below the first
//! statement's `xmax`, so X had its id before that statement; X was not holding the events lock
//! when the lock table was read, or the horizon would be at most X. A writer takes the lock
//! before it gets its id (the `INSERT`'s lock is taken when it is planned, the id when its first
//! row is written) and keeps it until it ends, so X either never wrote events or had ended before
//! the lock table was read: then its rows are visible. The one way to break that order is a
//! transaction that gets its id before it writes events: it wrote another table first, or locked
//! rows (`SELECT … FOR UPDATE` takes an id too). The `events_first_write` trigger refuses any
//! insert into events by a transaction that already has an id and no events of its own (see
//! `migrations/0005_events_writer_order.sql`).
//!
//! `pg_locks` reports 32-bit transaction ids; [`widen`] puts them in the epoch of the
//! snapshot's 64-bit `xmax`.

use sqlx::postgres::PgRow;
use sqlx::Row;

/// Lock modes on `events` that let their holder insert rows (SELECT takes ACCESS SHARE, SELECT
/// FOR UPDATE takes ROW SHARE, neither can write).
const WRITING_MODES: &str =
    "'RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'";

/// The CTE the horizon's columns read the lock table from, once.
pub const LOCKS: &str = "locks AS MATERIALIZED (SELECT * FROM pg_locks)";

/// The horizon's two columns, `next` and `writers`, for a statement `WITH` [`LOCKS`] that may do
/// more besides (the runner locks its checkpoints in the same one); [`horizon_of`] turns them
/// into the first transaction id a reader must not read yet, as a 64-bit `xid8`.
///
/// The statement must come *before* the one that reads events, inside a READ COMMITTED
/// transaction, so that the read's snapshot is taken after the lock table was read. The
/// columns see the statement's own snapshot, taken when it starts, so the lock table is read
/// after it, whatever else the statement waits for.
pub fn columns() -> String {
    // The lock table joined with itself to find the transaction id of each writer: every
    // transaction holds an exclusive lock on its own id.
    format!(
        "pg_snapshot_xmax(pg_current_snapshot())::text AS next, \
         ARRAY(SELECT DISTINCT own.transactionid::text \
                 FROM locks l JOIN locks own ON own.virtualtransaction = l.virtualtransaction \
                WHERE l.locktype = 'relation' AND l.relation = 'events'::regclass \
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                  AND l.mode IN ({WRITING_MODES}) \
                  AND own.locktype = 'transactionid' AND own.mode = 'ExclusiveLock' \
                  AND own.granted) AS writers"
    )
}

/// The horizon from a row holding [`columns`].
pub fn horizon_of(row: &PgRow) -> Result<u64, sqlx::Error> {
    let next: String = row.try_get("next")?;
    let writers: Vec<String> = row.try_get("writers")?;
    let next: u64 = next.parse().map_err(|e| decode_error("xmax", e))?;
    let mut horizon = next;
    for writer in writers {
        let xid: u32 = writer
            .parse()
            .map_err(|e| decode_error("transactionid", e))?;
        horizon = horizon.min(widen(next, xid));
    }
    Ok(horizon)
}

fn decode_error(column: &str, error: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("pg_locks {column}: {error}").into())
}

/// The 64-bit id of the 32-bit transaction id `xid`, given a nearby 64-bit id `next`: ids in use
/// are always within 2^31 of each other (PostgreSQL's wraparound protection).
pub fn widen(next: u64, xid: u32) -> u64 {
    // The signed distance from xid to next in 32-bit arithmetic: positive when xid is older.
    let behind = (next as u32).wrapping_sub(xid) as i32;
    (next as i64 - i64::from(behind)).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::widen;

    #[test]
    fn an_id_in_the_same_epoch_keeps_its_value() {
        assert_eq!(widen(1_000, 990), 990);
        assert_eq!(widen(1_000, 1_000), 1_000);
    }

    #[test]
    fn an_id_assigned_after_the_snapshot_is_above_it() {
        assert_eq!(widen(1_000, 1_005), 1_005);
    }

    #[test]
    fn an_id_of_the_previous_epoch_stays_below_next() {
        let next = (3u64 << 32) + 5;
        assert_eq!(
            widen(next, u32::MAX - 2),
            (2u64 << 32) + u64::from(u32::MAX - 2)
        );
    }

    #[test]
    fn an_id_just_past_an_epoch_boundary_is_in_the_next_epoch() {
        let next = (3u64 << 32) - 2;
        assert_eq!(widen(next, 3), (3u64 << 32) + 3);
    }
}
