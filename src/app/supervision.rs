//! This node's hold on upstream connections: leases, account supervisors, fresh-login glue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::link::AccountLink;
use super::{AppError, Switchboard};
use crate::connectors::supervisor::{Launch, LinkState, LinkStatus, Supervisor};
use crate::connectors::{ContactProfile, LiveSession, Roster, RosterSource};
use crate::domain::ids::{AccountId, Protocol, UserId};
use crate::domain::metadata::Actor;
use crate::domain::user::{NewAccount, ProfileItem, RosterItem, User, UserCommand};
use crate::secret::Secret;
use crate::store::lease::Acquired;
use crate::store::vault::SecretKind;

impl Switchboard {
    /// Takes (or keeps) the user's lease: true when this node is the one to hold the user's
    /// connections. Another live node holding it keeps them there.
    pub(super) async fn hold_lease(&self, user: UserId) -> Result<bool, AppError> {
        match self.leases.acquire(user).await? {
            Acquired::Held => Ok(true),
            Acquired::HeldElsewhere(node) => {
                tracing::info!(%user, %node, "another node holds this user's connections");
                Ok(false)
            }
        }
    }

    /// Starts the supervisor of one account; with `session`, one that just logged in. A
    /// `reconnecting` one was online on a node that stopped.
    pub(super) async fn supervise(
        self: &Arc<Self>,
        user: UserId,
        account: AccountId,
        protocol: Protocol,
        session: Option<LiveSession>,
        login_id: Uuid,
        reconnecting: bool,
    ) -> Result<(), AppError> {
        let connector = self.connectors.get(protocol)?;
        let link = Arc::new(AccountLink {
            app: Arc::downgrade(self),
            user,
            account,
            roster_source: connector.roster_source(),
            login_id,
            protocol,
        });
        let launch = Launch {
            session,
            pacer: Arc::clone(&self.pacer),
            reconnecting,
        };
        let supervisor = Supervisor::start(connector, link, self.settings.supervisor, launch);
        self.live.attach(user, account, supervisor).await;
        Ok(())
    }

    /// Starts a supervisor for every account of the user that has none at work here, each
    /// shown `CONNECTING` (`RECONNECTING` when `reconnecting`: it was online on a node that
    /// stopped) until it reports; an account whose network this build cannot connect to is
    /// shown `DISCONNECTED` with the reason. Returns how many were started.
    pub(super) async fn supervise_all(
        self: &Arc<Self>,
        user: UserId,
        state: &User,
        login_id: Uuid,
        reconnecting: bool,
    ) -> Result<usize, AppError> {
        let mut started = 0;
        for bound in state.accounts() {
            let account = &bound.account;
            if self.live.is_supervised(user, account.account_id) {
                continue;
            }
            let (state, detail) = match self.connectors.get(account.protocol) {
                Ok(_) if reconnecting => (LinkState::Reconnecting, None),
                Ok(_) => (LinkState::Connecting, None),
                Err(e) => (LinkState::Disconnected, Some(e.to_string())),
            };
            let status = LinkStatus {
                state,
                attempt: 0,
                next_retry_at: None,
                detail,
            };
            self.live_views
                .set_status(self.leases.node(), user, account.account_id, &status)
                .await?;
            if state != LinkState::Disconnected {
                self.supervise(
                    user,
                    account.account_id,
                    account.protocol,
                    None,
                    login_id,
                    reconnecting,
                )
                .await?;
                started += 1;
            }
        }
        Ok(started)
    }

    /// Keeps what the vault should hold for a freshly logged-in account: the session token
    /// the network handed out if any (the password is then never stored), else the password.
    pub(super) async fn keep_credential(
        &self,
        user: UserId,
        account: AccountId,
        session: &mut LiveSession,
        password: &Secret,
    ) -> Result<(), AppError> {
        match session.session_credential.take() {
            Some(token) => {
                self.vault
                    .put_kind(user, account, &token, SecretKind::SessionToken)
                    .await?
            }
            None => self.vault.put(user, account, password).await?,
        }
        Ok(())
    }

    /// Undoes the upstream side of a binding that was not recorded: logs out and destroys the
    /// secret put in the vault for it.
    pub(super) async fn abandon(&self, account: AccountId, session: LiveSession) {
        session.disconnect().await;
        if let Err(e) = self.vault.destroy(self.vault.pool(), account).await {
            tracing::error!(%account, error = %e, "cannot destroy the secret of a refused binding");
        }
    }

