//! Shared test helpers: each test gets its own database and its own server on a free port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::PgPool;
use switchboard::config::Settings;
use switchboard::secret::Secret;
use switchboard::startup::Application;
use switchboard::store::vault::MasterKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;

/// A variable the test command (`scripts/test.sh`) sets; missing means the test cannot run,
/// which is a failure, not a skip.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts the servers")
    })
}

pub fn xmpp_server() -> String {
    env("SWITCHBOARD_TEST_XMPP_SERVER")
}

/// The password of a test user on Prosody (see scripts/test-env.sh).
pub fn xmpp_password(name: &str) -> String {
    format!("{name}-pw-7Q")
}

/// A bindable XMPP account of a Prosody test user.
pub fn xmpp_account(name: &str) -> Value {
    json!({
        "protocol": "XMPP",
        "server": xmpp_server(),
        "handle": format!("{name}@{}", env("SWITCHBOARD_TEST_XMPP_DOMAIN")),
        "secret": xmpp_password(name),
    })
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> String {
    let admin_url = env("SWITCHBOARD_TEST_DATABASE_URL");
    let admin = PgPool::connect(&admin_url)
        .await
        .expect("test PostgreSQL reachable");
    let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("URL with a database name");
    format!("{base}/{name}")
}

/// A pool on a new database with the migrations run.
pub async fn migrated_database() -> PgPool {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    switchboard::store::migrate(&pool).await.unwrap();
    pool
}

/// A transaction on `url`, left open after `statements`, holding a transaction id (so it holds
/// the cluster's snapshot xmin back) and no writing lock on `events`.
pub async fn open_transaction(
    url: &str,
    statements: &[&str],
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let pool = PgPool::connect(url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    let own: Option<String> = sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(own.is_some(), "the transaction has an id");
    tx
}

pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        database_url: Some(Secret::new(database_url)),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: std::env::temp_dir(),
        master_key: Some(Secret::new(MasterKey::generate().to_base64())),
        web_assets: std::env::var("SWITCHBOARD_WEB_ASSETS")
            .map(Into::into)
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/web/node_modules").into()),
        connect_timeout: Duration::from_secs(5),
        reconnect_max: Duration::from_secs(2),
        max_db_connections: 8,
        extra_ca_file: None,
        nip05_resolve: Vec::new(),
        view_wait: Duration::from_secs(5),
        // Throttling off: tests of other things register and log in many times from
        // 127.0.0.1. The throttling tests turn it on.
        limits: switchboard::config::Limits {
            throttle_base: Duration::ZERO,
            ..Default::default()
        },
        ..Settings::default()
    }
}

pub struct TestApp {
    pub address: SocketAddr,
    pub database_url: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    let database_url = fresh_database().await;
    spawn_app_on(&database_url).await
}

pub async fn spawn_app_on(database_url: &str) -> TestApp {
    spawn_app_with(test_settings(database_url)).await
}

/// A server with these settings: [`test_settings`], changed as a test needs.
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let database_url = settings
        .database_url
        .as_ref()
        .expect("test settings name a database")
        .expose()
        .to_owned();
    let app = Application::build(settings)
        .await
        .expect("the application builds");
    let address = app.address();
    let stop = app.stopper();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        pool: PgPool::connect(&database_url).await.expect("test pool"),
        database_url,
        http: reqwest::Client::new(),
        stop,
        server: Some(server),
    }
}

/// One GraphQL response.
#[derive(Debug, Clone)]
pub struct Response(pub Value);

impl Response {
    /// The data, panicking with the errors if there are any.
    pub fn data(&self) -> &Value {
        assert!(
            self.0.get("errors").is_none(),
            "unexpected GraphQL errors: {}",
            self.0["errors"]
        );
        &self.0["data"]
    }

