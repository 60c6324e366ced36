//! Bound accounts connect only where the upstream policy allows, and an anonymous caller cannot
//! use registration to scan the server's network.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

const REGISTER: &str = "mutation($u: String!, $a: [AccountInput!]!) {
    register(userName: $u, password: \"correct horse battery\", accounts: $a) { token } }";

fn account_at(server: &str) -> Value {
    json!({ "protocol": "XMPP", "server": server, "handle": "alice@localhost",
            "secret": xmpp_password("alice") })
}

#[tokio::test]
async fn registration_tells_an_anonymous_caller_nothing_about_the_network() {
    let app = spawn_app().await;
    let closed = app
        .gql(
            None,
            REGISTER,
            json!({ "u": "scanner1", "a": [account_at("127.0.0.1:1")] }),
        )
        .await;
    assert_eq!(closed.code(), "UPSTREAM_UNAVAILABLE");
    // An open port that is no XMPP server: this server's own HTTP port.
    let open = app
        .gql(
            None,
            REGISTER,
            json!({ "u": "scanner2", "a": [account_at(&app.address.to_string())] }),
        )
        .await;
    assert_eq!(open.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(
        closed.message(),
        open.message(),
        "a closed and an open port must read the same"
    );
    for text in ["refused", "os error", "timed out", "protocol error", "HTTP"] {
        assert!(!closed.message().contains(text), "{}", closed.message());
    }
    // A logged-in user binding an account still gets the detail.
    let token = app.register("insider", json!([])).await;
    let bound = app
        .gql(
            Some(&token),
            "mutation($a: AccountInput!) { bindAccount(account: $a) { account { id } } }",
            json!({ "a": account_at("127.0.0.1:1") }),
        )
        .await;
    assert_eq!(bound.code(), "UPSTREAM_UNAVAILABLE");
    assert!(
        bound.message().contains("cannot connect"),
        "{}",
        bound.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn denied_networks_are_refused_without_a_connection_attempt() {
    let app = spawn_app().await;
    for server in [
        "169.254.169.254:5222",
        "[fe80::1]:5222",
        "0.0.0.0:5222",
        "224.0.0.1:5222",
    ] {
        let started = Instant::now();
        let refused = app
            .gql(
                None,
                REGISTER,
                json!({ "u": "curious", "a": [account_at(server)] }),
            )
            .await;
        assert_eq!(refused.code(), "FORBIDDEN", "{server}: {:?}", refused.0);
        assert!(
            refused.message().contains("upstream policy"),
            "{}",
            refused.message()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{server}: no connection is tried"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_public_deployment_also_denies_private_and_loopback_networks() {
    let mut settings = test_settings(&fresh_database().await);
    settings.upstream_deny_private = true;
    let app = spawn_app_with(settings).await;
    let refused = app
        .gql(
            None,
            REGISTER,
            json!({ "u": "public", "a": [xmpp_account("alice")] }),
        )
        .await;
    assert_eq!(refused.code(), "FORBIDDEN", "{:?}", refused.0);
    app.stop().await;
}
