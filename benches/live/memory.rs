//! Resident memory per connected idle account, per network: the node's RSS as one user binds
//! more and more accounts, as the slope between steps; and the bare XMPP session alone.

use std::time::Duration;

use serde_json::json;
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::Connector;

use super::accounts::{xmpp_login, Network};
use crate::common::Bench;

/// BitlBee's cost of an idle account, the goal.
const GOAL_KIB: f64 = 13.5;

/// This process's resident set size, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

async fn settled_rss() -> u64 {
    // Let the sessions finish their login chatter and the allocator settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss_kib()
}

/// The account counts measured: the slope from the middle to the last step is the result.
fn steps(network: &Network) -> [usize; 3] {
    let last = std::env::var("SWITCHBOARD_BENCH_MEMORY_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(match network {
            Network::Xmpp { .. } | Network::Irc { .. } => 200,
            // Each account is a user made upstream first, and a long-poll sync in Synapse.
            Network::Matrix { .. } | Network::Nostr { .. } => 150,
        });
    [1, 50, last]
}

pub async fn memory_bench(bench: &Bench, networks: &[Network]) {
    let only = std::env::var("SWITCHBOARD_BENCH_NETWORK").unwrap_or_default();
    println!("\n### Resident memory per connected idle account (goal <= {GOAL_KIB} KiB)\n");
    println!("| network | RSS at each step (accounts: KiB) | slope first -> middle | slope middle -> last |");
    println!("| --- | --- | --- | --- |");
    for network in networks {
        if !only.is_empty() && !only.eq_ignore_ascii_case(network.name()) {
            continue;
        }
        per_network(bench, network).await;
    }
    if let Some(Network::Xmpp { server }) = networks.first() {
        if only.is_empty() || only.eq_ignore_ascii_case("xmpp") {
            bare_xmpp_sessions(server).await;
        }
    }
}

async fn per_network(bench: &Bench, network: &Network) {
    let steps = steps(network);
    let accounts = network.accounts(steps[2]).await;
    let name = format!("memory-{}", network.name().to_lowercase());
    let token = bench.register(&name, json!([accounts[0]])).await;
    let mut rss = vec![settled_rss().await];
    let mut bound = 1;
    for &target in &steps[1..] {
        while bound < target {
            bench.bind(&token, accounts[bound].clone()).await;
            bound += 1;
        }
        rss.push(settled_rss().await);
    }
    let slope = |a: usize, b: usize| (rss[b] as f64 - rss[a] as f64) / (steps[b] - steps[a]) as f64;
    let at: Vec<String> = steps
        .iter()
        .zip(&rss)
        .map(|(n, kib)| format!("{n}: {kib}"))
        .collect();
    println!(
        "| {} | {} | {:.1} KiB | **{:.1} KiB** |",
        network.name(),
        at.join(", "),
        slope(0, 1),
        slope(1, 2)
    );
    if std::env::var_os("SWITCHBOARD_BENCH_EXIT_CONNECTED").is_some() {
        // For a heap profiler: what is still allocated at exit is what the idle accounts hold.
        println!("exiting with {bound} {} accounts connected", network.name());
        std::process::exit(0);
    }
    bench.logout(&token).await;
}

/// The same accounts through the bare connector (no supervisor, app or views): how much of
/// the per-account cost is the XMPP session itself.
async fn bare_xmpp_sessions(server: &str) {
    const SESSIONS: usize = 150;
    let before = settled_rss().await;
    let mut sessions = Vec::new();
    for n in 1..=SESSIONS {
        let login = xmpp_login(server, n);
        sessions.push(
            XmppConnector::default()
                .connect(&login, Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    let after = settled_rss().await;
    println!(
        "\nbare XmppConnector sessions, {SESSIONS} of them: {:.1} KiB per session",
        (after as f64 - before as f64) / SESSIONS as f64
    );
    for session in sessions {
        session.disconnect().await;
    }
}
