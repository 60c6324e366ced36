//! Bearer-token sessions. A token is 32 random bytes shown once to the client; only its SHA-256
//! is stored, so a leaked table does not log anyone in.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::domain::ids::UserId;

/// How long a session lasts without a new login.
pub const SESSION_TTL_DAYS: i64 = 30;

/// One login of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub login_id: Uuid,
    pub at: DateTime<Utc>,
    /// When the user logged in before it, if ever.
    pub previous_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct SessionStore {
    pool: PgPool,
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl SessionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a session and returns its token.
    pub async fn create(&self, user: UserId) -> Result<String, sqlx::Error> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
            .bind(digest(&token))
            .bind(user.0)
            .bind(Utc::now() + Duration::days(SESSION_TTL_DAYS))
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// The user a live token belongs to.
    pub async fn user_of(&self, token: &str) -> Result<Option<UserId>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT user_id FROM sessions WHERE token_hash = $1 AND expires_at > now()",
        )
        .bind(digest(token))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("user_id").map(UserId)).transpose()
    }

    /// Records a login under `login_id`; the reconciliation of its accounts carries that id.
    pub async fn record_login(&self, user: UserId, login_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO logins (login_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(login_id)
        .bind(user.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A login of the user (the latest when `login_id` is `None`), with its time and the time
    /// of the login before it.
    pub async fn login(
        &self,
        user: UserId,
        login_id: Option<Uuid>,
    ) -> Result<Option<LoginRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT l.login_id, l.at, \
                    (SELECT max(p.at) FROM logins p WHERE p.user_id = l.user_id AND p.at < l.at) AS previous \
               FROM logins l \
              WHERE l.user_id = $1 AND ($2::uuid IS NULL OR l.login_id = $2) \
              ORDER BY l.at DESC LIMIT 1",
        )
        .bind(user.0)
        .bind(login_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LoginRecord {
                login_id: r.try_get("login_id")?,
                at: r.try_get("at")?,
                previous_at: r.try_get("previous")?,
            })
        })
        .transpose()
    }

    /// Ends one session; returns whether it existed.
    pub async fn end(&self, token: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(digest(token))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The users among `users` without a live session.
    pub async fn without_session(&self, users: &[UserId]) -> Result<Vec<UserId>, sqlx::Error> {
        let ids: Vec<Uuid> = users.iter().map(|u| u.0).collect();
        let gone: Vec<Uuid> = sqlx::query_scalar(
            "SELECT u FROM unnest($1::uuid[]) AS u WHERE NOT EXISTS \
               (SELECT 1 FROM sessions s WHERE s.user_id = u AND s.expires_at > now())",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(gone.into_iter().map(UserId).collect())
    }

    /// Whether the user still has any live session (e.g. on another device).
    pub async fn any_for(&self, user: UserId) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1 AND expires_at > now())",
        )
        .bind(user.0)
        .fetch_one(&self.pool)
        .await?;
        row.try_get(0)
    }
}
