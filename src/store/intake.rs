//! Group commit for incoming messages. Every live connection stores what it receives before it
//! moves its cursor on, so each waits for a durable commit; one commit per message would make
//! the disk's flush rate the node's message rate. The intake queues the connections' batches and
//! one writer stores everything queued so far in one transaction, so one flush serves many
//! connections: at low load a batch is stored at once (no timer), under load batches grow.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::messages::{Incoming, Message, MessageStore};
use crate::domain::ids::UserId;

/// Batches that may wait for the writer; beyond that, connections wait to queue theirs.
const QUEUE: usize = 4096;
/// Messages at most in one transaction.
const MOST_PER_COMMIT: usize = 1024;
/// Writers: while one commits, the next gathers (and commits) what queued meanwhile.
const WRITERS: usize = 2;

/// Why a batch was not stored. The same failure answers every batch of its transaction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    #[error("messages not stored: {0}")]
    Database(Arc<sqlx::Error>),
    #[error("the message intake has stopped")]
    Stopped,
}

struct Job {
    user: UserId,
    messages: Vec<Incoming>,
    done: oneshot::Sender<Result<Vec<Message>, IntakeError>>,
}

/// Where connections hand in what they received. Cheap to clone; the writers stop once every
/// clone is dropped.
#[derive(Clone)]
pub struct Intake {
    jobs: mpsc::Sender<Job>,
}

impl Intake {
    /// Starts the writers (on the current tokio runtime).
    pub fn start(store: MessageStore) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..WRITERS {
            tokio::spawn(write(store.clone(), queue.clone()));
        }
        Self { jobs }
    }

    /// Stores one user's received messages like [`MessageStore::record_incoming`], in a
    /// transaction shared with whatever else is waiting; returns those stored now.
    pub async fn record(
        &self,
        user: UserId,
        messages: Vec<Incoming>,
    ) -> Result<Vec<Message>, IntakeError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                user,
                messages,
                done,
            })
            .await
            .map_err(|_| IntakeError::Stopped)?;
        answer.await.map_err(|_| IntakeError::Stopped)?
    }
}

/// One writer: takes every job queued (up to [`MOST_PER_COMMIT`] messages), stores them in
/// one transaction, answers each.
async fn write(store: MessageStore, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let jobs = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut count = first.messages.len();
            let mut jobs = vec![first];
            while count < MOST_PER_COMMIT {
                match queue.try_recv() {
                    Ok(job) => {
                        count += job.messages.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let batches: Vec<(UserId, &[Incoming])> = jobs
            .iter()
            .map(|job| (job.user, job.messages.as_slice()))
            .collect();
        let result = store.record_incoming_of_many(&batches).await;
        match result {
            Ok(stored) => {
                for (job, stored) in jobs.into_iter().zip(stored) {
                    let _ = job.done.send(Ok(stored));
                }
            }
            Err(e) => {
                let error = IntakeError::Database(Arc::new(e));
                for job in jobs {
                    let _ = job.done.send(Err(error.clone()));
                }
            }
        }
    }
}
