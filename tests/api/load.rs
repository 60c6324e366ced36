//! The real binary on its embedded PostgreSQL, 32 clients writing, both SIGKILLed mid-write:
//! after crash recovery every acknowledged write is in the event store and the views equal a
//! full replay.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Row};
use switchboard::store::embedded::EmbeddedPostgres;

use crate::crash::views;
use tokio::process::{Child, Command};

const CLIENTS: usize = 32;
/// Load before the kill, once every client has registered.
const LOAD: Duration = Duration::from_secs(2);
const PASSWORD: &str = "correct horse battery";
const AUDITOR: &str = "loadauditor";
/// Generous: a busy 2-core machine builds beside this test.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

const SET_POLICY: &str = "mutation($v: Int) { setMatchPolicy(autoBindAt: $v) }";
const AUDIT_READ: &str =
    "query($u: String!) { auditHistory(userName: $u, first: 1) { entries { id } } }";

/// A write that records one event on the client's own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `setMatchPolicy(autoBindAt: v)`: `MatchPolicySet`. Each client's next value always
    /// differs from its previous two, so every such write records an event even when the one
    /// before it was lost to the kill.
    Policy(u8),
    /// An auditor's `auditHistory` of the user: `AuditorRead`, recorded before the read is made.
    AuditorRead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Data and no error, or `VIEWS_BEHIND` (recorded; the views were only slow to show it).
    Acknowledged { views_behind: bool },
    /// No answer, or an error: the write may or may not have been recorded.
    Unknown { before_kill: bool },
}

struct Attempt {
    write: Write,
    outcome: Outcome,
}

