//! Reads: user name, accounts, contact list (now or at an instant), presence, messages, history.

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::{AccountView, AppError, PresenceMap, ReceivedMessage, Switchboard};
use crate::domain::ids::UserId;
use crate::domain::user::User;
use crate::projections::contacts::{self, ContactList};
use crate::projections::diff::{diff, ContactsDiff};
use crate::projections::history::{self, HistoryEntry, HistoryFilter};
use crate::projections::live::AccountStatus;

impl Switchboard {
    pub async fn user_name(&self, user: UserId) -> Result<String, AppError> {
        match contacts::user_name(&self.pool, user).await? {
            Some(name) => Ok(name),
            None => self
                .load(user)
                .await?
                .registration()
                .map(|r| r.user_name.to_string())
                .ok_or_else(|| AppError::NotFound("no such user".into())),
        }
    }

    pub async fn accounts(&self, user: UserId) -> Result<Vec<AccountView>, AppError> {
        let rows = contacts::accounts(&self.pool, user).await?;
        let mut statuses = self.live_views.statuses(user).await?;
        Ok(rows
            .into_iter()
            .map(|a| AccountView {
                status: statuses
                    .remove(&a.account_id)
                    .unwrap_or_else(AccountStatus::disconnected),
                account_id: a.account_id,
                protocol: a.protocol,
                server: a.server,
                handle: a.handle,
                bound_at: a.bound_at,
            })
            .collect())
    }

    /// The unified contact list now (from the views), or as it was at `as_of` (replayed from
    /// the user's events up to that instant).
    pub async fn contacts(
        &self,
        user: UserId,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<ContactList, AppError> {
        let Some(as_of) = as_of else {
            return Ok(ContactList::load(&self.pool, user).await?);
        };
        let events = self
            .store
            .read_stream_as_of(user, as_of)
            .await
            .map_err(AppError::internal)?;
        let mut state = User::default();
        let mut times = std::collections::HashMap::with_capacity(events.len());
        for stored in events {
            times.insert(stored.sequence, stored.recorded_at);
            cqrs_es::Aggregate::apply(&mut state, stored.event);
        }
        Ok(ContactList::from_user(&state, |sequence| {
            times.get(&sequence).copied()
        }))
    }

    /// What changed in the list from `from` to `to` (default: now), both replayed from the
    /// user's events, so the two sides follow the same rules.
    pub async fn contacts_diff(
        &self,
        user: UserId,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<ContactsDiff, AppError> {
        let to = to.unwrap_or_else(Utc::now);
        if to < from {
            return Err(AppError::BadInput("to: must not be before from".into()));
        }
        let before = self.contacts(user, Some(from)).await?;
        let after = self.contacts(user, Some(to)).await?;
        Ok(diff(&before, &after))
    }

    /// The known presence of the contacts of the user's online accounts.
    pub async fn presence(&self, user: UserId) -> Result<PresenceMap, AppError> {
        Ok(self.live_views.presence(user).await?)
    }

    /// Direct messages as this node's connections receive them.
    pub fn messages(&self) -> broadcast::Receiver<ReceivedMessage> {
        self.messages.subscribe()
    }

    pub async fn history(
        &self,
        user: UserId,
        filter: &HistoryFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, AppError> {
        for kind in &filter.kinds {
            if !crate::domain::user::UserEvent::KINDS.contains(&kind.as_str()) {
                return Err(AppError::BadInput(format!(
                    "kinds: unknown event kind {kind}"
                )));
            }
        }
        Ok(history::page(&self.pool, user, filter, before, limit).await?)
    }
}
