//! `cargo bench --bench core`: throughput and latency of the event-sourced core.
//!
//! Reports
//! - mutations per second through the whole GraphQL path (HTTP, auth, command, event store,
//!   projections caught up before the answer) at 1 and 32 concurrent clients, beside the same
//!   burst as raw single-row inserts into the events table;
//! - replay rate of both projections over 100,000 events, beside reading the same events with
//!   `COPY … TO STDOUT` (the ceiling);
//! - the latency of one command for a user whose history holds 10,000 events, against a fresh
//!   user (the aggregate cache keeps it flat; the first, cold load is shown too).
//!
//! Uses `SWITCHBOARD_TEST_DATABASE_URL` when set (scripts/test-env.sh), else a private
//! PostgreSQL in a temporary folder. The upstream network is a synthetic connector: this bench
//! measures Switchboard, not an IM server. `SWITCHBOARD_BENCH_ONLY=commands`, `=write` (the
//! throughput alone) or `=replay` runs one part; `SWITCHBOARD_BENCH_SCALE=N` makes the
//! throughput runs N times longer.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::Bench;
use serde_json::{json, Value};
use switchboard::config::Settings;
use switchboard::connectors::{
    AccountLogin, Connector, ConnectorError, ConnectorRegistry, LiveSession, RosterEntry,
};
use switchboard::domain::ids::{
    AccountId, ContactId, DisplayName, Handle, MetaContactId, Protocol, UserId, UserName,
};
use switchboard::domain::user::{BoundAccount, MetaContactState, UserEvent};
use switchboard::startup::Application;
use switchboard::store::sessions::SessionStore;

use common::PASSWORD;

/// A network where every login works and the roster has four people.
struct Synthetic;

#[async_trait]
impl Connector for Synthetic {
    fn protocol(&self) -> Protocol {
        Protocol::Xmpp
    }

    async fn connect(&self, _: &AccountLogin, _: Duration) -> Result<LiveSession, ConnectorError> {
        let roster = ["ann", "ben", "cat", "dan"]
            .iter()
            .map(|n| RosterEntry {
                handle: Handle::parse(Protocol::Xmpp, &format!("{n}@bench")).unwrap(),
                display_name: None,
            })
            .collect();
        Ok(common::synthetic_session(roster))
    }
}

