//! Auditors and their sessions. Tokens are stored as SHA-256 digests, as users' are; ending an
//! auditor's session announces its id on the sessions channel, so its subscriptions end too.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::sessions::{digest, new_token, CHANNEL};

/// How long an auditor's session lasts.
pub const AUDITOR_SESSION_HOURS: i64 = 12;

/// An auditor, as their session shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auditor {
    pub id: Uuid,
    pub name: String,
}

/// A live auditor session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditorSession {
    pub id: Uuid,
    pub auditor: Auditor,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct AuditorStore {
    pool: PgPool,
}

impl AuditorStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Adds an auditor; `false` if the name is taken.
    pub async fn add(&self, name: &str, password_hash: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO auditors (id, name, password_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(password_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes an auditor and ends their sessions; `false` if there was none by that name.
    pub async fn remove(&self, name: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT pg_notify($2, s.id::text) FROM auditor_sessions s \
               JOIN auditors a ON a.id = s.auditor_id WHERE a.name = $1",
        )
        .bind(name)
        .bind(CHANNEL)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM auditors WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The auditor named `name` and their password hash.
    pub async fn credentials(&self, name: &str) -> Result<Option<(Auditor, String)>, sqlx::Error> {
        let row = sqlx::query("SELECT id, name, password_hash FROM auditors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                Auditor {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                },
                r.try_get("password_hash")?,
            ))
        })
        .transpose()
    }

    /// Opens a session for the auditor; returns its token.
    pub async fn open_session(&self, auditor: Uuid) -> Result<String, sqlx::Error> {
        let token = new_token();
        sqlx::query(
            "INSERT INTO auditor_sessions (token_hash, auditor_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(digest(&token))
        .bind(auditor)
        .bind(Utc::now() + Duration::hours(AUDITOR_SESSION_HOURS))
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// The live auditor session a token opens.
    pub async fn find_session(&self, token: &str) -> Result<Option<AuditorSession>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT s.id, s.expires_at, a.id AS auditor_id, a.name FROM auditor_sessions s \
               JOIN auditors a ON a.id = s.auditor_id \
              WHERE s.token_hash = $1 AND s.expires_at > now()",
        )
        .bind(digest(token))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(AuditorSession {
                id: r.try_get("id")?,
                expires_at: r.try_get("expires_at")?,
                auditor: Auditor {
                    id: r.try_get("auditor_id")?,
                    name: r.try_get("name")?,
                },
            })
        })
        .transpose()
    }

    /// Ends the session of `token`.
    pub async fn end_session(&self, token: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH gone AS (DELETE FROM auditor_sessions WHERE token_hash = $1 RETURNING id) \
             SELECT pg_notify($2, id::text) FROM gone",
        )
        .bind(digest(token))
        .bind(CHANNEL)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes expired auditor sessions.
    pub async fn sweep_expired(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM auditor_sessions WHERE expires_at <= now()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
