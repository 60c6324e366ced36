//! The HTTP surface: `/graphql` (POST queries, GET GraphiQL), `/graphql/ws` (subscriptions,
//! `socket`), `/graphiql/assets/*` (`graphiql`), `/audit/export/{user}`, `/metrics`, `/healthz`.
//! Request bodies are read here, within a size and a time limit, not by async-graphql-axum's
//! extractor (which reads any size).

mod graphiql;
mod serve;
mod socket;

pub use serve::serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_graphql_axum::GraphQLResponse;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use uuid::Uuid;

use crate::app::Origin;
use crate::app::{AppError, Switchboard};
use crate::config::Limits;
use crate::graphql::{BearerToken, RequestId, SwitchboardSchema};

/// Operations in one batched request, at most.
const MAX_BATCH: usize = 16;

#[derive(Clone)]
struct HttpState {
    schema: SwitchboardSchema,
    app: Arc<Switchboard>,
    web_assets: Arc<PathBuf>,
    limits: Limits,
}

pub fn router(
    schema: SwitchboardSchema,
    app: Arc<Switchboard>,
    web_assets: PathBuf,
    limits: Limits,
) -> Router {
    let state = HttpState {
        schema,
        app,
        web_assets: Arc::new(web_assets),
        limits,
    };
    Router::new()
        .route("/graphql", get(graphiql::graphiql).post(graphql))
        .route("/graphql/ws", get(socket::subscriptions))
        .route("/graphiql/assets/{file}", get(graphiql::asset))
        .route("/audit/export/{user_name}", get(export))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn bearer(headers: &HeaderMap) -> Option<BearerToken> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(BearerToken(token.trim().to_owned()))
}

fn request_id(headers: &HeaderMap) -> RequestId {
    let given = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok());
    RequestId(given.unwrap_or_else(Uuid::now_v7))
}

async fn graphql(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let refused = |(status, code, message): (StatusCode, &str, String)| {
        state.app.metrics().api_error(code);
        refuse(status, code, message)
    };
    let bytes = match read_body(&headers, body, &state.limits).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refused(refusal),
    };
    let batch: async_graphql::BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(batch) => batch,
        Err(e) => {
            return refused((
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("the body is not a GraphQL request in JSON: {e}"),
            ))
        }
    };
    if let async_graphql::BatchRequest::Batch(requests) = &batch {
        if requests.len() > MAX_BATCH {
            return refused((
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("a batch holds at most {MAX_BATCH} operations"),
            ));
        }
    }
    let origin = Origin {
        address: Some(peer.ip()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect()),
    };
    let mut batch = batch.data(request_id(&headers)).data(origin);
    if let Some(token) = bearer(&headers) {
        batch = batch.data(token);
    }
    let response = state.schema.execute_batch(batch).await;
    let responses = match &response {
        async_graphql::BatchResponse::Single(one) => std::slice::from_ref(one),
        async_graphql::BatchResponse::Batch(many) => many.as_slice(),
    };
    for error in responses.iter().flat_map(|r| &r.errors) {
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(|c| match c {
                async_graphql::Value::String(code) => Some(code.as_str()),
                _ => None,
            })
            // Parse and validation errors carry no code of ours.
            .unwrap_or("GRAPHQL_VALIDATION_FAILED");
        state.app.metrics().api_error(code);
    }
    GraphQLResponse::from(response).into_response()
}

/// A refusal before GraphQL: status, code, message.
type Refusal = (StatusCode, &'static str, String);

/// The body, read whole if it is within the size limit and arrives within the time limit;
/// otherwise the refusal to answer (413 or 408).
async fn read_body(headers: &HeaderMap, body: Body, limits: &Limits) -> Result<Bytes, Refusal> {
    let max = limits.max_body_bytes;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(limits.request_timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(e)) => Err((
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("the request body could not be read: {e}"),
        )),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            format!(
                "the request body did not arrive within {} s",
                limits.request_timeout.as_secs()
            ),
        )),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// An HTTP error answer with a GraphQL-shaped body: `{"errors": [{message, extensions.code}]}`.
fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (status, axum::Json(body)).into_response()
}

/// A user's raw event stream as JSON Lines, streamed as it is read (auditors only; the read is
/// recorded in the user's history).
async fn export(
    State(state): State<HttpState>,
    Path(user_name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return refusal(AppError::Unauthenticated);
    };
    let auditor = match state.app.auditor(&token.0).await {
        Ok(auditor) => auditor,
        Err(e) => return refusal(e),
    };
    match state
        .app
        .audit_export(&auditor, &user_name, request_id(&headers).0)
        .await
    {
        Ok(lines) => {
            let body = Body::from_stream(lines.map(|line| line.map_err(std::io::Error::other)));
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        Err(e) => refusal(e),
    }
}

/// An application error outside GraphQL: its HTTP status, with the GraphQL error shape.
fn refusal(error: AppError) -> Response {
    let status = match &error {
        AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
        AppError::Forbidden(_) => StatusCode::FORBIDDEN,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::BadInput(_) => StatusCode::BAD_REQUEST,
        AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if let AppError::Internal(detail) = &error {
        tracing::error!(%detail, "internal error");
    }
    refuse(status, error.code(), error.to_string())
}

/// The metrics, in the OpenMetrics text format Prometheus scrapes.
async fn metrics(State(state): State<HttpState>) -> Response {
    match state.app.scrape().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => refusal(e),
    }
}

async fn healthz(State(state): State<HttpState>) -> Response {
    match sqlx::query("SELECT 1").execute(state.app.pool()).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}