impl Bench {
    /// A user with a synthetic account and one meta-contact; returns (token, meta id).
    async fn user(&self, name: &str) -> (String, String) {
        let token = self
            .register(
                name,
                json!([{ "protocol": "XMPP", "server": "bench:1", "handle": format!("{name}@bench"), "secret": "x" }]),
            )
            .await;
        let list = self
            .gql(Some(&token), "{ contacts { contacts { id } } }", json!({}))
            .await;
        let ids: Vec<Value> = list["contacts"]["contacts"].as_array().unwrap()[..2]
            .iter()
            .map(|c| c["id"].clone())
            .collect();
        let merged = self
            .gql(
                Some(&token),
                "mutation($ids: [ID!]!) { mergeContacts(name: \"A\", contactIds: $ids) { metaContactId } }",
                json!({ "ids": ids }),
            )
            .await;
        (
            token,
            merged["mergeContacts"]["metaContactId"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    async fn rename(&self, token: &str, meta: &str, i: usize) {
        self.gql(
            Some(token),
            "mutation($m: ID!, $n: String!) { renameMetaContact(metaContactId: $m, name: $n) { metaContacts { name } } }",
            json!({ "m": meta, "n": format!("name {i}") }),
        )
        .await;
    }
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn p95(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() * 95 / 100]
}

async fn graphql_throughput(
    bench: &Arc<Bench>,
    clients: usize,
    per_client: usize,
    tag: &str,
) -> f64 {
    let mut users = Vec::new();
    for c in 0..clients {
        users.push(bench.user(&format!("{tag}{c}")).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = users
        .into_iter()
        .map(|(token, meta)| {
            let bench = bench.clone();
            tokio::spawn(async move {
                for i in 0..per_client {
                    bench.rename(&token, &meta, i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    per_second(clients * per_client, started.elapsed())
}

async fn raw_insert_throughput(
    pool: &sqlx::PgPool,
    clients: usize,
    per_client: usize,
    tag: &str,
) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let pool = pool.clone();
            let id = format!("{tag}-{c}");
            tokio::spawn(async move {
                for i in 0..per_client {
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                         VALUES ('RawBench', $1, $2, 'Raw', '1.0', '{\"n\": 1}', '{}')",
                    )
                    .bind(&id)
                    .bind(i as i64 + 1)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    per_second(clients * per_client, started.elapsed())
}

/// A user's events: registration, an account, two contacts, a merge, then `renames` renames.
fn synthetic_history(name: &str, password_hash: &str, renames: usize) -> (UserId, Vec<UserEvent>) {
    let user_name = UserName::parse(name).unwrap();
    let user = UserId::for_name(&user_name);
    let account = AccountId::new_random();
    let handles: Vec<Handle> = ["x@bench", "y@bench"]
        .iter()
        .map(|h| Handle::parse(Protocol::Xmpp, h).unwrap())
        .collect();
    let contacts: Vec<ContactId> = handles
        .iter()
        .map(|h| ContactId::for_handle(account, h))
        .collect();
    let meta = MetaContactId::new_random();
    let mut events = vec![
        UserEvent::UserRegistered {
            user_name,
            password_hash: password_hash.to_owned(),
        },
        UserEvent::AccountBound(BoundAccount {
            account_id: account,
            protocol: Protocol::Xmpp,
            server: "bench:1".into(),
            handle: Handle::parse(Protocol::Xmpp, &format!("{name}@bench")).unwrap(),
        }),
    ];
    for (handle, id) in handles.iter().zip(&contacts) {
        events.push(UserEvent::RosterContactAdded {
            contact_id: *id,
            account_id: account,
            handle: handle.clone(),
            display_name: None,
            is_new: false,
        });
    }
    events.push(UserEvent::RosterImported {
        account_id: account,
    });
    let mut state = MetaContactState::new(DisplayName::parse("n0").unwrap(), contacts.clone());
    events.push(UserEvent::ContactsMerged {
        meta_contact_id: meta,
        name: state.name.clone(),
        contact_ids: state.members.clone(),
    });
    for i in 1..=renames {
        let name = DisplayName::parse(&format!("n{i}")).unwrap();
        events.push(UserEvent::MetaContactRenamed {
            meta_contact_id: meta,
            before: state.clone(),
            name: name.clone(),
        });
        state.name = name;
    }
    (user, events)
}

async fn insert_history(pool: &sqlx::PgPool, user: UserId, events: &[UserEvent]) {
    let metadata =
        json!({ "actor": "admin:bench", "request_id": uuid::Uuid::now_v7().to_string() })
            .to_string();
    for (chunk_index, chunk) in events.chunks(5_000).enumerate() {
        let first = chunk_index * 5_000 + 1;
        let sequences: Vec<i64> = (first..first + chunk.len()).map(|s| s as i64).collect();
        let types: Vec<String> = chunk.iter().map(|e| e.kind().to_owned()).collect();
        let payloads: Vec<String> = chunk
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT 'User', $1, s, t, '1.0', p::jsonb, $5::jsonb FROM unnest($2::bigint[], $3::text[], $4::text[]) AS u(s, t, p)",
        )
        .bind(user.to_string())
        .bind(&sequences)
        .bind(&types)
        .bind(&payloads)
        .bind(&metadata)
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn wait_for_projections(pool: &sqlx::PgPool) {
    loop {
        let behind: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events e WHERE e.aggregate_type = 'User' AND NOT EXISTS \
               (SELECT 1 FROM projection_checkpoints c WHERE c.name = 'history' AND (e.tx_id, e.position) <= (c.tx_id, c.position)))",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if !behind {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The latency of `samples` renames for each of `users` (token, meta-contact), taken in turns,
/// so that every user's commands meet the same warm-up and the same machine.
async fn command_latency(
    bench: &Bench,
    users: &[(&str, &str)],
    samples: usize,
) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::with_capacity(samples); users.len()];
    for i in 0..samples {
        for ((token, meta), times) in users.iter().zip(&mut times) {
            let started = Instant::now();
            bench.rename(token, meta, 1_000_000 + i).await;
            times.push(started.elapsed());
        }
    }
    times
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The argon2 hash every synthetic user gets.
fn password_hash() -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    argon2::Argon2::default()
        .hash_password(PASSWORD.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string()
}

/// Mutation throughput and command latency, through a running server.
async fn command_benches(
    url: &str,
    temp: &std::path::Path,
    pool: &sqlx::PgPool,
    throughput_only: bool,
) {
    let settings = Settings {
        max_db_connections: 48,
        ..common::settings(url, temp)
    };
    let mut registry = ConnectorRegistry::default();
    registry.register(Arc::new(Synthetic));
    let app = Application::build_with(settings, registry).await.unwrap();
    let (bench, stop, server) = common::serve(app, None);
    let bench = Arc::new(bench);

    // SWITCHBOARD_BENCH_SCALE multiplies the throughput runs' length (e.g. to profile them).
    let scale: usize = std::env::var("SWITCHBOARD_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let g1 = graphql_throughput(&bench, 1, 300 * scale, "one").await;
    let r1 = raw_insert_throughput(pool, 1, 300 * scale, "one").await;
    println!(
        "mutations/s, 1 client:   GraphQL {g1:>8.0}   raw inserts {r1:>8.0}   GraphQL = {:.0} % of raw (goal 40 %)",
        100.0 * g1 / r1
    );
    let g32 = graphql_throughput(&bench, 32, 50 * scale, "many").await;
    let r32 = raw_insert_throughput(pool, 32, 50 * scale, "many").await;
    println!(
        "mutations/s, 32 clients: GraphQL {g32:>8.0}   raw inserts {r32:>8.0}   GraphQL = {:.0} % of raw (goal 60 %)",
        100.0 * g32 / r32
    );
    if throughput_only {
        let _ = stop.send(true);
        server.await.unwrap().unwrap();
        return;
    }

    // Latency: a user with 10,000 events against a fresh one.
    let (heavy, events) = synthetic_history("heavy", &password_hash(), 9_994);
    insert_history(pool, heavy, &events).await;
    wait_for_projections(pool).await;
    let heavy_token = SessionStore::new(pool.clone())
        .create(heavy, &Default::default())
        .await
        .unwrap();
    let meta: String = sqlx::query_scalar(
        "SELECT meta_contact_id::text FROM meta_contact_view WHERE user_id = $1",
    )
    .bind(heavy.0)
    .fetch_one(pool)
    .await
    .unwrap();
    let (fresh_token, fresh_meta) = bench.user("fresh").await;
    let started = Instant::now();
    bench.rename(&heavy_token, &meta, 999_999).await;
    let cold = started.elapsed();
    let mut times = command_latency(
        &bench,
        &[(&heavy_token, &meta), (&fresh_token, &fresh_meta)],
        200,
    )
    .await;
    let fresh_times = times.pop().unwrap_or_default();
    let heavy_times = times.pop().unwrap_or_default();
    println!(
        "command latency, fresh user:          p50 {}  p95 {}",
        ms(median(fresh_times.clone())),
        ms(p95(fresh_times))
    );
    println!(
        "command latency, 10,000-event user:   p50 {}  p95 {}",
        ms(median(heavy_times.clone())),
        ms(p95(heavy_times))
    );
    println!(
        "  (first command after start, loading all 10,000 events once: {})",
        ms(cold)
    );
    // Stopped before the replay, so no live runner shares its work.
    let _ = stop.send(true);
    server.await.unwrap().unwrap();
}

/// Reading every event in commit order with `COPY … TO STDOUT`: what PostgreSQL can hand over
/// at best, the ceiling of any replay. Returns (rows, bytes).
async fn copy_ceiling(pool: &sqlx::PgPool) -> (u64, u64) {
    use futures::TryStreamExt;
    let mut conn = pool.acquire().await.unwrap();
    let mut stream = conn
        .copy_out_raw(&format!(
            "COPY (SELECT aggregate_type, {} FROM events ORDER BY events.tx_id, events.position) \
             TO STDOUT",
            switchboard::store::event_store::EVENT_COLUMNS
        ))
        .await
        .unwrap();
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = stream.try_next().await.unwrap() {
        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        bytes += chunk.len() as u64;
    }
    (rows, bytes)
}

/// Replay rate of each projection from the first event, beside the COPY ceiling, over 20 users
/// of 5,000 events each (on top of what the command benches left).
async fn replay_benches(pool: &sqlx::PgPool) {
    let hash = password_hash();
    for u in 0..20 {
        let (user, events) = synthetic_history(&format!("replay{u}"), &hash, 4_995);
        insert_history(pool, user, &events).await;
    }
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'User'")
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query("VACUUM ANALYZE events")
        .execute(pool)
        .await
        .unwrap();
    // Twice: the first run also warms the cache; the second is the one to quote.
    for round in 1..=2 {
        let started = Instant::now();
        let (rows, bytes) = copy_ceiling(pool).await;
        println!(
            "round {round}: COPY ceiling   {rows:>7} events in {:>6.2} s = {:>7.0} events/s ({:.1} MiB)",
            started.elapsed().as_secs_f64(),
            per_second(rows as usize, started.elapsed()),
            bytes as f64 / (1024.0 * 1024.0)
        );
        for projection in switchboard::projections::all() {
            let started = Instant::now();
            let done =
                switchboard::projections::runner::rebuild(pool, projection.as_ref(), |_, _| {})
                    .await
                    .unwrap();
            println!(
                "round {round}: replay {:<8} {done:>7} events in {:>6.2} s = {:>7.0} events/s",
                projection.name(),
                started.elapsed().as_secs_f64(),
                per_second(done as usize, started.elapsed())
            );
        }
    }
    assert!(total >= 100_000, "replayed {total} events");
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("core bench: run it with `cargo bench --bench core` (skipped under cargo test)");
        return;
    }
    // `commands` (throughput and latency), `write` (throughput alone) or `replay` runs only
    // that part.
    let only = std::env::var("SWITCHBOARD_BENCH_ONLY").unwrap_or_default();
    let temp = common::temp_folder();
    let (url, embedded) = common::fresh_database(&temp).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    switchboard::store::migrate(&pool).await.unwrap();

    println!(
        "## Switchboard core benchmark ({} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if only.is_empty() || only == "commands" || only == "write" {
        command_benches(&url, &temp, &pool, only == "write").await;
    }
    if only.is_empty() || only == "replay" {
        replay_benches(&pool).await;
    }

    pool.close().await;
    common::drop_database(&url).await;
    if let Some(pg) = embedded {
        pg.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&temp);
}
