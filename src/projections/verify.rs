//! Checking the views against the events: what a fresh fold of a user's stream says each view
//! should hold, compared with what it holds. Used by auditors (`verify`); normally there is no
//! difference.

use std::collections::BTreeMap;

use sqlx::{PgPool, Row};

use super::contacts::{AccountEntry, ContactEntry, ContactList};
use crate::domain::ids::UserId;
use crate::store::event_store::StoredEvent;

/// One row where a view and the events disagree; `None` on a side where the row is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub view: &'static str,
    pub key: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

/// The rows of both sides that differ, keyed alike.
fn differing(
    view: &'static str,
    expected: BTreeMap<String, String>,
    mut actual: BTreeMap<String, String>,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    for (key, want) in expected {
        match actual.remove(&key) {
            Some(have) if have == want => {}
            have => differences.push(Difference {
                view,
                key,
                expected: Some(want),
                actual: have,
            }),
        }
    }
    differences.extend(actual.into_iter().map(|(key, have)| Difference {
        view,
        key,
        expected: None,
        actual: Some(have),
    }));
    differences
}

fn contact_rows(list: &ContactList) -> BTreeMap<String, String> {
    let describe = |c: &ContactEntry| {
        format!(
            "{} on {} ({}), name {:?}, meta-contact {:?}, new {}, departure {:?}",
            c.handle,
            c.account_id,
            c.protocol,
            c.display_name,
            c.meta_contact_id.map(|m| m.to_string()),
            c.is_new,
            c.departure
                .map(|d| (d.reason, d.since.map(|t| t.timestamp_micros())))
        )
    };
    let mut rows = BTreeMap::new();
    for meta in &list.meta_contacts {
        let members: Vec<String> = meta
            .members
            .iter()
            .map(|m| m.contact_id.to_string())
            .collect();
        rows.insert(
            format!("meta-contact {}", meta.meta_contact_id),
            format!("{:?} with {}", meta.name, members.join(", ")),
        );
        for member in &meta.members {
            rows.insert(format!("contact {}", member.contact_id), describe(member));
        }
    }
    for contact in &list.single_contacts {
        rows.insert(format!("contact {}", contact.contact_id), describe(contact));
    }
    rows
}

/// The contact list view against the list folded from the events.
pub fn compare_contacts(expected: &ContactList, actual: &ContactList) -> Vec<Difference> {
    differing("contacts", contact_rows(expected), contact_rows(actual))
}

/// The bound accounts view against the folded aggregate's accounts
/// (id, protocol, server, handle).
pub fn compare_accounts(
    expected: &[(String, String, String, String)],
    actual: &[AccountEntry],
) -> Vec<Difference> {
    let want = expected
        .iter()
        .map(|(id, protocol, server, handle)| {
            (
                format!("account {id}"),
                format!("{handle} on {server} ({protocol})"),
            )
        })
        .collect();
    let have = actual
        .iter()
        .map(|a| {
            (
                format!("account {}", a.account_id),
                format!("{} on {} ({})", a.handle, a.server, a.protocol),
            )
        })
        .collect();
    differing("accounts", want, have)
}

/// The history view against the events: one entry per event, same sequence, kind and summary.
pub async fn compare_history(
    pool: &PgPool,
    user: UserId,
    events: &[StoredEvent],
) -> Result<Vec<Difference>, sqlx::Error> {
    let want = events
        .iter()
        .map(|e| {
            (
                format!("event {}", e.position),
                format!(
                    "#{} {}: {}",
                    e.sequence,
                    e.event.kind(),
                    super::history::summary(&e.event)
                ),
            )
        })
        .collect();
    let rows = sqlx::query(
        "SELECT position, sequence, kind, summary FROM history_view WHERE user_id = $1",
    )
    .bind(user.0)
    .fetch_all(pool)
    .await?;
    let mut have = BTreeMap::new();
    for row in rows {
        let position: i64 = row.try_get("position")?;
        let sequence: i64 = row.try_get("sequence")?;
        let kind: String = row.try_get("kind")?;
        let summary: String = row.try_get("summary")?;
        have.insert(
            format!("event {position}"),
            format!("#{sequence} {kind}: {summary}"),
        );
    }
    Ok(differing("history", want, have))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rows_missing_extra_or_changed_are_differences_and_equal_ones_are_not() {
        let expected = rows(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let actual = rows(&[("a", "1"), ("b", "two"), ("d", "4")]);
        let found = differing("v", expected, actual);
        let keys: Vec<(&str, Option<&str>, Option<&str>)> = found
            .iter()
            .map(|d| (d.key.as_str(), d.expected.as_deref(), d.actual.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                ("b", Some("2"), Some("two")),
                ("c", Some("3"), None),
                ("d", None, Some("4"))
            ]
        );
        assert!(differing("v", rows(&[("a", "1")]), rows(&[("a", "1")])).is_empty());
    }
}
