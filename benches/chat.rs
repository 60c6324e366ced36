//! `scripts/test-env.sh cargo bench --bench chat`: what chat costs.
//!
//! Reports
//! - **relay latency**: `sendMessage` through GraphQL (routing, the durable write, the outbox,
//!   the XMPP connector) until an independent XMPP client (bob) receives it, against bob's peer
//!   (carol) sending to him directly through the same Prosody; median and p95 of each, and the
//!   median overhead;
//! - **incoming messages stored per second**: 100 accounts of 100 users writing at once, each
//!   waiting for its message to be stored before the next (as a live connection does); and the
//!   same 100 accounts on one user, whose writes take turns on the user's change counter. Each
//!   both ways: one transaction per message, and through the server's intake (shared commits);
//! - **storage per message** (table and indexes).
//!
//! Switchboard's database is a private PostgreSQL with its default durable settings (fsync on),
//! whatever `SWITCHBOARD_TEST_DATABASE_URL` says; Prosody is the test environment's
//! (`SWITCHBOARD_TEST_XMPP_SERVER`, users alice, bob, carol).

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use switchboard::domain::ids::{AccountId, ContactId, Handle, Protocol, UserId};
use switchboard::startup::Application;
use switchboard::store::embedded::EmbeddedPostgres;
use switchboard::store::intake::Intake;
use switchboard::store::messages::{Incoming, MessageKind, MessageStore, Party};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

const ROUNDS: usize = 200;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run under scripts/test-env.sh"))
}

async fn raw(user: &str) -> Client {
    let mut client = Client::new_plaintext(
        BareJid::new(&format!("{user}@localhost")).unwrap(),
        format!("{user}-pw-7Q"),
        DnsConfig::addr(&env("SWITCHBOARD_TEST_XMPP_SERVER")),
        Timeouts::tight(),
    );
    while let Some(event) = client.next().await {
        if event.is_online() {
            break;
        }
    }
    client
        .send_stanza(Presence::available().into())
        .await
        .unwrap();
    client
}

/// Waits until `client` receives a chat message with this body.
async fn receive(client: &mut Client, body: &str) {
    let wait = async {
        while let Some(event) = client.next().await {
            if let Event::Stanza(Stanza::Message(m)) = event {
                if m.get_best_body(vec![]).is_some_and(|(_, b)| b == body) {
                    return;
                }
            }
        }
        panic!("the client ended");
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the message arrives");
}

fn quantiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 95 / 100],
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn relay_latency(url: &str, temp: &std::path::Path) {
    let app = Application::build(common::settings(url, temp))
        .await
        .unwrap();
    let (bench, stop, server) = common::serve(app, None);
    let token = bench
        .register(
            "chatbench",
            json!([{ "protocol": "XMPP", "server": env("SWITCHBOARD_TEST_XMPP_SERVER"),
                     "handle": "alice@localhost", "secret": "alice-pw-7Q" }]),
        )
        .await;
    let bob = bench
        .contact_ids(&token)
        .await
        .remove("bob@localhost")
        .expect("bob is on alice's roster");
    let mut bob_client = raw("bob").await;
    let mut carol_client = raw("carol").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut direct = Vec::new();
    let mut relayed = Vec::new();
    let mut answered = Vec::new();
    for round in 0..ROUNDS {
        let body = format!("direct {round}");
        let started = Instant::now();
        let message = Message::chat(Some(Jid::from(BareJid::new("bob@localhost").unwrap())))
            .with_body(Lang::default(), body.clone());
        carol_client.send_stanza(message.into()).await.unwrap();
        receive(&mut bob_client, &body).await;
        direct.push(started.elapsed());

        let body = format!("relayed {round}");
        let started = Instant::now();
        // Received and answered are timed apart: the answer also waits for SENT to be stored.
        let send = async {
            let sent = bench
                .gql(
                    Some(&token),
                    "mutation($to: ID!, $text: String!) { sendMessage(to: $to, text: $text) { state } }",
                    json!({ "to": bob, "text": body }),
                )
                .await;
            (sent, started.elapsed())
        };
        let delivered = async {
            receive(&mut bob_client, &body).await;
            started.elapsed()
        };
        let ((sent, answered_after), received_after) = tokio::join!(send, delivered);
        relayed.push(received_after);
        answered.push(answered_after);
        assert_eq!(sent["sendMessage"]["state"], "SENT");
    }
    let (direct_p50, direct_p95) = quantiles(direct);
    let (relay_p50, relay_p95) = quantiles(relayed);
    let (answer_p50, answer_p95) = quantiles(answered);
    println!("## Relay latency, {ROUNDS} messages each, loopback\n");
    println!("| path | p50 | p95 |\n| --- | --- | --- |");
    println!(
        "| carol → bob, directly through Prosody | {} | {} |",
        ms(direct_p50),
        ms(direct_p95)
    );
    println!(
        "| sendMessage (GraphQL, durable write, connector) → bob receives | {} | {} |",
        ms(relay_p50),
        ms(relay_p95)
    );
    println!(
        "| sendMessage answered, `SENT` stored | {} | {} |",
        ms(answer_p50),
        ms(answer_p95)
    );
    println!(
        "\nmedian overhead: {} (goal ≤ 0.5 ms)\n",
        ms(relay_p50.saturating_sub(direct_p50))
    );
    let _ = bob_client.send_end().await;
    let _ = carol_client.send_end().await;
    let _ = stop.send(true);
    let _ = server.await;
}

