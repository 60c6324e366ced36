//! Auditors: read-only accounts that may read any user's history, contact list (now or as it
//! was), raw event stream, and have the views checked against a fresh fold of the events.
//! Every read is first recorded in the user's own history (an `AuditorRead` event): a read that
//! cannot be recorded is not made. Auditors change nothing else, and see no secrets.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use uuid::Uuid;

use super::reads::PastList;
use super::{AppError, Origin, Switchboard};
use crate::domain::ids::{UserId, UserName};
use crate::domain::metadata::Actor;
use crate::domain::user::{AuditedRead, UserCommand};
use crate::projections::contacts::{self, ContactList};
use crate::projections::history::{HistoryEntry, HistoryFilter};
use crate::projections::verify::{self, Difference};
pub use crate::store::auditors::Auditor;

/// Events per page of an export: the stream is read page by page, never whole.
const EXPORT_PAGE: i64 = 500;

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct Verification {
    pub user_name: String,
    /// Events folded.
    pub events: usize,
    pub differences: Vec<Difference>,
}

impl Switchboard {
    /// Checks an auditor's password (throttled like users' logins) and opens a session.
    pub async fn auditor_login(
        &self,
        name: &str,
        password: crate::secret::Secret,
        origin: &Origin,
    ) -> Result<String, AppError> {
        // Auditor names follow the rules of user names (`switchboard auditor add`): any other
        // name is nobody's, and is not looked up (PostgreSQL takes no NUL in text, for one).
        let name = UserName::parse(name)
            .map_err(|_| AppError::Unauthenticated)?
            .to_string();
        self.admit_login("auditor", &name, origin).await?;
        let found = self.auditors.credentials(&name).await?;
        let ok = self
            .hasher
            .verify(password, found.as_ref().map(|(_, hash)| hash.clone()))
            .await?;
        let Some((auditor, _)) = found.filter(|_| ok) else {
            return Err(AppError::Unauthenticated);
        };
        self.login_succeeded("auditor", &name, origin).await?;
        Ok(self.auditors.open_session(auditor.id).await?)
    }

    /// The auditor behind a bearer token: `FORBIDDEN` for a user's token.
    pub async fn auditor(&self, token: &str) -> Result<Auditor, AppError> {
        if let Some(session) = self.auditors.find_session(token).await? {
            return Ok(session.auditor);
        }
        if self.sessions.find(token).await?.is_some() {
            return Err(AppError::Forbidden(
                "only auditors may read other users' data".into(),
            ));
        }
        Err(AppError::Unauthenticated)
    }

    /// Ends an auditor's session.
    pub async fn auditor_logout(&self, token: &str) -> Result<(), AppError> {
        Ok(self.auditors.end_session(token).await?)
    }

    /// Registered users by name, after `after`: (id, name, registered at).
    pub async fn audited_users(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(UserId, String, DateTime<Utc>)>, AppError> {
        Ok(contacts::users_page(&self.pool, after, limit).await?)
    }

    /// Records the auditor's read in the user's history: the user's id and the stream's
    /// sequence with the record, or `NOT_FOUND` (the aggregate refuses an unregistered user).
    async fn record_read(
        &self,
        auditor: &Auditor,
        user_name: &str,
        read: AuditedRead,
        request_id: Uuid,
    ) -> Result<(UserId, usize), AppError> {
        let not_found = || AppError::NotFound(format!("no user named {user_name:?}"));
        let name = UserName::parse(user_name).map_err(|_| not_found())?;
        let user = UserId::for_name(&name);
        let recorded = self
            .execute(
                user,
                UserCommand::RecordAuditorRead {
                    auditor: auditor.name.clone(),
                    read,
                },
                Actor::Auditor(auditor.name.clone()),
                request_id,
            )
            .await;
        match recorded {
            Ok(sequence) => Ok((user, sequence)),
            Err(AppError::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// A page of the user's history, as the user would read it.
    pub async fn audit_history(
        &self,
        auditor: &Auditor,
        user_name: &str,
        filter: &HistoryFilter,
        before: Option<i64>,
        limit: i64,
        request_id: Uuid,
    ) -> Result<Vec<HistoryEntry>, AppError> {
        let (user, _) = self
            .record_read(auditor, user_name, AuditedRead::History, request_id)
            .await?;
        self.history(user, filter, before, limit).await
    }

    /// The user's contact list now, or as it was at `as_of`.
    pub async fn audit_contacts(
        &self,
        auditor: &Auditor,
        user_name: &str,
        as_of: Option<DateTime<Utc>>,
        request_id: Uuid,
    ) -> Result<(UserId, ContactList), AppError> {
        let read = AuditedRead::ContactList { as_of };
        let (user, _) = self
            .record_read(auditor, user_name, read, request_id)
            .await?;
        Ok((user, self.contacts(user, as_of).await?))
    }

    /// The user's raw event stream as JSON Lines (one event per line, with its position,
    /// sequence, transaction, type, version, payload and metadata; password hashes redacted),
    /// read from the store a page at a time as the consumer takes it.
    pub async fn audit_export(
        self: &Arc<Self>,
        auditor: &Auditor,
        user_name: &str,
        request_id: Uuid,
    ) -> Result<BoxStream<'static, Result<String, AppError>>, AppError> {
        let (user, _) = self
            .record_read(auditor, user_name, AuditedRead::Export, request_id)
            .await?;
        let pages = stream::try_unfold((self.clone(), 0i64), move |(app, after)| async move {
            let page = app.store.raw_page(user, after, EXPORT_PAGE).await?;
            let Some(last) = page.last().map(|e| e.sequence) else {
                return Ok::<_, AppError>(None);
            };
            let lines: Vec<Result<String, AppError>> = page
                .iter()
                .map(|event| {
                    serde_json::to_string(event)
                        .map(|line| line + "\n")
                        .map_err(AppError::internal)
                })
                .collect();
            Ok(Some((stream::iter(lines), (app, last))))
        });
        Ok(pages
            .map(|page| match page {
                Ok(lines) => lines.left_stream(),
                Err(e) => stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten()
            .boxed())
    }

    /// Folds the user's whole stream afresh and compares the result with the live views
    /// (contact list, accounts, history).
    pub async fn audit_verify(
        &self,
        auditor: &Auditor,
        user_name: &str,
        request_id: Uuid,
    ) -> Result<Verification, AppError> {
        let (user, sequence) = self
            .record_read(auditor, user_name, AuditedRead::Verify, request_id)
            .await?;
        // The record just made must be in the views before they are compared with the stream.
        self.settle(user, sequence).await?;
        let events = self
            .store
            .read_stream(user, 0)
            .await
            .map_err(AppError::internal)?;
        let mut past = PastList::default();
        past.replay(&events);
        let mut differences =
            verify::compare_contacts(&past.list(), &ContactList::load(&self.pool, user).await?);
        let accounts: Vec<(String, String, String, String)> = past
            .state()
            .accounts()
            .map(|a| {
                (
                    a.account.account_id.to_string(),
                    a.account.protocol.to_string(),
                    a.account.server.clone(),
                    a.account.handle.to_string(),
                )
            })
            .collect();
        differences.extend(verify::compare_accounts(
            &accounts,
            &contacts::accounts(&self.pool, user).await?,
        ));
        differences.extend(verify::compare_history(&self.pool, user, &events).await?);
        Ok(Verification {
            user_name: user_name.to_owned(),
            events: events.len(),
            differences,
        })
    }
}
