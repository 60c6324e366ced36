//! What one login's reconciliation changed, per account, read from the history: contacts
//! added, removed upstream, renamed, restored and the match suggestions raised (all carry the
//! login's id as their request id), and contacts that left with an account unbound since the
//! login before.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::domain::ids::{AccountId, ContactId, UserId};
use crate::domain::matching::Suggestion;
use crate::domain::user::{DepartureReason, UserEvent};

/// One contact named in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedContact {
    pub contact_id: ContactId,
    pub handle: String,
    pub display_name: Option<String>,
    /// For a rename: the name before.
    pub previous_name: Option<String>,
}

/// What a login changed for one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    pub added: Vec<ReportedContact>,
    pub removed_upstream: Vec<ReportedContact>,
    pub removed_by_unbinding: Vec<ReportedContact>,
    pub renamed: Vec<ReportedContact>,
    pub restored: Vec<ReportedContact>,
    pub suggestions: Vec<Suggestion>,
}

impl AccountChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The changes of the login `login_id` (made at `at`), by account. `previous_at`: the login
/// before, from which departures by unbinding count.
pub async fn changes(
    pool: &PgPool,
    user: UserId,
    login_id: Uuid,
    previous_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Result<BTreeMap<AccountId, AccountChanges>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, details FROM history_view WHERE user_id = $1 AND request_id = $2 \
         UNION \
         SELECT position, details FROM history_view \
          WHERE user_id = $1 AND kind = 'RosterContactDeparted' AND recorded_at <= $4 \
            AND ($3::timestamptz IS NULL OR recorded_at > $3) \
            AND details -> 'RosterContactDeparted' ->> 'reason' = 'ACCOUNT_UNBOUND' \
         ORDER BY position",
    )
    .bind(user.0)
    .bind(login_id.to_string())
    .bind(previous_at)
    .bind(at)
    .fetch_all(pool)
    .await?;
    let events: Vec<UserEvent> = rows
        .iter()
        .filter_map(|r| r.try_get::<Value, _>("details").ok())
        .filter_map(|details| serde_json::from_value(details).ok())
        .collect();
    let names = contact_names(pool, user, &events).await?;
    let contact = |id: &ContactId, previous: Option<&Option<String>>| {
        let (handle, display_name) = names.get(id).cloned().unwrap_or_default();
        ReportedContact {
            contact_id: *id,
            handle,
            display_name,
            previous_name: previous.cloned().flatten(),
        }
    };
    let mut report: BTreeMap<AccountId, AccountChanges> = BTreeMap::new();
    // A suggestion names only its contact: the account is the one that added it, earlier in
    // the same commit.
    let mut added_to: HashMap<ContactId, AccountId> = HashMap::new();
    for event in &events {
        match event {
            UserEvent::RosterContactAdded {
                contact_id,
                account_id,
                ..
            } => {
                added_to.insert(*contact_id, *account_id);
                report
                    .entry(*account_id)
                    .or_default()
                    .added
                    .push(contact(contact_id, None))
            }
            UserEvent::RosterContactDeparted {
                contact_id,
                account_id,
                reason,
                ..
            } => {
                let changes = report.entry(*account_id).or_default();
                match reason {
                    DepartureReason::AccountUnbound => &mut changes.removed_by_unbinding,
                    _ => &mut changes.removed_upstream,
                }
                .push(contact(contact_id, None));
            }
            UserEvent::RosterContactRenamed {
                contact_id,
                account_id,
                previous,
                ..
            } => report
                .entry(*account_id)
                .or_default()
                .renamed
                .push(contact(contact_id, Some(previous))),
            UserEvent::RosterContactReturned {
                contact_id,
                account_id,
                ..
            } => report
                .entry(*account_id)
                .or_default()
                .restored
                .push(contact(contact_id, None)),
            UserEvent::MatchSuggested {
                contact_id,
                target,
                score,
                evidence,
            } => {
                if let Some(account) = added_to.get(contact_id).copied() {
                    report
                        .entry(account)
                        .or_default()
                        .suggestions
                        .push(Suggestion {
                            contact_id: *contact_id,
                            target: *target,
                            score: *score,
                            evidence: evidence.clone(),
                        });
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

/// Handles and names of the contacts the events mention, as the contact list has them.
async fn contact_names(
    pool: &PgPool,
    user: UserId,
    events: &[UserEvent],
) -> Result<HashMap<ContactId, (String, Option<String>)>, sqlx::Error> {
    let ids: Vec<Uuid> = events
        .iter()
        .filter_map(|e| match e {
            UserEvent::RosterContactAdded { contact_id, .. }
            | UserEvent::RosterContactDeparted { contact_id, .. }
            | UserEvent::RosterContactRenamed { contact_id, .. }
            | UserEvent::RosterContactReturned { contact_id, .. }
            | UserEvent::MatchSuggested { contact_id, .. } => Some(contact_id.0),
            _ => None,
        })
        .collect();
    let rows = sqlx::query(
        "SELECT contact_id, handle, display_name FROM contact_view \
          WHERE user_id = $1 AND contact_id = ANY($2)",
    )
    .bind(user.0)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                ContactId(r.try_get("contact_id")?),
                (r.try_get("handle")?, r.try_get("display_name")?),
            ))
        })
        .collect()
}
