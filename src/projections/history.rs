//! The audit log: one row per event with who, when, what, and which contacts it involved.
//! Password hashes never reach it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::ids::{PersonRef, UserId};
use crate::domain::matching::{Evidence, MatchTarget};
use crate::domain::user::events::AuditedRead;
use crate::domain::user::{DepartureReason, UserEvent};
use crate::projections::runner::Projection;
use crate::store::event_store::StoredEvent;

mod copy;

/// Batches of at least this many events are written with COPY; smaller ones (the live runner's
/// usual one or few) with one INSERT, one round trip.
const COPY_FROM: usize = 32;

pub const NAME: &str = "history";

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub position: i64,
    pub sequence: i64,
    pub kind: String,
    pub summary: String,
    pub actor: String,
    pub request_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
    pub contact_ids: Vec<Uuid>,
    pub meta_contact_ids: Vec<Uuid>,
    pub details: Value,
}

/// What a history query asks for; `before` is a position cursor (newest first).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub kinds: Vec<String>,
    pub contact_id: Option<Uuid>,
    pub meta_contact_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A one-line description of an event for people reading the log.
pub fn summary(event: &UserEvent) -> String {
    match event {
        UserEvent::UserRegistered { user_name, .. } => format!("Registered as {user_name}"),
        UserEvent::AccountBound(a) => {
            format!("Bound {} account {} on {}", a.protocol, a.handle, a.server)
        }
        UserEvent::AccountUnbound { .. } => "Unbound an account".to_owned(),
        UserEvent::RosterContactAdded { handle, is_new, .. } if *is_new => {
            format!("New contact {handle} appeared upstream")
        }
        UserEvent::RosterContactAdded { handle, .. } => format!("Imported contact {handle}"),
        UserEvent::RosterContactRemoved { .. } => "A contact was removed".to_owned(),
        UserEvent::RosterImported { .. } => "Roster imported".to_owned(),
        UserEvent::RosterContactDeparted { reason, .. } => match reason {
            DepartureReason::RemovedUpstream => "A contact was removed upstream",
            DepartureReason::AccountUnbound => "A contact left with its unbound account",
            DepartureReason::RemovedByUser => "A contact was removed",
        }
        .to_owned(),
        UserEvent::RosterContactReturned { handle, .. } => {
            format!("Contact {handle} is back on the roster")
        }
        UserEvent::RosterContactRenamed {
            display_name,
            previous,
            ..
        } => format!(
            "A contact was renamed upstream from \u{201c}{}\u{201d} to \u{201c}{}\u{201d}",
            previous.as_deref().unwrap_or("(no name)"),
            display_name.as_deref().unwrap_or("(no name)")
        ),
        UserEvent::DormantContactForgotten { before, .. } => {
            format!(
                "Let a departed contact of \u{201c}{}\u{201d} go",
                before.name
            )
        }
        UserEvent::ContactKept { .. } => {
            "Accepted a message request: the contact stays, listed upstream or not".to_owned()
        }
        UserEvent::ContactsSeen { contact_ids } => {
            format!("Saw {} new contact(s)", contact_ids.len())
        }
        UserEvent::MatchSuggested {
            score, evidence, ..
        } => format!(
            "Suggested a match (score {score}): {}",
            evidence
                .iter()
                .map(Evidence::describe)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        UserEvent::MatchAccepted { automatic, .. } => if *automatic {
            "A match was bound by the match policy"
        } else {
            "A match was accepted"
        }
        .to_owned(),
        UserEvent::MatchRejected { .. } => "A match was rejected".to_owned(),
        UserEvent::RoutePreferenceSet { via, .. } => if via.is_some() {
            "Chose the contact a person's messages go through"
        } else {
            "Let the routing rules choose again where a person's messages go"
        }
        .to_owned(),
        UserEvent::ContactProfileChanged { profile, .. } => {
            let mut parts = Vec::new();
            if let Some(nickname) = &profile.nickname {
                parts.push(format!("nickname \u{201c}{nickname}\u{201d}"));
            }
            if !profile.emails.is_empty() {
                parts.push(format!("{} e-mail address(es)", profile.emails.len()));
            }
            if let Some(address) = &profile.verified_address {
                parts.push(format!("verified address {address}"));
            }
            if parts.is_empty() {
                "A contact's profile was cleared upstream".to_owned()
            } else {
                format!("A contact's profile was read: {}", parts.join(", "))
            }
        }
        UserEvent::AuditorRead { auditor, read } => match read {
            AuditedRead::History => format!("Auditor {auditor} read your history"),
            AuditedRead::ContactList { as_of: None } => {
                format!("Auditor {auditor} read your contact list")
            }
            AuditedRead::ContactList { as_of: Some(at) } => format!(
                "Auditor {auditor} read your contact list as it was at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            AuditedRead::Export => format!("Auditor {auditor} exported your event history"),
            AuditedRead::Verify => {
                format!("Auditor {auditor} checked your views against your history")
            }
        },
        UserEvent::MatchPolicySet { auto_bind_at } => match auto_bind_at {
            Some(t) => format!("Matches scoring {t} or more are bound automatically"),
            None => "Matches are only suggested".to_owned(),
        },
        UserEvent::ContactsMerged {
            name, contact_ids, ..
        } => {
            format!(
                "Merged {} contacts into \u{201c}{name}\u{201d}",
                contact_ids.len()
            )
        }
        UserEvent::ContactAddedToMetaContact { before, .. } => {
            format!("Added a contact to \u{201c}{}\u{201d}", before.name)
        }
        UserEvent::ContactRemovedFromMetaContact { before, .. } => {
            format!("Removed a contact from \u{201c}{}\u{201d}", before.name)
        }
        UserEvent::MetaContactRenamed { before, name, .. } => {
            format!(
                "Renamed \u{201c}{}\u{201d} to \u{201c}{name}\u{201d}",
                before.name
            )
        }
        UserEvent::BindingUndone {
            undone_sequence, ..
        } => format!("Undid event #{undone_sequence}"),
    }
}

/// Contacts and meta-contacts an event involves, for filtering.
fn involved(event: &UserEvent) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut contacts: Vec<Uuid> = match event {
        UserEvent::RosterContactAdded { contact_id, .. }
        | UserEvent::RosterContactRemoved { contact_id, .. }
        | UserEvent::RosterContactDeparted { contact_id, .. }
        | UserEvent::RosterContactReturned { contact_id, .. }
        | UserEvent::RosterContactRenamed { contact_id, .. }
        | UserEvent::ContactProfileChanged { contact_id, .. }
        | UserEvent::ContactKept { contact_id, .. } => vec![contact_id.0],
        UserEvent::ContactAddedToMetaContact { contact_id, .. }
        | UserEvent::ContactRemovedFromMetaContact { contact_id, .. }
        | UserEvent::DormantContactForgotten { contact_id, .. } => vec![contact_id.0],
        UserEvent::ContactsSeen { contact_ids } => contact_ids.iter().map(|c| c.0).collect(),
        UserEvent::MatchSuggested {
            contact_id, target, ..
        }
        | UserEvent::MatchAccepted {
            contact_id, target, ..
        }
        | UserEvent::MatchRejected { contact_id, target } => match target {
            MatchTarget::Contact(other) => vec![contact_id.0, other.0],
            MatchTarget::MetaContact(_) => vec![contact_id.0],
        },
        _ => Vec::new(),
    };
    let mut metas = Vec::new();
    if let Some(change) = event.binding_change() {
        metas.push(change.meta_contact_id.0);
        for state in [&change.before, &change.after].into_iter().flatten() {
            contacts.extend(state.members.iter().map(|m| m.0));
        }
    }
    match event {
        UserEvent::RosterContactRemoved {
            left_meta_contact: Some(meta),
            ..
        }
        | UserEvent::RosterContactDeparted {
            meta_contact_id: Some(meta),
            ..
        }
        | UserEvent::RosterContactReturned {
            meta_contact_id: Some(meta),
            ..
        }
        | UserEvent::MatchSuggested {
            target: MatchTarget::MetaContact(meta),
            ..
        }
        | UserEvent::MatchAccepted {
            target: MatchTarget::MetaContact(meta),
            ..
        }
        | UserEvent::MatchRejected {
            target: MatchTarget::MetaContact(meta),
            ..
        } => metas.push(meta.0),
        UserEvent::RoutePreferenceSet { person, via } => {
            match person {
                PersonRef::MetaContact(meta) => metas.push(meta.0),
                PersonRef::Contact(contact) => contacts.push(contact.0),
            }
            contacts.extend(via.iter().map(|c| c.0));
        }
        _ => {}
    }
    contacts.sort();
    contacts.dedup();
    (contacts, metas)
}

/// The event as JSON, minus anything secret.
/// [`public_details`] as JSON text. Serialised straight from the event, with no `Value` in
/// between, unless the text names a password hash anywhere (a registration): that one takes the
/// scrubbing path.
pub fn public_details_text(event: &UserEvent) -> String {
    match serde_json::to_string(event) {
        Ok(text) if !text.contains("\"password_hash\"") => text,
        _ => public_details(event).to_string(),
    }
}

pub fn public_details(event: &UserEvent) -> Value {
    fn scrub(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("password_hash");
                map.values_mut().for_each(scrub);
            }
            Value::Array(items) => items.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    scrub(&mut value);
    value
}

pub struct HistoryProjection;

/// A batch of history rows, column by column, for one `unnest` insert. (Arrays of arrays cannot
/// be bound, so each row's id lists travel as JSON.)
#[derive(Default)]
struct HistoryRows {
    position: Vec<i64>,
    user_id: Vec<Uuid>,
    sequence: Vec<i64>,
    kind: Vec<&'static str>,
    summary: Vec<String>,
    actor: Vec<String>,
    request_id: Vec<Option<String>>,
    recorded_at: Vec<DateTime<Utc>>,
    contacts: Vec<Value>,
    metas: Vec<Value>,
    details: Vec<Value>,
}

impl HistoryRows {
    fn push(&mut self, event: &StoredEvent) {
        let (contacts, metas) = involved(&event.event);
        self.position.push(event.position);
        self.user_id.push(event.user_id.0);
        self.sequence
            .push(i64::try_from(event.sequence).unwrap_or(i64::MAX));
        self.kind.push(event.event.kind());
        self.summary.push(summary(&event.event));
        self.actor.push(event.actor.clone());
        self.request_id.push(event.request_id.clone());
        self.recorded_at.push(event.recorded_at);
        self.contacts.push(Value::from(
            contacts.iter().map(Uuid::to_string).collect::<Vec<_>>(),
        ));
        self.metas.push(Value::from(
            metas.iter().map(Uuid::to_string).collect::<Vec<_>>(),
        ));
        self.details.push(public_details(&event.event));
    }
}

#[async_trait]
impl Projection for HistoryProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error> {
        insert_rows(conn, std::slice::from_ref(event)).await
    }

    /// Entries do not depend on each other: the whole batch is one INSERT, or one COPY when it
    /// is big (a rebuild).
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), sqlx::Error> {
        if events.len() >= COPY_FROM {
            copy::copy_rows(conn, events).await
        } else {
            insert_rows(conn, events).await
        }
    }

    async fn reset(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE history_view").execute(conn).await?;
        Ok(())
    }

    /// The history only inserts while it applies: its four lookup indexes are built once at a
    /// rebuild's end.
    fn rebuild_defers_indexes_of(&self) -> &'static [&'static str] {
        &["history_view"]
    }
}

