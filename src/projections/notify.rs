//! Fans view-change notifications (sent by projections at commit, from any node) out to this
//! node's subscriptions.

use serde::Deserialize;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::domain::ids::UserId;
use crate::projections::progress::Progress;

/// A projection committed changes for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewChanged {
    pub user_id: UserId,
    /// The projection's name (`contacts`, `history`).
    pub view: String,
}

#[derive(Deserialize)]
struct Payload {
    user_id: Uuid,
    view: String,
}

/// Where subscriptions get view changes from. Lagging receivers only lose wake-ups: they
/// re-read the views, which hold the truth. Also carries this node's [`Progress`] between
/// the command side and the projection runners.
#[derive(Debug, Clone)]
pub struct ViewChanges {
    sender: broadcast::Sender<ViewChanged>,
    progress: Progress,
}

impl Default for ViewChanges {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
            progress: Progress::default(),
        }
    }
}

impl ViewChanges {
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ViewChanged> {
        self.sender.subscribe()
    }

    /// Listens to `switchboard_views` until `stop` turns true, reconnecting on errors.
    pub async fn run(self, pool: PgPool, mut stop: watch::Receiver<bool>) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen("switchboard_views").await?;
                loop {
                    let note = listener.recv().await?;
                    match serde_json::from_str::<Payload>(note.payload()) {
                        Ok(p) => {
                            let _ = self.sender.send(ViewChanged {
                                user_id: UserId(p.user_id),
                                view: p.view,
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "malformed view notification"),
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                result = listener => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "view notifications interrupted; reconnecting");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
