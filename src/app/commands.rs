//! The command side: loading a user's aggregate, executing commands, and waiting for the views.

use std::sync::Arc;

use chrono::Utc;
use cqrs_es::{AggregateError, EventStore};
use uuid::Uuid;

use super::{AppError, Switchboard};
use crate::domain::ids::UserId;
use crate::domain::metadata::{Actor, EventMetadata};
use crate::domain::user::{User, UserCommand, UserError};
use crate::projections::contacts;
use crate::projections::history;
use crate::projections::runner::wait_until_applied;

const COMMAND_ATTEMPTS: usize = 3;

impl Switchboard {
    fn writer(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits for, so the map stays as small as the activity.
        writers.retain(|_, lock| Arc::strong_count(lock) > 1);
        writers.entry(user).or_default().clone()
    }

    pub(super) async fn load(&self, user: UserId) -> Result<User, AppError> {
        let context = self
            .store
            .load_aggregate(&user.to_string())
            .await
            .map_err(AppError::internal)?;
        Ok(context.aggregate)
    }

    /// Executes a command, retrying optimistic-concurrency conflicts (every command is decided
    /// again on fresh state, so a retry is safe); returns the stream's sequence after it.
    pub(super) async fn execute(
        &self,
        user: UserId,
        command: UserCommand,
        actor: Actor,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        let id = user.to_string();
        let started = std::time::Instant::now();
        let kind = command.name();
        let writer = self.writer(user);
        let _turn = writer.lock().await;
        let result = self
            .execute_in_turn(user, &id, command, actor, request_id)
            .await;
        self.metrics.command(kind, started.elapsed().as_secs_f64());
        result
    }

    /// [`Self::execute`] once the user's writer turn is taken.
    async fn execute_in_turn(
        &self,
        user: UserId,
        id: &str,
        command: UserCommand,
        actor: Actor,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        for attempt in 1..=COMMAND_ATTEMPTS {
            let metadata = EventMetadata::new(actor.clone(), request_id, Utc::now());
            match self
                .cqrs
                .execute_with_metadata(id, command.clone(), metadata.to_map())
                .await
            {
                Ok(()) => return Ok(self.load(user).await?.sequence()),
                Err(AggregateError::AggregateConflict) if attempt < COMMAND_ATTEMPTS => {
                    tracing::debug!(%user, attempt, "concurrent write; retrying");
                }
                Err(AggregateError::AggregateConflict) => {
                    return Err(AppError::Conflict(
                        "the user's data was changed concurrently; try again".into(),
                    ))
                }
                Err(AggregateError::UserError(e)) => return Err(self.explain(user, e).await),
                Err(e) => return Err(AppError::internal(e)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Maps a domain error, naming events by their public id.
    async fn explain(&self, user: UserId, error: UserError) -> AppError {
        if let UserError::UndoConflict { conflicting, .. } = error {
            let id = self
                .store
                .position_of(user, conflicting)
                .await
                .ok()
                .flatten();
            if let Some(id) = id {
                return AppError::Conflict(format!(
                    "this change cannot be undone exactly: event {id} changed the same contacts since; undo that first"
                ));
            }
        }
        error.into()
    }

    /// Waits until the views show everything up to `sequence` (read-your-writes for clients),
    /// within one deadline for all of them. Views that cannot catch up are an error: answering
    /// with what they hold would pass stale data off as current.
    pub(super) async fn settle(&self, user: UserId, sequence: usize) -> Result<(), AppError> {
        if sequence == 0 {
            return Ok(());
        }
        let mut changes = self.views.subscribe();
        let deadline = tokio::time::Instant::now() + self.settings.view_wait;
        for view in [contacts::NAME, history::NAME] {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            let applied =
                wait_until_applied(&self.pool, &mut changes, view, user, sequence, wait).await?;
            if !applied {
                tracing::warn!(%user, view, sequence, "views lag behind; answering VIEWS_BEHIND");
                let event_id = self.store.position_of(user, sequence).await.ok().flatten();
                return Err(AppError::ViewsBehind {
                    event_id,
                    waited: self.settings.view_wait,
                });
            }
        }
        Ok(())
    }
}
