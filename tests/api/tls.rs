//! STARTTLS through the whole server: the extra CA setting reaches the XMPP connector. Uses the
//! second Prosody of scripts/test.sh, which requires STARTTLS and whose certificate comes from a
//! throwaway CA (SWITCHBOARD_TEST_XMPP_TLS_CA); its users and rosters are the plain one's.

use serde_json::{json, Value};
use switchboard::startup::Application;

use crate::helpers::*;

const BIND: &str = "mutation($a: AccountInput!) {
  bindAccount(account: $a) { rosterSize account { handle connected } } }";

/// An account of a test user on the TLS Prosody.
fn tls_account(name: &str) -> Value {
    let mut account = xmpp_account(name);
    account["server"] = json!(env("SWITCHBOARD_TEST_XMPP_TLS_SERVER"));
    account
}

#[tokio::test]
async fn with_the_extra_ca_an_account_on_a_starttls_server_binds() {
    let mut settings = test_settings(&fresh_database().await);
    settings.extra_ca_file = Some(env("SWITCHBOARD_TEST_XMPP_TLS_CA").into());
    let app = spawn_app_with(settings).await;
    let token = app.register("alice", json!([])).await;

    let response = app
        .gql(Some(&token), BIND, json!({ "a": tls_account("alice") }))
        .await;
    let bound = &response.data()["bindAccount"];
    assert_eq!(bound["rosterSize"], 3, "{bound}");
    assert_eq!(bound["account"]["connected"], true, "{bound}");
    let list = app.contacts(&token).await;
    assert_eq!(
        single_handles(&list),
        ["bob@localhost", "carol@localhost", "dave@localhost"]
    );
    app.stop().await;
}

#[tokio::test]
async fn without_the_extra_ca_the_starttls_server_is_unavailable() {
    let app = spawn_app().await;
    let token = app.register("alice", json!([])).await;
    let before = app.event_count().await;
    let response = app
        .gql(Some(&token), BIND, json!({ "a": tls_account("alice") }))
        .await;
    assert_eq!(response.code(), "UPSTREAM_UNAVAILABLE", "{response:?}");
    assert_eq!(app.event_count().await, before);
    app.stop().await;
}

#[tokio::test]
async fn an_unusable_extra_ca_file_stops_the_start() {
    let database_url = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("sb-ca-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();

    for (path, expected) in [
        (dir.join("missing.pem"), "reading the extra CA file"),
        (not_pem, "no PEM CERTIFICATE block"),
    ] {
        let mut settings = test_settings(&database_url);
        settings.extra_ca_file = Some(path.clone());
        let Err(error) = Application::build(settings).await else {
            panic!("the server started with {}", path.display());
        };
        let message = format!("{error:#}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_xmpp_account_given_by_its_address_alone_is_found_through_srv() {
    let mut settings = test_settings(&fresh_database().await);
    settings.extra_ca_file = Some(env("SWITCHBOARD_TEST_XMPP_TLS_CA").into());
    settings.dns_server = Some(env("SWITCHBOARD_TEST_DNS_SERVER").parse().unwrap());
    let app = spawn_app_with(settings).await;
    let domain = env("SWITCHBOARD_TEST_XMPP_SRV_DOMAIN");
    let token = app
        .register(
            "srv",
            json!([{ "protocol": "XMPP", "server": "", "handle": format!("ann@{domain}"),
                     "secret": xmpp_password("ann") }]),
        )
        .await;
    let accounts = app
        .gql(
            Some(&token),
            "{ accounts { server status { state } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        accounts.data()["accounts"],
        json!([{ "server": domain, "status": { "state": "ONLINE" } }])
    );
    app.stop().await;
}
