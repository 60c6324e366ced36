//! The command side: loading a user's aggregate, executing commands, and waiting for the views.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::{AppError, Switchboard};
use crate::domain::ids::UserId;
use crate::domain::metadata::{Actor, EventMetadata};
use crate::domain::user::{User, UserCommand, UserError};
use crate::projections::contacts;
use crate::projections::history;
use crate::projections::runner::{wait_for_point, wait_until_applied};
use crate::store::event_store::AppendError;

const COMMAND_ATTEMPTS: usize = 3;

impl Switchboard {
    fn writer(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits for, so the map stays as small as the activity.
        writers.retain(|_, lock| Arc::strong_count(lock) > 1);
        writers.entry(user).or_default().clone()
    }

    pub(super) async fn load(&self, user: UserId) -> Result<Arc<User>, AppError> {
        self.store.current(user).await.map_err(AppError::internal)
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
        let started = std::time::Instant::now();
        let kind = command.name();
        let writer = self.writer(user);
        let _turn = writer.lock().await;
        let result = self.execute_in_turn(user, command, actor, request_id).await;
        self.metrics.command(kind, started.elapsed().as_secs_f64());
        result
    }

    /// [`Self::execute`] once the user's writer turn is taken.
    ///
    /// The first decision is made on this node's cached state, without reading the stream:
    /// events decided on a stale copy cannot be stored, since the next sequence is taken (the
    /// append is refused and the command decided again on the stream as stored). A refusal or
    /// a no-op proves nothing of the kind, so it is only answered once decided on the stored
    /// stream.
    async fn execute_in_turn(
        &self,
        user: UserId,
        command: UserCommand,
        actor: Actor,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        let mut conflicts = 0;
        let mut cached = self.store.cached_state(user);
        loop {
            let (state, verified) = match cached.take() {
                Some(state) => (state, false),
                None => (self.load(user).await?, true),
            };
            let events = match state.decide(command.clone()) {
                Ok(events) if !events.is_empty() => events,
                _ if !verified => continue,
                Ok(_) => return Ok(state.sequence()),
                Err(e) => return Err(self.explain(user, e).await),
            };
            let metadata = EventMetadata::new(actor.clone(), request_id, Utc::now()).to_map();
            match self.store.append(user, &state, events, &metadata).await {
                Ok(appended) => {
                    self.views.progress().wake();
                    return Ok(appended.sequence);
                }
                Err(AppendError::Conflict) => {
                    conflicts += 1;
                    if conflicts == COMMAND_ATTEMPTS {
                        return Err(AppError::Conflict(
                            "the user's data was changed concurrently; try again".into(),
                        ));
                    }
                    tracing::debug!(%user, conflicts, "concurrent write; deciding again");
                }
                Err(e) => return Err(AppError::internal(e)),
            }
        }
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
        // Known when this node appended the event: then the runners' published checkpoints
        // answer without asking the database.
        let point = self.store.commit_point(user, sequence);
        for view in [contacts::NAME, history::NAME] {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            let applied = match point {
                Some(point) => {
                    let progress = self.views.progress();
                    wait_for_point(&self.pool, progress, view, user, sequence, point, wait).await?
                }
                None => {
                    wait_until_applied(&self.pool, &mut changes, view, user, sequence, wait).await?
                }
            };
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
