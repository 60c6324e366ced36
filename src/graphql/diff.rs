//! What changed in the unified list between two instants (for example two logins).

use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::types::Contact;
use super::{api, caller};
use crate::projections::diff::{self, ContactsDiff as Diff};

/// A contact whose upstream name changed.
#[derive(SimpleObject)]
pub struct ContactRename {
    pub contact: Contact,
    pub previous_name: Option<String>,
}

/// Contacts that joined or left one meta-contact.
#[derive(SimpleObject)]
pub struct MembershipChange {
    pub meta_contact_id: ID,
    pub name: String,
    pub contact_ids: Vec<ID>,
    /// The meta-contact itself was formed (in `merged`) or dissolved (in `split`).
    pub whole: bool,
}

#[derive(SimpleObject)]
pub struct MetaContactRename {
    pub meta_contact_id: ID,
    pub name: String,
    pub previous_name: String,
}

/// The changes from `from` to `to`.
#[derive(SimpleObject)]
pub struct ContactsDiff {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// On the roster at `to`, not at `from`.
    pub added: Vec<Contact>,
    /// On the roster at `from`, not at `to` (shown as at `to`: dormant, or as last seen).
    pub removed: Vec<Contact>,
    pub renamed: Vec<ContactRename>,
    /// Meta-contacts formed, or joined by contacts.
    pub merged: Vec<MembershipChange>,
    /// Meta-contacts dissolved, or left by contacts.
    pub split: Vec<MembershipChange>,
    pub meta_contacts_renamed: Vec<MetaContactRename>,
}

fn membership(change: diff::MembershipChange) -> MembershipChange {
    MembershipChange {
        meta_contact_id: ID(change.meta_contact_id.to_string()),
        name: change.name,
        contact_ids: change
            .contact_ids
            .iter()
            .map(|c| ID(c.to_string()))
            .collect(),
        whole: change.whole,
    }
}

impl ContactsDiff {
    fn new(d: Diff, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from,
            to,
            added: d.added.into_iter().map(Contact::past).collect(),
            removed: d.removed.into_iter().map(Contact::past).collect(),
            renamed: d
                .renamed
                .into_iter()
                .map(|r| ContactRename {
                    contact: Contact::past(r.contact),
                    previous_name: r.previous,
                })
                .collect(),
            merged: d.merged.into_iter().map(membership).collect(),
            split: d.split.into_iter().map(membership).collect(),
            meta_contacts_renamed: d
                .meta_contacts_renamed
                .into_iter()
                .map(|r| MetaContactRename {
                    meta_contact_id: ID(r.meta_contact_id.to_string()),
                    name: r.name,
                    previous_name: r.previous,
                })
                .collect(),
        }
    }
}

#[derive(Default)]
pub struct DiffQuery;

#[Object]
impl DiffQuery {
    /// What changed in the unified list from `from` to `to` (default: now), e.g. between two
    /// logins: contacts added, removed and renamed upstream, meta-contacts merged, split and
    /// renamed.
    async fn contacts_diff(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<ContactsDiff> {
        let (app, caller) = caller(ctx).await?;
        let end = to.unwrap_or_else(Utc::now);
        let d = api(app.contacts_diff(caller.user, from, end).await)?;
        Ok(ContactsDiff::new(d, from, end))
    }
}
