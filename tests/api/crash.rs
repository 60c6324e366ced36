//! The real binary: killed with SIGKILL right after a mutation, it comes back with the event and
//! its view rows; a full replay equals the live views; its logs hold no secret.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use switchboard::store::vault::MasterKey;
use tokio::process::{Child, Command};

use crate::helpers::*;

pub struct Server {
    pub child: Child,
    pub address: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The release-like binary on a free port, logging to `log`, reconnecting within 2 s.
pub async fn start(database_url: &str, key: &str, log: &Path) -> Server {
    start_with(database_url, key, log, &[]).await
}

/// [`start`] with more environment variables.
pub async fn start_with(database_url: &str, key: &str, log: &Path, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("SWITCHBOARD_MASTER_KEY", key)
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .env("SWITCHBOARD_RECONNECT_MAX_SECS", "2")
        // Throttling off, as in the in-process tests' settings.
        .env("SWITCHBOARD_THROTTLE_BASE_MS", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("the switchboard binary starts");
    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{address}/healthz")).send().await {
            if r.status() == 200 {
                return Server { child, address };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the server did not become healthy; log: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

pub async fn gql(
    server: &Server,
    token: Option<&str>,
    query: &str,
    variables: serde_json::Value,
) -> Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/graphql", server.address))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Response(request.send().await.unwrap().json().await.unwrap())
}

/// Every view row, in a stable order, as text.
pub async fn views(pool: &sqlx::PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in [
        "user_view",
        "account_view",
        "meta_contact_view",
        "contact_view",
        "history_view",
    ] {
        let query = format!("SELECT t::text FROM {table} t ORDER BY t::text");
        let mut table_rows: Vec<String> = sqlx::query_scalar(&query).fetch_all(pool).await.unwrap();
        rows.push(format!("-- {table}: {}", table_rows.len()));
        rows.append(&mut table_rows);
    }
    rows
}

#[tokio::test]
async fn sigkill_after_a_mutation_loses_nothing_and_replay_equals_live() {
    let database_url = fresh_database().await;
    let key = MasterKey::generate().to_base64();
    let log: PathBuf =
        std::env::temp_dir().join(format!("switchboard-crash-{}.log", uuid::Uuid::new_v4()));

    let mut server = start(&database_url, &key, &log).await;
    let registered = gql(
        &server,
        None,
        "mutation($a: [AccountInput!]!) { register(userName: \"alice\", password: \"correct horse battery\", accounts: $a) { token } }",
        json!({ "a": [xmpp_account("alice")] }),
    )
    .await;
    let token = registered.data()["register"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = gql(&server, Some(&token), CONTACTS, json!({})).await.data()["contacts"].clone();
    let pair = vec![
        ids_of(&list, "bob@localhost")[0].clone(),
        ids_of(&list, "dave@localhost")[0].clone(),
    ];
    let merged = gql(
        &server,
        Some(&token),
        "mutation($ids: [ID!]!) { mergeContacts(name: \"Survivor\", contactIds: $ids) { metaContactId } }",
        json!({ "ids": pair }),
    )
    .await;
    let meta = merged.data()["mergeContacts"]["metaContactId"]
        .as_str()
        .unwrap()
        .to_owned();
    server.child.kill().await.expect("SIGKILL");

    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let merges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ContactsMerged'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(merges, 1, "the merge event survived the kill");

    let server = start(&database_url, &key, &log).await;
    let row: Option<String> =
        sqlx::query_scalar("SELECT name FROM meta_contact_view WHERE meta_contact_id = $1::uuid")
            .bind(&meta)
            .fetch_optional(&pool)
            .await
            .unwrap();
    assert_eq!(row.as_deref(), Some("Survivor"));
    let list = gql(&server, Some(&token), CONTACTS, json!({})).await.data()["contacts"].clone();
    assert_eq!(list["metaContacts"][0]["name"], "Survivor");
    assert_eq!(
        list["metaContacts"][0]["members"].as_array().unwrap().len(),
        2
    );
    drop(server);

    // A full replay rebuilds exactly the live views.
    let live = views(&pool).await;
    let replay = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("replay")
        .env("DATABASE_URL", &database_url)
        .env("SWITCHBOARD_MASTER_KEY", &key)
        .output()
        .await
        .unwrap();
    let progress = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{progress}");
    assert!(progress.contains("contacts: rebuilt from"), "{progress}");
    assert!(progress.contains("history: rebuilt from"), "{progress}");
    assert_eq!(views(&pool).await, live);

    // Nothing secret in the logs, at debug level.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("serving GraphQL"), "the log was captured");
    for secret in [
        xmpp_password("alice"),
        "correct horse battery".to_owned(),
        key.clone(),
    ] {
        assert!(!logs.contains(&secret), "the log shows a secret");
    }
    assert!(!logs.contains("$argon2"), "the log shows a password hash");
    let _ = std::fs::remove_file(&log);
    pool.close().await;
}