    /// The `extensions.code` of the first error, panicking if there is none.
    pub fn code(&self) -> String {
        self.0["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error with a code, got {}", self.0))
            .to_owned()
    }

    pub fn message(&self) -> String {
        self.0["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn raw(&self, token: Option<&str>, query: &str, variables: Value) -> String {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("server answers");
        response.text().await.expect("a body")
    }

    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Response {
        let body = self.raw(token, query, variables).await;
        Response(serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")))
    }

    /// Registers `user_name` with the given accounts and returns the token.
    pub async fn register(&self, user_name: &str, accounts: Value) -> String {
        let response = self
            .gql(
                None,
                "mutation($u: String!, $p: String!, $a: [AccountInput!]!) {
                   register(userName: $u, password: $p, accounts: $a) { token accounts { handle status { state detail } } }
                 }",
                json!({ "u": user_name, "p": "correct horse battery", "a": accounts }),
            )
            .await;
        let data = response.data();
        for account in data["register"]["accounts"].as_array().unwrap() {
            assert_eq!(
                account["status"]["state"], "ONLINE",
                "an account is not online after registration: {account}"
            );
        }
        data["register"]["token"].as_str().unwrap().to_owned()
    }

    /// Logs `user` in (test password); the `login` payload: token and accounts with status.
    pub async fn login(&self, user: &str) -> Value {
        self.gql(
            None,
            "mutation($u: String!) { login(userName: $u, password: \"correct horse battery\") {
               token loginId accounts { handle server protocol status { state } } } }",
            json!({ "u": user }),
        )
        .await
        .data()["login"]
            .clone()
    }

    /// Ends the session of `token`.
    pub async fn logout(&self, token: &str) {
        self.gql(Some(token), "mutation { logout }", json!({}))
            .await
            .data();
    }

    /// Waits (up to 20 s) until the account with `handle` is in `state`; returns the account
    /// with its status.
    pub async fn wait_for_account(&self, token: &str, handle: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let accounts = self
                .gql(
                    Some(token),
                    "{ accounts { id handle protocol connected status { state attempt nextRetryAt detail since } } }",
                    json!({}),
                )
                .await;
            let found = accounts.data()["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["handle"] == handle)
                .cloned()
                .unwrap_or_else(|| panic!("no account {handle}"));
            if found["status"]["state"] == state {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "account {handle} never became {state}: {found}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn contacts(&self, token: &str) -> Value {
        self.gql(Some(token), CONTACTS, json!({})).await.data()["contacts"].clone()
    }

    /// The id of the user's bound account with this handle.
    pub async fn account_id(&self, token: &str, handle: &str) -> String {
        let accounts = self
            .gql(Some(token), "{ accounts { id handle } }", json!({}))
            .await;
        accounts.data()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["handle"] == handle)
            .unwrap_or_else(|| panic!("no bound account {handle}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Whether the server task is still running (it ends on a stop, an error or a panic).
    pub fn is_running(&self) -> bool {
        self.server.as_ref().is_some_and(|s| !s.is_finished())
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        self.pool.close().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub const CONTACTS: &str = "query { contacts {
    metaContacts { id name members { id accountId protocol handle displayName metaContactId isNew } }
    contacts { id accountId protocol handle displayName metaContactId isNew }
} }";

/// Handles of a contact list's single contacts, sorted.
pub fn single_handles(list: &Value) -> Vec<String> {
    let mut handles: Vec<String> = list["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["handle"].as_str().unwrap().to_owned())
        .collect();
    handles.sort();
    handles
}

/// The ids of every contact with this handle, in any meta-contact or none.
pub fn ids_of(list: &Value, handle: &str) -> Vec<String> {
    let singles = list["contacts"].as_array().unwrap().iter();
    let members = list["metaContacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["members"].as_array().unwrap().iter());
    singles
        .chain(members)
        .filter(|c| c["handle"] == handle)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

// ----- subscriptions over WebSocket (graphql-transport-ws) -------------------------------

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket upgrade request for the subscription endpoint, speaking graphql-transport-ws.
pub fn ws_request(app: &TestApp) -> Request {
    let mut request = format!("ws://{}/graphql/ws", app.address)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    request
}

pub async fn open_socket(app: &TestApp, token: &str) -> Socket {
    let request = ws_request(app);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket opens");
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    let ack = next(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

pub async fn next(socket: &mut Socket) -> Value {
    next_within(socket, Duration::from_secs(10))
        .await
        .expect("a message within 10 s")
}

/// The next message other than ping/pong, if one comes within `wait`.
pub async fn next_within(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()?
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "ping" && value["type"] != "pong" {
                return Some(value);
            }
        }
    }
}

/// Held by tests that log bob in on a network or watch his presence there: only one of them
/// may move his presence at a time.
pub static BOB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ----- the spare Prosody, which tests take down and bring back ---------------------------------

/// Held by the tests that run the spare Prosody: one at a time.
pub static SPARE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The spare Prosody of scripts/test-env.sh, run by this test so it can go down and come back.
pub struct SpareProsody {
    config: String,
    pub server: String,
    child: Option<Child>,
}

impl SpareProsody {
    pub fn new() -> Self {
        Self {
            config: env("SWITCHBOARD_TEST_XMPP_SPARE_CONFIG"),
            server: env("SWITCHBOARD_TEST_XMPP_SPARE_SERVER"),
            child: None,
        }
    }

    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("prosody")
            .args(["-F", "--config", &self.config])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prosody starts");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&self.server).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the spare Prosody did not come up on {}", self.server);
    }

    /// Stops it the hard way, as a crash or a network cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sets a user's password (the server must be down: prosodyctl writes its files).
    pub fn set_password(&self, user: &str, password: &str) {
        self.prosodyctl(&["deluser", &format!("{user}@localhost")]);
        self.register_user(user, password);
    }

    /// Creates a user (the server must be down), with no roster of its own.
    pub fn register_user(&self, user: &str, password: &str) {
        self.prosodyctl(&["register", user, "localhost", password]);
    }

    fn prosodyctl(&self, args: &[&str]) {
        assert!(self.child.is_none(), "stop the server first");
        let status = Command::new("prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("prosodyctl runs");
        assert!(status.success(), "prosodyctl {args:?} failed");
    }

    pub fn account(&self, user: &str) -> Value {
        json!({
            "protocol": "XMPP",
            "server": self.server,
            "handle": format!("{user}@localhost"),
            "secret": xmpp_password(user),
        })
    }
}

impl Drop for SpareProsody {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `accountStatusChanged` messages until `account` is ONLINE again, asserting that no
/// other account changed meanwhile; returns the states seen, in order.
pub async fn states_until_online(socket: &mut Socket, account: &str) -> Vec<String> {
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("ONLINE") {
        let message = next(socket).await;
        let changed = &message["payload"]["data"]["accountStatusChanged"];
        assert_eq!(changed["id"], account, "only {account} changes: {message}");
        states.push(changed["status"]["state"].as_str().unwrap().to_owned());
    }
    states
}