/// The temporary data folder. Should the test fail with servers still running, it stops the
/// embedded PostgreSQL (the server child dies with its handle) and keeps the folder to read.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("switchboard-load-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        DataDir(dir.canonicalize().unwrap())
    }

    fn server_log(&self) -> PathBuf {
        self.0.join("server.log")
    }

    fn postgres_log(&self) -> String {
        std::fs::read_to_string(self.0.join("postgres.log")).unwrap_or_default()
    }

    /// The live postmaster of this folder's cluster, if any.
    fn postmaster(&self) -> Option<u32> {
        let file = std::fs::read_to_string(self.0.join("postgres/postmaster.pid")).ok()?;
        let pid: u32 = file.lines().next()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // The pid could have been reused since: it must be PostgreSQL on this very cluster.
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("postgres") && cmdline.contains(&*self.0.to_string_lossy()))
            .then_some(pid)
    }

    /// Reaches the cluster through its socket, as the server does (while one of ours runs it).
    async fn pool(&self) -> PgPool {
        let options = PgConnectOptions::new()
            .socket(self.0.join("postgres-run"))
            .username("postgres")
            .database("switchboard");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .expect("connect to the embedded PostgreSQL through its socket")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster() {
            // Immediate shutdown: the postmaster takes its children down with it.
            let _ = std::process::Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
        }
        if std::thread::panicking() {
            eprintln!("load test: data folder kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `switchboard ARGS` on the data folder (no DATABASE_URL: the embedded PostgreSQL).
fn switchboard(data: &DataDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("SWITCHBOARD_MASTER_KEY")
        .env_remove("SWITCHBOARD_CONFIG")
        .env("SWITCHBOARD_DATA_DIR", &data.0)
        // 32 clients register and log in from 127.0.0.1.
        .env("SWITCHBOARD_THROTTLE_BASE_MS", "0")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    command
}

/// Starts `switchboard serve` and waits until it is healthy; returns it with the time that took.
async fn serve(data: &DataDir, port: u16) -> (Child, Duration) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.server_log())
        .unwrap();
    let started = Instant::now();
    let mut child = switchboard(data)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the switchboard binary starts");
    let client = reqwest::Client::new();
    while started.elapsed() < START_TIMEOUT {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return (child, started.elapsed());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited ({status}); {}", logs(data));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the server was not healthy within {START_TIMEOUT:?}; {}",
        logs(data)
    );
}

fn logs(data: &DataDir) -> String {
    let server = std::fs::read_to_string(data.server_log()).unwrap_or_default();
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    format!(
        "server log:\n{}\npostgres log:\n{}",
        tail(&server),
        tail(&data.postgres_log())
    )
}

async fn post(
    client: &reqwest::Client,
    port: u16,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value, reqwest::Error> {
    let mut request = client
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .timeout(REQUEST_TIMEOUT)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await?.json().await
}

/// Data and no error: recorded. `VIEWS_BEHIND` alone: recorded too.
fn acknowledged(body: &Value) -> Option<bool> {
    let errors = body["errors"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if errors.is_empty() && !body["data"].is_null() {
        return Some(false);
    }
    let views_behind = !errors.is_empty()
        && errors
            .iter()
            .all(|e| e["extensions"]["code"] == "VIEWS_BEHIND");
    views_behind.then_some(true)
}

/// Shared by the clients and the killer.
struct Load {
    port: u16,
    auditor_token: String,
    /// Set just before the kill: no client starts a write after it.
    killing: AtomicBool,
    /// Requests sent and not yet answered.
    outstanding: AtomicUsize,
}

/// One client: writes on its own user, one at a time, until the kill (or an answer it cannot
/// trust, after which the order of its writes in the stream would be unknown).
async fn client(load: Arc<Load>, user_name: String, token: String) -> Vec<Attempt> {
    let http = reqwest::Client::new();
    let mut attempts = Vec::new();
    let mut policies = 0u32;
    while !load.killing.load(Ordering::SeqCst) {
        let write = if attempts.len() % 4 == 3 {
            Write::AuditorRead
        } else {
            policies += 1;
            Write::Policy(u8::try_from(policies % 100 + 1).unwrap())
        };
        load.outstanding.fetch_add(1, Ordering::SeqCst);
        let answer = match write {
            Write::Policy(v) => {
                post(
                    &http,
                    load.port,
                    Some(&token),
                    SET_POLICY,
                    json!({ "v": v }),
                )
                .await
            }
            Write::AuditorRead => {
                post(
                    &http,
                    load.port,
                    Some(&load.auditor_token),
                    AUDIT_READ,
                    json!({ "u": user_name }),
                )
                .await
            }
        };
        load.outstanding.fetch_sub(1, Ordering::SeqCst);
        let outcome = match answer.ok().as_ref().and_then(acknowledged) {
            Some(views_behind) => Outcome::Acknowledged { views_behind },
            None => Outcome::Unknown {
                before_kill: !load.killing.load(Ordering::SeqCst),
            },
        };
        attempts.push(Attempt { write, outcome });
        if matches!(outcome, Outcome::Unknown { .. }) {
            break;
        }
    }
    attempts
}

/// The postmaster's children (backends, WAL writer, checkpointer…), from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so count from its closing paren.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

/// Every user's events after its registration, in stream order, as the writes they record.
async fn stored_writes(pool: &PgPool, user_id: &str) -> Vec<Write> {
    let rows = sqlx::query(
        "SELECT event_type, payload FROM events \
         WHERE aggregate_type = 'User' AND aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|row| {
            let kind: String = row.get("event_type");
            let payload: Value = row.get("payload");
            match kind.as_str() {
                "MatchPolicySet" => Write::Policy(
                    payload["MatchPolicySet"]["auto_bind_at"]
                        .as_u64()
                        .and_then(|v| u8::try_from(v).ok())
                        .unwrap_or_else(|| panic!("unexpected payload {payload}")),
                ),
                "AuditorRead" => Write::AuditorRead,
                other => panic!("unexpected event {other} in {user_id}'s stream: {payload}"),
            }
        })
        .collect()
}

/// Walks a client's attempts against its stream: an acknowledged write must be the next
/// event; a write of unknown outcome may be. Returns (lost, unknown writes found recorded);
/// panics on a recorded event no attempt explains.
fn reconcile(user: &str, attempts: &[Attempt], stored: &[Write]) -> (usize, usize) {
    let (mut next, mut lost, mut unknown_recorded) = (0, 0, 0);
    for attempt in attempts {
        let recorded = stored.get(next) == Some(&attempt.write);
        if recorded {
            next += 1;
        }
        match (attempt.outcome, recorded) {
            (Outcome::Acknowledged { .. }, false) => {
                lost += 1;
                eprintln!("load test: LOST {user}: {:?}", attempt.write);
            }
            (Outcome::Unknown { .. }, true) => unknown_recorded += 1,
            _ => {}
        }
    }
    assert_eq!(
        next,
        stored.len(),
        "{user}'s stream holds events no write explains: attempts {:?}, stored {stored:?}",
        attempts.iter().map(|a| a.write).collect::<Vec<_>>()
    );
    (lost, unknown_recorded)
}

/// Waits until every projection has applied every event.
async fn caught_up(pool: &PgPool) -> Duration {
    let started = Instant::now();
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM projection_checkpoints c WHERE EXISTS \
               (SELECT 1 FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position))) \
             + 2 - (SELECT count(*) FROM projection_checkpoints WHERE name IN ('contacts', 'history'))",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if behind == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "the projections did not catch up within {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_acknowledged_write_and_views_equal_replay() {
    let data = DataDir::new();

    // An auditor, so that a second writer (the auditor's reads) records on every user too.
    let added = switchboard(&data)
        .args(["auditor", "add", AUDITOR])
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&added.stdout);
    assert!(
        added.status.success(),
        "auditor add failed (are PostgreSQL's binaries installed?): {}\n{}",
        String::from_utf8_lossy(&added.stderr),
        logs(&data)
    );
    let auditor_password = stdout
        .lines()
        .find_map(|line| line.split_once("keep it safe): "))
        .map(|(_, password)| password.trim().to_owned())
        .expect("the auditor's password is printed");

    let port = free_port();
    let (server, _) = serve(&data, port).await;

    let http = reqwest::Client::new();
    let auditor = post(
        &http,
        port,
        None,
        "mutation($n: String!, $p: String!) { auditorLogin(name: $n, password: $p) { token } }",
        json!({ "n": AUDITOR, "p": auditor_password }),
    )
    .await
    .unwrap();
    let auditor_token = auditor["data"]["auditorLogin"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("auditor login: {auditor}"))
        .to_owned();

    let mut registrations = tokio::task::JoinSet::new();
    for index in 0..CLIENTS {
        let http = http.clone();
        registrations.spawn(async move {
            let name = format!("load{index:02}");
            let body = post(
                &http,
                port,
                None,
                "mutation($n: String!, $p: String!) { register(userName: $n, password: $p) { token user { id } } }",
                json!({ "n": name, "p": PASSWORD }),
            )
            .await
            .unwrap();
            let token = body["data"]["register"]["token"].as_str();
            let id = body["data"]["register"]["user"]["id"].as_str();
            match (token, id) {
                (Some(token), Some(id)) => (name, token.to_owned(), id.to_owned()),
                _ => panic!("register {name}: {body}"),
            }
        });
    }
    let users: Vec<(String, String, String)> = registrations.join_all().await;

    let load = Arc::new(Load {
        port,
        auditor_token,
        killing: AtomicBool::new(false),
        outstanding: AtomicUsize::new(0),
    });
    let clients: Vec<_> = users
        .iter()
        .map(|(name, token, _)| tokio::spawn(client(load.clone(), name.clone(), token.clone())))
        .collect();
    tokio::time::sleep(LOAD).await;

    // The kill: PostgreSQL (the postmaster and every child of it) and the server in one `kill`.
    let postmaster = data.postmaster().expect("the embedded PostgreSQL runs");
    let mut victims = vec![postmaster];
    victims.extend(children_of(postmaster));
    victims.push(server.id().expect("the server runs"));
    load.killing.store(true, Ordering::SeqCst);
    let in_flight = load.outstanding.load(Ordering::SeqCst);
    let killed = std::process::Command::new("kill")
        .arg("-KILL")
        .args(victims.iter().map(u32::to_string))
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {victims:?}");
    let mut server = server;
    let exit = server.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9)
    );
    drop(server);

    let mut attempts = Vec::new();
    for client in clients {
        attempts.push(client.await.unwrap());
    }

    // Restart on the same folder: the embedded PostgreSQL goes through crash recovery.
    let log_before = data.postgres_log().len();
    let (server, recovery) = serve(&data, port).await;
    let recovery_log = data.postgres_log()[log_before..].to_owned();
    assert!(
        recovery_log.contains("database system was not properly shut down"),
        "PostgreSQL did not go through crash recovery:\n{recovery_log}"
    );
    for line in recovery_log.lines().filter(|line| {
        ["interrupted", "recovery", "redo", "ready to accept"]
            .iter()
            .any(|word| line.contains(word))
    }) {
        eprintln!("load test: postgres: {line}");
    }
    let pool = data.pool().await;

    let (mut acknowledged, mut views_behind, mut unknown, mut unknown_before_kill) = (0, 0, 0, 0);
    let (mut lost, mut unknown_recorded) = (0, 0);
    for ((name, _, id), attempts) in users.iter().zip(&attempts) {
        for attempt in attempts {
            match attempt.outcome {
                Outcome::Acknowledged { views_behind: late } => {
                    acknowledged += 1;
                    views_behind += usize::from(late);
                }
                Outcome::Unknown { before_kill } => {
                    unknown += 1;
                    unknown_before_kill += usize::from(before_kill);
                }
            }
        }
        let stored = stored_writes(&pool, id).await;
        let (user_lost, user_unknown_recorded) = reconcile(name, attempts, &stored);
        lost += user_lost;
        unknown_recorded += user_unknown_recorded;
    }
    let catch_up = caught_up(&pool).await;
    let live = views(&pool).await;
    pool.close().await;

    // A full replay, on the stopped server's data, must rebuild exactly these views.
    let pid = server.id().expect("the server runs").to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let mut server = server;
    let exit = tokio::time::timeout(START_TIMEOUT, server.wait())
        .await
        .expect("the server stops within 60 s")
        .unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    let replayed = Instant::now();
    let replay = switchboard(&data).arg("replay").output().await.unwrap();
    let progress = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "replay failed: {progress}");
    assert!(progress.contains("history: rebuilt from"), "{progress}");
    let replayed = replayed.elapsed();
    let postgres = EmbeddedPostgres::start(&data.0)
        .await
        .expect("the embedded PostgreSQL starts again");
    let pool = data.pool().await;
    let rebuilt = views(&pool).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    postgres
        .stop()
        .await
        .expect("the embedded PostgreSQL stops");

    eprintln!(
        "load test: {CLIENTS} clients, {LOAD:?} of load; acknowledged writes {acknowledged} \
         ({views_behind} of them VIEWS_BEHIND); requests in flight at the kill {in_flight}; \
         writes of unknown outcome {unknown} ({unknown_recorded} found recorded, \
         {unknown_before_kill} failed before the kill); lost {lost}; recovered (healthy) in \
         {:.2} s; projections caught up {:.2} s later; {events} events, {} view rows; replay \
         {:.2} s; views equal replay: {}",
        recovery.as_secs_f64(),
        catch_up.as_secs_f64(),
        live.len(),
        replayed.as_secs_f64(),
        live == rebuilt
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(
        unknown_before_kill, 0,
        "writes failed under load before the kill"
    );
    assert!(in_flight > 0, "the kill came while no write was in flight");
    assert!(
        recovery < START_TIMEOUT,
        "recovered in {recovery:?}, more than 60 s"
    );
    assert_eq!(rebuilt, live, "the views differ from a full replay");
}
