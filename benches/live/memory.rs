//! Resident memory per connected idle account, per network: the node's RSS as one user binds
//! more and more accounts, as the slope between steps; and the bare XMPP session alone. The
//! anchor, BitlBee logging the same Prosody users in, is measured the same way in the same run.

use std::time::Duration;

use serde_json::json;
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::Connector;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::accounts::{xmpp_login, Network};
use crate::common::Bench;
use crate::env;

/// A process's resident set size, in KiB: `pid` is a pid or `self`.
fn rss_kib(pid: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("VmRSS in {path}"))
}

async fn settled_rss(pid: &str) -> u64 {
    // Let the sessions finish their login chatter and the allocator settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss_kib(pid)
}

/// One table row: the RSS at each step, and the slopes first -> middle and middle -> last.
fn row(name: &str, steps: [usize; 3], rss: &[u64]) -> f64 {
    let slope = |a: usize, b: usize| (rss[b] as f64 - rss[a] as f64) / (steps[b] - steps[a]) as f64;
    let at: Vec<String> = steps
        .iter()
        .zip(rss)
        .map(|(n, kib)| format!("{n}: {kib}"))
        .collect();
    println!(
        "| {name} | {} | {:.1} KiB | **{:.1} KiB** |",
        at.join(", "),
        slope(0, 1),
        slope(1, 2)
    );
    slope(1, 2)
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
    // The middle step needs accounts after it for a slope.
    let last: usize = last;
    assert!(
        last > 50,
        "SWITCHBOARD_BENCH_MEMORY_ACCOUNTS must be above 50 (the middle step), not {last}"
    );
    [1, 50, last]
}

pub async fn memory_bench(bench: &Bench, networks: &[Network]) {
    let only = std::env::var("SWITCHBOARD_BENCH_NETWORK").unwrap_or_default();
    println!("\n### Resident memory per connected idle account (goal: BitlBee's, below)\n");
    println!("| network | RSS at each step (accounts: KiB) | slope first -> middle | slope middle -> last |");
    println!("| --- | --- | --- | --- |");
    let mut anchor = None;
    for network in networks {
        if !only.is_empty() && !only.eq_ignore_ascii_case(network.name()) {
            continue;
        }
        per_network(bench, network).await;
        if let Network::Xmpp { .. } = network {
            anchor = Some(bitlbee_xmpp(steps(network)).await);
        }
    }
    if let Some(kib) = anchor {
        println!("\nanchor: BitlBee, same Prosody, same run: {kib:.1} KiB per idle account");
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
    let mut rss = vec![settled_rss("self").await];
    let mut bound = 1;
    for &target in &steps[1..] {
        while bound < target {
            bench.bind(&token, accounts[bound].clone()).await;
            bound += 1;
        }
        rss.push(settled_rss("self").await);
    }
    row(network.name(), steps, &rss);
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
    let before = settled_rss("self").await;
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
    let after = settled_rss("self").await;
    println!(
        "\nbare XmppConnector sessions, {SESSIONS} of them: {:.1} KiB per session",
        (after as f64 - before as f64) / SESSIONS as f64
    );
    for session in sessions {
        session.disconnect().await;
    }
}

/// BitlBee (scripts/bench-live.sh starts it) logging the bench Prosody's users in, driven as
/// its IRC client: its RSS at the same steps as ours, as a row of the table; the slope middle
/// -> last.
async fn bitlbee_xmpp(steps: [usize; 3]) -> f64 {
    let pid = env("SWITCHBOARD_BENCH_BITLBEE_PID");
    let prosody = env("SWITCHBOARD_BENCH_BITLBEE_XMPP_SERVER");
    let (host, port) = prosody.rsplit_once(':').expect("host:port");
    let mut irc = Irc::connect(&env("SWITCHBOARD_BENCH_BITLBEE")).await;
    irc.until(|line| line.contains(" JOIN :&bitlbee")).await;
    let (mut added, mut logged_in, mut rss) = (0, 0, Vec::new());
    for target in steps {
        while added < target {
            // BitlBee numbers accounts from 0 in the order added; this session adds them all.
            irc.send(&format!(
                "account add jabber bench{}@localhost bench-pw",
                added + 1
            ))
            .await;
            for setting in [
                format!("server {host}"),
                format!("port {port}"),
                "tls false".into(),
            ] {
                irc.send(&format!("account {added} set {setting}")).await;
            }
            irc.send(&format!("account {added} on")).await;
            added += 1;
        }
        // "jabber7 - Logging in: Logged in", once per account; "Signing off.." when one fails.
        tokio::time::timeout(Duration::from_secs(120), async {
            while logged_in < target {
                let line = irc.until(|line| line.contains(" - Logging in: ")).await;
                assert!(
                    !line.contains("Signing off"),
                    "a BitlBee account failed: {line}"
                );
                logged_in += usize::from(line.ends_with("Logging in: Logged in"));
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("BitlBee: {logged_in} of {target} accounts logged in after 2 minutes")
        });
        rss.push(settled_rss(&pid).await);
    }
    row("XMPP via BitlBee (anchor)", steps, &rss)
}

/// A plain IRC client of BitlBee's, as a user in its `&bitlbee` control channel.
struct Irc {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Irc {
    async fn connect(address: &str) -> Irc {
        let stream = TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("BitlBee at {address}: {e}"));
        let (read, write) = stream.into_split();
        let mut irc = Irc {
            lines: BufReader::new(read).lines(),
            write,
        };
        irc.write_line("NICK bench").await;
        irc.write_line("USER bench 0 * :bench").await;
        irc
    }

    async fn write_line(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("writing to BitlBee");
    }

    /// A command in the control channel.
    async fn send(&mut self, command: &str) {
        self.write_line(&format!("PRIVMSG &bitlbee :{command}"))
            .await;
    }

    /// The next line that `wanted` accepts, answering PINGs on the way.
    async fn until(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .expect("reading from BitlBee")
                .expect("BitlBee closed the connection");
            if let Some(token) = line.strip_prefix("PING ") {
                self.write_line(&format!("PONG {token}")).await;
            } else if wanted(&line) {
                return line;
            }
        }
    }
}
