//! `cargo bench --bench presence`: what one presence change costs with many `presenceChanged`
//! subscribers.
//!
//! For contact lists of 100 and 10,000 contacts (`SWITCHBOARD_BENCH_SIZES`): one user whose
//! synthetic network lists that many contacts, two of them merged into a meta-contact; 1,000
//! GraphQL WebSocket subscribers of `presenceChanged` on that user
//! (`SWITCHBOARD_BENCH_SUBSCRIBERS`); then 100 presence changes (`SWITCHBOARD_BENCH_CHANGES`)
//! of one member, injected at the connector, one after the other. Reports the time from the
//! change to each subscriber's receipt of it (p50/p95/p99/max over every receipt), and the CPU
//! time per change of this process (server and the 1,000 clients) and of the PostgreSQL it
//! started (when it runs its own: without `SWITCHBOARD_TEST_DATABASE_URL`).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard::config::Settings;
use switchboard::connectors::{
    AccountLogin, Availability, Connector, ConnectorError, ConnectorEvent, ConnectorRegistry,
    LiveSession,
};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::startup::Application;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The member whose presence changes, and the other member of its meta-contact.
const CHANGING: &str = "c0@big.example";
const OTHER: &str = "c1@big.example";

fn handle(raw: &str) -> Handle {
    Handle::parse(Protocol::Xmpp, raw).unwrap()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A network whose roster size is in the handle (`n10000@bench.example` lists 10,000
/// contacts) and whose sessions the bench speaks for.
#[derive(Default)]
struct Scripted {
    sessions: Mutex<HashMap<String, mpsc::Sender<ConnectorEvent>>>,
}

#[async_trait]
impl Connector for Scripted {
    fn protocol(&self) -> Protocol {
        Protocol::Xmpp
    }

    async fn connect(
        &self,
        login: &AccountLogin,
        _: Duration,
    ) -> Result<LiveSession, ConnectorError> {
        let roster = common::numbered_roster(login);
        let (session, events) = common::scripted_session(roster);
        self.sessions
            .lock()
            .unwrap()
            .insert(login.handle.as_str().to_owned(), events);
        Ok(session)
    }
}

impl Scripted {
    async fn say(&self, account: &str, contact: &str, availability: Availability) {
        let events = self.sessions.lock().unwrap()[account].clone();
        events
            .send(ConnectorEvent::Presence {
                handle: handle(contact),
                availability,
                status: None,
            })
            .await
            .unwrap();
    }
}

/// CPU time (user + system) of a process, with its reaped children's when `children`.
fn cpu_of(pid: &str, children: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let mut ticks = fields[11] + fields[12];
    if children {
        ticks += fields[13] + fields[14];
    }
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

fn parent_of(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1).map(str::to_owned)
}

/// CPU time of the PostgreSQL cluster whose postmaster is `postmaster`: it and its children.
fn cluster_cpu(postmaster: &str) -> Duration {
    let mut total = cpu_of(postmaster, true).unwrap_or_default();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.chars().all(|c| c.is_ascii_digit()) && parent_of(&pid).as_deref() == Some(postmaster)
        {
            total += cpu_of(&pid, false).unwrap_or_default();
        }
    }
    total
}

/// One receipt of the changing member's presence: subscriber, when, which availability.
type Receipt = (usize, Instant, String);

/// Opens a subscriber and forwards its receipts of [`CHANGING`] to `receipts`.
async fn subscriber(
    address: std::net::SocketAddr,
    token: &str,
    n: usize,
    receipts: mpsc::UnboundedSender<Receipt>,
) {
    let mut request = format!("ws://{address}/graphql/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    // A small read buffer, as the server's: tungstenite zero-fills the whole buffer before
    // every read, and 1,000 clients at the default 128 KiB cost this process more than the
    // server's work.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    let subscribe = json!({ "id": "p", "type": "subscribe", "payload": { "query":
        "subscription { presenceChanged { contactId handle presence { availability } metaContactId metaContactPresence { availability handle } } }" } });
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let at = Instant::now();
            let value: Value = serde_json::from_str(&text).unwrap();
            match value["type"].as_str() {
                Some("next") => {
                    let change = &value["payload"]["data"]["presenceChanged"];
                    if change["handle"] == CHANGING {
                        let availability = change["presence"]["availability"]
                            .as_str()
                            .unwrap_or("UNKNOWN")
                            .to_owned();
                        let _ = receipts.send((n, at, availability));
                    }
                }
                Some("connection_ack") | Some("ping") | Some("pong") => {}
                _ => panic!("subscriber {n}: {value}"),
            }
        }
    });
}

