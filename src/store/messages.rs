//! Direct messages in and out (see migrations/0009_messages.sql for why they are rows, not
//! events). Every write that a subscription should see takes the user's next change number
//! and notifies the `messages` view, so subscriptions read every changed message once per read,
//! in commit order, none skipped; a message that changed twice between two reads is read once, in
//! its latest state (a row keeps only its latest change number).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::domain::ids::{AccountId, ContactId, Handle, Protocol, UserId};

/// The view name messages notify as (see `projections::notify`).
pub const VIEW: &str = "messages";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Incoming, stored.
    Received,
    /// Outgoing, waiting to go out (or for its next attempt).
    Queued,
    /// Outgoing, handed to the network.
    Sent,
    /// Outgoing, refused by the network; `failure` says why.
    Failed,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Received => "RECEIVED",
            MessageState::Queued => "QUEUED",
            MessageState::Sent => "SENT",
            MessageState::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "QUEUED" => MessageState::Queued,
            "SENT" => MessageState::Sent,
            "FAILED" => MessageState::Failed,
            _ => MessageState::Received,
        }
    }
}

/// What a stored row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    /// A stranger's invitation to talk (Matrix): `body` is what they said with it, if anything.
    Invitation,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "TEXT",
            MessageKind::Invitation => "INVITATION",
        }
    }
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub position: i64,
    pub id: Uuid,
    pub user_id: UserId,
    pub contact_id: ContactId,
    pub account_id: AccountId,
    pub protocol: Protocol,
    pub handle: Handle,
    pub direction: Direction,
    pub kind: MessageKind,
    pub body: String,
    pub state: MessageState,
    pub network_id: Option<String>,
    pub client_id: Option<String>,
    pub addressed_to: Option<Uuid>,
    pub auto_route: bool,
    pub route_reason: Option<String>,
    pub failure: Option<String>,
    pub attempts: i32,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub change: i64,
}

/// Where a message goes or came from: one contact on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub contact_id: ContactId,
    pub account_id: AccountId,
    pub protocol: Protocol,
    pub handle: Handle,
}

/// A message received upstream, to store.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub from: Party,
    pub kind: MessageKind,
    pub body: String,
    pub network_id: Option<String>,
    pub sent_at: DateTime<Utc>,
}

/// A message to send, to store before it goes out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: Uuid,
    pub to: Party,
    pub body: String,
    pub client_id: Option<String>,
    /// The person it was sent to, when the outbox may route it again.
    pub addressed_to: Option<Uuid>,
    pub auto_route: bool,
    pub route_reason: String,
}

/// One contact's conversation at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactActivity {
    pub contact_id: ContactId,
    pub last_position: i64,
    pub unread: i64,
}

const COLUMNS: &str =
    "position, id, user_id, contact_id, account_id, protocol, handle, direction, kind, \
     body, state, network_id, client_id, addressed_to, auto_route, route_reason, failure, \
     attempts, sent_at, created_at, change";

fn decode(row: &PgRow) -> Result<Message, sqlx::Error> {
    let protocol: String = row.try_get("protocol")?;
    let direction: String = row.try_get("direction")?;
    let state: String = row.try_get("state")?;
    let kind: String = row.try_get("kind")?;
    Ok(Message {
        position: row.try_get("position")?,
        id: row.try_get("id")?,
        user_id: UserId(row.try_get("user_id")?),
        contact_id: ContactId(row.try_get("contact_id")?),
        account_id: AccountId(row.try_get("account_id")?),
        protocol: protocol
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        handle: Handle::from_stored(&row.try_get::<String, _>("handle")?),
        direction: if direction == "OUT" {
            Direction::Out
        } else {
            Direction::In
        },
        kind: if kind == "INVITATION" {
            MessageKind::Invitation
        } else {
            MessageKind::Text
        },
        body: row.try_get("body")?,
        state: MessageState::parse(&state),
        network_id: row.try_get("network_id")?,
        client_id: row.try_get("client_id")?,
        addressed_to: row.try_get("addressed_to")?,
        auto_route: row.try_get("auto_route")?,
        route_reason: row.try_get("route_reason")?,
        failure: row.try_get("failure")?,
        attempts: row.try_get("attempts")?,
        sent_at: row.try_get("sent_at")?,
        created_at: row.try_get("created_at")?,
        change: row.try_get("change")?,
    })
}

#[derive(Debug, Clone)]
pub struct MessageStore {
    pool: PgPool,
}