/// How the bench's writers store.
#[derive(Clone)]
enum Writer {
    /// One transaction per message.
    Alone(MessageStore),
    /// Through the intake's shared commits, as the server does.
    Shared(Intake),
}

/// `accounts` writers (accounts of `users` users) storing `per_account` messages each, one at
/// a time, each waiting for its message to be stored (as a live connection does); messages per
/// second.
async fn incoming_rate(writer: &Writer, users: usize, accounts: usize, per_account: usize) -> f64 {
    let started = Instant::now();
    let writers = (0..accounts).map(|a| {
        let writer = writer.clone();
        let user = UserId(uuid::Uuid::from_u128(
            (a % users) as u128 + 1 + users as u128 * 1000,
        ));
        let account = AccountId(uuid::Uuid::new_v4());
        async move {
            for i in 0..per_account {
                let handle =
                    Handle::parse(Protocol::Xmpp, &format!("p{}@bench.example", i % 10)).unwrap();
                let message = Incoming {
                    from: Party {
                        contact_id: ContactId::for_handle(account, &handle),
                        account_id: account,
                        protocol: Protocol::Xmpp,
                        handle,
                    },
                    kind: MessageKind::Text,
                    body: format!(
                        "message {i} of a bench account, about the length of a chat line"
                    ),
                    network_id: Some(uuid::Uuid::new_v4().to_string()),
                    sent_at: Utc::now(),
                };
                let stored = match &writer {
                    Writer::Alone(store) => store.record_incoming(user, &[message]).await.unwrap(),
                    Writer::Shared(intake) => intake.record(user, vec![message]).await.unwrap(),
                };
                assert_eq!(stored.len(), 1);
            }
        }
    });
    futures::future::join_all(writers).await;
    (accounts * per_account) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("chat bench: run it with `scripts/test-env.sh cargo bench --bench chat`");
        return;
    }
    let temp = common::temp_folder();
    let pg = EmbeddedPostgres::start(&temp)
        .await
        .expect("a private PostgreSQL for the bench");
    let admin = sqlx::PgPool::connect(&pg.database_url()).await.unwrap();
    sqlx::query("CREATE DATABASE sb_chat_bench")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (base, _) = pg
        .database_url()
        .rsplit_once('/')
        .map(|(b, d)| (b.to_owned(), d.to_owned()))
        .unwrap();
    let url = format!("{base}/sb_chat_bench");

    relay_latency(&url, &temp).await;

    let pool = sqlx::PgPool::connect_with(url.parse::<sqlx::postgres::PgConnectOptions>().unwrap())
        .await
        .unwrap();
    let store = MessageStore::new(pool.clone());
    println!("## Incoming messages stored (fsync on)\n");
    println!("| writers | messages | one transaction each | shared commits (the server's intake) |\n| --- | --- | --- | --- |");
    let alone = Writer::Alone(store.clone());
    let shared = Writer::Shared(Intake::start(store.clone()));
    let many = incoming_rate(&alone, 100, 100, 200).await;
    let many_shared = incoming_rate(&shared, 100, 100, 200).await;
    println!("| 100 accounts of 100 users | 20,000 | {many:.0}/s | {many_shared:.0}/s |");
    let one = incoming_rate(&alone, 1, 100, 50).await;
    let one_shared = incoming_rate(&shared, 1, 100, 50).await;
    println!("| 100 accounts of one user | 5,000 | {one:.0}/s | {one_shared:.0}/s |");
    println!("\n(goal: 10,000/s from 100 accounts)\n");

    let (bytes, count): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('messages'), (SELECT count(*) FROM messages)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    println!("## Storage\n");
    println!(
        "{count} messages take {:.1} MiB with their indexes: {:.0} bytes per message; a \
         conversation of 100 messages about {:.1} KiB.",
        bytes as f64 / 1_048_576.0,
        bytes as f64 / count as f64,
        bytes as f64 / count as f64 * 100.0 / 1024.0
    );
    pool.close().await;
    pg.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&temp);
}
