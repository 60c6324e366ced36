//! The login report: per account, what the login's reconciliation changed.

use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::matching::MatchSuggestion;
use super::types::Account;
use super::{api, caller, parse_id};
use crate::app::{AccountReport, LoginReport as Report};
use crate::projections::login_report::ReportedContact as Reported;

/// A contact named in a report.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct ReportedContact {
    pub contact_id: ID,
    pub handle: String,
    pub display_name: Option<String>,
    /// For a rename: the name before it.
    pub previous_name: Option<String>,
}

impl From<&Reported> for ReportedContact {
    fn from(c: &Reported) -> Self {
        Self {
            contact_id: ID(c.contact_id.to_string()),
            handle: c.handle.clone(),
            display_name: c.display_name.clone(),
            previous_name: c.previous_name.clone(),
        }
    }
}

/// What one login changed for one account.
#[derive(SimpleObject, Clone, PartialEq)]
pub struct AccountLoginReport {
    pub account_id: ID,
    /// The account with its connection status; null for an account unbound since the login
    /// before (its contacts are in `removedByUnbinding`).
    pub account: Option<Account>,
    /// Its list is up to date: its roster was read for this login (the lists below are then
    /// complete for it), or it was already connected and followed upstream changes as they
    /// happened (those are in the history and in `contactsDiff`, not here).
    pub reconciled: bool,
    /// New upstream (marked new in the list until seen).
    pub added: Vec<ReportedContact>,
    pub removed_upstream: Vec<ReportedContact>,
    pub removed_by_unbinding: Vec<ReportedContact>,
    pub renamed: Vec<ReportedContact>,
    /// Back on the roster, in their meta-contacts if they had one.
    pub restored: Vec<ReportedContact>,
    pub suggestions: Vec<MatchSuggestion>,
}

impl From<AccountReport> for AccountLoginReport {
    fn from(r: AccountReport) -> Self {
        let list = |contacts: &[Reported]| contacts.iter().map(ReportedContact::from).collect();
        Self {
            account_id: ID(r.account_id.to_string()),
            account: r.account.map(Account::from),
            reconciled: r.reconciled,
            added: list(&r.changes.added),
            removed_upstream: list(&r.changes.removed_upstream),
            removed_by_unbinding: list(&r.changes.removed_by_unbinding),
            renamed: list(&r.changes.renamed),
            restored: list(&r.changes.restored),
            suggestions: r
                .changes
                .suggestions
                .iter()
                .map(MatchSuggestion::from)
                .collect(),
        }
    }
}

/// What one login changed, assembled as its accounts come online.
#[derive(SimpleObject)]
pub struct LoginReport {
    pub login_id: ID,
    pub at: DateTime<Utc>,
    pub accounts: Vec<AccountLoginReport>,
}

impl From<Report> for LoginReport {
    fn from(r: Report) -> Self {
        Self {
            login_id: ID(r.login_id.to_string()),
            at: r.at,
            accounts: r.accounts.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Default)]
pub struct ReportQuery;

#[Object]
impl ReportQuery {
    /// The report of a login (the latest without `loginId`; a login's id is its `login`
    /// answer's `loginId`); null before the first login.
    async fn login_report(
        &self,
        ctx: &Context<'_>,
        login_id: Option<ID>,
    ) -> async_graphql::Result<Option<LoginReport>> {
        let (app, caller) = caller(ctx).await?;
        let login = login_id
            .map(|id| parse_id("loginId", &id, |u| u))
            .transpose()?;
        Ok(api(app.login_report(caller.user, login).await)?.map(LoginReport::from))
    }
}
