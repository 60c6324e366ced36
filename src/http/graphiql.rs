//! GraphiQL, served from this server only: its page and its npm files (no CDN).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::HttpState;

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

pub(super) async fn asset(State(state): State<HttpState>, Path(file): Path<String>) -> Response {
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

pub(super) async fn graphiql() -> Html<&'static str> {
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
