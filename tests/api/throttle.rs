//! Password guessing is slowed per user name and per client address, exponentially, without
//! locking the user out: the right password works again once the delay is over.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A server whose throttling starts waits at `base` (tests of the order of events use a base
/// long enough that a slow machine's requests still fall within one wait).
async fn throttled_app(base: Duration) -> TestApp {
    let mut settings = test_settings(&fresh_database().await);
    settings.limits.throttle_base = base;
    spawn_app_with(settings).await
}

/// A client whose requests come from `address` (any 127.x.y.z is loopback on Linux).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(app: &TestApp, client: &reqwest::Client, password: &str) -> Value {
    client
        .post(app.url("/graphql"))
        .json(&json!({
            "query": "mutation($p: String!) { login(userName: \"guarded\", password: $p) { token } }",
            "variables": { "p": password }
        }))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON")
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("OK")
}

fn retry_after(answer: &Value) -> u64 {
    answer["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("RATE_LIMITED without retryAfter: {answer}"))
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_is_slowed_and_the_right_one_works_after_the_delay() {
    let app = throttled_app(Duration::from_millis(200)).await;
    app.register("guarded", json!([])).await;
    let here = client_from("127.0.0.1");
    let burst = (0..60).map(|i| {
        let here = here.clone();
        let app = &app;
        async move { login(app, &here, &format!("wrong password {i}")).await }
    });
    let answers = futures::future::join_all(burst).await;
    let refused = answers.iter().filter(|a| code(a) == "RATE_LIMITED").count();
    let checked = answers
        .iter()
        .filter(|a| code(a) == "UNAUTHENTICATED")
        .count();
    assert_eq!(refused + checked, 60, "{answers:?}");
    assert!(
        refused >= 40,
        "only {refused} of 60 wrong passwords in a burst were throttled"
    );
    for answer in answers.iter().filter(|a| code(a) == "RATE_LIMITED") {
        assert!(retry_after(answer) >= 1, "{answer}");
    }

    // The right password is refused while the delay runs, and works once it is over.
    let mut answer = login(&app, &here, "correct horse battery").await;
    let mut waits = 0;
    while code(&answer) == "RATE_LIMITED" {
        waits += 1;
        assert!(waits < 5, "still refused after {waits} waits: {answer}");
        tokio::time::sleep(Duration::from_secs(retry_after(&answer))).await;
        answer = login(&app, &here, "correct horse battery").await;
    }
    assert!(answer["data"]["login"]["token"].is_string(), "{answer}");
    // A success starts the count again: the next wrong password is checked, not delayed.
    assert_eq!(
        code(&login(&app, &here, "wrong again").await),
        "UNAUTHENTICATED"
    );
    app.stop().await;
}

#[tokio::test]
async fn guessing_from_elsewhere_delays_the_user_at_most_briefly() {
    let app = throttled_app(Duration::from_secs(2)).await;
    app.register("guarded", json!([])).await;
    let attacker = client_from("127.0.0.2");
    for i in 0..40 {
        login(&app, &attacker, &format!("guess {i}")).await;
    }
    let attacker_answer = login(&app, &attacker, "guess again").await;
    assert_eq!(code(&attacker_answer), "RATE_LIMITED", "{attacker_answer}");

    // The user, from their own address: at most the user name's short cap (30 × 200 ms).
    let user = client_from("127.0.0.1");
    let mut answer = login(&app, &user, "correct horse battery").await;
    if code(&answer) == "RATE_LIMITED" {
        let wait = retry_after(&answer);
        assert!(
            wait <= 6,
            "the user waits {wait} s for an attacker's guesses"
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
        answer = login(&app, &user, "correct horse battery").await;
    }
    assert!(answer["data"]["login"]["token"].is_string(), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn registrations_from_one_address_are_slowed_past_the_free_ones() {
    let app = throttled_app(Duration::from_secs(10)).await;
    let mut codes = Vec::new();
    for i in 0..12 {
        let answer = app
            .gql(
                None,
                "mutation($u: String!) { register(userName: $u, password: \"correct horse battery\") { token } }",
                json!({ "u": format!("newcomer{i}") }),
            )
            .await;
        codes.push(
            answer.0["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("OK")
                .to_owned(),
        );
    }
    assert_eq!(&codes[..11], vec!["OK"; 11].as_slice(), "{codes:?}");
    assert_eq!(codes[11], "RATE_LIMITED", "{codes:?}");
    app.stop().await;
}
