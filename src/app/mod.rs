//! The application layer: use cases that the API calls. It turns requests into commands,
//! talks to connectors and the vault, and reads the views. No HTTP or GraphQL here.

pub mod error;
pub mod live;
pub mod password;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::connectors::{AccountLogin, ConnectorEvent, ConnectorRegistry, Credential, LiveSession};
use crate::domain::ids::{
    AccountId, ContactId, DisplayName, Handle, MetaContactId, Protocol, UserId, UserName,
};
use crate::domain::metadata::{Actor, EventMetadata};
use crate::domain::user::{NewAccount, RosterItem, User, UserCommand, UserError};
use crate::projections::contacts::{self, ContactList};
use crate::projections::history::{self, HistoryEntry, HistoryFilter};
use crate::projections::notify::ViewChanges;
use crate::projections::runner::wait_until_applied;
use crate::secret::Secret;
use crate::store::event_store::{decode, upcasters, UserStore, EVENT_COLUMNS};
use crate::store::sessions::SessionStore;
use crate::store::vault::Vault;

pub use error::AppError;
use live::{LiveConnections, Presence};

/// Tunables of the application layer.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// How long one account's login may take before it counts as unreachable.
    pub connect_timeout: Duration,
    /// How long a mutation waits for the views to show its effect before answering.
    pub view_wait: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            view_wait: Duration::from_secs(5),
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
    pub connected: bool,
}

/// How one account's login went.
#[derive(Debug, Clone)]
pub struct AccountLoginResult {
    pub account_id: AccountId,
    pub protocol: Protocol,
    pub handle: String,
    pub outcome: Result<usize, AppError>,
}

/// A logged-in session.
#[derive(Debug)]
pub struct LoginResult {
    pub token: String,
    pub user_id: UserId,
    pub user_name: String,
    pub accounts: Vec<AccountLoginResult>,
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
            pool,
            vault,
            connectors,
            live: LiveConnections::default(),
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
            .connect(login, self.settings.connect_timeout)
            .await?)
    }

    /// Registers a user, binding the given accounts in the same commit once each has logged in
    /// upstream. Returns a logged-in session.
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
            for ((account, _), input) in parsed.iter().zip(&accounts) {
                self.vault
                    .put(user, account.account_id, &input.secret)
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
        let mut results = Vec::new();
        for (account, session) in live {
            let outcome = self
                .adopt(user, account.account_id, session, request_id)
                .await;
            results.push(AccountLoginResult {
                account_id: account.account_id,
                protocol: account.protocol,
                handle: account.handle.to_string(),
                outcome,
            });
        }
        let sequence = self.load(user).await?.sequence();
        self.settle(user, sequence).await;
        Ok(LoginResult {
            token,
            user_id: user,
            user_name: user_name.to_string(),
            accounts: results,
        })
    }

    /// Checks the password, opens a session, and logs every bound account in, in parallel:
    /// one failing or slow account does not hold the others back.
    pub async fn login(
        self: &Arc<Self>,
        user_name: &str,
        password: Secret,
        request_id: Uuid,
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
        let accounts = self.connect_all(user_id, &user, request_id).await;
        let sequence = self.load(user_id).await?.sequence();
        self.settle(user_id, sequence).await;
        Ok(LoginResult {
            token,
            user_id,
            user_name: registration.user_name.to_string(),
            accounts,
        })
    }

    async fn connect_all(
        self: &Arc<Self>,
        user_id: UserId,
        user: &User,
        request_id: Uuid,
    ) -> Vec<AccountLoginResult> {
        let attempts = user.accounts().map(|state| {
            let account = state.account.clone();
            let this = Arc::clone(self);
            async move {
                let outcome = async {
                    let secret = this.vault.get(account.account_id).await?;
                    let login = AccountLogin {
                        protocol: account.protocol,
                        server: account.server.clone(),
                        handle: account.handle.clone(),
                        credential: Credential::Password(secret),
                        contacts: Vec::new(),
                    };
                    let session = this.connect(&login).await?;
                    this.adopt(user_id, account.account_id, session, request_id).await
                }
                .await;
                if let Err(e) = &outcome {
                    tracing::info!(user = %user_id, account = %account.account_id, code = e.code(), error = %e, "account login failed");
                }
                AccountLoginResult {
                    account_id: account.account_id,
                    protocol: account.protocol,
                    handle: account.handle.to_string(),
                    outcome,
                }
            }
        });
        futures::future::join_all(attempts).await
    }

    /// Undoes the upstream side of a binding that was not recorded: logs out and destroys the
    /// secret put in the vault for it.
    async fn abandon(&self, account: AccountId, session: LiveSession) {
        session.disconnect().await;
        if let Err(e) = self.vault.destroy(self.vault.pool(), account).await {
            tracing::error!(%account, error = %e, "cannot destroy the secret of a refused binding");
        }
    }

    /// Imports a fresh connection's roster and keeps the connection, forwarding what it sees.
    /// Returns the number of contacts upstream.
    async fn adopt(
        self: &Arc<Self>,
        user: UserId,
        account: AccountId,
        session: LiveSession,
        request_id: Uuid,
    ) -> Result<usize, AppError> {
        let LiveSession {
            roster,
            mut events,
            control,
            ..
        } = session;
        let count = roster.len();
        self.sync_roster(user, account, roster, request_id).await?;
        let this = Arc::clone(self);
        let pump = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    ConnectorEvent::Presence {
                        handle,
                        availability,
                        status,
                    } => this.live.set_presence(
                        user,
                        account,
                        handle,
                        Presence {
                            availability,
                            status,
                        },
                    ),
                    ConnectorEvent::RosterChanged(roster) => {
                        if let Err(e) = this
                            .sync_roster(user, account, roster, Uuid::now_v7())
                            .await
                        {
                            tracing::warn!(%user, %account, error = %e, "roster push not applied");
                        }
                    }
                    ConnectorEvent::Message(message) => {
                        tracing::debug!(%user, %account, from = %message.from, "direct message received");
                    }
                    ConnectorEvent::Disconnected { reason } => {
                        tracing::info!(%user, %account, %reason, "upstream connection dropped");
                        this.live.dropped(user, account);
                        return;
                    }
                }
            }
        });
        self.live.attach(user, account, control, pump).await;
        Ok(count)
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
        let session = self
            .connect(&login)
            .await
            .map_err(|e| name_account(e, &account))?;
        let bound = async {
            self.vault
                .put(user, account.account_id, &input.secret)
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
        let contacts = self
            .adopt(user, account.account_id, session, caller.request_id)
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
        self.vault.destroy(self.vault.pool(), account).await?;
        self.settle(caller.user, sequence).await;
        Ok(())
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
        if stored.event.binding_change().is_none() {
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
        rows.iter()
            .map(|r| {
                let account_id = AccountId(r.try_get("account_id")?);
                Ok(AccountView {
                    account_id,
                    protocol: r.try_get("protocol")?,
                    server: r.try_get("server")?,
                    handle: r.try_get("handle")?,
                    bound_at: r.try_get("bound_at")?,
                    connected: self.live.is_connected(user, account_id),
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

    pub fn presence(&self, user: UserId, account: AccountId, handle: &str) -> Option<Presence> {
        self.live
            .presence(user, account, &Handle::from_stored(handle))
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

    /// Closes every upstream connection (server shutdown).
    pub async fn shutdown(&self) {
        self.live.detach_all().await;
    }
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
