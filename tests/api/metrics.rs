//! `/metrics` is scraped with a real Prometheus text parser, and each metric moves when what
//! it counts happens.

use std::time::Duration;

use prometheus_parse::{Sample, Value as Metric};
use serde_json::{json, Value};

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message};

use crate::common::xmpp_client::raw_client;
use crate::helpers::*;

/// The scrape, parsed.
async fn scrape(app: &TestApp) -> Vec<Sample> {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}): {text}"))
        .samples
}

/// The value of the sample named `name` whose labels include `labels` (0 if absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
            Metric::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Metric::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_are_scraped_and_move_with_what_they_count() {
    let _turn = SPARE.lock().await;
    let mut spare = SpareProsody::new();
    spare.start().await;
    let app = spawn_app().await;
    let before = scrape(&app).await;
    for projection in ["contacts", "history"] {
        assert!(
            before
                .iter()
                .any(|s| s.metric == "switchboard_projection_lag_events"
                    && s.labels.get("projection") == Some(projection)),
            "no lag for {projection}"
        );
    }

    let token = app
        .register(
            "metered",
            json!([xmpp_account("carol"), spare.account("dave")]),
        )
        .await;
    let after = scrape(&app).await;
    let registered = [("kind", "Register")];
    assert_eq!(
        value(
            &before,
            "switchboard_command_duration_seconds_count",
            &registered
        ),
        0.0
    );
    assert!(
        value(
            &after,
            "switchboard_command_duration_seconds_count",
            &registered
        ) >= 1.0
    );
    assert!(
        value(&after, "switchboard_events_appended_total", &[])
            > value(&before, "switchboard_events_appended_total", &[])
    );
    assert_eq!(
        value(
            &after,
            "switchboard_connections",
            &[("protocol", "XMPP"), ("state", "ONLINE")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "switchboard_projection_lag_events",
            &[("projection", "history")]
        ),
        0.0,
        "a mutation answers once the views show it"
    );

    // Errors by code: one of ours, and a document that does not validate.
    app.gql(None, "{ me { id } }", json!({})).await;
    app.gql(Some(&token), "{ nosuchfield }", json!({})).await;
    let errors = scrape(&app).await;
    assert_eq!(
        value(
            &errors,
            "switchboard_api_errors_total",
            &[("code", "UNAUTHENTICATED")]
        ),
        value(
            &after,
            "switchboard_api_errors_total",
            &[("code", "UNAUTHENTICATED")]
        ) + 1.0
    );
    assert_eq!(
        value(
            &errors,
            "switchboard_api_errors_total",
            &[("code", "GRAPHQL_VALIDATION_FAILED")]
        ),
        1.0
    );

    // Messages out and in, on the spare server (this test's alone, so no other test's
    // archive sees them): to alice as dave's contact there, and back from alice's own client.
    let dave = app.account_id(&token, "dave@localhost").await;
    let list = app.contacts(&token).await;
    let alice: Vec<&Value> = list["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            list["metaContacts"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["members"].as_array().unwrap()),
        )
        .filter(|c| c["handle"] == "alice@localhost" && c["accountId"] == dave.as_str())
        .collect();
    assert_eq!(alice.len(), 1, "alice is dave's contact: {list}");
    let sent = app
        .gql(
            Some(&token),
            "mutation($to: ID!) { sendMessage(to: $to, text: \"metered hello\") { state } }",
            json!({ "to": alice[0]["id"] }),
        )
        .await;
    sent.data();
    let spare_server = spare.account("alice")["server"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice_client = raw_client(&spare_server, "alice", &xmpp_password("alice")).await;
    let reply = Message::chat(Some(Jid::from(BareJid::new("dave@localhost").unwrap())))
        .with_body(Lang::default(), "metered reply".to_owned());
    alice_client.send_stanza(reply.into()).await.unwrap();
    let mut counted = (0.0, 0.0);
    for _ in 0..100 {
        let now = scrape(&app).await;
        let of = |direction| {
            value(
                &now,
                "switchboard_messages_total",
                &[("direction", direction)],
            )
        };
        counted = (of("out"), of("in"));
        if counted.0 >= 1.0 && counted.1 >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, (1.0, 1.0), "messages (out, in) counted");
    let _ = alice_client.send_end().await;

    // A server going down: the account reconnects, and the attempts are counted.
    spare.kill();
    let mut attempts = 0.0;
    for _ in 0..100 {
        let now = scrape(&app).await;
        attempts = value(
            &now,
            "switchboard_reconnect_attempts_total",
            &[("protocol", "XMPP")],
        );
        if attempts >= 2.0 {
            assert!(
                value(
                    &now,
                    "switchboard_connections",
                    &[("protocol", "XMPP"), ("state", "ONLINE")]
                ) == 1.0,
                "only carol's account is online"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(attempts >= 2.0, "reconnect attempts counted: {attempts}");
    app.stop().await;
}
