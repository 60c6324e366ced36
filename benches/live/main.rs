//! `scripts/bench-live.sh`: what live connections cost, against real IM servers on loopback.
//!
//! Reports
//! - **login wall time**: one user with one account on each network the environment offers,
//!   from the `login` request until every account is `ONLINE`, against the slowest network's
//!   single-account login (median of several rounds; the goal is at most 1.2 times it);
//! - **resident memory per connected idle account** (`memory.rs`): this process's RSS as one
//!   user binds 1, 50 and up to 200 accounts of one network, as the slope between the steps, for
//!   every network offered; BitlBee's at the same steps with the same XMPP users, the anchor;
//!   and the bare XMPP session alone;
//! - **resumption after a restart**: 200 users with a live session and one XMPP account each;
//!   the node shuts down and a new one starts, paced as configured: the time from the new
//!   node's start until every account is `ONLINE`, and the most logins completed in any one
//!   second (each login completes within tens of milliseconds of its start here, so this is
//!   the peak of starts too, within that);
//! - **bulk login** (`bulk.rs`): 1,000 XMPP accounts of many users logging in at once, against a
//!   bare pool of the connector logging the same accounts in with the same concurrency; then
//!   the same accounts resumed on a new node (no password checks), against the same pool.
//!
//! The Switchboard node runs in this process (so its RSS is the node's). Environment, set by
//! scripts/bench-live.sh: `SWITCHBOARD_TEST_DATABASE_URL`, `SWITCHBOARD_BENCH_XMPP_SERVER`
//! (a Prosody with users bench1..benchN, password `bench-pw`), `SWITCHBOARD_BENCH_ACCOUNTS`
//! (a JSON array of one account input per network for the login bench), the test servers'
//! variables (ngIRCd, Synapse's shared secret, the Nostr relay), `SWITCHBOARD_BENCH_NOSTR_KEYS`
//! (Nostr identities the relay lets write) and `SWITCHBOARD_BENCH_BITLBEE`, `_BITLBEE_PID` and
//! `_BITLBEE_XMPP_SERVER` (BitlBee and the Prosody port it reaches) for the memory bench: see
//! `accounts.rs` and `memory.rs`.

#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod bulk;
mod memory;

use std::time::{Duration, Instant};

use accounts::{xmpp_account, Network};
use common::Bench;
use serde_json::{json, Value};
use switchboard::config::Settings;
use switchboard::secret::Secret;
use switchboard::startup::Application;

use common::PASSWORD;
const ROUNDS: usize = 7;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench-live.sh"))
}

impl Bench {
    async fn bind(&self, token: &str, account: Value) {
        self.gql(
            Some(token),
            "mutation($a: AccountInput!) { bindAccount(account: $a) { rosterSize } }",
            json!({ "a": account }),
        )
        .await;
    }

    async fn logout(&self, token: &str) {
        self.gql(Some(token), "mutation { logout }", json!({}))
            .await;
    }

    /// Logs in; the session token.
    async fn login(&self, name: &str) -> String {
        let data = self
            .gql(
                None,
                "mutation($u: String!, $p: String!) { login(userName: $u, password: $p) { token } }",
                json!({ "u": name, "p": PASSWORD }),
            )
            .await;
        data["login"]["token"].as_str().unwrap().to_owned()
    }

