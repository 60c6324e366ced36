//! Registration, login, logout, and account bindings.

use async_graphql::{Context, Object, ID};
use uuid::Uuid;

use super::types::{Account, AccountInput, AuthPayload, BindAccountPayload, Session, User};
use super::{api, api_error, app, caller, parse_id, BearerToken, RequestId};
use crate::app::AppError;
use crate::domain::ids::AccountId;
use crate::secret::Secret;

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The logged-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let (app, caller) = caller(ctx).await?;
        let name = api(app.user_name(caller.user).await)?;
        Ok(User::new(caller.user, name))
    }

    /// The user's live sessions (logins not yet logged out, revoked or expired), newest first.
    async fn sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Session>> {
        let (app, caller) = caller(ctx).await?;
        Ok(api(app.sessions(caller.user).await)?
            .into_iter()
            .map(|s| Session::new(s, caller.session))
            .collect())
    }

    /// The user's bound third-party accounts.
    async fn accounts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Account>> {
        let (app, caller) = caller(ctx).await?;
        Ok(api(app.accounts(caller.user).await)?
            .into_iter()
            .map(Account::from)
            .collect())
    }
}

#[derive(Default)]
pub struct AccountMutation;

fn request_id(ctx: &Context<'_>) -> Uuid {
    ctx.data_opt::<RequestId>()
        .map(|r| r.0)
        .unwrap_or_else(Uuid::now_v7)
}

fn bearer<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a BearerToken> {
    ctx.data_opt::<BearerToken>()
        .ok_or_else(|| api_error(AppError::Unauthenticated))
}

fn origin(ctx: &Context<'_>) -> crate::app::Origin {
    ctx.data_opt::<crate::app::Origin>()
        .cloned()
        .unwrap_or_default()
}

fn auth_payload(result: crate::app::LoginResult) -> AuthPayload {
    AuthPayload {
        token: result.token,
        login_id: ID(result.login_id.to_string()),
        user: User::new(result.user_id, result.user_name),
        accounts: result.accounts.into_iter().map(Into::into).collect(),
    }
}

#[Object]
impl AccountMutation {
    /// Registers a user name, binding `accounts` in the same step once each has logged in
    /// upstream (all or nothing), and logs in.
    async fn register(
        &self,
        ctx: &Context<'_>,
        user_name: String,
        password: String,
        #[graphql(default)] accounts: Vec<AccountInput>,
    ) -> async_graphql::Result<AuthPayload> {
        let app = app(ctx)?;
        super::capped("accounts", &accounts, crate::app::limits::MAX_ACCOUNTS)?;
        let accounts = accounts.into_iter().map(Into::into).collect();
        let result = app
            .register(
                &user_name,
                Secret::new(password),
                accounts,
                &origin(ctx),
                request_id(ctx),
            )
            .await;
        Ok(auth_payload(api(result)?))
    }

    /// Logs in and connects every bound account, in parallel.
    async fn login(
        &self,
        ctx: &Context<'_>,
        user_name: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let app = app(ctx)?;
        let result = app
            .login(
                &user_name,
                Secret::new(password),
                &origin(ctx),
                request_id(ctx),
            )
            .await;
        Ok(auth_payload(api(result)?))
    }

    /// Ends this session; the last session also disconnects the upstream accounts.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default,
            desc = "End every session of the user, on every device, not only this one."
        )]
        everywhere: bool,
    ) -> async_graphql::Result<bool> {
        let (app, caller) = caller(ctx).await?;
        let token = bearer(ctx)?;
        api(app.logout(caller.user, &token.0, everywhere).await)?;
        Ok(true)
    }

    /// Ends one of the user's sessions (see `sessions`): its token stops working and its open
    /// subscriptions end at once. `NOT_FOUND` if the user has no such live session.
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let (app, caller) = caller(ctx).await?;
        let id = parse_id("id", &id, |u| u)?;
        api(app.revoke_session(caller.user, id).await)?;
        Ok(true)
    }

    /// Binds a third-party account after logging it in; a refused login records nothing.
    async fn bind_account(
        &self,
        ctx: &Context<'_>,
        account: AccountInput,
    ) -> async_graphql::Result<BindAccountPayload> {
        let (app, caller) = caller(ctx).await?;
        let (view, roster_size) = api(app.bind_account(caller, account.into()).await)?;
        Ok(BindAccountPayload {
            account: view.into(),
            roster_size: i32::try_from(roster_size).unwrap_or(i32::MAX),
        })
    }

    /// Gives a bound account a new secret (its password changed upstream, or its session token
    /// was revoked: status `AUTH_FAILED`). It must log in with it; then it is back online
    /// without a new login. `AUTH_FAILED` if refused, and the old secret stays.
    async fn renew_account_secret(
        &self,
        ctx: &Context<'_>,
        account_id: ID,
        secret: String,
    ) -> async_graphql::Result<Account> {
        let (app, caller) = caller(ctx).await?;
        let account = parse_id("accountId", &account_id, AccountId)?;
        let view = api(app.renew_secret(caller, account, Secret::new(secret)).await)?;
        Ok(view.into())
    }

    /// Unbinds an account: its contacts leave the list and its secret is destroyed.
    async fn unbind_account(
        &self,
        ctx: &Context<'_>,
        account_id: ID,
    ) -> async_graphql::Result<bool> {
        let (app, caller) = caller(ctx).await?;
        let account = parse_id("accountId", &account_id, AccountId)?;
        api(app.unbind_account(caller, account).await)?;
        Ok(true)
    }
}
