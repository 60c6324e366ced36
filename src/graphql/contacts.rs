//! The unified contact list, friend binding and unbinding, undo, and the history.

use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};

use super::types::{ContactList, EventKind, HistoryEntry, HistoryPage, MergePayload, PageInfo};
use super::{api, api_error, caller, parse_id};
use crate::app::AppError;
use crate::domain::ids::{AccountId, ContactId, MetaContactId};
use crate::projections::history::HistoryFilter;

#[derive(Default)]
pub struct ContactQuery;

const MAX_PAGE: i32 = 200;
const DEFAULT_PAGE: i32 = 50;

#[Object]
impl ContactQuery {
    /// The unified contact list; with `asOf`, as it was at that instant.
    async fn contacts(
        &self,
        ctx: &Context<'_>,
        as_of: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let list = api(app.contacts(caller.user, as_of).await)?;
        Ok(ContactList::new(list, caller.user, as_of))
    }

    /// The user's history, newest first. `after` is the `endCursor` of the previous page.
    #[allow(clippy::too_many_arguments)]
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 200 (default 50).")] first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Only these kinds (default: all).")] kinds: Option<Vec<EventKind>>,
        contact_id: Option<ID>,
        meta_contact_id: Option<ID>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<HistoryPage> {
        let (app, caller) = caller(ctx).await?;
        let args = HistoryArgs {
            first,
            after,
            kinds,
            contact_id,
            meta_contact_id,
            since,
            until,
        };
        let (filter, before, first) = args.parse()?;
        let entries = api(app
            .history(caller.user, &filter, before, i64::from(first) + 1)
            .await)?;
        Ok(history_page(entries, first))
    }
}

/// The arguments of a history query, as given.
pub(super) struct HistoryArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub kinds: Option<Vec<EventKind>>,
    pub contact_id: Option<ID>,
    pub meta_contact_id: Option<ID>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl HistoryArgs {
    /// The filter, the position to read before, and the page size; `BAD_USER_INPUT` if any
    /// argument is out of bounds.
    pub fn parse(self) -> async_graphql::Result<(HistoryFilter, Option<i64>, i32)> {
        if let Some(kinds) = &self.kinds {
            super::capped("kinds", kinds, crate::app::limits::MAX_KINDS)?;
        }
        let first = self.first.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(api_error(AppError::BadInput(format!(
                "first: must be between 1 and {MAX_PAGE}"
            ))));
        }
        let before = self
            .after
            .map(|c| c.parse::<i64>())
            .transpose()
            .map_err(|_| {
                api_error(AppError::BadInput(
                    "after: not a cursor from this API".into(),
                ))
            })?;
        let filter = HistoryFilter {
            kinds: self
                .kinds
                .unwrap_or_default()
                .into_iter()
                .map(EventKind::stored_name)
                .collect(),
            contact_id: self
                .contact_id
                .map(|id| parse_id("contactId", &id, |u| u))
                .transpose()?,
            meta_contact_id: self
                .meta_contact_id
                .map(|id| parse_id("metaContactId", &id, |u| u))
                .transpose()?,
            since: self.since,
            until: self.until,
        };
        Ok((filter, before, first))
    }
}

/// A page of `first` entries out of `entries` (read one more than the page, to know whether
/// another page follows).
pub(super) fn history_page(
    mut entries: Vec<crate::projections::history::HistoryEntry>,
    first: i32,
) -> HistoryPage {
    let has_next_page = entries.len() > first as usize;
    entries.truncate(first as usize);
    let end_cursor = entries.last().map(|e| e.position.to_string());
    HistoryPage {
        entries: entries.into_iter().map(HistoryEntry::from).collect(),
        page_info: PageInfo {
            has_next_page,
            end_cursor,
        },
    }
}

#[derive(Default)]
pub struct ContactMutation;