    /// Logs in and waits until every account is ONLINE; the time from the request to the
    /// first observation of that.
    async fn timed_login(&self, name: &str) -> (Duration, String) {
        let started = Instant::now();
        let token = self.login(name).await;
        loop {
            let data = self
                .gql(
                    Some(&token),
                    "{ accounts { status { state detail } } }",
                    json!({}),
                )
                .await;
            let accounts = data["accounts"].as_array().unwrap();
            if accounts.iter().all(|a| a["status"]["state"] == "ONLINE") {
                return (started.elapsed(), token);
            }
            for a in accounts {
                let state = a["status"]["state"].as_str().unwrap_or("");
                assert!(
                    ["CONNECTING", "ONLINE", "DISCONNECTED"].contains(&state),
                    "an account failed: {a}"
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Median login time of `name` over [`ROUNDS`] rounds, logging out in between.
    async fn login_median(&self, name: &str) -> Duration {
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            let (time, token) = self.timed_login(name).await;
            times.push(time);
            self.logout(&token).await;
        }
        times.sort();
        times[times.len() / 2]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn login_bench(bench: &Bench) {
    let accounts: Vec<Value> =
        serde_json::from_str(&env("SWITCHBOARD_BENCH_ACCOUNTS")).expect("a JSON array");
    println!("\n### Login of one user, every network at once vs each alone (median of {ROUNDS})");
    let mut slowest = Duration::ZERO;
    for (i, account) in accounts.iter().enumerate() {
        let name = format!("single{i}");
        let token = bench.register(&name, json!([account])).await;
        bench.logout(&token).await;
        let time = bench.login_median(&name).await;
        println!(
            "{:<8} alone: {}",
            account["protocol"].as_str().unwrap(),
            ms(time)
        );
        slowest = slowest.max(time);
    }
    let token = bench.register("everything", json!(accounts)).await;
    bench.logout(&token).await;
    let all = bench.login_median("everything").await;
    println!(
        "all {} at once: {}   slowest alone: {}   ratio {:.2}x (goal <= 1.2x)",
        accounts.len(),
        ms(all),
        ms(slowest),
        all.as_secs_f64() / slowest.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("live bench: run it with scripts/bench-live.sh (skipped under cargo test)");
        return;
    }
    // The live bench needs the test servers anyway (scripts/bench-live.sh starts them).
    env("SWITCHBOARD_TEST_DATABASE_URL");
    let temp = common::temp_folder();
    let (url, _) = common::fresh_database(&temp).await;
    let mut settings = Settings {
        max_db_connections: 16,
        ..common::settings(&url, &temp)
    };
    if let Ok(ca) = std::env::var("SWITCHBOARD_EXTRA_CA_FILE") {
        settings.extra_ca_file = Some(ca.into());
    }
    let app = Application::build(settings).await.unwrap();
    let (bench, stop, server) = common::serve(app, None);
    println!(
        "## Switchboard live-connection benchmark ({} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let only = std::env::var("SWITCHBOARD_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "login" {
        login_bench(&bench).await;
    }
    if only.is_empty() || only == "memory" {
        memory::memory_bench(&bench, &Network::offered()).await;
    }
    let _ = stop.send(true);
    server.await.unwrap().unwrap();
    common::drop_database(&url).await;
    if only.is_empty() || only == "resume" {
        resume_bench(&temp).await;
    }
    if only.is_empty() || only == "bulk" {
        bulk::bulk_bench(&temp, &env("SWITCHBOARD_BENCH_XMPP_SERVER")).await;
    }
}

/// A node over `url` with this login pace; its GraphQL client, stop switch and server task.
async fn node(
    url: &str,
    temp: &std::path::Path,
    key: &Secret,
    pace: (usize, f64),
) -> common::Served {
    let settings = Settings {
        max_db_connections: 16,
        master_key: Some(key.clone()),
        login_concurrency: pace.0,
        login_rate: pace.1,
        ..common::settings(url, temp)
    };
    common::serve(Application::build(settings).await.unwrap(), None)
}

/// Stops a node from [`node`] and waits until it has shut down (its leases given up).
async fn shut_down(
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
}

/// How long a bench waits for every account to be `ONLINE` (the slowest run so far took
/// about 35 s).
const ONLINE_DEADLINE: Duration = Duration::from_secs(300);

/// Waits until `count` accounts are ONLINE under a valid lease.
/// Waits until `count` accounts are `ONLINE` under a live lease; fails loudly after
/// [`ONLINE_DEADLINE`], saying where the accounts are, rather than waiting for ever.
async fn all_online(pool: &sqlx::PgPool, count: i64) {
    let deadline = std::time::Instant::now() + ONLINE_DEADLINE;
    loop {
        if std::time::Instant::now() > deadline {
            let states: Vec<(String, i64)> = sqlx::query_as(
                "SELECT s.state || CASE WHEN EXISTS (SELECT 1 FROM live_leases l \
                   WHERE l.user_id = s.user_id AND l.node_id = s.node_id AND l.expires_at > now()) \
                   THEN ' (live lease)' ELSE ' (no live lease)' END AS what, count(*) \
                   FROM account_status s GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            panic!("{count} accounts not all ONLINE after {ONLINE_DEADLINE:?}: {states:?}");
        }
        let online: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM account_status s WHERE s.state = 'ONLINE' AND EXISTS \
               (SELECT 1 FROM live_leases l WHERE l.user_id = s.user_id \
                  AND l.node_id = s.node_id AND l.expires_at > now())",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if online >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn resume_bench(temp: &std::path::Path) {
    const USERS: usize = 200;
    let server = env("SWITCHBOARD_BENCH_XMPP_SERVER");
    let (url, _) = common::fresh_database(temp).await;
    let key = Secret::new(switchboard::store::vault::MasterKey::generate().to_base64());
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    println!("\n### Resumption after a restart: {USERS} users, one XMPP account each\n");
    println!("| pace (concurrency, logins/s) | all ONLINE after the new node's start | most logins completed in one second |");
    println!("| --- | --- | --- |");
    let (bench, stop, task) = node(&url, temp, &key, (16, 20.0)).await;
    let names: Vec<usize> = (1..=USERS).collect();
    for chunk in names.chunks(8) {
        futures::future::join_all(chunk.iter().map(|n| {
            let (bench, server) = (&bench, &server);
            async move {
                let name = format!("resume{n}");
                bench
                    .register(&name, json!([xmpp_account(server, *n)]))
                    .await
            }
        }))
        .await;
    }
    all_online(&pool, USERS as i64).await;
    shut_down(stop, task).await;
    for pace in [(16, 20.0), (64, 100.0)] {
        let started = Instant::now();
        let started_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let (_, stop, task) = node(&url, temp, &key, pace).await;
        all_online(&pool, USERS as i64).await;
        let took = started.elapsed();
        let onlines: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT since FROM account_status WHERE state = 'ONLINE' AND since >= $1 ORDER BY since",
        )
        .bind(started_at)
        .fetch_all(&pool)
        .await
        .unwrap();
        let peak = onlines
            .iter()
            .enumerate()
            .map(|(i, at)| {
                onlines[i..]
                    .iter()
                    .take_while(|later| **later - *at < chrono::Duration::seconds(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        println!(
            "| {}, {}/s | {:.2} s ({} accounts) | {peak} |",
            pace.0,
            pace.1,
            took.as_secs_f64(),
            onlines.len()
        );
        shut_down(stop, task).await;
    }
    pool.close().await;
    common::drop_database(&url).await;
}
