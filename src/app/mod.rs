//! The application layer: use cases that the API calls. It turns requests into commands,
//! talks to connectors and the vault, and reads the views. No HTTP or GraphQL here.

pub mod error;
mod link;
pub mod live;
pub mod password;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use sqlx::{PgPool, Row};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::connectors::supervisor::{LinkState, LinkStatus, Supervisor, SupervisorSettings};
use crate::connectors::{
    AccountLogin, ConnectorRegistry, Credential, IncomingMessage, LiveSession, RosterEntry,
    RosterSource,
};
use crate::domain::ids::{
    AccountId, ContactId, DisplayName, Handle, MetaContactId, Protocol, UserId, UserName,
};
use crate::domain::metadata::{Actor, EventMetadata};
use crate::domain::presence::Presence;
use crate::domain::user::{NewAccount, RosterItem, User, UserCommand, UserError};
use crate::projections::contacts::{self, ContactList};
use crate::projections::history::{self, HistoryEntry, HistoryFilter};
use crate::projections::live::{AccountStatus, LiveViews};
use crate::projections::notify::ViewChanges;
use crate::projections::runner::wait_until_applied;
use crate::secret::Secret;
use crate::store::event_store::{decode, upcasters, UserStore, EVENT_COLUMNS};
use crate::store::lease::{Acquired, Leases};
use crate::store::sessions::SessionStore;
use crate::store::vault::{SecretKind, Vault};

pub use error::AppError;
use link::AccountLink;
use live::LiveConnections;

/// The presence of contact handles, by account and handle.
pub type PresenceMap = HashMap<(AccountId, Handle), Presence>;

/// Tunables of the application layer.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Login deadline and reconnection backoff of the account supervisors.
    pub supervisor: SupervisorSettings,
    /// How long a mutation waits for the views to show its effect before answering.
    pub view_wait: Duration,
    /// How long a node's hold on a user's connections lasts without renewal.
    pub lease_ttl: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            supervisor: SupervisorSettings::default(),
            view_wait: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

/// An account to bind, as a client gives it.
#[derive(Debug, Clone)]
pub struct AccountInput {
    pub protocol: Protocol,
    pub server: String,
    pub handle: String,
    pub secret: Secret,
}

/// A bound account as the views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub account_id: AccountId,
    pub protocol: String,
    pub server: String,
    pub handle: String,
    pub bound_at: DateTime<Utc>,
    /// The connection's state, from the node holding the user's connections.
    pub status: AccountStatus,
}

/// A direct message one of a user's accounts received.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub user: UserId,
    pub account: AccountId,
    pub message: IncomingMessage,
}

/// A logged-in session.
#[derive(Debug)]
pub struct LoginResult {
    pub token: String,
    pub user_id: UserId,
    pub user_name: String,
    /// Every bound account with its connection status at the time of the answer.
    pub accounts: Vec<AccountView>,
}

/// Who makes a request, and which request it is.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user: UserId,
    pub request_id: Uuid,
}

pub struct Switchboard {
    pool: PgPool,
    store: UserStore,
    cqrs: CqrsFramework<User, UserStore>,
    vault: Vault,
    sessions: SessionStore,
    connectors: ConnectorRegistry,
    live: LiveConnections,
    live_views: LiveViews,
    leases: Leases,
    /// Direct messages as they arrive, for whoever listens on this node.
    messages: broadcast::Sender<ReceivedMessage>,
    views: ViewChanges,
    settings: ServiceSettings,
    /// One writer per user at a time on this node, so parallel account logins do not fight
    /// over the stream's next sequence (across nodes, conflicts are retried).
    writers: std::sync::Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
}

const MAX_SERVER_LEN: usize = 255;
const COMMAND_ATTEMPTS: usize = 3;

