//! Connections that outlive restarts: a user with a live session stays connected across a
//! graceful restart (no login needed), and when the node holding the connections is killed,
//! another node on the same database takes them over once the lease runs out, without ever
//! two connections of the account at once (as the XMPP server itself shows them).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use switchboard::secret::Secret;
use switchboard::store::vault::MasterKey;
use tokio::sync::mpsc;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::{Event, Stanza};

use crate::common::xmpp_client::raw_client;
use crate::crash;
use crate::helpers::*;

#[tokio::test]
async fn a_graceful_restart_resumes_a_live_session_and_a_logout_ends_it() {
    let settings = test_settings(&fresh_database().await);
    let first = spawn_app_with(settings.clone()).await;
    let token = first
        .register("resumer", json!([xmpp_account("dave")]))
        .await;
    first
        .wait_for_account(&token, "dave@localhost", "ONLINE")
        .await;
    first.stop().await;

    // Nobody logs in: the new node resumes the session's accounts by itself.
    let started = tokio::time::Instant::now();
    let second = spawn_app_with(settings.clone()).await;
    second
        .wait_for_account(&token, "dave@localhost", "ONLINE")
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "online again after {took:?}"
    );

    // After a logout (the last session) and a restart, nothing is resumed.
    second.logout(&token).await;
    second.stop().await;
    let third = spawn_app_with(settings).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM live_leases")
        .fetch_one(&third.pool)
        .await
        .unwrap();
    assert_eq!(
        leases, 0,
        "nobody holds the connections of a user without a session"
    );
    let online: i64 =
        sqlx::query_scalar("SELECT count(*) FROM account_status WHERE state <> 'DISCONNECTED'")
            .fetch_one(&third.pool)
            .await
            .unwrap();
    assert_eq!(online, 0);
    third.stop().await;
}

