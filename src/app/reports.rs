//! The login report: what each account's reconciliation changed at one login.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AccountView, AppError, Switchboard};
use crate::connectors::supervisor::LinkState;
use crate::domain::ids::{AccountId, UserId};
use crate::projections::login_report::{self, AccountChanges};

/// One account's part of a login report.
#[derive(Debug, Clone)]
pub struct AccountReport {
    pub account_id: AccountId,
    /// `None` for an account unbound since the login before (its contacts left with it).
    pub account: Option<AccountView>,
    /// The account's list is up to date for this login: its roster was read since the login,
    /// or the account was already connected (its list followed upstream changes live).
    pub reconciled: bool,
    pub changes: AccountChanges,
}

#[derive(Debug, Clone)]
pub struct LoginReport {
    pub login_id: Uuid,
    pub at: DateTime<Utc>,
    pub accounts: Vec<AccountReport>,
}

impl Switchboard {
    /// The report of one login (the latest when `login_id` is `None`); assembled from what is
    /// recorded so far, so it fills in as the accounts come online.
    pub async fn login_report(
        &self,
        user: UserId,
        login_id: Option<Uuid>,
    ) -> Result<Option<LoginReport>, AppError> {
        let Some(login) = self.sessions.login(user, login_id).await? else {
            return Ok(None);
        };
        let mut changes = login_report::changes(
            &self.pool,
            user,
            login.login_id,
            login.previous_at,
            login.at,
        )
        .await?;
        let mut accounts = Vec::new();
        for account in self.accounts(user).await? {
            let found = changes.remove(&account.account_id).unwrap_or_default();
            // Online now: it came online since the login (its roster read then), or was
            // connected before and has followed every change since.
            let online = account.status.status.state == LinkState::Online;
            accounts.push(AccountReport {
                account_id: account.account_id,
                reconciled: online || !found.is_empty(),
                account: Some(account),
                changes: found,
            });
        }
        accounts.extend(
            changes
                .into_iter()
                .map(|(account_id, found)| AccountReport {
                    account_id,
                    account: None,
                    reconciled: false,
                    changes: found,
                }),
        );
        Ok(Some(LoginReport {
            login_id: login.login_id,
            at: login.at,
            accounts,
        }))
    }
}
