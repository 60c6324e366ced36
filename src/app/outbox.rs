//! The outbox: queued messages go out from the node that holds the user's connections (the
//! lease). A node that stores a message it cannot send itself asks the holder through
//! `NOTIFY switchboard_outbox`; every node also looks for due messages of its users every few
//! seconds, and when an account comes online or a contact's presence rises.
//!
//! Each attempt claims the message for [`ATTEMPT_HOLD`] first, so two nodes (or two wake-ups)
//! never send it at once; a node that dies mid-attempt lets it be claimed again after that.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::chat::correspondent;
use super::{AppError, Switchboard};
use crate::connectors::{ConnectorError, OutgoingMessage};
use crate::domain::ids::UserId;
use crate::domain::routing::Routing;
use crate::domain::user::User;
use crate::store::messages::{Message, Party};

/// How long one attempt holds its message against other attempts.
pub const ATTEMPT_HOLD: Duration = Duration::from_secs(30);
/// How often a node looks for due messages of its users without being asked.
pub const OUTBOX_TICK: Duration = Duration::from_secs(2);
const CHANNEL: &str = "switchboard_outbox";

/// What an attempt does with a message.
enum Next {
    Send(Party, String),
    Wait(Party, String),
    Fail(String),
}

/// When a queued message is tried again after `attempts` failed attempts: 2 s doubling to at
/// most 5 minutes (an account coming online or a presence change wakes it earlier).
fn retry_at(attempts: i32) -> DateTime<Utc> {
    let exponent = u32::try_from(attempts.clamp(1, 9) - 1).unwrap_or(0);
    let seconds = (2_i64 << exponent).min(300);
    Utc::now() + chrono::Duration::seconds(seconds)
}
const BATCH: i64 = 32;

impl Switchboard {
    /// Has the user's due messages sent: here, when this node holds the user's connections,
    /// else by the node that does.
    pub(super) async fn kick_outbox(&self, user: UserId) {
        if self.live.has_user(user) {
            if let Err(e) = self.dispatch(user).await {
                tracing::warn!(%user, error = %e, "outbox not sent; the next round tries again");
            }
            return;
        }
        let asked = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(user.0.to_string())
            .execute(&self.pool)
            .await;
        if let Err(e) = asked {
            tracing::warn!(%user, error = %e, "outbox holder not asked; its next round sends");
        }
    }

    /// Makes the user's waiting messages due now and sends them (an account came online, a
    /// contact's presence rose).
    pub(super) async fn wake_outbox(&self, user: UserId) {
        match self.messages.wake(user).await {
            Ok(_) => self.kick_outbox(user).await,
            Err(e) => tracing::warn!(%user, error = %e, "outbox not woken"),
        }
    }

    /// Sends the user's due messages through this node's connections, oldest first.
    pub async fn dispatch(&self, user: UserId) -> Result<(), AppError> {
        let turn = self.outbox_turn(user);
        let _turn = turn.lock().await;
        loop {
            let batch = self.messages.claim_due(user, BATCH, ATTEMPT_HOLD).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let state = self.load(user).await?;
            for message in batch {
                self.attempt(&state, message).await?;
            }
        }
    }

    /// One attempt at one claimed message: it goes out, waits, or fails for good.
    async fn attempt(&self, state: &User, message: Message) -> Result<(), AppError> {
        let user = message.user_id;
        let (party, reason) = match self.route_again(state, &message).await? {
            Next::Send(party, reason) => (party, reason),
            Next::Wait(party, reason) => return self.postpone(&message, &party, &reason).await,
            Next::Fail(why) => {
                self.messages.mark_failed(user, message.id, &why).await?;
                return Ok(());
            }
        };
        self.deliver(&message, party, reason).await
    }

    /// Sends a claimed message to `party` through this node's connection, and records how it
    /// went: sent, refused for good, or postponed (no connection here, or it failed).
    pub(super) async fn deliver(
        &self,
        message: &Message,
        party: Party,
        reason: String,
    ) -> Result<(), AppError> {
        let user = message.user_id;
        let Some(session) = self.live.session(user, party.account_id) else {
            return self.postpone(message, &party, &reason).await;
        };
        let outgoing = OutgoingMessage {
            to: party.handle.clone(),
            body: message.body.clone(),
            id: message.id.simple().to_string(),
            created_at: message.created_at,
        };
        match session.send_message(&outgoing).await {
            Ok(sent) => {
                let network_id = sent.network_id.as_deref();
                self.messages
                    .mark_sent(user, message.id, &party, &reason, network_id)
                    .await?;
                self.metrics.messages("out", 1);
            }
            Err(ConnectorError::Refused(why)) => {
                self.messages.mark_failed(user, message.id, &why).await?;
            }
            Err(e) => {
                tracing::info!(%user, message = %message.id, error = %e, "message not sent; tried again later");
                self.postpone(message, &party, &reason).await?;
            }
        }
        Ok(())
    }

    /// Where the message goes now: where it was stored for, or, sent to a person without
    /// `via`, wherever the routing rules say at this moment.
    async fn route_again(&self, state: &User, message: &Message) -> Result<Next, AppError> {
        let stored = Party {
            contact_id: message.contact_id,
            account_id: message.account_id,
            protocol: message.protocol,
            handle: message.handle.clone(),
        };
        let reason = message.route_reason.clone().unwrap_or_default();
        if !message.auto_route {
            return Ok(Next::Send(stored, reason));
        }
        let Some(with) = message.addressed_to.and_then(|id| correspondent(state, id)) else {
            return Ok(Next::Fail("the person is no longer on the list".to_owned()));
        };
        match self.route(message.user_id, state, &with, None).await {
            Ok((party, Routing::Send { reason, .. })) => Ok(Next::Send(party, reason)),
            Ok((party, Routing::Queue { reason, .. })) => Ok(Next::Wait(party, reason)),
            Err(AppError::BadInput(why)) => Ok(Next::Fail(why)),
            Err(e) => Err(e),
        }
    }

    /// Keeps the message queued, routed to `party`, until its next attempt is due.
    async fn postpone(
        &self,
        message: &Message,
        party: &Party,
        reason: &str,
    ) -> Result<(), AppError> {
        let at = retry_at(message.attempts);
        self.messages
            .postpone(message.user_id, message.id, at, party, reason)
            .await?;
        Ok(())
    }

    pub(super) fn outbox_turn(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.outbox_turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(user).or_default().clone()
    }

    /// This node's outbox round: sends when asked (`switchboard_outbox`) and every
    /// [`OUTBOX_TICK`] for the users whose connections it holds, until `stop`.
    pub async fn run_outbox(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut listener = super::listen(&self.pool, CHANNEL).await;
        let mut tick = tokio::time::interval(OUTBOX_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                note = asked => {
                    match note {
                        Ok(note) => match note.payload().parse::<Uuid>() {
                            Ok(user) if self.live.has_user(UserId(user)) => {
                                if let Err(e) = self.dispatch(UserId(user)).await {
                                    tracing::warn!(%user, error = %e, "outbox not sent");
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "malformed outbox notification"),
                        },
                        // The listener reconnects by itself on the next receive.
                        Err(e) => {
                            tracing::warn!(error = %e, "outbox notifications interrupted");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            if *stop.borrow() {
                return;
            }
            let users = self.live.users();
            match self.messages.users_with_due(&users).await {
                Ok(due) => {
                    for user in due {
                        if let Err(e) = self.dispatch(user).await {
                            tracing::warn!(%user, error = %e, "outbox not sent");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox round failed"),
            }
        }
    }
}
