//! Subscriptions, fed by the projections' view-change notifications (never by raw events).

use async_graphql::{Context, Subscription};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::types::{ContactList, HistoryEntry};
use super::{api, caller};
use crate::projections::{contacts, history};

pub struct Subscription;

#[Subscription]
impl Subscription {
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
