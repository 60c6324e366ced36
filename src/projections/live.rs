//! Live views: each account's connection status and each contact handle's presence.
//!
//! These are projections of observations of the outside world, not of the user's events:
//! presence is high in volume and worthless once old, so it never enters the event stream
//! and command handling never replays it (its cost stays proportional to bindings and
//! contacts). Rows are written by the node holding the user's lease and trusted by readers
//! only while that lease is valid; the meta-contact presence is derived at read time from the
//! contact list and these rows. Status writes notify `switchboard_views`; presence writes
//! notify `switchboard_presence` with the handles they changed, so subscriptions read just those.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::connectors::supervisor::{LinkState, LinkStatus};
use crate::domain::ids::{AccountId, Handle, UserId};
use crate::domain::presence::{Availability, Presence};

/// The view name in change notifications for statuses.
pub const STATUS: &str = "account_status";
/// The channel presence writes notify, with a [`PresenceChanged`].
pub const PRESENCE_CHANNEL: &str = "switchboard_presence";

/// The largest notification payload PostgreSQL takes is 8000 bytes; a burst naming more
/// handles than fit says "the whole account" instead.
const PAYLOAD_MAX: usize = 7900;

/// A presence write: some handles of one account of a user changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChanged {
    pub user_id: UserId,
    pub account_id: AccountId,
    /// `None`: too many to name; any of the account's handles may have changed.
    pub handles: Option<Vec<Handle>>,
}

impl PresenceChanged {
    /// Reads a notification's payload.
    pub fn parse(payload: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }

    /// The notification's payload, within PostgreSQL's limit.
    fn payload(mut self) -> String {
        let named = serde_json::to_string(&self).expect("plain data serialises");
        if named.len() <= PAYLOAD_MAX {
            return named;
        }
        self.handles = None;
        serde_json::to_string(&self).expect("plain data serialises")
    }
}

/// One presence observation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub handle: Handle,
    pub presence: Presence,
}

/// An account's status as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStatus {
    pub status: LinkStatus,
    pub since: DateTime<Utc>,
}

impl AccountStatus {
    /// Not connected anywhere (never logged in, logged out, or its node is gone).
    pub fn disconnected() -> Self {
        Self {
            status: LinkStatus {
                state: LinkState::Disconnected,
                attempt: 0,
                next_retry_at: None,
                detail: None,
            },
            since: Utc::now(),
        }
    }
}

fn availability_name(a: Availability) -> &'static str {
    match a {
        Availability::Offline => "OFFLINE",
        Availability::DoNotDisturb => "DO_NOT_DISTURB",
        Availability::ExtendedAway => "EXTENDED_AWAY",
        Availability::Away => "AWAY",
        Availability::Online => "ONLINE",
        Availability::Chat => "CHAT",
    }
}

fn parse_availability(stored: &str) -> Availability {
    match stored {
        "DO_NOT_DISTURB" => Availability::DoNotDisturb,
        "EXTENDED_AWAY" => Availability::ExtendedAway,
        "AWAY" => Availability::Away,
        "ONLINE" => Availability::Online,
        "CHAT" => Availability::Chat,
        _ => Availability::Offline,
    }
}

/// Reads and writes of the live views.
#[derive(Debug, Clone)]
pub struct LiveViews {
    pool: PgPool,
}

/// Rows written by a node count only while that node holds the user's lease.
const VALID_LEASE: &str = "EXISTS (SELECT 1 FROM live_leases l \
     WHERE l.user_id = s.user_id AND l.node_id = s.node_id AND l.expires_at > now())";

