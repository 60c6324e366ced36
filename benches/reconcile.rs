//! `cargo bench --bench reconcile`: the cost of reconciling big rosters.
//!
//! Reports, for rosters of 10,000 and 100,000 contacts:
//! - the aggregate's decision (pure CPU, no IO) for a first import of a second account (its
//!   contacts matched against the first account's, 100 of them named alike), a later
//!   reconciliation with 1 % added, 1 % removed and 1 % renamed upstream, and a sync with no
//!   change; with the number of events each writes;
//! - the time until the views show a first import: `bindAccount` of an account whose synthetic
//!   network lists that many contacts answers once the contact list shows them.
//!
//! Uses `SWITCHBOARD_TEST_DATABASE_URL` when set (scripts/test-env.sh), else a private
//! PostgreSQL in a temporary folder.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde_json::json;
use switchboard::config::Settings;
use switchboard::connectors::{
    AccountLogin, Connector, ConnectorError, ConnectorRegistry, LiveSession,
};
use switchboard::domain::ids::{AccountId, ContactId, Handle, Protocol, UserName};
use switchboard::domain::user::{BoundAccount, RosterItem, User, UserCommand, UserEvent};
use switchboard::startup::Application;

fn handle(raw: &str) -> Handle {
    Handle::parse(Protocol::Xmpp, raw).unwrap()
}

fn account(n: u128) -> BoundAccount {
    BoundAccount {
        account_id: AccountId(uuid::Uuid::from_u128(n)),
        protocol: Protocol::Xmpp,
        server: "bench.example:5222".into(),
        handle: handle(&format!("me{n}@bench.example")),
    }
}

fn item(raw: &str, name: &str) -> RosterItem {
    RosterItem {
        handle: handle(raw),
        display_name: Some(name.to_owned()),
    }
}

/// Alice with account 1 holding `n` contacts and account 2 bound, not yet imported.
fn state_with(n: usize) -> User {
    let a = account(1);
    let mut user = User::default();
    user.apply(UserEvent::UserRegistered {
        user_name: UserName::parse("alice").unwrap(),
        password_hash: "$argon2id$bench".into(),
    });
    user.apply(UserEvent::AccountBound(a.clone()));
    for i in 0..n {
        let h = handle(&format!("p{i}@a.example"));
        user.apply(UserEvent::RosterContactAdded {
            contact_id: ContactId::for_handle(a.account_id, &h),
            account_id: a.account_id,
            handle: h,
            display_name: Some(format!("Person {i}")),
            is_new: false,
        });
    }
    user.apply(UserEvent::RosterImported {
        account_id: a.account_id,
    });
    user.apply(UserEvent::AccountBound(account(2)));
    user
}

/// Account 2's roster: `n` people, the first 100 named like account 1's.
fn second_roster(n: usize) -> Vec<RosterItem> {
    (0..n)
        .map(|i| {
            let name = if i < 100 {
                format!("Person {i}")
            } else {
                format!("Other {i}")
            };
            item(&format!("q{i}@b.example"), &name)
        })
        .collect()
}

/// The same roster a while later: 1 % gone, 1 % new, 1 % renamed.
fn changed_roster(n: usize) -> Vec<RosterItem> {
    let step = 100;
    let mut roster: Vec<RosterItem> = second_roster(n)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % step != 1)
        .map(|(i, mut it)| {
            if i % step == 2 {
                it.display_name = Some(format!("Renamed {i}"));
            }
            it
        })
        .collect();
    roster.extend((0..n / step).map(|i| item(&format!("new{i}@b.example"), &format!("New {i}"))));
    roster
}

/// The median time of `runs` decisions, and the events of one.
fn decide(state: &User, roster: &[RosterItem], runs: usize) -> (Duration, Vec<UserEvent>) {
    let mut times = Vec::with_capacity(runs);
    let mut events = Vec::new();
    for _ in 0..runs {
        let command = UserCommand::SyncRoster {
            account_id: account(2).account_id,
            roster: Some(roster.to_vec()),
        };
        let started = Instant::now();
        events = state.decide(command).unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], events)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn count(events: &[UserEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.kind() == kind).count()
}

fn decisions(n: usize) -> Duration {
    let mut state = state_with(n);
    let first_roster = second_roster(n);
    let (first, events) = decide(&state, &first_roster, 3);
    println!(
        "| {n} | first import | {} | {} ({} added, {} suggestions) |",
        ms(first),
        events.len(),
        count(&events, "RosterContactAdded"),
        count(&events, "MatchSuggested")
    );
    for event in events {
        state.apply(event);
    }
    let later = changed_roster(n);
    let (again, events) = decide(&state, &later, 3);
    println!(
        "| {n} | 1 % added, removed, renamed | {} | {} ({} added, {} departed, {} renamed, {} suggestions) |",
        ms(again),
        events.len(),
        count(&events, "RosterContactAdded"),
        count(&events, "RosterContactDeparted"),
        count(&events, "RosterContactRenamed"),
        count(&events, "MatchSuggested")
    );
    for event in events {
        state.apply(event);
    }
    let (unchanged, events) = decide(&state, &later, 3);
    println!("| {n} | no change | {} | {} |", ms(unchanged), events.len());
    first
}

/// A network whose roster size is in the handle: `n10000@bench` lists 10,000 contacts.
struct Big;

#[async_trait]
impl Connector for Big {
    fn protocol(&self) -> Protocol {
        Protocol::Xmpp
    }

    async fn connect(
        &self,
        login: &AccountLogin,
        _: Duration,
    ) -> Result<LiveSession, ConnectorError> {
        let roster = common::numbered_roster(login);
        Ok(common::synthetic_session(roster))
    }
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("reconcile bench: run it with `cargo bench --bench reconcile` (skipped under cargo test)");
        return;
    }
    println!("## Reconciliation decisions (aggregate only, median of 3)\n");
    println!("| roster | sync | decision | events |\n| --- | --- | --- | --- |");
    let ten = decisions(10_000);
    let hundred = decisions(100_000);
    println!(
        "\n100,000 / 10,000 first-import decision: {:.1} × (goal ≤ 12 ×)\n",
        hundred.as_secs_f64() / ten.as_secs_f64()
    );

    let temp = common::temp_folder();
    let (url, embedded) = common::fresh_database(&temp).await;
    let settings = Settings {
        view_wait: Duration::from_secs(600),
        ..common::settings(&url, &temp)
    };
    let mut registry = ConnectorRegistry::default();
    registry.register(Arc::new(Big));
    let app = Application::build_with(settings, registry).await.unwrap();
    let (bench, stop, server) = common::serve(app, Some(Duration::from_secs(900)));
    let token = bench.register("big", json!([])).await;
    println!("## First import until the list shows it (bindAccount, whole path)\n");
    println!("| roster | bindAccount answered | events written |\n| --- | --- | --- |");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for n in [10_000usize, 100_000] {
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        let started = Instant::now();
        let bound = bench
            .gql(
                Some(&token),
                "mutation($a: AccountInput!) { bindAccount(account: $a) { rosterSize } }",
                json!({ "a": { "protocol": "XMPP", "server": "big.example:5222",
                               "handle": format!("n{n}@bench.example"), "secret": "x" } }),
            )
            .await;
        let took = started.elapsed();
        assert_eq!(bound["bindAccount"]["rosterSize"], n);
        let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        println!("| {n} | {} | {} |", ms(took), after - before);
    }
    let _ = stop.send(true);
    let _ = server.await;
    pool.close().await;
    common::drop_database(&url).await;
    if let Some(pg) = embedded {
        pg.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&temp);
}
