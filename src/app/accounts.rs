//! Bound accounts (bind, renew secret, unbind) and contacts kept by hand on rosterless networks.

use std::sync::Arc;

use super::{AccountInput, AccountView, AppError, Caller, Switchboard};
use crate::connectors::{AccountLogin, Credential, LiveSession, RosterEntry, RosterSource};
use crate::domain::ids::{AccountId, ContactId, DisplayName, Handle, Protocol, UserId};
use crate::domain::metadata::Actor;
use crate::domain::user::{NewAccount, User, UserCommand, UserError};
use crate::projections::contacts::ContactList;
use crate::secret::Secret;

const MAX_SERVER_LEN: usize = 255;

impl Switchboard {
    /// Checks an account as a client gave it. Its id is the one `state` (the user's aggregate)
    /// says: the account's old id when it was bound before, so its contacts come back as the
    /// same contacts.
    pub(super) fn parse_account(
        input: &AccountInput,
        user: UserId,
        state: &User,
    ) -> Result<(NewAccount, AccountLogin), AppError> {
        let handle = Handle::parse(input.protocol, &input.handle)
            .map_err(|e| AppError::bad_input("handle", e))?;
        // XMPP finds its servers from the address's domain (DNS SRV): the domain is enough.
        let server = match input.server.trim() {
            "" if input.protocol == Protocol::Xmpp => handle
                .as_str()
                .split_once('@')
                .map(|(_, domain)| domain.split('/').next().unwrap_or(domain))
                .unwrap_or_default(),
            given => given,
        };
        if server.is_empty()
            || server.len() > MAX_SERVER_LEN
            || server.chars().any(char::is_whitespace)
        {
            return Err(AppError::BadInput(format!(
                "server: must be host:port or a URL of at most {MAX_SERVER_LEN} characters"
            )));
        }
        let account = NewAccount {
            account_id: state.account_id_for(user, input.protocol, server, &handle),
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
            message_cursor: None,
        };
        Ok((account, login))
    }

    pub(super) async fn connect(&self, login: &AccountLogin) -> Result<LiveSession, AppError> {
        let connector = self.connectors.get(login.protocol)?;
        Ok(connector
            .connect(login, self.settings.supervisor.connect_timeout)
            .await?)
    }

    /// Binds an account after logging it in upstream; nothing is recorded if that fails.
    pub async fn bind_account(
        self: &Arc<Self>,
        caller: Caller,
        input: AccountInput,
    ) -> Result<(AccountView, usize), AppError> {
        let user = caller.user;
        let state = self.load(user).await?;
        let (account, login) = Self::parse_account(&input, user, &state)?;
        // Refuse a duplicate before logging in upstream.
        state
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
        self.settle(user, sequence).await?;
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
            message_cursor: None,
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
        self.settle(caller.user, sequence).await?;
        Ok(())
    }

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

    /// Removes a contact added by hand (see [`Switchboard::add_contact`]) or accepted from a
    /// message request.
    pub async fn remove_contact(
        &self,
        caller: Caller,
        contact: ContactId,
    ) -> Result<ContactList, AppError> {
        let state = self.load(caller.user).await?;
        let found = state
            .contacts()
            .get(&contact)
            .ok_or(UserError::UnknownContact(contact))?;
        let account = found.account_id;
        // A contact kept from a message request is the user's own, whatever the network.
        if let Some(bound) = state.account(account).filter(|_| !found.kept) {
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
}

/// An account's contacts as a connector's watch list (networks without a server roster).
pub(super) fn watch_list(state: &User, account: AccountId) -> Vec<RosterEntry> {
    state
        .contacts_of(account)
        .filter(|c| c.is_listed())
        .map(|c| RosterEntry {
            handle: c.handle.clone(),
            display_name: c.display_name.clone(),
        })
        .collect()
}

/// Says which account a refused login was for (the connector's own message cannot know).
pub(super) fn name_account(error: AppError, account: &NewAccount) -> AppError {
    match error {
        AppError::AuthFailed(_) => AppError::AuthFailed(format!(
            "the {} server refused the credentials of {}",
            account.protocol, account.handle
        )),
        other => other,
    }
}