impl LiveViews {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Records an account's new status. `since` moves only when the state changes.
    pub async fn set_status(
        &self,
        node: Uuid,
        user: UserId,
        account: AccountId,
        status: &LinkStatus,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO account_status AS s \
                    (account_id, user_id, node_id, state, attempt, next_retry_at, detail, since) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, now()) \
             ON CONFLICT (account_id) DO UPDATE SET \
                node_id = EXCLUDED.node_id, state = EXCLUDED.state, attempt = EXCLUDED.attempt, \
                next_retry_at = EXCLUDED.next_retry_at, detail = EXCLUDED.detail, \
                since = CASE WHEN s.state = EXCLUDED.state AND s.node_id = EXCLUDED.node_id \
                             THEN s.since ELSE now() END",
        )
        .bind(account.0)
        .bind(user.0)
        .bind(node)
        .bind(status.state.as_str())
        .bind(i32::try_from(status.attempt).unwrap_or(i32::MAX))
        .bind(status.next_retry_at)
        .bind(status.detail.as_deref())
        .execute(&mut *tx)
        .await?;
        if status.state != LinkState::Online {
            // Presence seen through a connection that is gone is no longer known.
            sqlx::query("DELETE FROM presence WHERE account_id = $1")
                .bind(account.0)
                .execute(&mut *tx)
                .await?;
        }
        notify(&mut tx, user, STATUS).await?;
        tx.commit().await
    }

    /// Forgets an unbound account's status and presence.
    pub async fn forget_account(
        &self,
        user: UserId,
        account: AccountId,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for table in ["presence", "account_status"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE account_id = $1"))
                .bind(account.0)
                .execute(&mut *tx)
                .await?;
        }
        notify(&mut tx, user, STATUS).await?;
        tx.commit().await
    }

    /// Records presence observations of one account in one statement.
    pub async fn record_presence(
        &self,
        user: UserId,
        account: AccountId,
        updates: &[PresenceUpdate],
    ) -> Result<(), sqlx::Error> {
        if updates.is_empty() {
            return Ok(());
        }
        // The same handle twice in one batch: the last observation wins (ON CONFLICT cannot
        // touch a row twice in one statement).
        let mut latest: HashMap<&str, &Presence> = HashMap::new();
        for update in updates {
            latest.insert(update.handle.as_str(), &update.presence);
        }
        let handles: Vec<&str> = latest.keys().copied().collect();
        let availabilities: Vec<&str> = handles
            .iter()
            .map(|h| availability_name(latest[h].availability))
            .collect();
        let statuses: Vec<Option<&str>> = handles
            .iter()
            .map(|h| latest[h].status.as_deref())
            .collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO presence (account_id, handle, user_id, availability, status, updated_at) \
             SELECT $1, h, $2, a, st, now() FROM unnest($3::text[], $4::text[], $5::text[]) AS u(h, a, st) \
             ON CONFLICT (account_id, handle) DO UPDATE SET \
                availability = EXCLUDED.availability, status = EXCLUDED.status, updated_at = now()",
        )
        .bind(account.0)
        .bind(user.0)
        .bind(&handles)
        .bind(&availabilities)
        .bind(&statuses)
        .execute(&mut *tx)
        .await?;
        let change = PresenceChanged {
            user_id: user,
            account_id: account,
            handles: Some(handles.iter().map(|h| Handle::from_stored(h)).collect()),
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(PRESENCE_CHANNEL)
            .bind(change.payload())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// This node's account connections by network and state: (protocol, state, count).
    pub async fn connection_counts(
        &self,
        node: uuid::Uuid,
    ) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT a.protocol, s.state, count(*) AS n FROM account_status s \
               JOIN account_view a ON a.account_id = s.account_id \
              WHERE s.node_id = $1 GROUP BY a.protocol, s.state",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("protocol")?, r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// The statuses of a user's accounts that have one under a valid lease; accounts missing
    /// here are disconnected.
    pub async fn statuses(
        &self,
        user: UserId,
    ) -> Result<HashMap<AccountId, AccountStatus>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT account_id, state, attempt, next_retry_at, detail, since \
               FROM account_status s WHERE s.user_id = $1 AND {VALID_LEASE}"
        ))
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        let mut statuses = HashMap::new();
        for row in rows {
            let state: String = row.try_get("state")?;
            let Some(state) = LinkState::parse(&state) else {
                continue;
            };
            let attempt: i32 = row.try_get("attempt")?;
            statuses.insert(
                AccountId(row.try_get("account_id")?),
                AccountStatus {
                    status: LinkStatus {
                        state,
                        attempt: u32::try_from(attempt).unwrap_or_default(),
                        next_retry_at: row.try_get("next_retry_at")?,
                        detail: row.try_get("detail")?,
                    },
                    since: row.try_get("since")?,
                },
            );
        }
        Ok(statuses)
    }

    /// The known presence of every contact handle of a user's online accounts.
    pub async fn presence(
        &self,
        user: UserId,
    ) -> Result<HashMap<(AccountId, Handle), Presence>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT p.account_id, p.handle, p.availability, p.status \
               FROM presence p JOIN account_status s ON s.account_id = p.account_id \
              WHERE p.user_id = $1 AND s.state = 'ONLINE' AND {VALID_LEASE}"
        ))
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let (handle, presence) = presence_row(&row)?;
                Ok(((AccountId(row.try_get("account_id")?), handle), presence))
            })
            .collect()
    }

    /// The known presence of some of an account's handles (those missing are unknown), read
    /// as [`Self::presence`] reads them: one indexed lookup each.
    pub async fn presence_of(
        &self,
        account: AccountId,
        handles: &[Handle],
    ) -> Result<HashMap<Handle, Presence>, sqlx::Error> {
        let handles: Vec<&str> = handles.iter().map(Handle::as_str).collect();
        let rows = sqlx::query(&format!(
            "SELECT p.handle, p.availability, p.status \
               FROM presence p JOIN account_status s ON s.account_id = p.account_id \
              WHERE p.account_id = $1 AND p.handle = ANY($2) AND s.state = 'ONLINE' \
                AND {VALID_LEASE}"
        ))
        .bind(account.0)
        .bind(&handles)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(presence_row).collect()
    }
}

fn presence_row(row: &sqlx::postgres::PgRow) -> Result<(Handle, Presence), sqlx::Error> {
    let handle: String = row.try_get("handle")?;
    let availability: String = row.try_get("availability")?;
    Ok((
        Handle::from_stored(&handle),
        Presence {
            availability: parse_availability(&availability),
            status: row.try_get("status")?,
        },
    ))
}

async fn notify(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user: UserId,
    view: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT notify_view_change($1, $2)")
        .bind(user.0)
        .bind(view)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