/// Waits until every one of `subscribers` has received `availability`; the receipt times, or
/// `None` when not all came within `wait`.
async fn receipts_of(
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
    subscribers: usize,
    availability: &str,
    wait: Duration,
) -> Option<Vec<Instant>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got: HashMap<usize, Instant> = HashMap::new();
    while got.len() < subscribers {
        let (n, at, seen) = tokio::time::timeout_at(deadline, receipts.recv())
            .await
            .ok()??;
        if seen == availability {
            got.entry(n).or_insert(at);
        }
    }
    Some(got.into_values().collect())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn fan_out(
    size: usize,
    subscribers: usize,
    changes: usize,
    url: &str,
    temp: &std::path::Path,
    postmaster: Option<&str>,
) {
    let mut settings: Settings = common::settings(url, temp);
    settings.view_wait = Duration::from_secs(600);
    settings.limits.max_subscriptions = subscribers + 10;
    let network = Arc::new(Scripted::default());
    let mut registry = ConnectorRegistry::default();
    registry.register(network.clone());
    let app = Application::build_with(settings, registry).await.unwrap();
    let address = app.address();
    let (bench, stop, server) = common::serve(app, Some(Duration::from_secs(900)));
    let account = format!("n{size}@bench.example");
    let token = bench
        .register(
            "watched",
            json!([{ "protocol": "XMPP", "server": "big.example:5222", "handle": account, "secret": "x" }]),
        )
        .await;
    let ids = bench.contact_ids(&token).await;
    let id_of = |wanted: &str| ids[wanted].clone();
    bench
        .gql(
            Some(&token),
            "mutation($c: [ID!]!) { mergeContacts(name: \"Pal\", contactIds: $c) { metaContactId } }",
            json!({ "c": [id_of(CHANGING), id_of(OTHER)] }),
        )
        .await;
    network.say(&account, OTHER, Availability::Away).await;

    let (sink, mut receipts) = mpsc::unbounded_channel();
    for n in 0..subscribers {
        subscriber(address, &token, n, sink.clone()).await;
    }
    // No "ready" answer: change until every subscriber has seen a change.
    let levels = [
        (Availability::Online, "ONLINE"),
        (Availability::DoNotDisturb, "DO_NOT_DISTURB"),
    ];
    let mut turn = 0;
    loop {
        let (level, name) = levels[turn % 2];
        turn += 1;
        network.say(&account, CHANGING, level).await;
        if receipts_of(&mut receipts, subscribers, name, Duration::from_secs(120))
            .await
            .is_some()
        {
            break;
        }
        assert!(turn < 20, "the subscribers never all started");
        while receipts.try_recv().is_ok() {}
    }
    let mut latencies = Vec::with_capacity(changes * subscribers);
    let cpu_before = cpu_of("self", false).unwrap();
    let pg_before = postmaster.map(cluster_cpu);
    let started = Instant::now();
    for _ in 0..changes {
        let (level, name) = levels[turn % 2];
        turn += 1;
        let sent = Instant::now();
        network.say(&account, CHANGING, level).await;
        let times = receipts_of(&mut receipts, subscribers, name, Duration::from_secs(600))
            .await
            .expect("every subscriber receives the change");
        latencies.extend(times.into_iter().map(|t| t - sent));
    }
    let wall = started.elapsed();
    let cpu = cpu_of("self", false).unwrap() - cpu_before;
    let pg = postmaster
        .map(cluster_cpu)
        .zip(pg_before)
        .map(|(a, b)| a - b);
    latencies.sort();
    println!(
        "| {size} | {subscribers} | {changes} | {} | {} | {} | {} | {} | {} | {} |",
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.95)),
        ms(quantile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        ms(cpu / changes as u32),
        pg.map_or("-".to_owned(), |pg| ms(pg / changes as u32)),
        ms(wall / changes as u32),
    );
    let _ = stop.send(true);
    let _ = server.await;
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "presence bench: run it with `cargo bench --bench presence` (skipped under cargo test)"
        );
        return;
    }
    let sizes: Vec<usize> = std::env::var("SWITCHBOARD_BENCH_SIZES")
        .unwrap_or_else(|_| "100,10000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("SWITCHBOARD_BENCH_SIZES: numbers"))
        .collect();
    let subscribers = env_or("SWITCHBOARD_BENCH_SUBSCRIBERS", 1000);
    let changes = env_or("SWITCHBOARD_BENCH_CHANGES", 100);
    println!("## presenceChanged fan-out: one change, {subscribers} subscribers\n");
    println!("| contacts | subscribers | changes | p50 | p95 | p99 | max | CPU/change (this process) | CPU/change (PostgreSQL) | wall/change |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for size in sizes {
        let temp = common::temp_folder();
        let (url, embedded) = common::fresh_database(&temp).await;
        let postmaster = embedded.as_ref().and_then(|_| {
            let pid = std::fs::read_to_string(temp.join("postgres/postmaster.pid")).ok()?;
            pid.lines().next().map(str::to_owned)
        });
        fan_out(
            size,
            subscribers,
            changes,
            &url,
            &temp,
            postmaster.as_deref(),
        )
        .await;
        common::drop_database(&url).await;
        if let Some(pg) = embedded {
            pg.stop().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&temp);
    }
}
