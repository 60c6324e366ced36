//! Reconciliation against real XMPP servers: an account bound again is the same account with
//! the same contacts and memberships; contacts deleted, renamed and added upstream are recorded
//! as such, live and between logins, without losing any meta-contact the user made.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_xmpp::parsers::roster::Subscription;

use crate::common::xmpp_client::{raw_client, set_roster_item};
use crate::helpers::*;
use crate::lists::*;

#[tokio::test]
async fn unbinding_and_binding_again_restores_every_membership() {
    let app = spawn_app().await;
    let token = app
        .register("rita", json!([xmpp_account("ann"), xmpp_account("ben")]))
        .await;
    let before = list(&app, &token).await;
    // ann and ben share cid, dot and eve: one meta-contact each.
    for friend in ["cid", "dot", "eve"] {
        let ids = ids_of(&before, &format!("{friend}@localhost"));
        assert_eq!(ids.len(), 2, "{friend} on both accounts: {before}");
        app.gql(Some(&token), MERGE, json!({ "name": friend, "ids": ids }))
            .await
            .data();
    }
    let merged = list(&app, &token).await;
    let ben_account = app.account_id(&token, "ben@localhost").await;

    let unbound = app
        .gql(
            Some(&token),
            "mutation($a: ID!) { unbindAccount(accountId: $a) }",
            json!({ "a": ben_account }),
        )
        .await;
    assert_eq!(unbound.data()["unbindAccount"], true);
    let away = list(&app, &token).await;
    assert_eq!(away["metaContacts"].as_array().unwrap().len(), 3, "{away}");
    for friend in ["cid", "dot", "eve"] {
        let meta = meta_named(&away, friend);
        let members = meta["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "both places kept: {meta}");
        let dormant: Vec<&Value> = members.iter().filter(|m| !m["dormant"].is_null()).collect();
        assert_eq!(dormant.len(), 1, "ben's contact is dormant: {meta}");
        assert_eq!(dormant[0]["dormant"]["reason"], "ACCOUNT_UNBOUND");
        assert!(dormant[0]["dormant"]["since"].is_string());
    }
    assert!(
        single(&away, "ann@localhost").is_none(),
        "ben's own contact ann left: {away}"
    );

    // The same account bound again: the same id, and everybody back where they were.
    let rebound = app
        .gql(
            Some(&token),
            "mutation($a: AccountInput!) { bindAccount(account: $a) { rosterSize account { id } } }",
            json!({ "a": xmpp_account("ben") }),
        )
        .await;
    assert_eq!(
        rebound.data()["bindAccount"]["account"]["id"],
        ben_account.as_str()
    );
    let back = list(&app, &token).await;
    for friend in ["cid", "dot", "eve"] {
        let meta = meta_named(&back, friend);
        assert_eq!(
            meta,
            meta_named(&merged, friend),
            "restored exactly: {back}"
        );
    }
    assert!(single(&back, "ann@localhost").is_some());
    let history = app
        .gql(
            Some(&token),
            "{ history(kinds: [ROSTER_CONTACT_RETURNED]) { entries { summary actor } } }",
            json!({}),
        )
        .await;
    let returned = history.data()["history"]["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        returned.len(),
        4,
        "ann, cid, dot and eve return: {returned:?}"
    );
    assert!(returned
        .iter()
        .all(|e| e["actor"] == "system:reconciliation"));

    // The rebound account's secret is not taken for an orphan because of the old unbinding.
    sqlx::query("UPDATE credentials SET created_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    let vault = switchboard::store::vault::Vault::new(
        app.pool.clone(),
        &switchboard::store::vault::MasterKey::generate(),
    );
    let swept = vault.sweep_orphans(Duration::from_secs(600)).await.unwrap();
    assert_eq!(swept, 0);
    app.stop().await;
}

/// A Prosody user of the spare server made for one test, with an empty roster.
fn fresh_spare_user(spare: &SpareProsody) -> String {
    let user = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    spare.register_user(&user, &xmpp_password(&user));
    user
}

#[tokio::test]
async fn upstream_deletions_renames_and_additions_never_lose_a_meta_contact() {
    let _spare_turn = SPARE.lock().await;
    let mut spare = SpareProsody::new();
    let owner = fresh_spare_user(&spare);
    spare.start().await;
    let mut editor = raw_client(&spare.server, &owner, &xmpp_password(&owner)).await;
    set_roster_item(&mut editor, "zed@localhost", "Zed", Subscription::None).await;
    set_roster_item(&mut editor, "yan@localhost", "Yan", Subscription::None).await;
    set_roster_item(&mut editor, "wes@localhost", "Wes", Subscription::None).await;

    let app = spawn_app().await;
    let token = app.register("sam", json!([spare.account(&owner)])).await;
    let first = list(&app, &token).await;
    let zed = ids_of(&first, "zed@localhost");
    let yan = ids_of(&first, "yan@localhost");
    assert_eq!(
        single(&first, "zed@localhost").unwrap()["isNew"],
        false,
        "first import"
    );
    app.gql(
        Some(&token),
        MERGE,
        json!({ "name": "Pals", "ids": [zed[0], yan[0]] }),
    )
    .await
    .data();

    // Live: a rename upstream is an update of the same contact; the meta-contact's name stays.
    set_roster_item(&mut editor, "zed@localhost", "Zeddy", Subscription::None).await;
    let renamed = list_until(&app, &token, "zed renamed", |l| {
        member(meta_named(l, "Pals"), "zed@localhost").is_some_and(|m| m["displayName"] == "Zeddy")
    })
    .await;
    assert_eq!(
        member(meta_named(&renamed, "Pals"), "zed@localhost").unwrap()["id"],
        zed[0].as_str()
    );

    // Live: yan deleted upstream stays in Pals, dormant.
    set_roster_item(&mut editor, "yan@localhost", "", Subscription::Remove).await;
    let removed = list_until(&app, &token, "yan dormant", |l| {
        member(meta_named(l, "Pals"), "yan@localhost").is_some_and(|m| !m["dormant"].is_null())
    })
    .await;
    let dormant = member(meta_named(&removed, "Pals"), "yan@localhost").unwrap();
    assert_eq!(dormant["dormant"]["reason"], "REMOVED_UPSTREAM");
    assert!(single(&removed, "yan@localhost").is_none());

    // Between two logins: yan comes back, xena is new, wes is deleted.
    app.logout(&token).await;
    let between = chrono::Utc::now();
    set_roster_item(&mut editor, "yan@localhost", "Yan", Subscription::None).await;
    set_roster_item(&mut editor, "xena@localhost", "Xena", Subscription::None).await;
    set_roster_item(&mut editor, "wes@localhost", "", Subscription::Remove).await;
    let login = app.login("sam").await;
    let token = login["token"].as_str().unwrap().to_owned();
    app.wait_for_account(&token, &format!("{owner}@localhost"), "ONLINE")
        .await;
    let after = list_until(&app, &token, "yan back, xena new, wes gone", |l| {
        single(l, "xena@localhost").is_some()
            && single(l, "wes@localhost").is_none()
            && member(meta_named(l, "Pals"), "yan@localhost")
                .is_some_and(|m| m["dormant"].is_null())
    })
    .await;
    assert_eq!(
        member(meta_named(&after, "Pals"), "yan@localhost").unwrap()["id"],
        yan[0].as_str()
    );
    assert_eq!(single(&after, "xena@localhost").unwrap()["isNew"], true);
    assert_eq!(meta_named(&after, "Pals")["name"], "Pals");

    // The login's report says so, for the account.
    let report = login_report(&app, &token, login["loginId"].as_str().unwrap()).await;
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(handles(&report["added"]), ["xena@localhost"]);
    assert_eq!(handles(&report["restored"]), ["yan@localhost"]);
    assert_eq!(handles(&report["removedUpstream"]), ["wes@localhost"]);
    for empty in ["removedByUnbinding", "renamed"] {
        assert_eq!(report[empty], json!([]), "{empty}: {report}");
    }

    // The diff between the two logins holds exactly what changed upstream in between.
    let diff = app
        .gql(
            Some(&token),
            "query($from: DateTime!) { contactsDiff(from: $from) {
               added { handle isNew } removed { handle } renamed { contact { handle } }
               merged { name } split { name } metaContactsRenamed { name } } }",
            json!({ "from": between.to_rfc3339() }),
        )
        .await;
    let diff = diff.data()["contactsDiff"].clone();
    let mut added: Vec<&str> = diff["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["handle"].as_str().unwrap())
        .collect();
    added.sort_unstable();
    assert_eq!(added, ["xena@localhost", "yan@localhost"], "{diff}");
    assert_eq!(
        diff["removed"],
        json!([{ "handle": "wes@localhost" }]),
        "{diff}"
    );
    for empty in ["renamed", "merged", "split", "metaContactsRenamed"] {
        assert_eq!(diff[empty], json!([]), "{empty}: {diff}");
    }

    // A login with nothing changed upstream records nothing.
    let events = app.event_count().await;
    app.logout(&token).await;
    let login = app.login("sam").await;
    let token = login["token"].as_str().unwrap().to_owned();
    app.wait_for_account(&token, &format!("{owner}@localhost"), "ONLINE")
        .await;
    assert_eq!(app.event_count().await, events, "no change, no event");
    let report = login_report(&app, &token, login["loginId"].as_str().unwrap()).await;
    assert_eq!(report["reconciled"], true, "{report}");
    for empty in [
        "added",
        "removedUpstream",
        "removedByUnbinding",
        "renamed",
        "restored",
    ] {
        assert_eq!(report[empty], json!([]), "{empty}: {report}");
    }

    // New until seen.
    let seen = app
        .gql(
            Some(&token),
            "mutation { markContactsSeen { contacts { handle isNew } } }",
            json!({}),
        )
        .await;
    let singles = seen.data()["markContactsSeen"]["contacts"]
        .as_array()
        .unwrap()
        .clone();
    assert!(singles.iter().all(|c| c["isNew"] == false), "{singles:?}");

    // Only a dormant member can be forgotten; forgetting is undoable.
    let refused = app
        .gql(
            Some(&token),
            "mutation($c: ID!) { forgetContact(contactId: $c) { contacts { id } } }",
            json!({ "c": zed[0] }),
        )
        .await;
    assert_eq!(refused.code(), "BAD_USER_INPUT");
    set_roster_item(&mut editor, "yan@localhost", "", Subscription::Remove).await;
    list_until(&app, &token, "yan dormant again", |l| {
        member(meta_named(l, "Pals"), "yan@localhost").is_some_and(|m| !m["dormant"].is_null())
    })
    .await;
    let forgotten = app
        .gql(
            Some(&token),
            "mutation($c: ID!) { forgetContact(contactId: $c) { metaContacts { name members { handle } } } }",
            json!({ "c": yan[0] }),
        )
        .await;
    let pals = &forgotten.data()["forgetContact"]["metaContacts"][0];
    assert_eq!(pals["members"].as_array().unwrap().len(), 1, "{pals}");
    let entry = app
        .gql(
            Some(&token),
            "{ history(kinds: [DORMANT_CONTACT_FORGOTTEN]) { entries { id undoable } } }",
            json!({}),
        )
        .await;
    let entry = entry.data()["history"]["entries"][0].clone();
    assert_eq!(entry["undoable"], true);
    let undone = app
        .gql(
            Some(&token),
            "mutation($e: ID!) { undo(eventId: $e) { metaContacts { name members { handle dormant { reason } } } } }",
            json!({ "e": entry["id"] }),
        )
        .await;
    let pals = &undone.data()["undo"]["metaContacts"][0];
    let yan_back = member(pals, "yan@localhost").expect("yan's place is back");
    assert_eq!(yan_back["dormant"]["reason"], "REMOVED_UPSTREAM");

    set_roster_item(&mut editor, "xena@localhost", "", Subscription::Remove).await;
    set_roster_item(&mut editor, "zed@localhost", "", Subscription::Remove).await;
    let _ = editor.send_end().await;
    app.stop().await;
    spare.kill();
}

