//! This node's shortcut between the command side and the projection runners: a command that
//! commits here wakes the runners at once, and waits on the checkpoint they publish after each
//! batch, with no database round trip on either side.
//!
//! It is a shortcut, never the only path: the runners also poll (commits of other nodes; the
//! events table sends no notification, see migrations/0014), and a waiter still asks the
//! database now and then, so a runner that works on another node, or a missed wake-up, costs
//! time, never correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::store::event_store::CommitPoint;

#[derive(Clone, Debug)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Bumped at every wake-up; each runner holds a receiver.
    wake: watch::Sender<u64>,
    /// The checkpoint each projection was last seen at on this node.
    applied: Mutex<HashMap<String, watch::Sender<CommitPoint>>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                wake: watch::Sender::new(0),
                applied: Mutex::default(),
            }),
        }
    }
}

impl Progress {
    /// Tells the runners that events were committed.
    pub fn wake(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// What a runner waits on between batches.
    pub fn wakes(&self) -> watch::Receiver<u64> {
        self.inner.wake.subscribe()
    }

    /// Records that `projection`'s checkpoint is at `point` (it only ever moves forward: a
    /// runner that read an older checkpoint than another published changes nothing).
    pub fn publish(&self, projection: &str, point: CommitPoint) {
        self.sender(projection).send_if_modified(|current| {
            let newer = point > *current;
            if newer {
                *current = point;
            }
            newer
        });
    }

    /// The checkpoint of `projection` as last published, and its changes.
    pub fn watch(&self, projection: &str) -> watch::Receiver<CommitPoint> {
        self.sender(projection).subscribe()
    }

    fn sender(&self, projection: &str) -> watch::Sender<CommitPoint> {
        let mut applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied
            .entry(projection.to_owned())
            .or_insert_with(|| watch::Sender::new(CommitPoint::default()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tx_id: u64, position: i64) -> CommitPoint {
        CommitPoint { tx_id, position }
    }

    #[test]
    fn a_checkpoint_only_moves_forward() {
        let progress = Progress::default();
        let seen = progress.watch("contacts");
        progress.publish("contacts", at(10, 5));
        progress.publish("contacts", at(9, 7));
        assert_eq!(*seen.borrow(), at(10, 5));
        progress.publish("contacts", at(10, 6));
        assert_eq!(*seen.borrow(), at(10, 6));
        assert_eq!(*progress.watch("history").borrow(), CommitPoint::default());
    }

    #[test]
    fn commit_points_order_by_transaction_then_position() {
        assert!(at(1000, 1) > at(999, 50));
        assert!(at(7, 3) > at(7, 2));
    }

    #[tokio::test]
    async fn a_wake_reaches_a_runner_that_waits() {
        let progress = Progress::default();
        let mut wakes = progress.wakes();
        progress.wake();
        tokio::time::timeout(std::time::Duration::from_secs(1), wakes.changed())
            .await
            .expect("woken")
            .unwrap();
    }
}
