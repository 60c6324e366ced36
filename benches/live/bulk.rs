//! Many XMPP accounts of many users logging in on one node at once, against a bare pool of
//! the same connector logging the same accounts into the same Prosody with the same
//! concurrency.
//!
//! The node's pacer gates every login attempt of every supervisor, a user's own login as much
//! as a resumption: so the node runs with `concurrency` slots and no rate limit, and the bare
//! pool runs `concurrency` logins at a time, also without a rate limit.
//!
//! A second phase times the same accounts without the `login` mutation's password checks
//! (argon2id, a deliberate cost the bare pool does not pay): the node shuts down with every
//! session live, and a new node at the same pace resumes them all.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{Connector, LiveSession};
use switchboard::secret::Secret;

use super::accounts::{xmpp_account, xmpp_login};
use super::{all_online, node, shut_down};

/// The goal: the node takes at most this many times the bare pool's time.
const GOAL_RATIO: f64 = 1.5;

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub async fn bulk_bench(temp: &std::path::Path, server: &str) {
    let accounts = var("SWITCHBOARD_BENCH_BULK_ACCOUNTS", 1000);
    let per_user = var("SWITCHBOARD_BENCH_BULK_PER_USER", 1).max(1);
    let concurrency = var("SWITCHBOARD_BENCH_BULK_CONCURRENCY", 32);
    let users = accounts.div_ceil(per_user);
    println!(
        "\n### {accounts} XMPP accounts ({users} users, {per_user} each) logging in at once, \
         {concurrency} logins at a time\n"
    );
    let bare = bare_pool(server, accounts, concurrency).await;
    println!(
        "bare pool (XmppConnector alone): {:.2} s",
        bare.as_secs_f64()
    );
    let (login, resumed) = through_the_node(temp, server, users, per_user, concurrency).await;
    let ratio = |took: Duration| {
        format!(
            "{:.2} s = {:.2}x the bare pool",
            took.as_secs_f64(),
            took.as_secs_f64() / bare.as_secs_f64()
        )
    };
    println!(
        "Switchboard node, login mutations until all ONLINE: {} (goal <= {GOAL_RATIO}x)",
        ratio(login)
    );
    println!(
        "resumed on a new node (no password checks), from its start until all ONLINE: {}",
        ratio(resumed)
    );
}

/// Logs `accounts` bench users in through the connector, `concurrency` at a time; the time
/// until the last is in. Logs them out again afterwards.
async fn bare_pool(server: &str, accounts: usize, concurrency: usize) -> Duration {
    let connector = XmppConnector::default();
    let started = Instant::now();
    let sessions: Vec<LiveSession> = futures::stream::iter(1..=accounts)
        .map(|n| {
            let login = xmpp_login(server, n);
            let connector = &connector;
            async move {
                connector
                    .connect(&login, Duration::from_secs(60))
                    .await
                    .unwrap_or_else(|e| panic!("bench{n}: {e}"))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = started.elapsed();
    futures::stream::iter(sessions)
        .for_each_concurrent(concurrency, LiveSession::disconnect)
        .await;
    took
}

/// Registers `users` users with `per_user` accounts each (untimed), logs them out, then logs
/// them all in at once: the time from the first login request until every account is ONLINE.
/// Then shuts that node down with the sessions live and starts a new one at the same pace:
/// the time from its start until every account is ONLINE again.
async fn through_the_node(
    temp: &std::path::Path,
    server: &str,
    users: usize,
    per_user: usize,
    concurrency: usize,
) -> (Duration, Duration) {
    let (url, _) = crate::common::fresh_database(temp).await;
    let key = Secret::new(switchboard::store::vault::MasterKey::generate().to_base64());
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let pace = (concurrency, f64::INFINITY);
    let count = (users * per_user) as i64;
    let (bench, stop, task) = node(&url, temp, &key, pace).await;
    let names: Vec<String> = (0..users).map(|u| format!("bulk{u}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(8, |(u, name)| {
            let bench = &bench;
            async move {
                let accounts: Vec<_> = (u * per_user + 1..=(u + 1) * per_user)
                    .map(|n| xmpp_account(server, n))
                    .collect();
                let token = bench.register(name, json!(accounts)).await;
                bench.logout(&token).await;
            }
        })
        .await;
    // Let Prosody finish the logouts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    futures::future::join_all(names.iter().map(|name| bench.login(name))).await;
    all_online(&pool, count).await;
    let login = started.elapsed();
    shut_down(stop, task).await;

    let started = Instant::now();
    let (_, stop, task) = node(&url, temp, &key, pace).await;
    all_online(&pool, count).await;
    let resumed = started.elapsed();

    shut_down(stop, task).await;
    pool.close().await;
    crate::common::drop_database(&url).await;
    (login, resumed)
}
