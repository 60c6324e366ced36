//! Upstream changes on networks other than XMPP, through the API: a Matrix contact renamed
//! upstream keeps its id and its meta-contact (live, and between two logins).

use serde_json::{json, Value};

use crate::common::matrix_client::{enc, fresh_pals, password_of, server, Raw};
use crate::helpers::*;
use crate::lists::*;

fn matrix_account(localpart: &str) -> Value {
    json!({ "protocol": "MATRIX", "server": server(),
            "handle": format!("@{localpart}:localhost"), "secret": password_of(localpart) })
}

async fn rename(raw: &Raw, name: &str) {
    raw.call(
        reqwest::Method::PUT,
        &format!("profile/{}/displayname", enc(&raw.user)),
        Some(json!({ "displayname": name })),
    )
    .await;
}

#[tokio::test]
async fn a_matrix_contact_renamed_upstream_keeps_its_id_and_meta_contact() {
    let (rae, sol, _room) = fresh_pals("Rae", "Sol").await;
    let sol_id = format!("@{sol}:localhost");
    let app = spawn_app().await;
    let token = app
        .register("una", json!([matrix_account(&rae), xmpp_account("alice")]))
        .await;
    let first = list_until(&app, &token, "sol imported", |l| {
        single(l, &sol_id).is_some()
    })
    .await;
    let sol_contact = ids_of(&first, &sol_id);
    let bob = ids_of(&first, "bob@localhost");
    app.gql(
        Some(&token),
        MERGE,
        json!({ "name": "Sol (both)", "ids": [sol_contact[0], bob[0]] }),
    )
    .await
    .data();

    // Live: sol renames themself; the member event in the DM room says so.
    let raw = Raw::login(&sol).await;
    rename(&raw, "Solange").await;
    let renamed = list_until(&app, &token, "sol renamed", |l| {
        member(meta_named(l, "Sol (both)"), &sol_id).is_some_and(|m| m["displayName"] == "Solange")
    })
    .await;
    let member_now = member(meta_named(&renamed, "Sol (both)"), &sol_id).unwrap();
    assert_eq!(member_now["id"], sol_contact[0].as_str(), "same contact");
    assert!(member_now["dormant"].is_null());

    // Between two logins: renamed again; the second login's report says so.
    app.logout(&token).await;
    rename(&raw, "Sol Q.").await;
    let login = app.login("una").await;
    let token = login["token"].as_str().unwrap().to_owned();
    app.wait_for_account(&token, &format!("@{rae}:localhost"), "ONLINE")
        .await;
    let after = list_until(&app, &token, "sol renamed again", |l| {
        member(meta_named(l, "Sol (both)"), &sol_id).is_some_and(|m| m["displayName"] == "Sol Q.")
    })
    .await;
    assert_eq!(
        member(meta_named(&after, "Sol (both)"), &sol_id).unwrap()["id"],
        sol_contact[0].as_str()
    );
    let report = app
        .gql(
            Some(&token),
            "query($l: ID) { loginReport(loginId: $l) { accounts { reconciled
               account { handle } renamed { handle previousName } } } }",
            json!({ "l": login["loginId"] }),
        )
        .await;
    let part = report.data()["loginReport"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"]["handle"] == format!("@{rae}:localhost"))
        .cloned()
        .expect("the Matrix account's part");
    assert_eq!(part["reconciled"], true, "{part}");
    assert_eq!(
        part["renamed"],
        json!([{ "handle": sol_id, "previousName": "Solange" }]),
        "{part}"
    );
    let history = app
        .gql(
            Some(&token),
            "{ history(kinds: [ROSTER_CONTACT_ADDED, ROSTER_CONTACT_DEPARTED, ROSTER_CONTACT_RENAMED]) { entries { kind summary at } } }",
            json!({}),
        )
        .await;
    let kinds: Vec<String> = history.data()["history"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !kinds.iter().any(|k| k == "ROSTER_CONTACT_DEPARTED"),
        "a rename is never a departure: {kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "ROSTER_CONTACT_RENAMED")
            .count(),
        2,
        "{}",
        history.data()
    );
    raw.logout().await;
    app.stop().await;
}