/// Every change in the number of `user`'s other available resources, as the user's own raw
/// client sees them (the server sends a new session the presence of the account's others).
async fn watch_sessions(
    user: &'static str,
) -> (mpsc::UnboundedReceiver<usize>, tokio::task::JoinHandle<()>) {
    let mut observer = raw_client(&xmpp_server(), user, &xmpp_password(user)).await;
    observer
        .send_stanza(Presence::available().into())
        .await
        .unwrap();
    let own = observer.bound_jid().map(|jid| jid.to_string());
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut online: HashSet<String> = HashSet::new();
        while let Some(event) = observer.next().await {
            let Event::Stanza(Stanza::Presence(p)) = event else {
                continue;
            };
            let Some(from) = p.from.clone() else { continue };
            let resource = from.to_string();
            if Some(&resource) == own.as_ref()
                || from.to_bare().as_str() != format!("{user}@localhost")
            {
                continue;
            }
            let changed = match p.type_ {
                PresenceType::None => online.insert(resource),
                PresenceType::Unavailable => online.remove(&resource),
                _ => false,
            };
            if changed && tx.send(online.len()).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

#[tokio::test]
async fn a_killed_nodes_users_are_taken_over_by_another_with_one_session_at_a_time() {
    let database_url = fresh_database().await;
    let key = MasterKey::generate().to_base64();
    let log: PathBuf =
        std::env::temp_dir().join(format!("switchboard-takeover-{}.log", uuid::Uuid::new_v4()));
    let lease = [("SWITCHBOARD_LEASE_SECS", "3")];
    let doomed = crash::start_with(&database_url, &key, &log, &lease).await;
    let (mut sessions, watcher) = watch_sessions("lea").await;

    let registered = crash::gql(
        &doomed,
        None,
        "mutation($a: [AccountInput!]!) { register(userName: \"taken\", password: \"correct horse battery\", accounts: $a) { token } }",
        json!({ "a": [xmpp_account("lea")] }),
    )
    .await;
    let token = registered.data()["register"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let count = tokio::time::timeout(Duration::from_secs(10), sessions.recv())
        .await
        .expect("the first node's session shows")
        .unwrap();
    assert_eq!(count, 1);

    // The second node runs beside it: it must not connect while the first holds the lease.
    let mut settings = test_settings(&database_url);
    settings.master_key = Some(Secret::new(key.clone()));
    settings.lease_ttl = Duration::from_secs(3);
    let survivor = spawn_app_with(settings).await;
    // What a client of the survivor is told about the account from here on.
    let mut socket = open_socket(&survivor, &token).await;
    send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": { "query":
            "subscription { accountStatusChanged { id handle status { state } } }" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        sessions.try_recv().is_err(),
        "the second node stays off while the first holds the lease"
    );

    let mut killed = doomed;
    killed.child.kill().await.expect("SIGKILL");
    let killed_at = tokio::time::Instant::now();
    // The kill closes the socket: the session goes, then the survivor's comes.
    let mut seen = Vec::new();
    let back = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(count) = sessions.recv().await {
            seen.push(count);
            assert!(count <= 1, "two sessions at once: {seen:?}");
            if count == 1 {
                return;
            }
        }
    })
    .await;
    assert!(back.is_ok(), "never taken over: {seen:?}");
    let took = killed_at.elapsed();
    let account = survivor
        .wait_for_account(&token, "lea@localhost", "ONLINE")
        .await;
    assert_eq!(account["connected"], true);
    // The story the subscription told: the takeover reconnecting, then online.
    let told = states_until_online(&mut socket, account["id"].as_str().unwrap()).await;
    assert_eq!(
        told.first().map(String::as_str),
        Some("RECONNECTING"),
        "{told:?}"
    );
    assert!(!told.iter().any(|s| s == "DISCONNECTED"), "{told:?}");
    // The lease time (3 s) plus one look (2 s) plus one login.
    assert!(took < Duration::from_secs(10), "taken over after {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sessions.try_recv().is_err(), "still one session");

    survivor.logout(&token).await;
    survivor.stop().await;
    watcher.abort();
}

/// The account's state as `node` shows it, every 50 ms, until `done`: the longest stretch it
/// read `DISCONNECTED`, and the states seen in order (repeats left out).
async fn sample_states(
    node: &TestApp,
    token: &str,
    done: impl std::future::Future<Output = ()>,
) -> (Duration, Vec<String>) {
    let mut states: Vec<String> = Vec::new();
    let mut longest = Duration::ZERO;
    let mut since: Option<tokio::time::Instant> = None;
    let mut finished = false;
    tokio::pin!(done);
    loop {
        let answer = node
            .gql(Some(token), "{ accounts { status { state } } }", json!({}))
            .await;
        let state = answer.data()["accounts"][0]["status"]["state"]
            .as_str()
            .unwrap()
            .to_owned();
        let now = tokio::time::Instant::now();
        match (state == "DISCONNECTED", since) {
            (true, None) => since = Some(now),
            (false, Some(from)) => {
                longest = longest.max(now - from);
                since = None;
            }
            _ => {}
        }
        if states.last() != Some(&state) {
            states.push(state);
        }
        if finished {
            break;
        }
        // Once `done`, one more look: the state it ended on.
        tokio::select! {
            () = &mut done => finished = true,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    if let Some(from) = since {
        longest = longest.max(from.elapsed());
    }
    (longest, states)
}

/// The node holding the connections (one lease: one user in these tests).
async fn holder(node: &TestApp) -> uuid::Uuid {
    sqlx::query_scalar("SELECT node_id FROM live_leases")
        .fetch_one(&node.pool)
        .await
        .expect("one node holds the user")
}

/// Stops `stopping` gracefully while `taking` shows mia's account every 50 ms: it is never
/// `DISCONNECTED` for 2 s or more, and ends `ONLINE`. Returns the node holding it then.
async fn hand_over(stopping: TestApp, taking: &TestApp, token: &str) -> uuid::Uuid {
    let (gap, states) = sample_states(taking, token, async {
        stopping.stop().await;
        taking
            .wait_for_account(token, "mia@localhost", "ONLINE")
            .await;
    })
    .await;
    assert!(
        gap < Duration::from_secs(2),
        "disconnected for {gap:?}: {states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("ONLINE"),
        "{states:?}"
    );
    holder(taking).await
}

#[tokio::test]
async fn a_rolling_restart_of_two_nodes_keeps_the_account_connected_but_for_the_reconnects() {
    let settings = test_settings(&fresh_database().await);
    let (mut sessions, watcher) = watch_sessions("mia").await;
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = tokio::spawn({
        let most = std::sync::Arc::clone(&most);
        async move {
            while let Some(count) = sessions.recv().await {
                most.fetch_max(count, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let first = spawn_app_with(settings.clone()).await;
    let second = spawn_app_with(settings.clone()).await;
    let token = first
        .register("rolling", json!([xmpp_account("mia")]))
        .await;
    first
        .wait_for_account(&token, "mia@localhost", "ONLINE")
        .await;

    let before = holder(&second).await;
    // The first node restarts: the second takes over at once.
    let after_first = hand_over(first, &second, &token).await;
    assert_ne!(after_first, before, "the second node holds the user now");
    // Then the second: the restarted first takes over.
    let restarted = spawn_app_with(settings).await;
    let after_second = hand_over(second, &restarted, &token).await;
    assert_ne!(
        after_second, after_first,
        "the restarted node holds the user now"
    );
    assert_ne!(after_second, before, "a new node, not the stopped one");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        most.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "never two sessions of the account at once"
    );
    restarted.logout(&token).await;
    restarted.stop().await;
    watcher.abort();
    counted.abort();
}
