//! Signing up and in: register, login, authenticate; the user's sessions, logout and
//! revocation.

use std::sync::Arc;

use uuid::Uuid;

use super::accounts::name_account;
use super::{password, AccountInput, AppError, LoginResult, Origin, SessionInfo, Switchboard};
use crate::domain::ids::{UserId, UserName};
use crate::domain::metadata::Actor;
use crate::domain::user::{User, UserCommand, UserError};
use crate::secret::Secret;

impl Switchboard {
    /// Registers a user, binding the given accounts in the same commit once each has logged in
    /// upstream (all or nothing). Returns a logged-in session.
    pub async fn register(
        self: &Arc<Self>,
        user_name: &str,
        password: Secret,
        accounts: Vec<AccountInput>,
        origin: &Origin,
        request_id: Uuid,
    ) -> Result<LoginResult, AppError> {
        let user_name =
            UserName::parse(user_name).map_err(|e| AppError::bad_input("userName", e))?;
        password::validate(&password)?;
        self.admit_registration(origin).await?;
        let user = UserId::for_name(&user_name);
        let state = self.load(user).await?;
        if state.registration().is_some() {
            return Err(UserError::UserNameTaken.into());
        }
        let parsed = accounts
            .iter()
            .map(|input| Self::parse_account(input, user, &state))
            .collect::<Result<Vec<_>, _>>()?;
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
                Err(e) if failure.is_none() => {
                    failure = Some(for_anonymous(name_account(e, account)))
                }
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
            let password_hash = self.hasher.hash(password).await?;
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
        let token = self.sessions.create(user, origin).await?;
        self.sessions.record_login(user, request_id).await?;
        let held = self.hold_lease(user).await?;
        for (account, session) in live {
            if let Err(e) = self.adopt(user, &account, session, request_id, held).await {
                tracing::warn!(%user, account = %account.account_id, error = %e, "roster import failed at registration");
            }
        }
        let sequence = self.load(user).await?.sequence();
        self.settle(user, sequence).await?;
        Ok(LoginResult {
            token,
            login_id: request_id,
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
        origin: &Origin,
        request_id: Uuid,
    ) -> Result<LoginResult, AppError> {
        let refused = || AppError::Unauthenticated;
        let user_name = UserName::parse(user_name).map_err(|_| refused())?;
        let name = user_name.to_string();
        self.admit_login("user", &name, origin).await?;
        let user_id = UserId::for_name(&user_name);
        let user = self.load(user_id).await?;
        let registration = user.registration().cloned();
        let ok = self
            .hasher
            .verify(
                password,
                registration.as_ref().map(|r| r.password_hash.clone()),
            )
            .await?;
        let Some(registration) = registration.filter(|_| ok) else {
            return Err(refused());
        };
        self.login_succeeded("user", &name, origin).await?;
        let token = self.sessions.create(user_id, origin).await?;
        // The login's id is its request's: its accounts' reconciliations carry it.
        self.sessions.record_login(user_id, request_id).await?;
        if self.hold_lease(user_id).await? {
            self.supervise_all(user_id, &user, request_id, false)
                .await?;
        }
        Ok(LoginResult {
            token,
            login_id: request_id,
            user_id,
            user_name: registration.user_name.to_string(),
            accounts: self.accounts(user_id).await?,
        })
    }

    /// The live session a bearer token opens.
    pub async fn session(&self, token: &str) -> Result<crate::store::sessions::Session, AppError> {
        if let Some(session) = self.sessions.find(token).await? {
            return Ok(session);
        }
        if self.auditors.find_session(token).await?.is_some() {
            return Err(AppError::Forbidden(
                "auditors read users' data through the audit operations; they change nothing"
                    .into(),
            ));
        }
        Err(AppError::Unauthenticated)
    }

    /// The id and expiry of the live session (a user's or an auditor's) a token opens.
    pub(super) async fn any_session(
        &self,
        token: &str,
    ) -> Result<(Uuid, chrono::DateTime<chrono::Utc>), AppError> {
        if let Some(session) = self.sessions.find(token).await? {
            return Ok((session.id, session.expires_at));
        }
        match self.auditors.find_session(token).await? {
            Some(session) => Ok((session.id, session.expires_at)),
            None => Err(AppError::Unauthenticated),
        }
    }

    /// Checks that a token opens a live session, a user's or an auditor's (subscription
    /// sockets take both).
    pub async fn check_token(&self, token: &str) -> Result<(), AppError> {
        self.any_session(token).await.map(|_| ())
    }

    /// The user's live sessions, newest first.
    pub async fn sessions(&self, user: UserId) -> Result<Vec<SessionInfo>, AppError> {
        Ok(self.sessions.list(user).await?)
    }

    /// Ends the session of `token`, or every session of the user when `everywhere`. Their
    /// subscriptions end at once, on every node; the last session also closes the upstream
    /// connections.
    pub async fn logout(
        &self,
        user: UserId,
        token: &str,
        everywhere: bool,
    ) -> Result<(), AppError> {
        if everywhere {
            self.sessions.end_all(user).await?;
        } else {
            self.sessions.end(token).await?;
        }
        self.after_session_end(user).await
    }

    /// Ends the user's session `id` (`NOT_FOUND` if the user has no such live session).
    pub async fn revoke_session(&self, user: UserId, id: Uuid) -> Result<(), AppError> {
        if !self.sessions.revoke(user, id).await? {
            return Err(AppError::NotFound("no such session".into()));
        }
        self.after_session_end(user).await
    }

    /// With no session left, the user's connections end.
    async fn after_session_end(&self, user: UserId) -> Result<(), AppError> {
        if !self.sessions.any_for(user).await? {
            self.live.detach_user(user).await;
            self.leases.release(user).await?;
        }
        Ok(())
    }
}

/// What an anonymous caller may learn of a failed upstream login: that the server could not be
/// reached or did not answer as expected, or that it refused the credentials; never the socket
/// error behind it ("connection refused" against "timed out" would make registration a port
/// scanner of the server's network). The detail is logged.
fn for_anonymous(error: AppError) -> AppError {
    match error {
        AppError::UpstreamUnavailable(detail) => {
            tracing::info!(%detail, "registration: an account's server could not be reached");
            AppError::UpstreamUnavailable(
                "the account's server could not be reached, or did not answer as a server of its network; check the server and try again".into(),
            )
        }
        other => other,
    }
}
