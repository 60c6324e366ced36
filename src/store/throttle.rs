//! Attempt counters behind login and registration throttling, one row per key, shared by all
//! nodes. The rule (how long to wait after how many attempts) is the caller's: see
//! `app::throttle`.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

/// One key's counter as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub attempts: i32,
    pub last_attempt_at: DateTime<Utc>,
    pub blocked_until: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ThrottleStore {
    pool: PgPool,
}

impl ThrottleStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Locks the counters of `keys` (absent ones read as `None`), lets `decide` look at them
    /// and give new values (or refuse with `Err`), and stores what it gave, atomically: two
    /// attempts at once cannot both see the old counters.
    pub async fn update<E>(
        &self,
        keys: &[String],
        decide: impl FnOnce(&[Option<Counter>]) -> Result<Vec<Counter>, E>,
    ) -> Result<Result<(), E>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Rows exist before they are locked, so a first attempt is serialised too.
        sqlx::query(
            "INSERT INTO throttle (key, attempts, last_attempt_at, blocked_until) \
             SELECT k, 0, '-infinity', '-infinity' FROM unnest($1::text[]) AS k \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(keys)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT key, attempts, last_attempt_at, blocked_until FROM throttle \
              WHERE key = ANY($1) ORDER BY key FOR UPDATE",
        )
        .bind(keys)
        .fetch_all(&mut *tx)
        .await?;
        let mut current = vec![None; keys.len()];
        for row in rows {
            let key: String = row.try_get("key")?;
            let attempts: i32 = row.try_get("attempts")?;
            if let Some(i) = keys.iter().position(|k| *k == key) {
                current[i] = (attempts > 0)
                    .then(|| {
                        Ok::<_, sqlx::Error>(Counter {
                            attempts,
                            last_attempt_at: row.try_get("last_attempt_at")?,
                            blocked_until: row.try_get("blocked_until")?,
                        })
                    })
                    .transpose()?;
            }
        }
        let next = match decide(&current) {
            Ok(next) => next,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
        };
        for (key, counter) in keys.iter().zip(next) {
            sqlx::query(
                "UPDATE throttle SET attempts = $2, last_attempt_at = $3, blocked_until = $4 \
                  WHERE key = $1",
            )
            .bind(key)
            .bind(counter.attempts)
            .bind(counter.last_attempt_at)
            .bind(counter.blocked_until)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Forgets `key` (a success).
    pub async fn clear(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM throttle WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes one attempt back from `key` (a success that must not count against its address).
    pub async fn give_back(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE throttle SET attempts = greatest(attempts - 1, 0) WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes counters untouched since `before`.
    pub async fn sweep(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM throttle WHERE last_attempt_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