/// The rows of `events` in one INSERT.
async fn insert_rows(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), sqlx::Error> {
    let mut rows = HistoryRows::default();
    for event in events {
        rows.push(event);
    }
    sqlx::query(
        "INSERT INTO history_view (position, user_id, sequence, kind, summary, actor, request_id, \
           recorded_at, contact_ids, meta_contact_ids, details) \
         SELECT position, user_id, sequence, kind, summary, actor, request_id, recorded_at, \
                ARRAY(SELECT jsonb_array_elements_text(contacts)::uuid), \
                ARRAY(SELECT jsonb_array_elements_text(metas)::uuid), details \
           FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
                       $7::text[], $8::timestamptz[], $9::jsonb[], $10::jsonb[], $11::jsonb[]) \
             AS r(position, user_id, sequence, kind, summary, actor, request_id, recorded_at, \
                  contacts, metas, details) \
         ON CONFLICT (position) DO NOTHING",
    )
    .bind(rows.position)
    .bind(rows.user_id)
    .bind(rows.sequence)
    .bind(rows.kind)
    .bind(rows.summary)
    .bind(rows.actor)
    .bind(rows.request_id)
    .bind(rows.recorded_at)
    .bind(rows.contacts)
    .bind(rows.metas)
    .bind(rows.details)
    .execute(conn)
    .await?;
    Ok(())
}