/// Takes `count` change numbers for the user; returns the first. Locks the user's counter
/// until the transaction ends, so one user's changes commit in the order of their numbers.
async fn take_changes(
    tx: &mut Transaction<'_, Postgres>,
    user: UserId,
    count: i64,
) -> Result<i64, sqlx::Error> {
    let first = take_changes_of_many(tx, &HashMap::from([(user, count)])).await?;
    first.get(&user).copied().ok_or(sqlx::Error::RowNotFound)
}

/// [`take_changes`] for several users at once (one statement, counters locked in user order,
/// so two such transactions cannot deadlock): each user's first number.
async fn take_changes_of_many(
    tx: &mut Transaction<'_, Postgres>,
    counts: &HashMap<UserId, i64>,
) -> Result<HashMap<UserId, i64>, sqlx::Error> {
    let (users, amounts): (Vec<Uuid>, Vec<i64>) = counts.iter().map(|(u, n)| (u.0, *n)).unzip();
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "INSERT INTO message_streams (user_id, last) \
         SELECT user_id, amount FROM unnest($1::uuid[], $2::bigint[]) AS t(user_id, amount) \
         ORDER BY user_id \
         ON CONFLICT (user_id) DO UPDATE SET last = message_streams.last + EXCLUDED.last \
         RETURNING user_id, last",
    )
    .bind(&users)
    .bind(&amounts)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, last)| {
            let user = UserId(user);
            (user, last - counts.get(&user).copied().unwrap_or(1) + 1)
        })
        .collect())
}

