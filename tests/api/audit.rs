//! Auditors, created from the command line, read any user's history, past contact lists and raw
//! event stream, and verify a user's views; they change nothing, and the user sees each read.

use std::time::Duration;

use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Runs `switchboard auditor ARGS` against the test's database; its standard output.
pub fn auditor_cli(database_url: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("auditor")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "switchboard auditor {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every line of the user's export through the `auditExport` subscription.
async fn export_over_socket(app: &TestApp, token: &str, user: &str) -> Vec<Value> {
    let mut socket = open_socket(app, token).await;
    socket
        .send(Message::Text(
            json!({ "id": "x", "type": "subscribe", "payload": {
                "query": "subscription($u: String!) { auditExport(userName: $u) }",
                "variables": { "u": user } } })
            .to_string()
            .into(),
        ))
        .await
        .unwrap();
    let mut lines = Vec::new();
    loop {
        let message = next(&mut socket).await;
        match message["type"].as_str() {
            Some("next") => {
                let line = message["payload"]["data"]["auditExport"]
                    .as_str()
                    .unwrap_or_else(|| panic!("not a line: {message}"));
                lines.push(serde_json::from_str(line).expect("each line is JSON"));
            }
            Some("complete") => return lines,
            _ => panic!("unexpected message: {message}"),
        }
    }
}

#[tokio::test]
async fn an_auditor_reads_history_past_lists_and_exports_verifies_and_changes_nothing() {
    let app = spawn_app().await;
    let token = app
        .register("audited", json!([xmpp_account("alice")]))
        .await;
    let before_merge = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let list = app.contacts(&token).await;
    let ids: Vec<String> = list["contacts"].as_array().unwrap()[..2]
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let merged = app
        .gql(
            Some(&token),
            "mutation($ids: [ID!]!) { mergeContacts(name: \"Pair\", contactIds: $ids) { metaContactId } }",
            json!({ "ids": ids }),
        )
        .await;
    let meta_id = merged.data()["mergeContacts"]["metaContactId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Created from the command line; the password is printed once.
    let created = auditor_cli(&app.database_url, &["add", "inspector"]);
    let password = created
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once, keep it safe): "))
        .expect("the password is printed")
        .to_owned();
    let login = app
        .gql(
            None,
            "mutation($p: String!) { auditorLogin(name: \"inspector\", password: $p) { token auditorName } }",
            json!({ "p": password }),
        )
        .await;
    let auditor = login.data()["auditorLogin"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = app
        .gql(
            None,
            "mutation { auditorLogin(name: \"inspector\", password: \"not it at all\") { token } }",
            json!({}),
        )
        .await;
    assert_eq!(wrong.code(), "UNAUTHENTICATED");

    let users = app
        .gql(
            Some(&auditor),
            "{ auditUsers { users { userName } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        users.data()["auditUsers"]["users"],
        json!([{ "userName": "audited" }])
    );
    let history = app
        .gql(
            Some(&auditor),
            "{ auditHistory(userName: \"audited\", first: 200) { entries { kind summary } } }",
            json!({}),
        )
        .await;
    let kinds: Vec<String> = history.data()["auditHistory"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(kinds.contains(&"CONTACTS_MERGED".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"USER_REGISTERED".to_owned()), "{kinds:?}");

    let past = app
        .gql(
            Some(&auditor),
            "query($t: DateTime!) { auditContacts(userName: \"audited\", asOf: $t) { metaContacts { name } contacts { id } } }",
            json!({ "t": before_merge }),
        )
        .await;
    assert_eq!(past.data()["auditContacts"]["metaContacts"], json!([]));
    let now = app
        .gql(
            Some(&auditor),
            "{ auditContacts(userName: \"audited\") { metaContacts { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        now.data()["auditContacts"]["metaContacts"],
        json!([{ "name": "Pair" }])
    );

    // The export: every event, with position and metadata, no password hash.
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let lines = export_over_socket(&app, &auditor, "audited").await;
    assert_eq!(
        lines.len() as i64,
        events_before + 1,
        "the export's own record included"
    );
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["sequence"], json!(i + 1), "{line}");
        assert!(line["position"].is_i64(), "{line}");
        assert!(line["metadata"].is_object(), "{line}");
        assert!(line["eventType"].is_string(), "{line}");
        assert!(
            !line.to_string().contains("$argon2"),
            "a password hash: {line}"
        );
    }
    assert_eq!(lines[0]["eventType"], "UserRegistered");
    let file = app
        .http
        .get(app.url("/audit/export/audited"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "application/x-ndjson");
    let file = file.text().await.unwrap();
    assert_eq!(file.lines().count(), lines.len() + 1);
    let user_tries = app
        .http
        .get(app.url("/audit/export/audited"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(user_tries.status(), 403);

    // Verify: consistent, until a view row is altered by hand.
    const VERIFY: &str = "{ auditVerify(userName: \"audited\") { consistent events differences { view key expected actual } } }";
    let verified = app.gql(Some(&auditor), VERIFY, json!({})).await;
    assert_eq!(
        verified.data()["auditVerify"]["differences"],
        json!([]),
        "{verified:?}"
    );
    assert_eq!(verified.data()["auditVerify"]["consistent"], true);
    sqlx::query("UPDATE meta_contact_view SET name = 'Tampered' WHERE meta_contact_id = $1::uuid")
        .bind(&meta_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let verified = app.gql(Some(&auditor), VERIFY, json!({})).await;
    let found = &verified.data()["auditVerify"];
    assert_eq!(found["consistent"], false);
    let differences = found["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert_eq!(differences[0]["view"], "contacts");
    assert_eq!(differences[0]["key"], format!("meta-contact {meta_id}"));
    assert!(
        differences[0]["actual"]
            .as_str()
            .unwrap()
            .contains("Tampered"),
        "{differences:?}"
    );

    // An auditor changes nothing and is no user; a user is no auditor.
    let change = app
        .gql(
            Some(&auditor),
            "mutation($m: ID!) { renameMetaContact(metaContactId: $m, name: \"Mine\") { metaContacts { name } } }",
            json!({ "m": meta_id }),
        )
        .await;
    assert_eq!(change.code(), "FORBIDDEN");
    assert_eq!(
        app.gql(Some(&auditor), "{ me { id } }", json!({}))
            .await
            .code(),
        "FORBIDDEN"
    );
    assert_eq!(
        app.gql(
            Some(&token),
            "{ auditUsers { users { userName } } }",
            json!({})
        )
        .await
        .code(),
        "FORBIDDEN"
    );
    assert_eq!(
        app.gql(
            Some(&auditor),
            "{ auditHistory(userName: \"nobody\") { entries { kind } } }",
            json!({})
        )
        .await
        .code(),
        "NOT_FOUND"
    );

    // The user sees every read, by whom.
    let mut summaries = Vec::new();
    for _ in 0..50 {
        let reads = app
            .gql(
                Some(&token),
                "{ history(kinds: [AUDITOR_READ], first: 50) { entries { summary actor } } }",
                json!({}),
            )
            .await;
        summaries = reads.data()["history"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["actor"], "auditor:inspector");
                e["summary"].as_str().unwrap().to_owned()
            })
            .collect();
        if summaries.len() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // history, two lists, two exports, two verifications (the failed lookup records nothing).
    assert_eq!(summaries.len(), 7, "{summaries:?}");
    assert!(summaries
        .iter()
        .any(|s| s == "Auditor inspector read your history"));
    assert!(summaries
        .iter()
        .any(|s| s.starts_with("Auditor inspector read your contact list as it was at")));
    assert!(summaries
        .iter()
        .any(|s| s == "Auditor inspector exported your event history"));

    // Removed from the command line: the token stops working.
    auditor_cli(&app.database_url, &["remove", "inspector"]);
    assert_eq!(
        app.gql(
            Some(&auditor),
            "{ auditUsers { users { userName } } }",
            json!({})
        )
        .await
        .code(),
        "UNAUTHENTICATED"
    );
    app.stop().await;
}

/// Found by the fuzzer (tests/api/fuzz.rs): an auditor's name or a page cursor with a NUL in it
/// went to PostgreSQL, which takes no NUL in text, and came back `INTERNAL`. No auditor has
/// such a name, and no page such a cursor: they are refused as what they are.
#[tokio::test]
async fn auditor_names_and_cursors_that_cannot_be_are_refused_as_such() {
    let app = spawn_app().await;
    app.register("alpha", json!([])).await;
    app.register("beta", json!([])).await;
    let created = auditor_cli(&app.database_url, &["add", "inspector"]);
    let password = created
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once, keep it safe): "))
        .expect("the password is printed")
        .to_owned();
    let login =
        "mutation($n: String!, $p: String!) { auditorLogin(name: $n, password: $p) { token } }";
    let refused = app
        .gql(None, login, json!({ "n": "insp\u{0}ector", "p": password }))
        .await;
    assert_eq!(refused.code(), "UNAUTHENTICATED", "{refused:?}");
    let auditor = app
        .gql(None, login, json!({ "n": "inspector", "p": password }))
        .await
        .data()["auditorLogin"]["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let page = "query($a: String) { auditUsers(first: 1, after: $a) { users { userName } pageInfo { endCursor } } }";
    let refused = app
        .gql(Some(&auditor), page, json!({ "a": "alpha\u{0}" }))
        .await;
    assert_eq!(refused.code(), "BAD_USER_INPUT", "{refused:?}");
    // The cursors of the pages themselves still page.
    let first = app.gql(Some(&auditor), page, json!({ "a": null })).await;
    assert_eq!(first.data()["auditUsers"]["users"][0]["userName"], "alpha");
    let cursor = first.data()["auditUsers"]["pageInfo"]["endCursor"].clone();
    let second = app.gql(Some(&auditor), page, json!({ "a": cursor })).await;
    assert_eq!(second.data()["auditUsers"]["users"][0]["userName"], "beta");
    app.stop().await;
}
