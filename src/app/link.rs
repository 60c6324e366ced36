//! One bound account as its supervisor sees the rest of Switchboard: where its login comes
//! from (aggregate + vault) and where what it sees goes (commands, live views, messages).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use uuid::Uuid;

use super::chat::Received;
use super::Switchboard;
use crate::connectors::supervisor::{AccountHost, HostError, LinkState, LinkStatus};
use crate::connectors::{
    AccountLogin, ConnectorEvent, Credential, LiveSession, Roster, RosterSource,
};
use crate::domain::ids::{AccountId, UserId};
use crate::domain::presence::{Availability, Presence};
use crate::projections::live::PresenceUpdate;
use crate::store::vault::{SecretKind, VaultError};

pub(super) struct AccountLink {
    /// Weak: the app owns the supervisors, which own their links.
    pub(super) app: Weak<Switchboard>,
    pub(super) user: UserId,
    pub(super) account: AccountId,
    pub(super) roster_source: RosterSource,
    /// The login (or binding) that started the supervisor: its reconciliations carry this id,
    /// so the login report can find them.
    pub(super) login_id: Uuid,
    /// The account's network, for metrics.
    pub(super) protocol: crate::domain::ids::Protocol,
}

impl AccountLink {
    fn app(&self) -> Result<Arc<Switchboard>, HostError> {
        self.app.upgrade().ok_or_else(|| HostError {
            message: "the server is shutting down".into(),
            fatal: true,
        })
    }
}

fn retry(error: impl std::fmt::Display) -> HostError {
    HostError {
        message: error.to_string(),
        fatal: false,
    }
}

#[async_trait]
impl AccountHost for AccountLink {
    async fn login(&self) -> Result<AccountLogin, HostError> {
        let app = self.app()?;
        let user = app.load(self.user).await.map_err(retry)?;
        let Some(state) = user.account(self.account) else {
            return Err(HostError {
                message: "the account is no longer bound".into(),
                fatal: true,
            });
        };
        let (secret, kind) = match app.vault.get_kind(self.account).await {
            Ok(found) => found,
            Err(e @ (VaultError::Missing(_) | VaultError::Undecryptable(_))) => {
                return Err(HostError {
                    message: e.to_string(),
                    fatal: true,
                })
            }
            Err(e) => return Err(retry(e)),
        };
        // Networks without a server roster watch these; the others fall back on them while
        // their roster cannot be read.
        let contacts = super::accounts::watch_list(&user, self.account);
        Ok(AccountLogin {
            protocol: state.account.protocol,
            server: state.account.server.clone(),
            handle: state.account.handle.clone(),
            credential: match kind {
                SecretKind::Password => Credential::Password(secret),
                SecretKind::SessionToken => Credential::Session(secret),
            },
            contacts,
            message_cursor: app.messages.cursor(self.account).await.map_err(retry)?,
        })
    }

    async fn report(&self, status: LinkStatus) {
        let Ok(app) = self.app() else { return };
        let online = status.state == LinkState::Online;
        // The report made right before a login attempt that follows a failure or a drop.
        let retrying = matches!(
            status.state,
            LinkState::Reconnecting | LinkState::Unreachable
        ) && status.next_retry_at.is_none();
        if retrying {
            app.metrics.reconnect_attempt(&self.protocol.to_string());
        }
        tracing::info!(user = %self.user, account = %self.account, state = status.state.as_str(),
            attempt = status.attempt, detail = status.detail.as_deref().unwrap_or(""), "account status");
        if let Err(e) = app
            .live_views
            .set_status(app.leases.node(), self.user, self.account, &status)
            .await
        {
            tracing::warn!(account = %self.account, error = %e, "account status not recorded");
        }
        // Messages waiting for this account may go now (see `observe` on why in a task).
        if online {
            let user = self.user;
            tokio::spawn(async move { app.wake_outbox(user).await });
        }
    }

    async fn online(&self, session: &mut LiveSession) -> Result<(), HostError> {
        let app = self.app()?;
        if let Some(token) = session.session_credential.take() {
            app.vault
                .put_kind(self.user, self.account, &token, SecretKind::SessionToken)
                .await
                .map_err(retry)?;
        }
        if self.roster_source == RosterSource::Server {
            app.sync_roster(
                self.user,
                self.account,
                session.roster.clone(),
                self.login_id,
            )
            .await
            .map_err(retry)?;
        }
        Ok(())
    }

    async fn observe(&self, events: Vec<ConnectorEvent>) {
        let Ok(app) = self.app() else { return };
        // Presence comes in bursts (a whole roster after login): one write per burst; so do
        // messages fetched at login.
        let mut presence = Vec::new();
        let mut messages = Vec::new();
        let mut cursor = None;
        for event in events {
            match event {
                ConnectorEvent::Presence {
                    handle,
                    availability,
                    status,
                } => presence.push(PresenceUpdate {
                    handle,
                    presence: Presence {
                        availability,
                        status,
                    },
                }),
                ConnectorEvent::RosterChanged(roster)
                    if self.roster_source == RosterSource::Server =>
                {
                    if let Err(e) = app
                        .sync_roster(
                            self.user,
                            self.account,
                            Roster::Complete(roster),
                            Uuid::now_v7(),
                        )
                        .await
                    {
                        tracing::warn!(account = %self.account, error = %e, "roster change not applied");
                    }
                }
                ConnectorEvent::RosterChanged(_) => {}
                // Tagged with the login: the suggestions they raise belong in its report.
                ConnectorEvent::Profiles(profiles) => {
                    if let Err(e) = app
                        .update_profiles(self.user, self.account, profiles, self.login_id)
                        .await
                    {
                        tracing::warn!(account = %self.account, error = %e, "profiles not applied");
                    }
                }
                // Kept once the messages before it are stored (below).
                ConnectorEvent::MessageCursor(at) => cursor = Some(at),
                ConnectorEvent::Message(message) => {
                    tracing::debug!(user = %self.user, account = %self.account, from = %message.from,
                        "direct message received");
                    messages.push(Received::Message(message));
                }
                ConnectorEvent::Invitation(invitation) => {
                    tracing::debug!(user = %self.user, account = %self.account, from = %invitation.from,
                        "invitation received");
                    messages.push(Received::Invitation(invitation));
                }
                // The supervisor handles disconnection itself and never passes it on.
                ConnectorEvent::Disconnected { .. } => {}
            }
        }
        let stored = if messages.is_empty() {
            Ok(Vec::new())
        } else {
            app.receive(self.user, self.account, messages).await
        };
        match stored {
            Ok(_) => {
                if let Some(cursor) = cursor {
                    if let Err(e) = app.messages.set_cursor(self.account, &cursor).await {
                        tracing::warn!(account = %self.account, error = %e, "message cursor not kept");
                    }
                }
            }
            // The cursor stays behind: the next login fetches these again.
            Err(e) => tracing::warn!(account = %self.account, error = %e, "messages not stored"),
        }
        let risen = presence
            .iter()
            .any(|p| p.presence.availability > Availability::Offline);
        if let Err(e) = app
            .live_views
            .record_presence(self.user, self.account, &presence)
            .await
        {
            tracing::warn!(account = %self.account, error = %e, "presence not recorded");
        }
        // Someone came online: messages waiting for them may go now. In a task of its own:
        // sending goes through the session this supervisor is reading.
        if risen {
            let user = self.user;
            tokio::spawn(async move { app.wake_outbox(user).await });
        }
    }
}