fn ids(field: &str, ids: &[ID]) -> async_graphql::Result<Vec<ContactId>> {
    super::capped(field, ids, crate::app::limits::MAX_IDS)?;
    ids.iter()
        .map(|id| parse_id(field, id, ContactId))
        .collect()
}

#[Object]
impl ContactMutation {
    /// Binds two or more contacts into a new meta-contact named `name`. Contacts already in a
    /// meta-contact are refused (`CONFLICT`): remove them there first.
    async fn merge_contacts(
        &self,
        ctx: &Context<'_>,
        name: String,
        contact_ids: Vec<ID>,
    ) -> async_graphql::Result<MergePayload> {
        let (app, caller) = caller(ctx).await?;
        let contacts = ids("contactIds", &contact_ids)?;
        let (id, list) = api(app.merge_contacts(caller, &name, contacts).await)?;
        Ok(MergePayload {
            meta_contact_id: ID(id.to_string()),
            contacts: ContactList::new(list, caller.user, None),
        })
    }

    async fn add_to_meta_contact(
        &self,
        ctx: &Context<'_>,
        meta_contact_id: ID,
        contact_id: ID,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let meta = parse_id("metaContactId", &meta_contact_id, MetaContactId)?;
        let contact = parse_id("contactId", &contact_id, ContactId)?;
        let list = api(app.add_to_meta_contact(caller, meta, contact).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Adds a contact by hand to an account on a network whose server keeps no contact list
    /// (IRC: a nick to watch). `BAD_USER_INPUT` on other networks: change the roster there.
    async fn add_contact(
        &self,
        ctx: &Context<'_>,
        account_id: ID,
        handle: String,
        display_name: Option<String>,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let account = parse_id("accountId", &account_id, AccountId)?;
        let list = api(app
            .add_contact(caller, account, &handle, display_name)
            .await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Removes a contact added with `addContact`. In a meta-contact it stays as a dormant
    /// member until added again (or forgotten).
    async fn remove_contact(
        &self,
        ctx: &Context<'_>,
        contact_id: ID,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let contact = parse_id("contactId", &contact_id, ContactId)?;
        let list = api(app.remove_contact(caller, contact).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Lets a dormant member (a contact that left its roster) go for good: it leaves its
    /// meta-contact, which is dissolved if it was the last member. Undoable.
    async fn forget_contact(
        &self,
        ctx: &Context<'_>,
        contact_id: ID,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let contact = parse_id("contactId", &contact_id, ContactId)?;
        let list = api(app.forget_contact(caller, contact).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Clears the "new" mark of these contacts, or of every contact when `contactIds` is
    /// omitted.
    async fn mark_contacts_seen(
        &self,
        ctx: &Context<'_>,
        contact_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let contacts = contact_ids
            .map(|list| ids("contactIds", &list))
            .transpose()?;
        let list = api(app.mark_contacts_seen(caller, contacts).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Friend unbinding. A meta-contact left without members is dissolved.
    async fn remove_from_meta_contact(
        &self,
        ctx: &Context<'_>,
        meta_contact_id: ID,
        contact_id: ID,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let meta = parse_id("metaContactId", &meta_contact_id, MetaContactId)?;
        let contact = parse_id("contactId", &contact_id, ContactId)?;
        let list = api(app.remove_from_meta_contact(caller, meta, contact).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    async fn rename_meta_contact(
        &self,
        ctx: &Context<'_>,
        meta_contact_id: ID,
        name: String,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let meta = parse_id("metaContactId", &meta_contact_id, MetaContactId)?;
        let list = api(app.rename_meta_contact(caller, meta, &name).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Restores exactly the state before the binding event `eventId` (merge, add, remove,
    /// rename, or an undo, which redoes). Refused with `CONFLICT` naming the event that made
    /// it ambiguous.
    async fn undo(&self, ctx: &Context<'_>, event_id: ID) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let position = event_id
            .parse::<i64>()
            .map_err(|_| api_error(AppError::BadInput("eventId: not an event id".into())))?;
        let list = api(app.undo(caller, position).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }
}