async fn notify(tx: &mut Transaction<'_, Postgres>, user: UserId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT notify_view_change($1, $2)")
        .bind(user.0)
        .bind(VIEW)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl MessageStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores messages received by one user's accounts, in one statement; one the network
    /// delivered before (same account and network id, in the store or earlier in `messages`)
    /// is skipped. Returns those stored now, in the order given.
    pub async fn record_incoming(
        &self,
        user: UserId,
        messages: &[Incoming],
    ) -> Result<Vec<Message>, sqlx::Error> {
        let mut stored = self.record_incoming_of_many(&[(user, messages)]).await?;
        Ok(stored.pop().unwrap_or_default())
    }

    /// [`Self::record_incoming`] for several users' batches in one transaction (a group
    /// commit, see `store::intake`): the stored messages of each batch, in the same order.
    pub async fn record_incoming_of_many(
        &self,
        batches: &[(UserId, &[Incoming])],
    ) -> Result<Vec<Vec<Message>>, sqlx::Error> {
        // Each message once, with the batch it belongs to; a user's change numbers in a row.
        let mut seen = std::collections::HashSet::new();
        let mut rows: Vec<(usize, UserId, &Incoming)> = Vec::new();
        for (batch, (user, messages)) in batches.iter().enumerate() {
            for m in messages.iter() {
                let new = match &m.network_id {
                    Some(id) => seen.insert((m.from.account_id, id.as_str())),
                    None => true,
                };
                if new {
                    rows.push((batch, *user, m));
                }
            }
        }
        let mut stored = vec![Vec::new(); batches.len()];
        if rows.is_empty() {
            return Ok(stored);
        }
        let mut tx = self.pool.begin().await?;
        // Change counters locked in user order, so two group commits cannot deadlock.
        let mut counts: HashMap<UserId, i64> = HashMap::new();
        for (_, user, _) in &rows {
            *counts.entry(*user).or_default() += 1;
        }
        let mut next = take_changes_of_many(&mut tx, &counts).await?;
        let mut changes = Vec::with_capacity(rows.len());
        for (_, user, _) in &rows {
            let number = next.get_mut(user).expect("every user's numbers are taken");
            changes.push(*number);
            *number += 1;
        }
        let text = |f: &dyn Fn(&Incoming) -> &str| -> Vec<&str> {
            rows.iter().map(|(_, _, m)| f(m)).collect()
        };
        let protocols: Vec<String> = rows
            .iter()
            .map(|(_, _, m)| m.from.protocol.to_string())
            .collect();
        let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
        let users: Vec<Uuid> = rows.iter().map(|(_, u, _)| u.0).collect();
        let contacts: Vec<Uuid> = rows.iter().map(|(_, _, m)| m.from.contact_id.0).collect();
        let accounts: Vec<Uuid> = rows.iter().map(|(_, _, m)| m.from.account_id.0).collect();
        let network_ids: Vec<Option<String>> =
            rows.iter().map(|(_, _, m)| m.network_id.clone()).collect();
        let sent_at: Vec<DateTime<Utc>> = rows.iter().map(|(_, _, m)| m.sent_at).collect();
        // `ord` keeps the given order in the identity positions.
        let inserted = sqlx::query(&format!(
            "INSERT INTO messages (id, user_id, contact_id, account_id, protocol, handle, \
               direction, kind, body, state, network_id, sent_at, change) \
             SELECT id, user_id, contact_id, account_id, protocol, handle, 'IN', kind, body, \
               'RECEIVED', network_id, sent_at, change \
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
               $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::bigint[]) \
               WITH ORDINALITY AS m(id, user_id, contact_id, account_id, protocol, handle, kind, \
                 body, network_id, sent_at, change, ord) \
             ORDER BY ord \
             ON CONFLICT (account_id, network_id) WHERE direction = 'IN' AND network_id IS NOT NULL \
             DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(&ids)
        .bind(&users)
        .bind(&contacts)
        .bind(&accounts)
        .bind(&protocols)
        .bind(text(&|m| m.from.handle.as_str()))
        .bind(text(&|m| m.kind.as_str()))
        .bind(text(&|m| m.body.as_str()))
        .bind(&network_ids)
        .bind(&sent_at)
        .bind(&changes)
        .fetch_all(&mut *tx)
        .await?;
        let batch_of: HashMap<Uuid, usize> = ids
            .iter()
            .zip(&rows)
            .map(|(id, (batch, _, _))| (*id, *batch))
            .collect();
        let mut notified = std::collections::HashSet::new();
        for row in &inserted {
            let message = decode(row)?;
            if notified.insert(message.user_id) {
                notify(&mut tx, message.user_id).await?;
            }
            if let Some(batch) = batch_of.get(&message.id) {
                stored[*batch].push(message);
            }
        }
        tx.commit().await?;
        for batch in &mut stored {
            batch.sort_by_key(|m| m.position);
        }
        Ok(stored)
    }

    /// The network ids of the invitations `contact` sent (a message request's, to accept).
    pub async fn invitations(
        &self,
        user: UserId,
        contact: ContactId,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT network_id FROM messages \
             WHERE user_id = $1 AND contact_id = $2 AND kind = 'INVITATION' \
               AND network_id IS NOT NULL ORDER BY position",
        )
        .bind(user.0)
        .bind(contact.0)
        .fetch_all(&self.pool)
        .await
    }

    /// Stores a message to send, `QUEUED`. With a `client_id` already used by the user, stores
    /// nothing and returns the message stored then (`false`: not new). With `claim`, the new
    /// message is also claimed for a first attempt held for that long (as by
    /// [`Self::claim_due`]: `attempts` is 1), unless other messages of the user are waiting:
    /// those go first.
    pub async fn queue(
        &self,
        user: UserId,
        message: &Outgoing,
        claim: Option<std::time::Duration>,
    ) -> Result<(Message, bool), sqlx::Error> {
        if let Some(client_id) = &message.client_id {
            if let Some(existing) = self.by_client_id(user, client_id).await? {
                return Ok((existing, false));
            }
        }
        let mut tx = self.pool.begin().await?;
        let change = take_changes(&mut tx, user, 1).await?;
        // The user's counter is locked: no other message of theirs is queued meanwhile.
        let hold = match claim {
            Some(hold) => {
                let waiting: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE user_id = $1 AND state = 'QUEUED')",
                )
                .bind(user.0)
                .fetch_one(&mut *tx)
                .await?;
                (!waiting).then_some(hold.as_secs_f64())
            }
            None => None,
        };
        let row = sqlx::query(&format!(
            "INSERT INTO messages (id, user_id, contact_id, account_id, protocol, handle, \
               direction, body, state, client_id, addressed_to, auto_route, route_reason, change, \
               attempts, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'OUT', $7, 'QUEUED', $8, $9, $10, $11, $12, \
               CASE WHEN $13::float8 IS NULL THEN 0 ELSE 1 END, \
               now() + make_interval(secs => $13::float8)) \
             ON CONFLICT (user_id, client_id) WHERE client_id IS NOT NULL DO NOTHING \
             RETURNING {COLUMNS}"
        ))
        .bind(message.id)
        .bind(user.0)
        .bind(message.to.contact_id.0)
        .bind(message.to.account_id.0)
        .bind(message.to.protocol.to_string())
        .bind(message.to.handle.as_str())
        .bind(&message.body)
        .bind(&message.client_id)
        .bind(message.addressed_to)
        .bind(message.auto_route)
        .bind(&message.route_reason)
        .bind(change)
        .bind(hold)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // The same client id, sent twice at once: the other one won.
            tx.rollback().await?;
            let client_id = message.client_id.as_deref().unwrap_or_default();
            let existing = self.by_client_id(user, client_id).await?;
            return existing.map(|m| (m, false)).ok_or(sqlx::Error::RowNotFound);
        };
        notify(&mut tx, user).await?;
        tx.commit().await?;
        Ok((decode(&row)?, true))
    }

    async fn by_client_id(
        &self,
        user: UserId,
        client_id: &str,
    ) -> Result<Option<Message>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE user_id = $1 AND client_id = $2"
        ))
        .bind(user.0)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn get(&self, user: UserId, id: Uuid) -> Result<Option<Message>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE user_id = $1 AND id = $2"
        ))
        .bind(user.0)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Claims up to `limit` of the user's queued messages that are due, oldest first, for one
    /// attempt: each is held back from other claims for `hold` (the attempt's deadline; a node
    /// that dies while sending lets the message be claimed again after it).
    pub async fn claim_due(
        &self,
        user: UserId,
        limit: i64,
        hold: std::time::Duration,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "UPDATE messages SET attempts = attempts + 1, \
               next_attempt_at = now() + make_interval(secs => $3) \
             WHERE id IN (SELECT id FROM messages \
                           WHERE user_id = $1 AND state = 'QUEUED' \
                             AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
                           ORDER BY position LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        ))
        .bind(user.0)
        .bind(limit)
        .bind(hold.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|m| m.position);
        Ok(claimed)
    }

    /// The users among `users` with queued messages due now.
    pub async fn users_with_due(&self, users: &[UserId]) -> Result<Vec<UserId>, sqlx::Error> {
        let ids: Vec<Uuid> = users.iter().map(|u| u.0).collect();
        let rows: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT user_id FROM messages \
             WHERE user_id = ANY($1) AND state = 'QUEUED' \
               AND (next_attempt_at IS NULL OR next_attempt_at <= now())",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(UserId).collect())
    }

    /// The message went out, to `to` for `route_reason` (where the outbox routed it last).
    pub async fn mark_sent(
        &self,
        user: UserId,
        id: Uuid,
        to: &Party,
        route_reason: &str,
        network_id: Option<&str>,
    ) -> Result<Option<Message>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let change = take_changes(&mut tx, user, 1).await?;
        let row = sqlx::query(&format!(
            "UPDATE messages SET state = 'SENT', sent_at = now(), next_attempt_at = NULL, \
               network_id = coalesce($4, network_id), contact_id = $5, account_id = $6, \
               protocol = $7, handle = $8, route_reason = $9, change = $3 \
             WHERE user_id = $1 AND id = $2 AND state = 'QUEUED' RETURNING {COLUMNS}"
        ))
        .bind(user.0)
        .bind(id)
        .bind(change)
        .bind(network_id)
        .bind(to.contact_id.0)
        .bind(to.account_id.0)
        .bind(to.protocol.to_string())
        .bind(to.handle.as_str())
        .bind(route_reason)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            notify(&mut tx, user).await?;
        }
        tx.commit().await?;
        row.as_ref().map(decode).transpose()
    }

    /// The network refused the message for good.
    pub async fn mark_failed(
        &self,
        user: UserId,
        id: Uuid,
        reason: &str,
    ) -> Result<Option<Message>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let change = take_changes(&mut tx, user, 1).await?;
        let row = sqlx::query(&format!(
            "UPDATE messages SET state = 'FAILED', failure = $4, next_attempt_at = NULL, \
               change = $3 \
             WHERE user_id = $1 AND id = $2 AND state = 'QUEUED' RETURNING {COLUMNS}"
        ))
        .bind(user.0)
        .bind(id)
        .bind(change)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            notify(&mut tx, user).await?;
        }
        tx.commit().await?;
        row.as_ref().map(decode).transpose()
    }

    /// The attempt did not go through (account not connected, network unreachable): the
    /// message stays queued until `retry_at`, routed to `to` (the same contact, or another of
    /// the person's when it may be routed again), with the reason of the route.
    pub async fn postpone(
        &self,
        user: UserId,
        id: Uuid,
        retry_at: DateTime<Utc>,
        to: &Party,
        route_reason: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE messages SET next_attempt_at = $3, contact_id = $4, account_id = $5, \
               protocol = $6, handle = $7, route_reason = $8 \
             WHERE user_id = $1 AND id = $2 AND state = 'QUEUED'",
        )
        .bind(user.0)
        .bind(id)
        .bind(retry_at)
        .bind(to.contact_id.0)
        .bind(to.account_id.0)
        .bind(to.protocol.to_string())
        .bind(to.handle.as_str())
        .bind(route_reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes the user's queued messages due now (an account came online, a presence changed).
    pub async fn wake(&self, user: UserId) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE messages SET next_attempt_at = NULL \
             WHERE user_id = $1 AND state = 'QUEUED' AND next_attempt_at > now() \
               AND attempts > 0",
        )
        .bind(user.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The messages exchanged with `contacts`, newest first, before `before` (a position).
    pub async fn conversation(
        &self,
        user: UserId,
        contacts: &[ContactId],
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.0).collect();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages \
             WHERE user_id = $1 AND contact_id = ANY($2) AND position < $3 \
             ORDER BY position DESC LIMIT $4"
        ))
        .bind(user.0)
        .bind(&ids)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The user's messages at these positions.
    pub async fn at_positions(
        &self,
        user: UserId,
        positions: &[i64],
    ) -> Result<Vec<Message>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE user_id = $1 AND position = ANY($2)"
        ))
        .bind(user.0)
        .bind(positions)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The user's message changes after `change`, in order, at most `limit`.
    pub async fn changes_after(
        &self,
        user: UserId,
        change: i64,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE user_id = $1 AND change > $2 \
             ORDER BY change LIMIT $3"
        ))
        .bind(user.0)
        .bind(change)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The user's last change number (0 before any message).
    pub async fn last_change(&self, user: UserId) -> Result<i64, sqlx::Error> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last FROM message_streams WHERE user_id = $1")
                .bind(user.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(last.unwrap_or(0))
    }

    /// Every contact the user exchanged messages with: latest position and unread count.
    pub async fn activity(&self, user: UserId) -> Result<Vec<ContactActivity>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT m.contact_id, max(m.position) AS last_position, \
               count(*) FILTER (WHERE m.direction = 'IN' \
                                  AND m.position > coalesce(r.read_up_to, 0)) AS unread \
             FROM messages m \
             LEFT JOIN conversation_reads r \
               ON r.user_id = m.user_id AND r.contact_id = m.contact_id \
             WHERE m.user_id = $1 GROUP BY m.contact_id",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ContactActivity {
                    contact_id: ContactId(r.try_get("contact_id")?),
                    last_position: r.try_get("last_position")?,
                    unread: r.try_get("unread")?,
                })
            })
            .collect()
    }

    /// Marks the messages of `contacts` read up to `up_to` (a position); never backwards.
    pub async fn mark_read(
        &self,
        user: UserId,
        contacts: &[ContactId],
        up_to: i64,
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.0).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO conversation_reads (user_id, contact_id, read_up_to) \
             SELECT $1, c, $3 FROM unnest($2::uuid[]) AS c \
             ON CONFLICT (user_id, contact_id) DO UPDATE \
               SET read_up_to = greatest(conversation_reads.read_up_to, excluded.read_up_to)",
        )
        .bind(user.0)
        .bind(&ids)
        .bind(up_to)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, user).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Where the account's messages were last read up to (see `ConnectorEvent::MessageCursor`).
    pub async fn cursor(&self, account: AccountId) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT cursor FROM message_cursors WHERE account_id = $1")
            .bind(account.0)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn set_cursor(&self, account: AccountId, cursor: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO message_cursors (account_id, cursor) VALUES ($1, $2) \
             ON CONFLICT (account_id) DO UPDATE SET cursor = excluded.cursor, updated_at = now()",
        )
        .bind(account.0)
        .bind(cursor)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When the person last wrote from each of `contacts` (those that ever did).
    pub async fn last_inbound(
        &self,
        user: UserId,
        contacts: &[ContactId],
    ) -> Result<HashMap<ContactId, DateTime<Utc>>, sqlx::Error> {
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.0).collect();
        let rows = sqlx::query(
            "SELECT contact_id, max(created_at) AS at FROM messages \
             WHERE user_id = $1 AND contact_id = ANY($2) AND direction = 'IN' \
             GROUP BY contact_id",
        )
        .bind(user.0)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((ContactId(r.try_get("contact_id")?), r.try_get("at")?)))
            .collect()
    }
}
