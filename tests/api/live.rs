//! One login, many accounts: per-account live status, reconnection after an outage, a refused
//! password that stops retrying, and meta-contact presence that follows the network where the
//! person is online. The outage is real: a Prosody of the test's own is stopped and started.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard::connectors::xmpp::XmppConnector;
use switchboard::connectors::{AccountLogin, Connector, Credential, LiveSession};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;

use crate::helpers::*;

/// Logs `user` in on `server` as an independent client, so their presence shows upstream.
async fn independent(server: &str, user: &str) -> LiveSession {
    XmppConnector::default()
        .connect(
            &AccountLogin {
                protocol: Protocol::Xmpp,
                server: server.to_owned(),
                handle: Handle::parse(Protocol::Xmpp, &format!("{user}@localhost")).unwrap(),
                credential: Credential::Password(Secret::new(xmpp_password(user))),
                contacts: Vec::new(),
                message_cursor: None,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{user} logs in on {server}: {e}"))
}

const META: &str =
    "{ contacts { metaContacts { name presence { availability protocol handle accountId } \
                     members { handle presence { availability } } } } }";

/// Waits until the first meta-contact's presence satisfies `want`.
async fn wait_for_meta(app: &TestApp, token: &str, want: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let list = app.gql(Some(token), META, json!({})).await;
        let meta = list.data()["contacts"]["metaContacts"][0].clone();
        if want(&meta["presence"]) {
            return meta;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the meta-contact's presence never matched");
}

#[tokio::test]
async fn one_server_down_reconnects_alone_and_presence_follows_the_person() {
    let _turn = SPARE.lock().await;
    let mut spare = SpareProsody::new();
    spare.start().await;
    let app = spawn_app().await;
    // alice's account on the main Prosody, dave's on the spare one: two servers, one login.
    let token = app
        .register(
            "ophelia",
            json!([xmpp_account("alice"), spare.account("dave")]),
        )
        .await;
    let main_account = app.account_id(&token, "alice@localhost").await;
    let spare_account = app.account_id(&token, "dave@localhost").await;

    // dave (a contact of alice's account) and alice (a contact of dave's) are one person here.
    // Nobody else logs in as dave on the main server, so his presence there is ours to set.
    let list = app.contacts(&token).await;
    let dave = ids_of(&list, "dave@localhost")[0].clone();
    let alice = ids_of(&list, "alice@localhost")[0].clone();
    app.gql(
        Some(&token),
        "mutation($ids: [ID!]!) { mergeContacts(name: \"Person\", contactIds: $ids) { metaContactId } }",
        json!({ "ids": [dave, alice] }),
    )
    .await
    .data();

    // Online on the main server only: the meta-contact is online there.
    let dave_upstream = independent(&xmpp_server(), "dave").await;
    let meta = wait_for_meta(&app, &token, |p| p["availability"] == "ONLINE").await;
    assert_eq!(meta["presence"]["handle"], "dave@localhost");
    assert_eq!(meta["presence"]["accountId"], main_account.as_str());
    // Then on the spare one too, and off the main one: presence follows to the other network.
    let alice_upstream = independent(&spare.server, "alice").await;
    dave_upstream.disconnect().await;
    let meta = wait_for_meta(&app, &token, |p| {
        p["availability"] == "ONLINE" && p["handle"] == "alice@localhost"
    })
    .await;
    assert_eq!(meta["presence"]["accountId"], spare_account.as_str());
    assert_eq!(meta["presence"]["protocol"], "XMPP");
    drop(alice_upstream);

    // Watch every status change from here on.
    let mut socket = open_socket(&app, &token).await;
    send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": { "query":
            "subscription { accountStatusChanged { id handle status { state attempt nextRetryAt } } }" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The spare server dies: only dave's account goes RECONNECTING, with a retry time.
    spare.kill();
    let down = app
        .wait_for_account(&token, "dave@localhost", "RECONNECTING")
        .await;
    assert!(down["status"]["nextRetryAt"].is_string() || down["status"]["attempt"] != 0);
    assert!(down["status"]["detail"].is_string(), "{down}");
    assert_eq!(down["connected"], false);
    let alive = app
        .wait_for_account(&token, "alice@localhost", "ONLINE")
        .await;
    assert_eq!(alive["connected"], true);
    // What the spare account's contacts showed is no longer known.
    let meta = wait_for_meta(&app, &token, |p| p["handle"] != "alice@localhost").await;
    assert_ne!(meta["presence"]["availability"], "ONLINE");

    // It comes back: ONLINE again without a new login (backoff capped at 2 s in tests).
    spare.start().await;
    app.wait_for_account(&token, "dave@localhost", "ONLINE")
        .await;

    // The subscription saw dave's account go down and up, and never a change of alice's.
    let states = states_until_online(&mut socket, &spare_account).await;
    assert_eq!(states.first().map(String::as_str), Some("RECONNECTING"));
    assert!(!states.contains(&"CONNECTING".to_owned()), "{states:?}");

    // Logging out (the last session) disconnects every account and gives the lease up.
    app.logout(&token).await;
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM account_status ORDER BY state")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(states, ["DISCONNECTED", "DISCONNECTED"]);
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM live_leases")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(leases, 0);
    app.stop().await;
}

#[tokio::test]
async fn login_does_not_wait_for_a_silent_server_and_a_revoked_password_stops_retrying() {
    // Runs after (or before) the other spare test: never both at once on one server.
    let _turn = SPARE.lock().await;
    let mut spare = SpareProsody::new();
    spare.start().await;
    let app = spawn_app().await;
    let token = app
        .register(
            "portia",
            json!([xmpp_account("carol"), spare.account("eve")]),
        )
        .await;
    app.logout(&token).await;

    // The spare server is replaced by one that accepts connections and never answers.
    spare.kill();
    let port: u16 = spare.server.rsplit_once(':').unwrap().1.parse().unwrap();
    let silent = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the spare port is free again");
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let answer = app.login("portia").await;
    let token = answer["token"].as_str().unwrap().to_owned();
    let states: Vec<&str> = answer["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"]["state"].as_str().unwrap())
        .collect();
    // The answer does not wait: eve's silent server keeps hers CONNECTING. carol's fast one may
    // already have logged her in by the time the answer is read (a loaded machine).
    assert!(
        matches!(states[..], ["CONNECTING" | "ONLINE", "CONNECTING"]),
        "{answer}"
    );
    // carol's account comes up while eve's still waits for its silent server.
    app.wait_for_account(&token, "carol@localhost", "ONLINE")
        .await;
    let eve = app
        .wait_for_account(&token, "eve@localhost", "CONNECTING")
        .await;
    assert_eq!(eve["status"]["attempt"], 0);
    // The login deadline (5 s in tests) makes it UNREACHABLE, with a retry planned.
    let eve = app
        .wait_for_account(&token, "eve@localhost", "UNREACHABLE")
        .await;
    assert!(eve["status"]["nextRetryAt"].is_string(), "{eve}");
    held.abort();
    let _ = held.await;
    app.logout(&token).await;

    // eve's password changes upstream: the next login says AUTH_FAILED and records nothing.
    spare.set_password("eve", "a-new-password-9Z");
    spare.start().await;
    let events = app.event_count().await;
    let answer = app.login("portia").await;
    let token = answer["token"].as_str().unwrap().to_owned();
    let failed = app
        .wait_for_account(&token, "eve@localhost", "AUTH_FAILED")
        .await;
    assert_eq!(failed["status"]["attempt"], 1);
    app.wait_for_account(&token, "carol@localhost", "ONLINE")
        .await;
    // No retry of a refused password, even after the longest backoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = app
        .wait_for_account(&token, "eve@localhost", "AUTH_FAILED")
        .await;
    assert_eq!(still["status"]["attempt"], 1, "{still}");
    assert_eq!(
        app.event_count().await,
        events,
        "a failed login records nothing"
    );

    // The user gives the new password: a refused one changes nothing, the right one brings
    // the account back without a new login, and records nothing either.
    let eve_id = app.account_id(&token, "eve@localhost").await;
    let renew = "mutation($a: ID!, $s: String!) { renewAccountSecret(accountId: $a, secret: $s) {
                   handle status { state } } }";
    let refused = app
        .gql(
            Some(&token),
            renew,
            json!({ "a": eve_id, "s": "still-wrong" }),
        )
        .await;
    assert_eq!(refused.code(), "AUTH_FAILED");
    let renewed = app
        .gql(
            Some(&token),
            renew,
            json!({ "a": eve_id, "s": "a-new-password-9Z" }),
        )
        .await;
    assert_eq!(
        renewed.data()["renewAccountSecret"]["status"]["state"],
        "ONLINE"
    );
    assert_eq!(app.event_count().await, events);
    // And the next login uses it.
    app.logout(&token).await;
    let token = app.login("portia").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_account(&token, "eve@localhost", "ONLINE")
        .await;

    spare.kill();
    spare.set_password("eve", &xmpp_password("eve"));
    app.stop().await;
}

