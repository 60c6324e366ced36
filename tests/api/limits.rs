//! What one client can make the server do is bounded: body size, list lengths, batch size, and
//! the time to send a request.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// The code of the first error of a GraphQL-shaped body.
fn code_of(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_whether_announced_or_streamed() {
    let app = spawn_app().await;
    // 32 MiB announced by Content-Length: refused without being read.
    let huge = format!(
        "{{\"query\": \"{{ me {{ id }} }}\", \"padding\": \"{}\"}}",
        "x".repeat(32 << 20)
    );
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(code_of(&body), "PAYLOAD_TOO_LARGE", "{body}");
    // 2 MiB in chunks, with no length announced: refused once the limit is passed.
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: switchboard\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, " ".repeat(64 << 10));
    for _ in 0..32 {
        // The server may answer and close before everything is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    // Still serving.
    let me = app.gql(None, "{ me { id } }", json!({})).await;
    assert_eq!(me.code(), "UNAUTHENTICATED");
    app.stop().await;
}

#[tokio::test]
async fn long_lists_and_big_batches_are_refused_before_any_work() {
    let app = spawn_app().await;
    let token = app.register("lists", json!([])).await;
    let events = app.event_count().await;
    let ids: Vec<String> = (0..20_000)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let merge = app
        .gql(
            Some(&token),
            "mutation($ids: [ID!]!) { mergeContacts(name: \"Too many\", contactIds: $ids) { metaContactId } }",
            json!({ "ids": ids }),
        )
        .await;
    assert_eq!(merge.code(), "BAD_USER_INPUT");
    assert!(
        merge.message().contains("at most 256"),
        "{}",
        merge.message()
    );
    assert_eq!(app.event_count().await, events, "nothing was recorded");

    let accounts: Vec<Value> = (0..33).map(|i| xmpp_account(&format!("u{i}"))).collect();
    let register = app
        .gql(
            None,
            "mutation($a: [AccountInput!]!) { register(userName: \"many\", password: \"correct horse battery\", accounts: $a) { token } }",
            json!({ "a": accounts }),
        )
        .await;
    assert_eq!(register.code(), "BAD_USER_INPUT");
    assert!(
        register.message().contains("accounts"),
        "{}",
        register.message()
    );

    let batch: Vec<Value> = (0..17)
        .map(|_| json!({ "query": "{ me { id } }" }))
        .collect();
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(code_of(&body), "BAD_REQUEST", "{body}");
    let batch: Vec<Value> = (0..2)
        .map(|_| json!({ "query": "{ me { userName } }" }))
        .collect();
    let body: Value = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body[1]["data"]["me"]["userName"], "lists", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_request_is_cut_off() {
    let mut settings = test_settings(&fresh_database().await);
    settings.limits.request_timeout = Duration::from_secs(1);
    let app = spawn_app_with(settings).await;

    // Headers never finished: the connection is closed.
    let mut slow = tokio::net::TcpStream::connect(app.address).await.unwrap();
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: switchboard\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "a client that never finishes its headers is still connected after 5 s"
    );

    // Headers sent, body never finished: 408 in the shape of a GraphQL error.
    let mut slow = tokio::net::TcpStream::connect(app.address).await.unwrap();
    slow.write_all(
        b"POST /graphql HTTP/1.1\r\nHost: switchboard\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .expect("a client that never finishes its body gets an answer within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    app.stop().await;
}

/// Found by the fuzzer (tests/api/fuzz.rs): a 1 KB document whose fragments spread the next
/// one seven times, twelve deep, expands to 7^12 selections, and async-graphql's depth and
/// validation checks walk every one of them: the request held a core for good. Such documents,
/// and fragment cycles, are now refused before those checks. The real binary serves here, so
/// that a server stuck on one cannot hold the test's own runtime.
#[tokio::test]
async fn fragments_that_expand_exponentially_are_refused_at_once() {
    let database_url = fresh_database().await;
    let key = switchboard::store::vault::MasterKey::generate().to_base64();
    let log =
        std::env::temp_dir().join(format!("switchboard-spreads-{}.log", uuid::Uuid::new_v4()));
    let server = crate::crash::start(&database_url, &key, &log).await;
    let registered = crate::crash::gql(
        &server,
        None,
        "mutation { register(userName: \"spreads\", password: \"correct horse battery\") { token } }",
        json!({}),
    )
    .await;
    let token = registered.data()["register"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bomb = String::from("{ ...F0 }");
    for level in 0..12 {
        bomb.push_str(&format!(
            " fragment F{level} on Query {{{} }}",
            format!(" ...F{}", level + 1).repeat(7)
        ));
    }
    bomb.push_str(" fragment F12 on Query { __typename }");
    let cycle = "{ ...A } fragment A on Query { ...A ...A me { id } }";
    for (name, query) in [("fan-out", bomb.as_str()), ("cycle", cycle)] {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            crate::crash::gql(&server, Some(&token), query, json!({})),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer to the {name} document within 10 s"));
        assert_eq!(answer.code(), "BAD_USER_INPUT", "{name}: {:?}", answer);
    }
    // Fragments within the bound work as before.
    let me = crate::crash::gql(
        &server,
        Some(&token),
        "{ ...Q } fragment Q on Query { me { ...U ...U } } fragment U on User { id userName }",
        json!({}),
    )
    .await;
    assert_eq!(me.data()["me"]["userName"], "spreads");
    let _ = std::fs::remove_file(&log);
}