const ENTRY_COLUMNS: &str = "position, sequence, kind, summary, actor, request_id, recorded_at, \
     contact_ids, meta_contact_ids, details";

fn entry(row: &sqlx::postgres::PgRow) -> Result<HistoryEntry, sqlx::Error> {
    Ok(HistoryEntry {
        position: row.try_get("position")?,
        sequence: row.try_get("sequence")?,
        kind: row.try_get("kind")?,
        summary: row.try_get("summary")?,
        actor: row.try_get("actor")?,
        request_id: row.try_get("request_id")?,
        recorded_at: row.try_get("recorded_at")?,
        contact_ids: row.try_get("contact_ids")?,
        meta_contact_ids: row.try_get("meta_contact_ids")?,
        details: row.try_get("details")?,
    })
}

/// A page of one user's history, newest first, strictly before the `before` position.
pub async fn page(
    pool: &PgPool,
    user: UserId,
    filter: &HistoryFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    let query = format!(
        "SELECT {ENTRY_COLUMNS} FROM history_view \
         WHERE user_id = $1 AND ($2::bigint IS NULL OR position < $2) \
           AND (cardinality($3::text[]) = 0 OR kind = ANY($3)) \
           AND ($4::uuid IS NULL OR contact_ids @> ARRAY[$4]) \
           AND ($5::uuid IS NULL OR meta_contact_ids @> ARRAY[$5]) \
           AND ($6::timestamptz IS NULL OR recorded_at >= $6) \
           AND ($7::timestamptz IS NULL OR recorded_at <= $7) \
         ORDER BY position DESC LIMIT $8"
    );
    sqlx::query(&query)
        .bind(user.0)
        .bind(before)
        .bind(&filter.kinds)
        .bind(filter.contact_id)
        .bind(filter.meta_contact_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(entry)
        .collect()
}

/// Entries of one user after `after` position, oldest first (for the subscription).
pub async fn since(
    pool: &PgPool,
    user: UserId,
    after: i64,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    let query = format!(
        "SELECT {ENTRY_COLUMNS} FROM history_view WHERE user_id = $1 AND position > $2 ORDER BY position"
    );
    sqlx::query(&query)
        .bind(user.0)
        .bind(after)
        .fetch_all(pool)
        .await?
        .iter()
        .map(entry)
        .collect()
}

/// The newest position in a user's history (0 when empty).
pub async fn latest_position(pool: &PgPool, user: UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM history_view WHERE user_id = $1")
        .bind(user.0)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{AccountId, Handle, Protocol, UserName};
    use crate::domain::user::BoundAccount;

    #[test]
    fn details_as_text_equal_the_scrubbed_details_and_never_hold_a_password_hash() {
        let registered = UserEvent::UserRegistered {
            user_name: UserName::parse("ada").unwrap(),
            password_hash: "$argon2id$secret".into(),
        };
        let bound = UserEvent::AccountBound(BoundAccount {
            account_id: AccountId(Uuid::from_u128(1)),
            protocol: Protocol::Xmpp,
            server: "example.org".into(),
            handle: Handle::parse(Protocol::Xmpp, "ada@example.org").unwrap(),
        });
        for event in [registered, bound] {
            let text = public_details_text(&event);
            assert!(!text.contains("argon2id"), "{text}");
            let parsed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed, public_details(&event));
        }
    }
}
