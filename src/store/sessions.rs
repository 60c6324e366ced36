//! Bearer-token sessions. A token is 32 random bytes shown once to the client; only its SHA-256
//! is stored, so a leaked table does not log anyone in. Each session also has an id, which is
//! not secret: the user lists and revokes sessions by it. Every end of a session is announced
//! on the `switchboard_sessions` channel (payload: its id), so that every node closes what the
//! session had open.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::domain::ids::UserId;

/// How long a session lasts without a new login.
pub const SESSION_TTL_DAYS: i64 = 30;

/// The channel on which ended sessions' ids are announced.
pub const CHANNEL: &str = "switchboard_sessions";

/// A live session, found by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user: UserId,
    pub expires_at: DateTime<Utc>,
}

/// A session as its user sees it in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The client's address when it logged in.
    pub address: Option<String>,
    pub user_agent: Option<String>,
}

/// Where a login comes from, as recorded with its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub address: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

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

/// What is stored of a token.
pub(super) fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A fresh token: 32 random bytes, base64url.
pub(super) fn new_token() -> String {
    crate::secret::random_token(32)
}

impl SessionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a session and returns its token.
    pub async fn create(&self, user: UserId, origin: &Origin) -> Result<String, sqlx::Error> {
        let token = new_token();
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, expires_at, address, user_agent) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest(&token))
        .bind(user.0)
        .bind(Utc::now() + Duration::days(SESSION_TTL_DAYS))
        .bind(origin.address.map(|a| a.to_string()))
        .bind(origin.user_agent.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// The live session a token opens.
    pub async fn find(&self, token: &str) -> Result<Option<Session>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, user_id, expires_at FROM sessions \
              WHERE token_hash = $1 AND expires_at > now()",
        )
        .bind(digest(token))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Session {
                id: r.try_get("id")?,
                user: UserId(r.try_get("user_id")?),
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// The user's live sessions, newest first.
    pub async fn list(&self, user: UserId) -> Result<Vec<SessionInfo>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, created_at, expires_at, address, user_agent FROM sessions \
              WHERE user_id = $1 AND expires_at > now() ORDER BY created_at DESC, id",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SessionInfo {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    address: r.try_get("address")?,
                    user_agent: r.try_get("user_agent")?,
                })
            })
            .collect()
    }

    /// Ends the user's session `id`; returns whether it existed.
    pub async fn revoke(&self, user: UserId, id: Uuid) -> Result<bool, sqlx::Error> {
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM sessions WHERE user_id = $1 AND id = $2 RETURNING id) \
             SELECT id, pg_notify($3, id::text) FROM gone",
        )
        .bind(user.0)
        .bind(id)
        .bind(CHANNEL)
        .fetch_all(&self.pool)
        .await?;
        Ok(!ended.is_empty())
    }

    /// Ends every session of the user; returns how many there were.
    pub async fn end_all(&self, user: UserId) -> Result<usize, sqlx::Error> {
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM sessions WHERE user_id = $1 RETURNING id) \
             SELECT id, pg_notify($2, id::text) FROM gone",
        )
        .bind(user.0)
        .bind(CHANNEL)
        .fetch_all(&self.pool)
        .await?;
        Ok(ended.len())
    }

    /// Deletes the sessions that expired (their subscriptions ended at expiry, on their own).
    pub async fn sweep_expired(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= now()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Which of `ids` are no longer live sessions, users' or auditors'.
    pub async fn gone(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT i FROM unnest($1::uuid[]) AS i \
              WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = i AND s.expires_at > now()) \
                AND NOT EXISTS (SELECT 1 FROM auditor_sessions a \
                                 WHERE a.id = i AND a.expires_at > now())",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
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
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM sessions WHERE token_hash = $1 RETURNING id) \
             SELECT id, pg_notify($2, id::text) FROM gone",
        )
        .bind(digest(token))
        .bind(CHANNEL)
        .fetch_all(&self.pool)
        .await?;
        Ok(!ended.is_empty())
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
