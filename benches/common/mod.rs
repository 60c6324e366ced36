//! What the benchmarks share (`mod common;`): a fresh database and a GraphQL client for the
//! server under test.

#![allow(dead_code)] // each bench uses a part

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use switchboard::connectors::{ConnectorError, LiveSession, Roster, RosterEntry, SessionControl};
use switchboard::domain::ids::Handle;
use switchboard::store::embedded::EmbeddedPostgres;

/// A synthetic network's session: sends nothing anywhere, never ends.
struct Idle;

#[async_trait]
impl SessionControl for Idle {
    async fn close(&self) {}
    async fn send_message(&self, _: &Handle, _: &str) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A logged-in synthetic session with this roster.
pub fn synthetic_session(roster: Vec<RosterEntry>) -> LiveSession {
    let (_tx, events) = tokio::sync::mpsc::channel(1);
    LiveSession {
        roster: Roster::Complete(roster),
        events,
        control: Arc::new(Idle),
        session_credential: None,
    }
}

/// A fresh database for one run, on the server of `SWITCHBOARD_TEST_DATABASE_URL` when set,
/// else on a private PostgreSQL in `temp` (returned: it runs while kept). Its URL first.
pub async fn fresh_database(temp: &Path) -> (String, Option<EmbeddedPostgres>) {
    let (admin_url, embedded) = match std::env::var("SWITCHBOARD_TEST_DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let pg = EmbeddedPostgres::start(temp)
                .await
                .expect("a private PostgreSQL for the bench");
            (pg.database_url(), Some(pg))
        }
    };
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let db = format!("sb_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    (format!("{base}/{db}"), embedded)
}

/// Drops a database [`fresh_database`] made.
pub async fn drop_database(url: &str) {
    let (base, db) = url.rsplit_once('/').unwrap();
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

pub struct Bench {
    /// `http://ADDRESS/graphql`.
    pub url: String,
    pub http: reqwest::Client,
}

impl Bench {
    /// One GraphQL request; panics on GraphQL errors (a bench must not measure failures).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "GraphQL errors: {body}");
        body["data"].clone()
    }
}
