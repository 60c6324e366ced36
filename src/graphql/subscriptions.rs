//! Subscriptions, fed by the projections' view-change notifications (never by raw events).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, MergedSubscription, Subscription, ID};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};

use super::reports::AccountLoginReport;
use super::types::{
    protocol_of, Account, ContactList, HistoryEntry, MetaContactPresence, Presence, PresenceChange,
};
use super::{api, caller};
use crate::app::{AppError, ContactPresence, Switchboard};
use crate::domain::ids::UserId;
use crate::projections::notify::ViewChanged;
use crate::projections::{contacts, history, live};

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    ListSubscription,
    LiveSubscription,
    super::chat::ChatSubscription,
    super::audit::AuditSubscription,
);

/// Changes of the event-sourced views.
#[derive(Default)]
pub struct ListSubscription;

/// Changes of the live views (connections, presence).
#[derive(Default)]
pub struct LiveSubscription;

#[Subscription]
impl ListSubscription {
    /// The whole unified list, each time it changes.
    async fn contacts_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = ContactList>> {
        let (app, caller) = caller(ctx).await?;
        let changes = app.views().subscribe();
        let user = caller.user;
        Ok(stream::unfold(
            (app, changes),
            move |(app, mut changes)| async move {
                loop {
                    match changes.recv().await {
                        Ok(change) if change.user_id == user && change.view == contacts::NAME => {}
                        // A lagging receiver missed wake-ups; the view still holds the truth.
                        Err(RecvError::Lagged(_)) => {}
                        Ok(_) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                    match app.contacts(user, None).await {
                        Ok(list) => {
                            return Some((ContactList::new(list, user, None), (app, changes)))
                        }
                        Err(e) => {
                            tracing::warn!(%user, error = %e, "contact list unavailable for a subscription")
                        }
                    }
                }
            },
        ))
    }

    /// Each new history entry, oldest first, none skipped.
    async fn history_appended(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = HistoryEntry>> {
        let (app, caller) = caller(ctx).await?;
        let user = caller.user;
        let changes = app.views().subscribe();
        let last = api(history::latest_position(app.pool(), user)
            .await
            .map_err(Into::into))?;
        let batches = stream::unfold(
            (app, changes, last),
            move |(app, mut changes, mut last)| async move {
                loop {
                    match changes.recv().await {
                        Ok(change) if change.user_id == user && change.view == history::NAME => {}
                        Err(RecvError::Lagged(_)) => {}
                        Ok(_) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                    match history::since(app.pool(), user, last).await {
                        Ok(entries) if entries.is_empty() => continue,
                        Ok(entries) => {
                            last = entries.last().map_or(last, |e| e.position);
                            let items: Vec<HistoryEntry> =
                                entries.into_iter().map(HistoryEntry::from).collect();
                            return Some((stream::iter(items), (app, changes, last)));
                        }
                        Err(e) => {
                            tracing::warn!(%user, error = %e, "history unavailable for a subscription")
                        }
                    }
                }
            },
        );
        Ok(batches.flatten())
    }
}

/// Waits for the next change of one of `views` for `user`; `None` when the server stops.
/// A lagging receiver only missed wake-ups: it re-reads, since the views hold the truth.
pub(super) async fn next_change(
    changes: &mut broadcast::Receiver<ViewChanged>,
    user: UserId,
    views: &[&str],
) -> Option<()> {
    loop {
        match changes.recv().await {
            Ok(change) if change.user_id == user && views.contains(&change.view.as_str()) => {
                return Some(())
            }
            Err(RecvError::Lagged(_)) => return Some(()),
            Ok(_) => continue,
            Err(RecvError::Closed) => return None,
        }
    }
}

/// One item of a presence feed as the API shows it.
fn presence_change(item: &ContactPresence) -> PresenceChange {
    let c = &item.contact;
    PresenceChange {
        contact_id: ID(c.contact_id.to_string()),
        account_id: ID(c.account_id.to_string()),
        protocol: protocol_of(&c.protocol),
        handle: c.handle.clone(),
        presence: item.presence.as_ref().map(Presence::from),
        meta_contact_id: item.meta_contact_id.map(|m| ID(m.to_string())),
        meta_contact_presence: item.meta_contact_presence.as_ref().map(|best| {
            MetaContactPresence {
                availability: best.presence.availability.into(),
                status: best.presence.status.clone(),
                protocol: protocol_of(&best.member.protocol),
                contact_id: ID(best.member.contact_id.to_string()),
                account_id: ID(best.member.account_id.to_string()),
                handle: best.member.handle.clone(),
            }
        }),
    }
}

/// The items of `read` (keyed by `key`) that differ from what the subscriber saw last,
/// re-read whenever one of `views` changes for `user`. The first read is the baseline: it
/// answers the subscription's errors and is not sent.
async fn changes_of<T, F, Fut>(
    app: Arc<Switchboard>,
    user: UserId,
    views: &'static [&'static str],
    key: fn(&T) -> ID,
    read: F,
) -> async_graphql::Result<impl Stream<Item = T>>
where
    T: Clone + PartialEq + Send + 'static,
    F: Fn(Arc<Switchboard>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<T>, AppError>> + Send,
{
    let changes = app.views().subscribe();
    let changed = move |seen: &mut HashMap<ID, T>, now: Vec<T>| -> Vec<T> {
        now.into_iter()
            .filter(|item| seen.insert(key(item), item.clone()).as_ref() != Some(item))
            .collect()
    };
    let mut seen = HashMap::new();
    changed(&mut seen, api(read(app.clone()).await)?);
    let read = Arc::new(read);
    let batches = stream::unfold((app, changes, seen), move |(app, mut changes, mut seen)| {
        let read = Arc::clone(&read);
        async move {
            loop {
                next_change(&mut changes, user, views).await?;
                match read(app.clone()).await {
                    Ok(now) => {
                        let batch = changed(&mut seen, now);
                        if !batch.is_empty() {
                            return Some((stream::iter(batch), (app, changes, seen)));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%user, error = %e, "live view unavailable for a subscription")
                    }
                }
            }
        }
    });
    Ok(batches.flatten())
}

#[Subscription]
impl LiveSubscription {
    /// An account's connection status, each time it changes (e.g. `ONLINE` →
    /// `RECONNECTING` with `nextRetryAt` → `ONLINE`).
    async fn account_status_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Account>> {
        let (app, caller) = caller(ctx).await?;
        let user = caller.user;
        changes_of(
            app,
            user,
            &[live::STATUS],
            |a: &Account| a.id.clone(),
            move |app| async move {
                Ok(app
                    .accounts(user)
                    .await?
                    .into_iter()
                    .map(Account::from)
                    .collect())
            },
        )
        .await
    }

    /// The latest login's report, one account at a time, each time that account's part
    /// changes: its reconciliation coming in as it comes online, or its status.
    async fn login_report_updated(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = AccountLoginReport>> {
        let (app, caller) = caller(ctx).await?;
        let user = caller.user;
        changes_of(
            app,
            user,
            &[live::STATUS, history::NAME],
            |r: &AccountLoginReport| r.account_id.clone(),
            move |app| async move {
                Ok(app
                    .login_report(user, None)
                    .await?
                    .map(|report| report.accounts)
                    .unwrap_or_default()
                    .into_iter()
                    .map(AccountLoginReport::from)
                    .collect())
            },
        )
        .await
    }

    /// A contact's presence on its network, each time it (or its meta-contact's aggregated
    /// presence) changes. `presence` is null when unknown (its account is not online).
    async fn presence_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = PresenceChange>> {
        let (app, caller) = caller(ctx).await?;
        let changes = api(app.presence_changes(caller.user).await)?;
        let batches = stream::unfold(changes, |mut changes| async move {
            let batch = changes.next().await?;
            let items: Vec<PresenceChange> = batch.iter().map(presence_change).collect();
            Some((stream::iter(items), changes))
        });
        Ok(batches.flatten())
    }
}
