//! The contact list as the reconciliation tests read it: with dormant members, polled until
//! it shows a change, and the parts of a login's report.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::TestApp;

pub const CONTACTS_WITH_DORMANCY: &str = "query { contacts {
    metaContacts { id name members { id handle displayName isNew dormant { reason since } } }
    contacts { id handle displayName isNew }
} }";

pub async fn list(app: &TestApp, token: &str) -> Value {
    app.gql(Some(token), CONTACTS_WITH_DORMANCY, json!({}))
        .await
        .data()["contacts"]
        .clone()
}

/// Polls the contact list until `ready` accepts it (reconciliation runs after the answer).
pub async fn list_until(
    app: &TestApp,
    token: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let current = list(app, token).await;
        if ready(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the contact list never showed {what}: {current}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn meta_named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["metaContacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no meta-contact {name}: {list}"))
}

pub fn member<'a>(meta: &'a Value, handle: &str) -> Option<&'a Value> {
    meta["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["handle"] == handle)
}

pub fn single<'a>(list: &'a Value, handle: &str) -> Option<&'a Value> {
    list["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["handle"] == handle)
}

/// The one account's part of a login's report.
pub async fn login_report(app: &TestApp, token: &str, login: &str) -> Value {
    let report = app
        .gql(
            Some(token),
            "query($l: ID) { loginReport(loginId: $l) { loginId accounts { reconciled
               added { handle } removedUpstream { handle } removedByUnbinding { handle }
               renamed { handle previousName } restored { handle } } } }",
            json!({ "l": login }),
        )
        .await;
    let report = report.data()["loginReport"].clone();
    assert_eq!(report["loginId"], login);
    assert_eq!(report["accounts"].as_array().unwrap().len(), 1, "{report}");
    report["accounts"][0].clone()
}

pub fn handles(contacts: &Value) -> Vec<String> {
    let mut handles: Vec<String> = contacts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["handle"].as_str().unwrap().to_owned())
        .collect();
    handles.sort();
    handles
}

pub const MERGE: &str = "mutation($name: String!, $ids: [ID!]!) {
  mergeContacts(name: $name, contactIds: $ids) { metaContactId } }";
