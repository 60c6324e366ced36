//! The GraphQL API: a schema merged from per-area objects, with thin resolvers over the
//! application layer. State comes through schema data, never a global.

pub mod accounts;
pub mod audit;
pub mod chat;
pub mod contacts;
pub mod diff;
mod expansion;
mod guard;
pub mod matching;
pub mod reports;
pub mod subscriptions;
pub mod types;

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, MergedObject, Schema};
use uuid::Uuid;

use crate::app::{AppError, Caller, Switchboard};

pub type SwitchboardSchema = Schema<Query, Mutation, subscriptions::Subscription>;

#[derive(MergedObject, Default)]
pub struct Query(
    accounts::AccountQuery,
    audit::AuditQuery,
    chat::ChatQuery,
    contacts::ContactQuery,
    diff::DiffQuery,
    matching::MatchQuery,
    reports::ReportQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    accounts::AccountMutation,
    audit::AuditMutation,
    chat::ChatMutation,
    contacts::ContactMutation,
    matching::MatchMutation,
);

/// The bearer token a request came with, if any.
#[derive(Debug, Clone)]
pub struct BearerToken(pub String);

/// Builds the schema around the application.
pub fn schema(app: Arc<Switchboard>) -> SwitchboardSchema {
    Schema::build(
        Query::default(),
        Mutation::default(),
        subscriptions::Subscription::default(),
    )
    .data(app)
    .extension(guard::SessionBound)
    .extension(expansion::BoundedExpansion)
    .limit_depth(16)
    .limit_complexity(2_000)
    .finish()
}

/// The schema in SDL, as `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        subscriptions::Subscription::default(),
    )
    .finish()
    .sdl()
}

/// Turns an application error into a GraphQL error with `extensions.code`. Internal details
/// are logged, never shown.
pub fn api_error(error: AppError) -> async_graphql::Error {
    if let AppError::Internal(detail) = &error {
        tracing::error!(%detail, "internal error");
    }
    let code = error.code();
    let recorded = match &error {
        AppError::ViewsBehind { event_id, .. } => Some(*event_id),
        _ => None,
    };
    let retry_after = match &error {
        AppError::RateLimited { retry_after } => Some(retry_after.as_secs_f64().ceil() as u64),
        _ => None,
    };
    async_graphql::Error::new(error.to_string()).extend_with(|_, e| {
        e.set("code", code);
        // Seconds until another attempt may succeed.
        if let Some(seconds) = retry_after {
            e.set("retryAfter", seconds.max(1));
        }
        // A client must not repeat a change that was made: say so, and which event it is.
        if let Some(event_id) = recorded {
            e.set("recorded", true);
            if let Some(id) = event_id {
                e.set("eventId", id);
            }
        }
    })
}

/// `Result<T, AppError>` → GraphQL result, keeping the code.
pub fn api<T>(result: Result<T, AppError>) -> async_graphql::Result<T> {
    result.map_err(api_error)
}

pub fn app<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<Switchboard>> {
    ctx.data::<Arc<Switchboard>>()
        .map_err(|_| api_error(AppError::internal("schema built without the application")))
}

/// The caller of an operation that needs a logged-in user.
pub async fn caller(ctx: &Context<'_>) -> async_graphql::Result<(Arc<Switchboard>, Caller)> {
    let app = app(ctx)?.clone();
    let token = ctx
        .data_opt::<BearerToken>()
        .ok_or_else(|| api_error(AppError::Unauthenticated))?;
    let session = api(app.session(&token.0).await)?;
    let request_id = ctx
        .data_opt::<RequestId>()
        .map(|r| r.0)
        .unwrap_or_else(Uuid::now_v7);
    Ok((
        app,
        Caller {
            user: session.user,
            session: session.id,
            request_id,
        },
    ))
}

/// The id of the HTTP request or socket message an operation came from.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

/// Refuses a list argument longer than `max` before any of it is looked at.
pub fn capped<T>(field: &str, list: &[T], max: usize) -> async_graphql::Result<()> {
    api(crate::app::limits::check_list(field, list.len(), max))
}

/// Parses an `ID` argument into a typed id.
pub fn parse_id<T>(
    field: &str,
    id: &async_graphql::ID,
    wrap: impl Fn(Uuid) -> T,
) -> async_graphql::Result<T> {
    Uuid::parse_str(id.as_str())
        .map(wrap)
        .map_err(|_| api_error(AppError::BadInput(format!("{field}: not a valid id"))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_file_matches_the_code() {
        let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .expect("schema.graphql exists at the repository root");
        assert!(
            file == super::sdl(),
            "schema.graphql is out of date: run `cargo run -- schema > schema.graphql`"
        );
    }
}