#[tokio::test]
async fn one_node_holds_a_users_connections_until_it_lets_go() {
    // Two nodes share a database and, necessarily, the master key of its credential vault.
    let settings = test_settings(&fresh_database().await);
    let first = spawn_app_with(settings.clone()).await;
    let token = first
        .register("quentin", json!([xmpp_account("alice")]))
        .await;
    let holder = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (uuid::Uuid, uuid::Uuid)>(
            "SELECT l.node_id, s.node_id FROM live_leases l JOIN account_status s USING (user_id)",
        )
        .fetch_one(&pool)
        .await
        .expect("one lease and one status")
    };
    let (lease_node, status_node) = holder(first.pool.clone()).await;
    assert_eq!(lease_node, status_node);

    // A second node on the same database: logging in there does not open a second
    // connection; it shows the first node's live status.
    let second = spawn_app_with(settings).await;
    let answer = second.login("quentin").await;
    assert_eq!(answer["accounts"][0]["status"]["state"], "ONLINE");
    assert_eq!(holder(second.pool.clone()).await, (lease_node, status_node));
    let other = answer["token"].as_str().unwrap().to_owned();
    second
        .wait_for_account(&other, "alice@localhost", "ONLINE")
        .await;

    // The first node shuts down and hands its leases over: the second takes the user's
    // connections over at once, without a login.
    first.stop().await;
    second
        .wait_for_account(&other, "alice@localhost", "ONLINE")
        .await;
    let (new_lease, new_status) = holder(second.pool.clone()).await;
    assert_eq!(new_lease, new_status);
    assert_ne!(new_lease, lease_node, "the second node holds them now");
    drop(token);
    second.stop().await;
}
