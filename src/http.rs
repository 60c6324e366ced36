//! The HTTP surface: `/graphql` (POST queries, GET GraphiQL), `/graphql/ws` (subscriptions),
//! `/graphiql/assets/*` (GraphiQL's own files, served locally: no CDN), `/healthz`.

use std::path::PathBuf;
use std::sync::Arc;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use uuid::Uuid;

use crate::app::Switchboard;
use crate::graphql::{BearerToken, RequestId, SwitchboardSchema};

#[derive(Clone)]
struct HttpState {
    schema: SwitchboardSchema,
    app: Arc<Switchboard>,
    web_assets: Arc<PathBuf>,
}

pub fn router(schema: SwitchboardSchema, app: Arc<Switchboard>, web_assets: PathBuf) -> Router {
    let state = HttpState {
        schema,
        app,
        web_assets: Arc::new(web_assets),
    };
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(subscriptions))
        .route("/graphiql/assets/{file}", get(asset))
        .route("/healthz", get(healthz))
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
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let mut request = request.into_inner().data(request_id(&headers));
    if let Some(token) = bearer(&headers) {
        request = request.data(token);
    }
    state.schema.execute(request).await.into()
}

/// Subscriptions authenticate once, with `{"Authorization": "Bearer …"}` (or `{"token": …}`)
/// in the `connection_init` payload.
async fn subscriptions(
    State(state): State<HttpState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let app = state.app.clone();
            GraphQLWebSocket::new(socket, state.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let token = payload
                        .get("Authorization")
                        .or_else(|| payload.get("authorization"))
                        .and_then(|v| v.as_str())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .or_else(|| payload.get("token").and_then(|v| v.as_str()))
                        .ok_or_else(|| {
                            async_graphql::Error::new("connection_init needs a bearer token")
                        })?;
                    let user = app
                        .authenticate(token.trim())
                        .await
                        .map_err(crate::graphql::api_error)?;
                    let mut data = Data::default();
                    data.insert(user);
                    data.insert(BearerToken(token.trim().to_owned()));
                    Ok(data)
                })
                .serve()
        })
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

/// GraphiQL's files, by the names the page asks for, and where npm puts them.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "react.js",
        "react/umd/react.production.min.js",
        "text/javascript",
    ),
    (
        "react-dom.js",
        "react-dom/umd/react-dom.production.min.js",
        "text/javascript",
    ),
    ("graphiql.js", "graphiql/graphiql.min.js", "text/javascript"),
    ("graphiql.css", "graphiql/graphiql.min.css", "text/css"),
];

async fn asset(State(state): State<HttpState>, Path(file): Path<String>) -> Response {
    let Some((_, relative, mime)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(state.web_assets.join(relative)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(file = relative, error = %e, "GraphiQL asset missing: run scripts/web-assets.sh");
            (
                StatusCode::NOT_FOUND,
                "GraphiQL assets are not installed: run scripts/web-assets.sh\n",
            )
                .into_response()
        }
    }
}

async fn graphiql() -> Html<&'static str> {
    Html(GRAPHIQL_PAGE)
}

/// Loads only same-origin files. Set an `Authorization: Bearer …` header in the Headers tab
/// after `login`.
const GRAPHIQL_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Switchboard GraphiQL</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <link rel="stylesheet" href="/graphiql/assets/graphiql.css">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="/graphiql/assets/react.js"></script>
  <script src="/graphiql/assets/react-dom.js"></script>
  <script src="/graphiql/assets/graphiql.js"></script>
  <script>
    const fetcher = GraphiQL.createFetcher({ url: window.location.origin + '/graphql' });
    ReactDOM.createRoot(document.getElementById('graphiql')).render(
      React.createElement(GraphiQL, {
        fetcher,
        defaultEditorToolbarOpen: true,
        defaultQuery: '# Log in, then set {"Authorization": "Bearer <token>"} in Headers.\nmutation { login(userName: "alice", password: "…") { token } }\n',
      }),
    );
  </script>
</body>
</html>
"#;
