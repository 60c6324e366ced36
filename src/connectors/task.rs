//! The control side every connector's session shares. A session is one task that owns the
//! connection and reads requests from a queue; its control queues requests (each with a reply
//! channel) and closes by asking the task to stop, waiting a bounded time for its logout.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use super::{ConnectorError, ConnectorEvent, OutgoingMessage, Sent, SessionControl};
use crate::domain::ids::Handle;

/// A direct message on its way out, with where to say how it went.
pub(crate) struct Outgoing {
    pub message: OutgoingMessage,
    pub done: oneshot::Sender<Result<Sent, ConnectorError>>,
}

/// A message request the user accepted (see [`SessionControl::accept`]).
pub(crate) struct Acceptance {
    pub from: Handle,
    pub invitations: Vec<String>,
    pub done: oneshot::Sender<Result<(), ConnectorError>>,
}

/// What sessions with a contact list of their own are asked to do.
pub(crate) enum Request {
    Send(Outgoing),
    Accept(Acceptance),
}

/// The session should end instead of going on: Switchboard stopped it or stopped listening.
pub(crate) struct Stopped;

/// Hands an event to Switchboard, waiting while its queue is full (presence is never dropped);
/// gives up when the session is stopped meanwhile or nobody listens any more.
pub(crate) async fn emit(
    events: &mpsc::Sender<ConnectorEvent>,
    stop: &mut mpsc::Receiver<()>,
    event: ConnectorEvent,
) -> Result<(), Stopped> {
    tokio::select! {
        sent = events.send(event) => sent.map_err(|_| Stopped),
        _ = stop.recv() => Err(Stopped),
    }
}

/// The receiving ends a session task reads: the stop signal (which also yields `None` once
/// the control is dropped) and the requests.
///
/// Requests travel boxed: a tokio channel allocates its slots 32 at a time, up front, so a
/// queue of a 100-byte request type costs 3 KiB per idle session, and of boxes 256 bytes.
pub(crate) struct TaskInbox<R> {
    pub stop: mpsc::Receiver<()>,
    pub requests: mpsc::Receiver<Box<R>>,
}

/// Queues requests of type `R` to a session task and stops it.
pub(crate) struct TaskControl<R> {
    /// For the log line when a task does not stop in time.
    network: &'static str,
    close_timeout: Duration,
    stop: Mutex<Option<mpsc::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    requests: mpsc::Sender<Box<R>>,
}

impl<R: Send> TaskControl<R> {
    /// A control and the inbox its task reads; the task is attached once spawned.
    pub fn new(
        network: &'static str,
        queue: usize,
        close_timeout: Duration,
    ) -> (Self, TaskInbox<R>) {
        let (stop_tx, stop) = mpsc::channel(1);
        let (requests_tx, requests) = mpsc::channel(queue);
        let control = Self {
            network,
            close_timeout,
            stop: Mutex::new(Some(stop_tx)),
            task: Mutex::new(None),
            requests: requests_tx,
        };
        (control, TaskInbox { stop, requests })
    }

    pub fn attach(&self, task: JoinHandle<()>) {
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Queues the request `make` builds around a reply channel, and waits for the reply.
    /// [`ConnectorError::Closed`] once the task has ended.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> R,
    ) -> Result<T, ConnectorError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Box::new(make(reply)))
            .await
            .map_err(|_| ConnectorError::Closed)?;
        answer.await.map_err(|_| ConnectorError::Closed)
    }

    /// Asks the task to stop and waits for it (bounded); idempotent.
    pub async fn close(&self) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stop) = stop {
            // A full queue means a stop is already pending; dropping the sender stops it too.
            let _ = stop.try_send(());
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(self.close_timeout, task)
                .await
                .is_err()
            {
                warn!(
                    network = self.network,
                    "session did not stop in time; aborting it"
                );
                abort.abort();
            }
        }
    }
}

/// Sessions whose only requests are messages to send.
#[async_trait]
impl SessionControl for TaskControl<Outgoing> {
    async fn close(&self) {
        TaskControl::close(self).await;
    }

    async fn send_message(&self, message: &OutgoingMessage) -> Result<Sent, ConnectorError> {
        self.ask(|done| Outgoing {
            message: message.clone(),
            done,
        })
        .await?
    }
}

/// Sessions that send messages and accept message requests.
#[async_trait]
impl SessionControl for TaskControl<Request> {
    async fn close(&self) {
        TaskControl::close(self).await;
    }

    async fn send_message(&self, message: &OutgoingMessage) -> Result<Sent, ConnectorError> {
        self.ask(|done| {
            Request::Send(Outgoing {
                message: message.clone(),
                done,
            })
        })
        .await?
    }

    async fn accept(&self, from: &Handle, invitations: &[String]) -> Result<(), ConnectorError> {
        self.ask(|done| {
            Request::Accept(Acceptance {
                from: from.clone(),
                invitations: invitations.to_vec(),
                done,
            })
        })
        .await?
    }
}
