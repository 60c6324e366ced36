//! The unified contact list and bound accounts: a projection into `user_view`,
//! `account_view`, `meta_contact_view` and `contact_view`, plus the read model both the live
//! view and time travel return, and the reads of bound accounts and user names.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::ids::{AccountId, ContactId, MetaContactId, UserId};
use crate::domain::user::{BindingChange, DepartureReason, MetaContactState, User, UserEvent};
use crate::projections::runner::Projection;
use crate::store::event_store::StoredEvent;

mod fold;

pub const NAME: &str = "contacts";

/// One contact in the unified list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEntry {
    pub contact_id: ContactId,
    pub account_id: AccountId,
    pub protocol: String,
    pub handle: String,
    pub display_name: Option<String>,
    pub meta_contact_id: Option<MetaContactId>,
    pub is_new: bool,
    /// Set when the contact has left the roster: it is then shown only as a dormant member of
    /// its meta-contact.
    pub departure: Option<ContactDeparture>,
}

/// Why and since when a dormant member is off the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactDeparture {
    pub reason: DepartureReason,
    /// `None` only where the time is unknown.
    pub since: Option<DateTime<Utc>>,
}

/// A meta-contact with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContactEntry {
    pub meta_contact_id: MetaContactId,
    pub name: String,
    pub members: Vec<ContactEntry>,
}

/// The whole unified list: meta-contacts, and contacts that are in none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactList {
    pub meta_contacts: Vec<MetaContactEntry>,
    pub single_contacts: Vec<ContactEntry>,
}

impl ContactList {
    /// Groups contacts under their meta-contacts; both sorted for a stable order. Departed
    /// contacts show only as dormant members.
    fn assemble(metas: Vec<(MetaContactId, String)>, contacts: Vec<ContactEntry>) -> Self {
        let mut members: BTreeMap<MetaContactId, Vec<ContactEntry>> = BTreeMap::new();
        let mut single_contacts = Vec::new();
        for contact in contacts {
            match contact.meta_contact_id {
                Some(meta) => members.entry(meta).or_default().push(contact),
                None if contact.departure.is_none() => single_contacts.push(contact),
                None => {}
            }
        }
        let key = |c: &ContactEntry| (c.handle.clone(), c.protocol.clone(), c.contact_id);
        single_contacts.sort_by_key(key);
        let mut meta_contacts: Vec<MetaContactEntry> = metas
            .into_iter()
            .map(|(meta_contact_id, name)| {
                let mut members = members.remove(&meta_contact_id).unwrap_or_default();
                members.sort_by_key(key);
                MetaContactEntry {
                    meta_contact_id,
                    name,
                    members,
                }
            })
            .collect();
        meta_contacts
            .sort_by(|a, b| (&a.name, a.meta_contact_id).cmp(&(&b.name, b.meta_contact_id)));
        Self {
            meta_contacts,
            single_contacts,
        }
    }

    /// The list as the aggregate's state has it (time travel folds events into a `User`);
    /// `recorded_at` gives the time of the event at a sequence, for departures.
    pub fn from_user(user: &User, recorded_at: impl Fn(usize) -> Option<DateTime<Utc>>) -> Self {
        let contacts = user
            .contacts()
            .iter()
            .filter(|(_, c)| c.is_listed() || c.is_dormant())
            .map(|(id, c)| ContactEntry {
                contact_id: *id,
                account_id: c.account_id,
                protocol: user
                    .account_protocol(c.account_id)
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                handle: c.handle.to_string(),
                display_name: c.display_name.clone(),
                meta_contact_id: c.meta_contact,
                is_new: c.is_new,
                departure: c.departure.map(|d| ContactDeparture {
                    reason: d.reason,
                    since: recorded_at(d.sequence),
                }),
            })
            .collect();
        let metas = user
            .meta_contacts()
            .iter()
            .map(|(id, m)| (*id, m.name.to_string()))
            .collect();
        Self::assemble(metas, contacts)
    }