#[tokio::test]
async fn the_login_report_is_pushed_as_accounts_come_online() {
    let _spare_turn = SPARE.lock().await;
    let mut spare = SpareProsody::new();
    let owner = fresh_spare_user(&spare);
    spare.start().await;
    let app = spawn_app().await;
    let token = app.register("vic", json!([spare.account(&owner)])).await;
    app.logout(&token).await;
    // The server is down at login: the account cannot come online before the client listens.
    spare.kill();
    let login = app.login("vic").await;
    let token = login["token"].as_str().unwrap().to_owned();
    let mut socket = open_socket(&app, &token).await;
    send(
        &mut socket,
        json!({ "id": "r", "type": "subscribe", "payload": { "query":
            "subscription { loginReportUpdated { accountId reconciled account { handle status { state } } added { handle } } }" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    spare.start().await;
    loop {
        let message = next(&mut socket).await;
        let part = &message["payload"]["data"]["loginReportUpdated"];
        assert_eq!(
            part["account"]["handle"],
            format!("{owner}@localhost"),
            "{message}"
        );
        if part["reconciled"] == true {
            assert_eq!(part["account"]["status"]["state"], "ONLINE");
            assert_eq!(part["added"], json!([]), "nothing new upstream");
            break;
        }
    }
    let report = app
        .gql(
            Some(&token),
            "query($l: ID) { loginReport(loginId: $l) { accounts { reconciled } } }",
            json!({ "l": login["loginId"] }),
        )
        .await;
    assert_eq!(
        report.data()["loginReport"]["accounts"][0]["reconciled"],
        true
    );
    app.stop().await;
    spare.kill();
}

#[tokio::test]
async fn a_login_while_the_accounts_are_connected_reports_them_up_to_date() {
    let app = spawn_app().await;
    let token = app.register("wyn", json!([xmpp_account("alice")])).await;
    app.wait_for_account(&token, "alice@localhost", "ONLINE")
        .await;
    // A second device logs in; the first session keeps the connection.
    let login = app.login("wyn").await;
    let report = login_report(
        &app,
        login["token"].as_str().unwrap(),
        login["loginId"].as_str().unwrap(),
    )
    .await;
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(report["added"], json!([]), "{report}");
    app.stop().await;
}