impl Switchboard {
    pub fn new(
        pool: PgPool,
        vault: Vault,
        connectors: ConnectorRegistry,
        views: ViewChanges,
        settings: ServiceSettings,
    ) -> Arc<Self> {
        let store = UserStore::new(pool.clone());
        Arc::new(Self {
            cqrs: CqrsFramework::new(store.clone(), Vec::new(), ()),
            store,
            sessions: SessionStore::new(pool.clone()),
            vault,
            connectors,
            live: LiveConnections::default(),
            live_views: LiveViews::new(pool.clone()),
            leases: Leases::new(pool.clone(), Uuid::new_v4(), settings.lease_ttl),
            pool,
            messages: broadcast::channel(256).0,
            views,
            settings,
            writers: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn writer(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits for, so the map stays as small as the activity.
        writers.retain(|_, lock| Arc::strong_count(lock) > 1);
        writers.entry(user).or_default().clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn views(&self) -> &ViewChanges {
        &self.views
    }

    // ----- commands ---------------------------------------------------------------------

    async fn load(&self, user: UserId) -> Result<User, AppError> {
        let context = self
            .store
            .load_aggregate(&user.to_string())
            .await
            .map_err(AppError::internal)?;
        Ok(context.aggregate)
    }

    /// Executes a command, retrying optimistic-concurrency conflicts (every command is decided
    /// again on fresh state, so a retry is safe); returns the stream's sequence after it.
    async fn execute(
        &self,
        user: UserId,
        command: UserCommand,
        actor: Actor,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        let id = user.to_string();
        let writer = self.writer(user);
        let _turn = writer.lock().await;
        for attempt in 1..=COMMAND_ATTEMPTS {
            let metadata = EventMetadata::new(actor.clone(), request_id, Utc::now());
            match self
                .cqrs
                .execute_with_metadata(&id, command.clone(), metadata.to_map())
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
            let id = self.event_id(user, conflicting).await.ok().flatten();
            if let Some(id) = id {
                return AppError::Conflict(format!(
                    "this change cannot be undone exactly: event {id} changed the same contacts since; undo that first"
                ));
            }
        }
        error.into()
    }

    async fn event_id(&self, user: UserId, sequence: usize) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT position FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1 AND sequence = $2",
        )
        .bind(user.to_string())
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await
    }

    /// Waits until the views show everything up to `sequence` (read-your-writes for clients).
    async fn settle(&self, user: UserId, sequence: usize) {
        if sequence == 0 {
            return;
        }
        let mut changes = self.views.subscribe();
        for view in [contacts::NAME, history::NAME] {
            let wait = self.settings.view_wait;
            match wait_until_applied(&self.pool, &mut changes, view, user, sequence, wait).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%user, view, "views lag behind; answering with what they have")
                }
                Err(e) => {
                    tracing::warn!(%user, view, error = %e, "cannot check the views' progress")
                }
            }
        }
    }

    // ----- registration and login ------------------------------------------------------------

    fn parse_account(input: &AccountInput) -> Result<(NewAccount, AccountLogin), AppError> {
        let server = input.server.trim();
        if server.is_empty()
            || server.len() > MAX_SERVER_LEN
            || server.chars().any(char::is_whitespace)
        {
            return Err(AppError::BadInput(format!(
                "server: must be host:port or a URL of at most {MAX_SERVER_LEN} characters"
            )));
        }
        let handle = Handle::parse(input.protocol, &input.handle)
            .map_err(|e| AppError::bad_input("handle", e))?;
        let account = NewAccount {
            account_id: AccountId::new_random(),
            protocol: input.protocol,
            server: server.to_owned(),
            handle: handle.clone(),
        };
        let login = AccountLogin {
            protocol: input.protocol,
            server: server.to_owned(),
            handle,
            credential: Credential::Password(input.secret.clone()),
            contacts: Vec::new(),
        };
        Ok((account, login))
    }

    async fn connect(&self, login: &AccountLogin) -> Result<LiveSession, AppError> {
        let connector = self.connectors.get(login.protocol)?;
        Ok(connector
            .connect(login, self.settings.supervisor.connect_timeout)
            .await?)
    }

    /// Registers a user, binding the given accounts in the same commit once each has logged in
    /// upstream (all or nothing). Returns a logged-in session.
    pub async fn register(
        self: &Arc<Self>,
        user_name: &str,
        password: Secret,
        accounts: Vec<AccountInput>,
        request_id: Uuid,
    ) -> Result<LoginResult, AppError> {
        let user_name =
            UserName::parse(user_name).map_err(|e| AppError::bad_input("userName", e))?;
        password::validate(&password)?;
        let parsed = accounts
            .iter()
            .map(Self::parse_account)
            .collect::<Result<Vec<_>, _>>()?;
        let user = UserId::for_name(&user_name);
        if self.load(user).await?.registration().is_some() {
            return Err(UserError::UserNameTaken.into());
        }
        // Refuse duplicates before anyone logs in upstream.
        User::default()
            .decide(UserCommand::Register {
                user_name: user_name.clone(),
                password_hash: String::new(),
                accounts: parsed.iter().map(|(a, _)| a.clone()).collect(),
            })
            .map_err(AppError::from)?;
        let sessions =
            futures::future::join_all(parsed.iter().map(|(_, login)| self.connect(login))).await;
        let mut live = Vec::new();
        let mut failure = None;
        for (session, (account, _)) in sessions.into_iter().zip(&parsed) {
            match session {
                Ok(session) => live.push((account.clone(), session)),
                Err(e) if failure.is_none() => failure = Some(name_account(e, account)),
                Err(_) => {}
            }
        }
        if let Some(e) = failure {
            for (_, session) in live {
                session.disconnect().await;
            }
            return Err(e);
        }
        let result = async {
            for ((account, session), input) in live.iter_mut().zip(&accounts) {
                self.keep_credential(user, account.account_id, session, &input.secret)
                    .await?;
            }
            let password_hash = password::hash(password).await?;
            self.execute(
                user,
                UserCommand::Register {
                    user_name: user_name.clone(),
                    password_hash,
                    accounts: parsed.iter().map(|(a, _)| a.clone()).collect(),
                },
                Actor::User(user),
                request_id,
            )
            .await
        }
        .await;
        if let Err(e) = result {
            for (account, session) in live {
                self.abandon(account.account_id, session).await;
            }
            return Err(e);
        }
        let token = self.sessions.create(user).await?;
        let held = self.hold_lease(user).await?;
        for (account, session) in live {
            if let Err(e) = self.adopt(user, &account, session, request_id, held).await {
                tracing::warn!(%user, account = %account.account_id, error = %e, "roster import failed at registration");
            }
        }
        let sequence = self.load(user).await?.sequence();
        self.settle(user, sequence).await;
        Ok(LoginResult {
            token,
            user_id: user,
            user_name: user_name.to_string(),
            accounts: self.accounts(user).await?,
        })
    }

    /// Checks the password, opens a session, and starts logging every bound account in, in
    /// parallel, without waiting for any of them: the answer shows each account `CONNECTING`
    /// (or its state, if already connected), and `accountStatusChanged` follows the rest.
    pub async fn login(
        self: &Arc<Self>,
        user_name: &str,
        password: Secret,
        _request_id: Uuid,
    ) -> Result<LoginResult, AppError> {
        let refused = || AppError::Unauthenticated;
        let user_name = UserName::parse(user_name).map_err(|_| refused())?;
        let user_id = UserId::for_name(&user_name);
        let user = self.load(user_id).await?;
        let registration = user.registration().cloned();
        let ok = password::verify(
            password,
            registration.as_ref().map(|r| r.password_hash.clone()),
        )
        .await?;
        let Some(registration) = registration.filter(|_| ok) else {
            return Err(refused());
        };
        let token = self.sessions.create(user_id).await?;
        if self.hold_lease(user_id).await? {
            for state in user.accounts() {
                let account = &state.account;
                if self.live.is_supervised(user_id, account.account_id) {
                    continue;
                }
                // A network this build has no connector for can never connect: say so.
                let (state, detail) = match self.connectors.get(account.protocol) {
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
                    .set_status(self.leases.node(), user_id, account.account_id, &status)
                    .await?;
                if state == LinkState::Connecting {
                    self.supervise(user_id, account.account_id, account.protocol, None)
                        .await?;
                }
            }
        }
        Ok(LoginResult {
            token,
            user_id,
            user_name: registration.user_name.to_string(),
            accounts: self.accounts(user_id).await?,
        })
    }

    /// Takes (or keeps) the user's lease: true when this node is the one to hold the user's
    /// connections. Another live node holding it keeps them there.
    async fn hold_lease(&self, user: UserId) -> Result<bool, AppError> {
        match self.leases.acquire(user).await? {
            Acquired::Held => Ok(true),
            Acquired::HeldElsewhere(node) => {
                tracing::info!(%user, %node, "another node holds this user's connections");
                Ok(false)
            }
        }
    }

    /// Starts the supervisor of one account; with `session`, one that just logged in.
    async fn supervise(
        self: &Arc<Self>,
        user: UserId,
        account: AccountId,
        protocol: Protocol,
        session: Option<LiveSession>,
    ) -> Result<(), AppError> {
        let connector = self.connectors.get(protocol)?;
        let link = Arc::new(AccountLink {
            app: Arc::downgrade(self),
            user,
            account,
            roster_source: connector.roster_source(),
        });
        let supervisor = Supervisor::start(connector, link, self.settings.supervisor, session);
        self.live.attach(user, account, supervisor).await;
        Ok(())
    }

    /// Keeps what the vault should hold for a freshly logged-in account: the session token
    /// the network handed out if any (the password is then never stored), else the password.
    async fn keep_credential(
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
    async fn abandon(&self, account: AccountId, session: LiveSession) {
        session.disconnect().await;
        if let Err(e) = self.vault.destroy(self.vault.pool(), account).await {
            tracing::error!(%account, error = %e, "cannot destroy the secret of a refused binding");
        }
    }

    /// Imports a freshly bound account's roster now (so the answer shows it) and hands the
    /// session to a supervisor, or logs it out when another node holds the user's connections.
    /// Returns the number of contacts upstream.
    async fn adopt(
        self: &Arc<Self>,
        user: UserId,
        account: &NewAccount,
        session: LiveSession,
        request_id: Uuid,
        held: bool,
    ) -> Result<usize, AppError> {
        let count = session.roster.len();
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
            self.supervise(user, account.account_id, account.protocol, Some(session))
                .await?;
        } else {
            session.disconnect().await;
        }
        imported.map(|()| count)
    }

    async fn sync_roster(
        &self,
        user: UserId,
        account: AccountId,
        roster: Vec<crate::connectors::RosterEntry>,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        let roster = roster
            .into_iter()
            .map(|e| RosterItem {
                handle: e.handle,
                display_name: e.display_name,
            })
            .collect();
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

    /// The user behind a bearer token.
    pub async fn authenticate(&self, token: &str) -> Result<UserId, AppError> {
        self.sessions
            .user_of(token)
            .await?
            .ok_or(AppError::Unauthenticated)
    }

    /// Ends the session; the last session of a user also closes the upstream connections.
    pub async fn logout(&self, user: UserId, token: &str) -> Result<(), AppError> {
        self.sessions.end(token).await?;
        if !self.sessions.any_for(user).await? {
            self.live.detach_user(user).await;
            self.leases.release(user).await?;
        }
        Ok(())
    }

    // ----- account bindings ------------------------------------------------------------------

    /// Binds an account after logging it in upstream; nothing is recorded if that fails.
    pub async fn bind_account(
        self: &Arc<Self>,
        caller: Caller,
        input: AccountInput,
    ) -> Result<(AccountView, usize), AppError> {
        let (account, login) = Self::parse_account(&input)?;
        let user = caller.user;
        // Refuse a duplicate before logging in upstream.
        self.load(user)
            .await?
            .decide(UserCommand::BindAccount(account.clone()))
            .map_err(AppError::from)?;
        let mut session = self
            .connect(&login)
            .await
            .map_err(|e| name_account(e, &account))?;
        let bound = async {
            self.keep_credential(user, account.account_id, &mut session, &input.secret)
                .await?;
            self.execute(
                user,
                UserCommand::BindAccount(account.clone()),
                Actor::User(user),
                caller.request_id,
            )
            .await
        }
        .await;
        if let Err(e) = bound {
            self.abandon(account.account_id, session).await;
            return Err(e);
        }
        let held = self.hold_lease(user).await?;
        let contacts = self
            .adopt(user, &account, session, caller.request_id, held)
            .await?;
        let sequence = self.load(user).await?.sequence();
        self.settle(user, sequence).await;
        let view = self
            .accounts(user)
            .await?
            .into_iter()
            .find(|a| a.account_id == account.account_id)
            .ok_or_else(|| AppError::internal("bound account missing from the view"))?;
        Ok((view, contacts))
    }

    /// Replaces a bound account's secret (after a password change upstream, or a revoked
    /// session token) once it logs in with the new one; the account comes back online without
    /// a new Switchboard login. A refused secret changes nothing. Secrets are not history: no
    /// event is recorded.
    pub async fn renew_secret(
        self: &Arc<Self>,
        caller: Caller,
        account: AccountId,
        secret: Secret,
    ) -> Result<AccountView, AppError> {
        let user = caller.user;
        let state = self.load(user).await?;
        let bound = state
            .account(account)
            .ok_or(UserError::UnknownAccount(account))?
            .account
            .clone();
        let connector = self.connectors.get(bound.protocol)?;
        let contacts = match connector.roster_source() {
            RosterSource::Server => Vec::new(),
            RosterSource::Local => watch_list(&state, account),
        };
        let login = AccountLogin {
            protocol: bound.protocol,
            server: bound.server.clone(),
            handle: bound.handle.clone(),
            credential: Credential::Password(secret.clone()),
            contacts,
        };
        let new = NewAccount {
            account_id: account,
            protocol: bound.protocol,
            server: bound.server,
            handle: bound.handle,
        };
        let mut session = self
            .connect(&login)
            .await
            .map_err(|e| name_account(e, &new))?;
        if let Err(e) = self
            .keep_credential(user, account, &mut session, &secret)
            .await
        {
            session.disconnect().await;
            return Err(e);
        }
        let held = self.hold_lease(user).await?;
        self.adopt(user, &new, session, caller.request_id, held)
            .await?;
        self.accounts(user)
            .await?
            .into_iter()
            .find(|a| a.account_id == account)
            .ok_or_else(|| AppError::internal("renewed account missing from the view"))
    }

    /// Unbinds an account: its contacts leave the list and its secret is destroyed.
    pub async fn unbind_account(&self, caller: Caller, account: AccountId) -> Result<(), AppError> {
        let sequence = self
            .execute(
                caller.user,
                UserCommand::UnbindAccount {
                    account_id: account,
                },
                Actor::User(caller.user),
                caller.request_id,
            )
            .await?;
        self.live.detach(caller.user, account).await;
        self.live_views.forget_account(caller.user, account).await?;
        self.vault.destroy(self.vault.pool(), account).await?;
        self.settle(caller.user, sequence).await;
        Ok(())
    }

    // ----- contacts on networks without a server roster --------------------------------------

    /// Adds a contact by hand to an account whose network keeps no contact list (IRC); the
    /// live session starts watching it at once.
    pub async fn add_contact(
        &self,
        caller: Caller,
        account: AccountId,
        handle: &str,
        display_name: Option<String>,
    ) -> Result<ContactList, AppError> {
        let state = self.load(caller.user).await?;
        let protocol = state
            .account(account)
            .ok_or(UserError::UnknownAccount(account))?
            .account
            .protocol;
        self.require_local_roster(protocol)?;
        let handle =
            Handle::parse(protocol, handle).map_err(|e| AppError::bad_input("handle", e))?;
        let display_name = display_name
            .map(|n| DisplayName::parse(&n).map(|n| n.to_string()))
            .transpose()
            .map_err(|e| AppError::bad_input("displayName", e))?;
        let list = self
            .bind(
                caller,
                UserCommand::AddContact {
                    account_id: account,
                    handle,
                    display_name,
                },
            )
            .await?;
        self.rewatch(caller.user, account).await;
        Ok(list)
    }

    /// Removes a contact added by hand (see [`Switchboard::add_contact`]).
    pub async fn remove_contact(
        &self,
        caller: Caller,
        contact: ContactId,
    ) -> Result<ContactList, AppError> {
        let state = self.load(caller.user).await?;
        let account = state
            .contacts()
            .get(&contact)
            .ok_or(UserError::UnknownContact(contact))?
            .account_id;
        if let Some(bound) = state.account(account) {
            self.require_local_roster(bound.account.protocol)?;
        }
        let list = self
            .bind(
                caller,
                UserCommand::RemoveContact {
                    contact_id: contact,
                },
            )
            .await?;
        self.rewatch(caller.user, account).await;
        Ok(list)
    }

    fn require_local_roster(&self, protocol: Protocol) -> Result<(), AppError> {
        match self.connectors.get(protocol)?.roster_source() {
            RosterSource::Local => Ok(()),
            RosterSource::Server => Err(AppError::BadInput(format!(
                "{protocol} keeps its contact list on the server: change it there"
            ))),
        }
    }

    /// Tells the account's live session which contacts to watch now.
    async fn rewatch(&self, user: UserId, account: AccountId) {
        let Some(session) = self.live.session(user, account) else {
            return; // the next login passes the list
        };
        let contacts = match self.load(user).await {
            Ok(state) => watch_list(&state, account),
            Err(e) => {
                tracing::warn!(%account, error = %e, "watch list not updated");
                return;
            }
        };
        if let Err(e) = session.watch(&contacts).await {
            tracing::warn!(%account, error = %e, "watch list not updated");
        }
    }

    // ----- friend binding --------------------------------------------------------------------

    async fn bind(&self, caller: Caller, command: UserCommand) -> Result<ContactList, AppError> {
        let sequence = self
            .execute(
                caller.user,
                command,
                Actor::User(caller.user),
                caller.request_id,
            )
            .await?;
        self.settle(caller.user, sequence).await;
        self.contacts(caller.user, None).await
    }

    pub async fn merge_contacts(
        &self,
        caller: Caller,
        name: &str,
        contacts: Vec<ContactId>,
    ) -> Result<(MetaContactId, ContactList), AppError> {
        let name = DisplayName::parse(name).map_err(|e| AppError::bad_input("name", e))?;
        let id = MetaContactId::new_random();
        let list = self
            .bind(
                caller,
                UserCommand::MergeContacts {
                    meta_contact_id: id,
                    name,
                    contact_ids: contacts,
                },
            )
            .await?;
        Ok((id, list))
    }

    pub async fn add_to_meta_contact(
        &self,
        caller: Caller,
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
    ) -> Result<ContactList, AppError> {
        self.bind(
            caller,
            UserCommand::AddToMetaContact {
                meta_contact_id,
                contact_id,
            },
        )
        .await
    }

    pub async fn remove_from_meta_contact(
        &self,
        caller: Caller,
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
    ) -> Result<ContactList, AppError> {
        self.bind(
            caller,
            UserCommand::RemoveFromMetaContact {
                meta_contact_id,
                contact_id,
            },
        )
        .await
    }

    pub async fn rename_meta_contact(
        &self,
        caller: Caller,
        meta_contact_id: MetaContactId,
        name: &str,
    ) -> Result<ContactList, AppError> {
        let name = DisplayName::parse(name).map_err(|e| AppError::bad_input("name", e))?;
        self.bind(
            caller,
            UserCommand::RenameMetaContact {
                meta_contact_id,
                name,
            },
        )
        .await
    }

    /// Undoes the binding event with public id `event_id` (its global position).
    pub async fn undo(&self, caller: Caller, event_id: i64) -> Result<ContactList, AppError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position = $1 AND aggregate_type = 'User' AND aggregate_id = $2"
        );
        let row = sqlx::query(&query)
            .bind(event_id)
            .bind(caller.user.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no event {event_id}")))?;
        let stored = decode(&row, &upcasters()).map_err(AppError::internal)?;
        if !stored.event.is_undoable() {
            return Err(AppError::BadInput(format!(
                "event {event_id} ({}) is not a contact binding and cannot be undone",
                stored.event.kind()
            )));
        }
        self.bind(
            caller,
            UserCommand::Undo {
                target_sequence: stored.sequence,
                target: Box::new(stored.event),
            },
        )
        .await
    }

    // ----- reads -----------------------------------------------------------------------------

    pub async fn user_name(&self, user: UserId) -> Result<String, AppError> {
        let row = sqlx::query("SELECT user_name FROM user_view WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(row.try_get("user_name")?),
            None => self
                .load(user)
                .await?
                .registration()
                .map(|r| r.user_name.to_string())
                .ok_or_else(|| AppError::NotFound("no such user".into())),
        }
    }

    pub async fn accounts(&self, user: UserId) -> Result<Vec<AccountView>, AppError> {
        let rows = sqlx::query(
            "SELECT account_id, protocol, server, handle, bound_at FROM account_view \
             WHERE user_id = $1 ORDER BY bound_at, account_id",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        let mut statuses = self.live_views.statuses(user).await?;
        rows.iter()
            .map(|r| {
                let account_id = AccountId(r.try_get("account_id")?);
                Ok(AccountView {
                    account_id,
                    protocol: r.try_get("protocol")?,
                    server: r.try_get("server")?,
                    handle: r.try_get("handle")?,
                    bound_at: r.try_get("bound_at")?,
                    status: statuses
                        .remove(&account_id)
                        .unwrap_or_else(AccountStatus::disconnected),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(AppError::from)
    }

    /// The unified contact list now (from the views), or as it was at `as_of` (replayed from
    /// the user's events up to that instant).
    pub async fn contacts(
        &self,
        user: UserId,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<ContactList, AppError> {
        let Some(as_of) = as_of else {
            return Ok(ContactList::load(&self.pool, user).await?);
        };
        // The stream's prefix up to the last event recorded at or before `as_of`.
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1 \
               AND sequence <= (SELECT COALESCE(max(sequence), 0) FROM events \
                                 WHERE aggregate_type = 'User' AND aggregate_id = $1 AND recorded_at <= $2) \
             ORDER BY sequence"
        );
        let rows = sqlx::query(&query)
            .bind(user.to_string())
            .bind(as_of)
            .fetch_all(&self.pool)
            .await?;
        let upcasters = upcasters();
        let mut state = User::default();
        for row in &rows {
            let stored = decode(row, &upcasters).map_err(AppError::internal)?;
            cqrs_es::Aggregate::apply(&mut state, stored.event);
        }
        Ok(ContactList::from_user(&state))
    }

    /// The known presence of the contacts of the user's online accounts.
    pub async fn presence(&self, user: UserId) -> Result<PresenceMap, AppError> {
        Ok(self.live_views.presence(user).await?)
    }

    /// Direct messages as this node's connections receive them.
    pub fn messages(&self) -> broadcast::Receiver<ReceivedMessage> {
        self.messages.subscribe()
    }

    pub async fn history(
        &self,
        user: UserId,
        filter: &HistoryFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, AppError> {
        for kind in &filter.kinds {
            if !crate::domain::user::UserEvent::KINDS.contains(&kind.as_str()) {
                return Err(AppError::BadInput(format!(
                    "kinds: unknown event kind {kind}"
                )));
            }
        }
        Ok(history::page(&self.pool, user, filter, before, limit).await?)
    }

    /// Extends this node's leases; stops the connections of users whose lease another node
    /// took (after this node failed to renew in time).
    pub async fn renew_leases(&self) -> Result<(), AppError> {
        let held = self.leases.renew().await?;
        for user in self.live.users() {
            if !held.contains(&user) {
                tracing::warn!(%user, "lease lost; closing this node's connections of the user");
                self.live.detach_user(user).await;
            }
        }
        Ok(())
    }

    /// How often [`Switchboard::renew_leases`] should run.
    pub fn lease_renewal_interval(&self) -> Duration {
        self.leases.renew_every()
    }

    /// Closes every upstream connection and gives the leases up (server shutdown).
    pub async fn shutdown(&self) {
        self.live.detach_all().await;
        if let Err(e) = self.leases.release_all().await {
            tracing::warn!(error = %e, "leases not released; they expire by themselves");
        }
    }
}

/// An account's contacts as a connector's watch list (networks without a server roster).
fn watch_list(state: &User, account: AccountId) -> Vec<RosterEntry> {
    state
        .contacts()
        .values()
        .filter(|c| c.account_id == account)
        .map(|c| RosterEntry {
            handle: c.handle.clone(),
            display_name: c.display_name.clone(),
        })
        .collect()
}

/// Says which account a refused login was for (the connector's own message cannot know).
fn name_account(error: AppError, account: &NewAccount) -> AppError {
    match error {
        AppError::AuthFailed(_) => AppError::AuthFailed(format!(
            "the {} server refused the credentials of {}",
            account.protocol, account.handle
        )),
        other => other,
    }
}
