//! The auditors' API: log in, list users, read any user's history and contact list (now or as
//! it was), export a user's raw event stream, verify a user's views. Every operation here
//! refuses a user's token (`FORBIDDEN`), and every user operation refuses an auditor's.

use std::sync::Arc;

use async_graphql::{Context, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::stream::{Stream, StreamExt};

use super::contacts::{history_page, HistoryArgs};
use super::types::{ContactList, EventKind, HistoryPage, PageInfo};
use super::{api, api_error, app, BearerToken, RequestId};
use crate::app::audit::Auditor;
use crate::app::{AppError, Origin, Switchboard};
use crate::domain::ids::UserName;
use crate::secret::Secret;

/// Users per page of `auditUsers`, at most.
const MAX_USERS_PAGE: i32 = 500;

/// The auditor making the request.
async fn auditor(ctx: &Context<'_>) -> async_graphql::Result<(Arc<Switchboard>, Auditor)> {
    let app = app(ctx)?.clone();
    let token = ctx
        .data_opt::<BearerToken>()
        .ok_or_else(|| api_error(AppError::Unauthenticated))?;
    let auditor = api(app.auditor(&token.0).await)?;
    Ok((app, auditor))
}

fn request_id(ctx: &Context<'_>) -> uuid::Uuid {
    ctx.data_opt::<RequestId>()
        .map(|r| r.0)
        .unwrap_or_else(uuid::Uuid::now_v7)
}

/// A registered user, as auditors list them.
#[derive(SimpleObject)]
pub struct AuditedUser {
    pub id: ID,
    pub user_name: String,
    pub registered_at: DateTime<Utc>,
}

/// A page of users, by name.
#[derive(SimpleObject)]
pub struct AuditedUserPage {
    pub users: Vec<AuditedUser>,
    pub page_info: PageInfo,
}

/// One place where a view and a fresh fold of the events disagree.
#[derive(SimpleObject)]
pub struct ViewDifference {
    /// `contacts`, `accounts` or `history`.
    pub view: String,
    /// The row, e.g. `contact <id>` or `event <position>`.
    pub key: String,
    /// What the events say the row holds; null: no such row.
    pub expected: Option<String>,
    /// What the view holds; null: no such row.
    pub actual: Option<String>,
}

/// What `auditVerify` found.
#[derive(SimpleObject)]
pub struct Verification {
    pub user_name: String,
    /// Events folded.
    pub events: i32,
    /// Whether the views say exactly what the events say.
    pub consistent: bool,
    pub differences: Vec<ViewDifference>,
}

#[derive(SimpleObject)]
pub struct AuditorAuthPayload {
    pub token: String,
    pub auditor_name: String,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Registered users by name (auditors only).
    async fn audit_users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 500 (default 100).")] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<AuditedUserPage> {
        let (app, _) = auditor(ctx).await?;
        let first = first.unwrap_or(100);
        if !(1..=MAX_USERS_PAGE).contains(&first) {
            return Err(api_error(AppError::BadInput(format!(
                "first: must be between 1 and {MAX_USERS_PAGE}"
            ))));
        }
        // A cursor is the last user name of a page: anything else is no cursor, and is not
        // looked up (PostgreSQL takes no NUL in text, for one).
        if after
            .as_deref()
            .is_some_and(|a| UserName::parse(a).is_err())
        {
            return Err(api_error(AppError::BadInput(
                "after: not a cursor from this API".into(),
            )));
        }
        let mut users = api(app
            .audited_users(after.as_deref(), i64::from(first) + 1)
            .await)?;
        let has_next_page = users.len() > first as usize;
        users.truncate(first as usize);
        let end_cursor = users.last().map(|(_, name, _)| name.clone());
        Ok(AuditedUserPage {
            users: users
                .into_iter()
                .map(|(id, user_name, registered_at)| AuditedUser {
                    id: ID(id.to_string()),
                    user_name,
                    registered_at,
                })
                .collect(),
            page_info: PageInfo {
                has_next_page,
                end_cursor,
            },
        })
    }

    /// A user's history, with the same paging and filters as `history` (auditors only). The
    /// read is recorded in the user's history.
    #[allow(clippy::too_many_arguments)]
    async fn audit_history(
        &self,
        ctx: &Context<'_>,
        user_name: String,
        #[graphql(desc = "Page size, 1 to 200 (default 50).")] first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Only these kinds (default: all).")] kinds: Option<Vec<EventKind>>,
        contact_id: Option<ID>,
        meta_contact_id: Option<ID>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<HistoryPage> {
        let (app, auditor) = auditor(ctx).await?;
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
            .audit_history(
                &auditor,
                &user_name,
                &filter,
                before,
                i64::from(first) + 1,
                request_id(ctx),
            )
            .await)?;
        Ok(history_page(entries, first))
    }

    /// A user's contact list, now or as it was at `asOf` (auditors only). The read is recorded
    /// in the user's history.
    async fn audit_contacts(
        &self,
        ctx: &Context<'_>,
        user_name: String,
        as_of: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<ContactList> {
        let (app, auditor) = auditor(ctx).await?;
        let (user, list) = api(app
            .audit_contacts(&auditor, &user_name, as_of, request_id(ctx))
            .await)?;
        Ok(ContactList::new(list, user, as_of))
    }

    /// Folds the user's whole event stream afresh and compares it with the views: no
    /// difference means the views say exactly what the events say (auditors only). Recorded in
    /// the user's history.
    async fn audit_verify(
        &self,
        ctx: &Context<'_>,
        user_name: String,
    ) -> async_graphql::Result<Verification> {
        let (app, auditor) = auditor(ctx).await?;
        let found = api(app
            .audit_verify(&auditor, &user_name, request_id(ctx))
            .await)?;
        Ok(Verification {
            user_name: found.user_name,
            events: i32::try_from(found.events).unwrap_or(i32::MAX),
            consistent: found.differences.is_empty(),
            differences: found
                .differences
                .into_iter()
                .map(|d| ViewDifference {
                    view: d.view.to_owned(),
                    key: d.key,
                    expected: d.expected,
                    actual: d.actual,
                })
                .collect(),
        })
    }
}

#[derive(Default)]
pub struct AuditMutation;

#[Object]
impl AuditMutation {
    /// Logs an auditor in (auditors are created with `switchboard auditor add NAME`). Throttled
    /// like `login`.
    async fn auditor_login(
        &self,
        ctx: &Context<'_>,
        name: String,
        password: String,
    ) -> async_graphql::Result<AuditorAuthPayload> {
        let app = app(ctx)?;
        let origin = ctx.data_opt::<Origin>().cloned().unwrap_or_default();
        let token = api(app
            .auditor_login(&name, Secret::new(password), &origin)
            .await)?;
        Ok(AuditorAuthPayload {
            token,
            auditor_name: name,
        })
    }

    /// Ends the auditor's session.
    async fn auditor_logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let (app, _) = auditor(ctx).await?;
        let token = ctx
            .data_opt::<BearerToken>()
            .ok_or_else(|| api_error(AppError::Unauthenticated))?;
        api(app.auditor_logout(&token.0).await)?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct AuditSubscription;

#[Subscription]
impl AuditSubscription {
    /// The user's raw event stream, one JSON line per event (position, sequence, txId,
    /// eventType, eventVersion, payload, metadata, recordedAt; password hashes redacted),
    /// oldest first; the subscription completes after the last one. Read from the store a page
    /// at a time as the client takes it (auditors only; recorded in the user's history). The
    /// same stream as a file: `GET /audit/export/{userName}` with the auditor's bearer token.
    async fn audit_export(
        &self,
        ctx: &Context<'_>,
        user_name: String,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<String>>> {
        let (app, auditor) = auditor(ctx).await?;
        let lines = api(app
            .audit_export(&auditor, &user_name, request_id(ctx))
            .await)?;
        Ok(lines.map(|line| line.map(|l| l.trim_end().to_owned()).map_err(api_error)))
    }
}