    /// Imports a freshly bound account's roster now (so the answer shows it) and hands the
    /// session to a supervisor, or logs it out when another node holds the user's connections.
    /// Returns the number of contacts upstream.
    pub(super) async fn adopt(
        self: &Arc<Self>,
        user: UserId,
        account: &NewAccount,
        session: LiveSession,
        request_id: Uuid,
        held: bool,
    ) -> Result<usize, AppError> {
        let count = session.roster.entries().len();
        let server_roster =
            self.connectors.get(account.protocol)?.roster_source() == RosterSource::Server;
        let imported = if server_roster {
            self.sync_roster(user, account.account_id, session.roster.clone(), request_id)
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        if held {
            let online = LinkStatus {
                state: LinkState::Online,
                attempt: 0,
                next_retry_at: None,
                detail: None,
            };
            self.live_views
                .set_status(self.leases.node(), user, account.account_id, &online)
                .await?;
            self.supervise(
                user,
                account.account_id,
                account.protocol,
                Some(session),
                request_id,
                false,
            )
            .await?;
        } else {
            session.disconnect().await;
        }
        imported.map(|()| count)
    }

    pub(super) async fn sync_roster(
        &self,
        user: UserId,
        account: AccountId,
        roster: Roster,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        let roster = match roster {
            Roster::Complete(entries) => Some(
                entries
                    .into_iter()
                    .map(|e| RosterItem {
                        handle: e.handle,
                        display_name: e.display_name,
                    })
                    .collect(),
            ),
            Roster::Absent(reason) => {
                tracing::info!(%user, %account, %reason, "roster not read; nothing removed");
                None
            }
        };
        self.execute(
            user,
            UserCommand::SyncRoster {
                account_id: account,
                roster,
            },
            Actor::Reconciliation,
            request_id,
        )
        .await
    }

    /// Records what the account's network says about some of its contacts (for matching).
    pub(super) async fn update_profiles(
        &self,
        user: UserId,
        account: AccountId,
        profiles: Vec<ContactProfile>,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        let profiles = profiles
            .into_iter()
            .map(|p| ProfileItem {
                handle: p.handle,
                profile: p.profile,
            })
            .collect();
        self.execute(
            user,
            UserCommand::UpdateProfiles {
                account_id: account,
                profiles,
            },
            Actor::Reconciliation,
            request_id,
        )
        .await
    }

    /// Extends this node's leases; stops the connections of users whose lease another node
    /// took (after this node failed to renew in time), and of users whose last session
    /// expired (their lease is given up).
    pub async fn renew_leases(&self) -> Result<(), AppError> {
        let held = match self.leases.renew().await {
            Ok(held) => {
                *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                held
            }
            Err(e) => {
                let since = self
                    .renewed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed();
                // The next renewal would come too late: the leases may expire before it, and
                // another node must never find these connections still open.
                if since + self.leases.renew_every() >= self.leases.ttl() {
                    tracing::error!(error = %e, "leases not renewed in time; closing every connection of this node");
                    self.live.detach_all().await;
                }
                return Err(e.into());
            }
        };
        for user in self.live.users() {
            if !held.contains(&user) {
                tracing::warn!(%user, "lease lost; closing this node's connections of the user");
                self.live.detach_user(user).await;
            }
        }
        for user in self.sessions.without_session(&held).await? {
            tracing::info!(%user, "the user's last session expired; closing the connections");
            self.live.detach_user(user).await;
            self.leases.release(user).await?;
        }
        Ok(())
    }

    /// How often [`Switchboard::renew_leases`] should run.
    pub fn lease_renewal_interval(&self) -> Duration {
        self.leases.renew_every()
    }

    /// Closes every upstream connection, gives the leases up and tells the other nodes, which
    /// take the users over at once (server shutdown). The accounts show `RECONNECTING` until
    /// a node has them; with no other node, the next start resumes them.
    pub async fn shutdown(&self) {
        self.live.hand_over_all().await;
        match self.leases.release_all().await {
            Ok(()) => self.announce_released_leases().await,
            Err(e) => tracing::warn!(error = %e, "leases not released; they expire by themselves"),
        }
    }
}
