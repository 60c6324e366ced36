//! Reads: user name, accounts, contact list (now or at an instant), presence, history.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{AccountView, AppError, PresenceMap, Switchboard};
use crate::domain::ids::UserId;
use crate::domain::user::User;
use crate::projections::contacts::{self, ContactList};
use crate::projections::diff::{diff, ContactsDiff};
use crate::projections::history::{self, HistoryEntry, HistoryFilter};
use crate::projections::live::AccountStatus;
use crate::store::event_store::StoredEvent;

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
        let events = self.stream_as_of(user, as_of).await?;
        let mut past = PastList::default();
        past.replay(&events);
        Ok(past.list())
    }

    /// What changed in the list from `from` to `to`: one read of the stream up to `to`,
    /// replayed through the same aggregate code, with the list taken at both instants.
    pub async fn contacts_diff(
        &self,
        user: UserId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<ContactsDiff, AppError> {
        if to < from {
            return Err(AppError::BadInput("to: must not be before from".into()));
        }
        let events = self.stream_as_of(user, to).await?;
        // The stream's prefix as of `from`: up to its last event recorded by then, as
        // `read_stream_as_of` cuts it.
        let cut = events
            .iter()
            .filter(|e| e.recorded_at <= from)
            .map(|e| e.sequence)
            .max()
            .unwrap_or(0);
        let (early, late) = events.split_at(events.partition_point(|e| e.sequence <= cut));
        let mut past = PastList::default();
        past.replay(early);
        let before = past.list();
        past.replay(late);
        Ok(diff(&before, &past.list()))
    }

    async fn stream_as_of(
        &self,
        user: UserId,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, AppError> {
        self.store
            .read_stream_as_of(user, as_of)
            .await
            .map_err(AppError::internal)
    }

    /// The metrics in the Prometheus text format, with the gauges read now: projection lag,
    /// and this node's connections.
    pub async fn scrape(&self) -> Result<String, AppError> {
        let metrics = &self.metrics;
        let projections = crate::projections::all();
        let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
        for (projection, behind, age) in
            crate::projections::runner::lags(&self.pool, &names).await?
        {
            let label = crate::metrics::ProjectionLabel { projection };
            metrics
                .projection_lag_events
                .get_or_create(&label)
                .set(behind);
            metrics
                .projection_lag_seconds
                .get_or_create(&label)
                .set(age);
        }
        let counts = self
            .live_views
            .connection_counts(self.leases.node())
            .await?;
        metrics.connections.clear();
        for (protocol, state, n) in counts {
            metrics
                .connections
                .get_or_create(&crate::metrics::ConnectionLabels { protocol, state })
                .set(n);
        }
        Ok(metrics.encode())
    }

    /// The known presence of the contacts of the user's online accounts.
    pub async fn presence(&self, user: UserId) -> Result<PresenceMap, AppError> {
        Ok(self.live_views.presence(user).await?)
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

/// The aggregate's state folded from stored events, with the time of each, for lists as they
/// were (departures need their time).
#[derive(Default)]
pub(super) struct PastList {
    state: User,
    times: HashMap<usize, DateTime<Utc>>,
}

impl PastList {
    pub(super) fn state(&self) -> &User {
        &self.state
    }

    pub(super) fn replay(&mut self, events: &[StoredEvent]) {
        for stored in events {
            self.times.insert(stored.sequence, stored.recorded_at);
            cqrs_es::Aggregate::apply(&mut self.state, stored.event.clone());
        }
    }

    pub(super) fn list(&self) -> ContactList {
        ContactList::from_user(&self.state, |sequence| self.times.get(&sequence).copied())
    }
}
