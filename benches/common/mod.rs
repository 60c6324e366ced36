//! What the benchmarks share (`mod common;`): a fresh database and a GraphQL client for the
//! server under test.

#![allow(dead_code)] // each bench uses a part

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use switchboard::config::Settings;
use switchboard::connectors::{
    AccountLogin, ConnectorError, LiveSession, OutgoingMessage, Roster, RosterEntry, Sent,
    SessionControl,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;
use switchboard::startup::Application;
use switchboard::store::embedded::EmbeddedPostgres;
use switchboard::store::vault::MasterKey;

/// A synthetic network's session: sends nothing anywhere, never ends.
struct Idle;

#[async_trait]
impl SessionControl for Idle {
    async fn close(&self) {}
    async fn send_message(&self, _: &OutgoingMessage) -> Result<Sent, ConnectorError> {
        Ok(Sent::default())
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

/// The roster a bench account's handle asks for: `n<count>@…` lists `count` contacts
/// `c0@big.example`, `c1@big.example`, … (any other handle: none).
pub fn numbered_roster(login: &AccountLogin) -> Vec<RosterEntry> {
    let n: usize = login
        .handle
        .as_str()
        .trim_start_matches('n')
        .split('@')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (0..n)
        .map(|i| RosterEntry {
            handle: Handle::parse(Protocol::Xmpp, &format!("c{i}@big.example")).unwrap(),
            display_name: Some(format!("Contact {i}")),
        })
        .collect()
}

/// A new temporary folder for one run.
pub fn temp_folder() -> PathBuf {
    let temp = std::env::temp_dir().join(format!("switchboard-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&temp).unwrap();
    temp
}

/// A server on a free loopback port over the database at `url`, with a new master key.
pub fn settings(url: &str, data_dir: &Path) -> Settings {
    Settings {
        database_url: Some(Secret::new(url.to_owned())),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        master_key: Some(Secret::new(MasterKey::generate().to_base64())),
        // Benchmarks register and log in thousands of users from one address.
        limits: switchboard::config::Limits {
            throttle_base: std::time::Duration::ZERO,
            ..Default::default()
        },
        ..Settings::default()
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

/// The password of every bench user.
pub const PASSWORD: &str = "bench password 1";

pub struct Bench {
    /// `http://ADDRESS/graphql`.
    pub url: String,
    pub http: reqwest::Client,
}

/// A node serving in the background: its bench client, what stops it, and its task.
pub type Served = (
    Bench,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Starts a built node and a bench client of it, whose requests time out after `timeout`
/// (none: reqwest's default, no limit).
pub fn serve(app: Application, timeout: Option<Duration>) -> Served {
    let mut http = reqwest::Client::builder();
    if let Some(timeout) = timeout {
        http = http.timeout(timeout);
    }
    let bench = Bench {
        url: format!("http://{}/graphql", app.address()),
        http: http.build().unwrap(),
    };
    let stop = app.stopper();
    (bench, stop, tokio::spawn(app.run_until_stopped()))
}

impl Bench {
    /// Registers `name` with [`PASSWORD`] and `accounts`; returns the session token.
    pub async fn register(&self, name: &str, accounts: Value) -> String {
        let data = self
            .gql(
                None,
                "mutation($u: String!, $p: String!, $a: [AccountInput!]!) {
                   register(userName: $u, password: $p, accounts: $a) { token } }",
                json!({ "u": name, "p": PASSWORD, "a": accounts }),
            )
            .await;
        data["register"]["token"].as_str().unwrap().to_owned()
    }

    /// The ids of the user's contacts, by handle.
    pub async fn contact_ids(&self, token: &str) -> HashMap<String, Value> {
        let list = self
            .gql(
                Some(token),
                "{ contacts { contacts { id handle } } }",
                json!({}),
            )
            .await;
        list["contacts"]["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["handle"].as_str().unwrap().to_owned(), c["id"].clone()))
            .collect()
    }

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

/// A logged-in synthetic session with this roster, and the sender of its events: what is sent
/// there reaches Switchboard as if the network had said it.
pub fn scripted_session(
    roster: Vec<RosterEntry>,
) -> (
    LiveSession,
    tokio::sync::mpsc::Sender<switchboard::connectors::ConnectorEvent>,
) {
    let (tx, events) = tokio::sync::mpsc::channel(1024);
    let session = LiveSession {
        roster: Roster::Complete(roster),
        events,
        control: Arc::new(Idle),
        session_credential: None,
    };
    (session, tx)
}