    /// The live list from the view tables.
    pub async fn load(pool: &PgPool, user: UserId) -> Result<Self, sqlx::Error> {
        let metas =
            sqlx::query("SELECT meta_contact_id, name FROM meta_contact_view WHERE user_id = $1")
                .bind(user.0)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        MetaContactId(r.try_get("meta_contact_id")?),
                        r.try_get("name")?,
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let contacts = sqlx::query(
            "SELECT contact_id, account_id, protocol, handle, display_name, meta_contact_id, is_new, \
                    departed_reason, departed_at \
             FROM contact_view \
             WHERE user_id = $1 AND (departed_reason IS NULL OR meta_contact_id IS NOT NULL)",
        )
        .bind(user.0)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(ContactEntry {
                contact_id: ContactId(r.try_get("contact_id")?),
                account_id: AccountId(r.try_get("account_id")?),
                protocol: r.try_get("protocol")?,
                handle: r.try_get("handle")?,
                display_name: r.try_get("display_name")?,
                meta_contact_id: r.try_get::<Option<Uuid>, _>("meta_contact_id")?.map(MetaContactId),
                is_new: r.try_get("is_new")?,
                departure: r
                    .try_get::<Option<String>, _>("departed_reason")?
                    .and_then(|name| departure_reason_from_name(&name))
                    .map(|reason| -> Result<_, sqlx::Error> {
                        Ok(ContactDeparture {
                            reason,
                            since: r.try_get("departed_at")?,
                        })
                    })
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Self::assemble(metas, contacts))
    }
}

/// A bound account as `account_view` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEntry {
    pub account_id: AccountId,
    pub protocol: String,
    pub server: String,
    pub handle: String,
    pub bound_at: DateTime<Utc>,
}

/// The user's bound accounts, oldest binding first.
pub async fn accounts(pool: &PgPool, user: UserId) -> Result<Vec<AccountEntry>, sqlx::Error> {
    sqlx::query(
        "SELECT account_id, protocol, server, handle, bound_at FROM account_view \
         WHERE user_id = $1 ORDER BY bound_at, account_id",
    )
    .bind(user.0)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(AccountEntry {
            account_id: AccountId(r.try_get("account_id")?),
            protocol: r.try_get("protocol")?,
            server: r.try_get("server")?,
            handle: r.try_get("handle")?,
            bound_at: r.try_get("bound_at")?,
        })
    })
    .collect()
}

/// Registered users by name, after `after`, at most `limit`: (id, name, registered at).
pub async fn users_page(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(UserId, String, DateTime<Utc>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, user_name, registered_at FROM user_view \
          WHERE $1::text IS NULL OR user_name > $1 ORDER BY user_name LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                UserId(r.try_get("user_id")?),
                r.try_get("user_name")?,
                r.try_get("registered_at")?,
            ))
        })
        .collect()
}

/// The user's name as `user_view` has it; none until the registration is projected.
pub async fn user_name(pool: &PgPool, user: UserId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_name FROM user_view WHERE user_id = $1")
        .bind(user.0)
        .fetch_optional(pool)
        .await
}

/// How a departure reason is stored in `contact_view.departed_reason`.
pub fn departure_reason_name(reason: DepartureReason) -> &'static str {
    match reason {
        DepartureReason::RemovedUpstream => "REMOVED_UPSTREAM",
        DepartureReason::AccountUnbound => "ACCOUNT_UNBOUND",
        DepartureReason::RemovedByUser => "REMOVED_BY_USER",
    }
}

fn departure_reason_from_name(name: &str) -> Option<DepartureReason> {
    [
        DepartureReason::RemovedUpstream,
        DepartureReason::AccountUnbound,
        DepartureReason::RemovedByUser,
    ]
    .into_iter()
    .find(|r| departure_reason_name(*r) == name)
}

/// Inserts the contacts a run of `RosterContactAdded` events adds, in one statement.
async fn insert_added(conn: &mut PgConnection, run: &[&StoredEvent]) -> Result<(), sqlx::Error> {
    if run.is_empty() {
        return Ok(());
    }
    let mut users = Vec::with_capacity(run.len());
    let mut contacts = Vec::with_capacity(run.len());
    let mut accounts = Vec::with_capacity(run.len());
    let mut handles = Vec::with_capacity(run.len());
    let mut names = Vec::with_capacity(run.len());
    let mut new = Vec::with_capacity(run.len());
    let mut added_at = Vec::with_capacity(run.len());
    for event in run {
        if let UserEvent::RosterContactAdded {
            contact_id,
            account_id,
            handle,
            display_name,
            is_new,
        } = &event.event
        {
            users.push(event.user_id.0);
            contacts.push(contact_id.0);
            accounts.push(account_id.0);
            handles.push(handle.as_str());
            names.push(display_name.as_deref());
            new.push(*is_new);
            added_at.push(event.recorded_at);
        }
    }
    sqlx::query(
        "INSERT INTO contact_view (user_id, contact_id, account_id, protocol, handle, \
           display_name, meta_contact_id, is_new, added_at) \
         SELECT r.user_id, r.contact_id, r.account_id, a.protocol, r.handle, r.display_name, NULL, \
                r.is_new, r.added_at \
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bool[], \
                       $7::timestamptz[]) \
                AS r(user_id, contact_id, account_id, handle, display_name, is_new, added_at) \
           JOIN account_view a ON a.user_id = r.user_id AND a.account_id = r.account_id \
         ON CONFLICT (user_id, contact_id) DO NOTHING",
    )
    .bind(&users)
    .bind(&contacts)
    .bind(&accounts)
    .bind(&handles)
    .bind(&names)
    .bind(&new)
    .bind(&added_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Keeps the account and contact views.
pub struct ContactsProjection;

/// Applies one binding change, writing only what differs between its before and after states
/// (a rename touches one row, not every member's).
async fn apply_change(
    conn: &mut PgConnection,
    event: &StoredEvent,
    change: &BindingChange,
) -> Result<(), sqlx::Error> {
    let user = event.user_id.0;
    let id = change.meta_contact_id;
    let members = |state: &Option<MetaContactState>| -> BTreeSet<Uuid> {
        state
            .iter()
            .flat_map(|s| s.members.iter().map(|m| m.0))
            .collect()
    };
    let (before, after) = (members(&change.before), members(&change.after));
    let left: Vec<Uuid> = before.difference(&after).copied().collect();
    let joined: Vec<Uuid> = after.difference(&before).copied().collect();
    match &change.after {
        None => {
            sqlx::query(
                "DELETE FROM meta_contact_view WHERE user_id = $1 AND meta_contact_id = $2",
            )
            .bind(user)
            .bind(id.0)
            .execute(&mut *conn)
            .await?;
        }
        Some(state) if change.before.as_ref().map(|b| &b.name) != Some(&state.name) => {
            sqlx::query(
                "INSERT INTO meta_contact_view (user_id, meta_contact_id, name, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, meta_contact_id) \
                 DO UPDATE SET name = EXCLUDED.name, updated_at = EXCLUDED.updated_at",
            )
            .bind(user)
            .bind(id.0)
            .bind(state.name.as_str())
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        Some(_) => {}
    }
    if !left.is_empty() {
        sqlx::query(
            "UPDATE contact_view SET meta_contact_id = NULL \
             WHERE user_id = $1 AND meta_contact_id = $2 AND contact_id = ANY($3)",
        )
        .bind(user)
        .bind(id.0)
        .bind(&left)
        .execute(&mut *conn)
        .await?;
    }
    if !joined.is_empty() {
        sqlx::query("UPDATE contact_view SET meta_contact_id = $2 WHERE user_id = $1 AND contact_id = ANY($3)")
            .bind(user)
            .bind(id.0)
            .bind(&joined)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl Projection for ContactsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The rows the batch touches are read once, every event is applied to them in memory
    /// with the rules of [`Self::apply`], and each changed row is written once (see `fold`).
    /// A lone event, the usual live batch, takes its own statements: fewer than the fold's
    /// read and write of the same rows.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), sqlx::Error> {
        if let [event] = events {
            return self.apply(conn, event).await;
        }
        fold::apply_batch(conn, events).await
    }

    /// One event's own statements: the reference the batch path is tested against
    /// (`tests/api/projection_fold.rs`).
    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error> {
        let user = event.user_id.0;
        if let Some(change) = event.event.binding_change() {
            return apply_change(conn, event, &change).await;
        }
        match &event.event {
            UserEvent::UserRegistered { user_name, .. } => {
                sqlx::query(
                    "INSERT INTO user_view (user_id, user_name, registered_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user)
                .bind(user_name.as_str())
                .bind(event.recorded_at)
                .execute(conn)
                .await?;
            }
            UserEvent::AccountBound(account) => {
                sqlx::query(
                    "INSERT INTO account_view (user_id, account_id, protocol, server, handle, bound_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, account_id) DO NOTHING",
                )
                .bind(user)
                .bind(account.account_id.0)
                .bind(account.protocol.to_string())
                .bind(&account.server)
                .bind(account.handle.as_str())
                .bind(event.recorded_at)
                .execute(conn)
                .await?;
            }
            UserEvent::AccountUnbound { account_id } => {
                sqlx::query("DELETE FROM account_view WHERE user_id = $1 AND account_id = $2")
                    .bind(user)
                    .bind(account_id.0)
                    .execute(conn)
                    .await?;
            }
            UserEvent::RosterContactAdded { .. } => insert_added(conn, &[event]).await?,
            UserEvent::RosterContactRemoved {
                contact_id,
                left_meta_contact,
                ..
            } => {
                sqlx::query("DELETE FROM contact_view WHERE user_id = $1 AND contact_id = $2")
                    .bind(user)
                    .bind(contact_id.0)
                    .execute(&mut *conn)
                    .await?;
                if let Some(meta) = left_meta_contact {
                    // A meta-contact left without members is dissolved.
                    sqlx::query(
                        "DELETE FROM meta_contact_view m WHERE m.user_id = $1 AND m.meta_contact_id = $2 \
                         AND NOT EXISTS (SELECT 1 FROM contact_view c \
                                          WHERE c.user_id = $1 AND c.meta_contact_id = $2)",
                    )
                    .bind(user)
                    .bind(meta.0)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            // Suggestions are read from the aggregate; a taken one's binding event follows.
            UserEvent::RosterImported { .. }
            | UserEvent::MatchSuggested { .. }
            | UserEvent::MatchAccepted { .. }
            | UserEvent::MatchRejected { .. }
            | UserEvent::MatchPolicySet { .. }
            | UserEvent::ContactProfileChanged { .. }
            | UserEvent::RoutePreferenceSet { .. }
            | UserEvent::ContactKept { .. }
            | UserEvent::AuditorRead { .. } => {}
            UserEvent::RosterContactDeparted {
                contact_id, reason, ..
            } => {
                sqlx::query(
                    "UPDATE contact_view SET departed_reason = $3, departed_at = $4 \
                     WHERE user_id = $1 AND contact_id = $2",
                )
                .bind(user)
                .bind(contact_id.0)
                .bind(departure_reason_name(*reason))
                .bind(event.recorded_at)
                .execute(conn)
                .await?;
            }
            UserEvent::RosterContactReturned {
                contact_id,
                account_id,
                handle,
                display_name,
                meta_contact_id,
            } => {
                // The row was kept with its membership; a contact from before dormancy existed
                // has none and is written afresh.
                sqlx::query(
                    "INSERT INTO contact_view (user_id, contact_id, account_id, protocol, handle, \
                       display_name, meta_contact_id, is_new, added_at) \
                     SELECT $1, $2, $3, a.protocol, $4, $5, $6, false, $7 FROM account_view a \
                      WHERE a.user_id = $1 AND a.account_id = $3 \
                     ON CONFLICT (user_id, contact_id) DO UPDATE \
                       SET display_name = EXCLUDED.display_name, departed_reason = NULL, \
                           departed_at = NULL",
                )
                .bind(user)
                .bind(contact_id.0)
                .bind(account_id.0)
                .bind(handle.as_str())
                .bind(display_name)
                .bind(meta_contact_id.map(|m| m.0))
                .bind(event.recorded_at)
                .execute(conn)
                .await?;
            }
            UserEvent::RosterContactRenamed {
                contact_id,
                display_name,
                ..
            } => {
                sqlx::query(
                    "UPDATE contact_view SET display_name = $3 WHERE user_id = $1 AND contact_id = $2",
                )
                .bind(user)
                .bind(contact_id.0)
                .bind(display_name)
                .execute(conn)
                .await?;
            }
            UserEvent::ContactsSeen { contact_ids } => {
                let ids: Vec<Uuid> = contact_ids.iter().map(|c| c.0).collect();
                sqlx::query(
                    "UPDATE contact_view SET is_new = false WHERE user_id = $1 AND contact_id = ANY($2)",
                )
                .bind(user)
                .bind(&ids)
                .execute(conn)
                .await?;
            }
            // Binding events were handled above through their change.
            UserEvent::ContactsMerged { .. }
            | UserEvent::ContactAddedToMetaContact { .. }
            | UserEvent::ContactRemovedFromMetaContact { .. }
            | UserEvent::DormantContactForgotten { .. }
            | UserEvent::MetaContactRenamed { .. }
            | UserEvent::BindingUndone { .. } => {}
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE user_view, account_view, meta_contact_view, contact_view")
            .execute(conn)
            .await?;
        Ok(())
    }
}
