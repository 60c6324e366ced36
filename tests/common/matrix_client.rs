//! A plain Matrix client for the other side of the tests (tests/matrix.rs and the API tests):
//! raw client-server API calls to the Synapse scripts/test.sh runs, and throwaway users made
//! with the server's registration shared secret.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha1::Sha1;

use super::env;

/// Generous: a `/sync` long poll wakes as soon as something happens, normally within 0.1 s.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// The Synapse base URL, e.g. `http://127.0.0.1:PORT`.
pub fn server() -> String {
    env("SWITCHBOARD_TEST_MATRIX_SERVER")
}

/// The password every test user has: `<localpart>-pw-7Q`.
pub fn password_of(localpart: &str) -> String {
    format!("{localpart}-pw-7Q")
}

/// The independent client: one logged-in user, raw client-server API calls.
pub struct Raw {
    pub http: reqwest::Client,
    pub user: String,
    pub token: String,
    pub since: Option<String>,
}

impl Raw {
    pub async fn login(localpart: &str) -> Raw {
        let http = reqwest::Client::new();
        let (status, answer) = request(
            &http,
            None,
            Method::POST,
            "login",
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": localpart },
                "password": password_of(localpart),
                "initial_device_display_name": "tests/matrix.rs",
            })),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{localpart} cannot log in: {answer}"
        );
        Raw {
            http,
            user: answer["user_id"].as_str().unwrap().to_owned(),
            token: answer["access_token"].as_str().unwrap().to_owned(),
            since: None,
        }
    }

    /// A call that must succeed; `path` is below `/_matrix/client/v3/`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) =
            request(&self.http, Some(&self.token), method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "{} {method} {path}: {status} {answer}",
            self.user
        );
        answer
    }

    pub async fn set_presence(&self, presence: &str, status: Option<&str>) {
        let mut body = json!({ "presence": presence });
        if let Some(status) = status {
            body["status_msg"] = json!(status);
        }
        self.call(
            Method::PUT,
            &format!("presence/{}/status", enc(&self.user)),
            Some(body),
        )
        .await;
    }

    pub async fn presence_of(&self, user: &str) -> String {
        let answer = self
            .call(Method::GET, &format!("presence/{}/status", enc(user)), None)
            .await;
        answer["presence"].as_str().unwrap().to_owned()
    }

    /// A DM room with `other`, invited; listed in our own `m.direct` the way clients do.
    pub async fn create_dm(&self, other: &str) -> String {
        let answer = self
            .call(
                Method::POST,
                "createRoom",
                Some(json!({
                    "preset": "trusted_private_chat",
                    "is_direct": true,
                    "invite": [other],
                })),
            )
            .await;
        let room = answer["room_id"].as_str().unwrap().to_owned();
        let mut direct = self.direct().await;
        direct
            .as_object_mut()
            .unwrap()
            .entry(other)
            .or_insert(json!([]))
            .as_array_mut()
            .unwrap()
            .push(json!(room));
        self.call(
            Method::PUT,
            &format!("user/{}/account_data/m.direct", enc(&self.user)),
            Some(direct),
        )
        .await;
        room
    }

    /// Our `m.direct` account data (an empty object when there is none yet).
    pub async fn direct(&self) -> Value {
        let path = format!("user/{}/account_data/m.direct", enc(&self.user));
        let (status, answer) =
            request(&self.http, Some(&self.token), Method::GET, &path, None).await;
        match status {
            StatusCode::OK => answer,
            StatusCode::NOT_FOUND => json!({}),
            other => panic!("{} cannot read m.direct: {other} {answer}", self.user),
        }
    }

    pub async fn join(&self, room: &str) {
        self.call(
            Method::POST,
            &format!("join/{}", enc(room)),
            Some(json!({})),
        )
        .await;
    }

    /// Sends an event; returns its id.
    pub async fn send(&self, room: &str, kind: &str, content: Value) -> String {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let answer = self
            .call(
                Method::PUT,
                &format!("rooms/{}/send/{kind}/{txn}", enc(room)),
                Some(content),
            )
            .await;
        answer["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, room: &str, body: &str) -> String {
        self.send(
            room,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await
    }

    /// The newest `limit` message events of `room`, oldest first.
    pub async fn room_messages(&self, room: &str, limit: u32) -> Vec<Value> {
        let filter = enc(&json!({ "types": ["m.room.message"] }).to_string());
        let answer = self
            .call(
                Method::GET,
                &format!(
                    "rooms/{}/messages?dir=b&limit={limit}&filter={filter}",
                    enc(room)
                ),
                None,
            )
            .await;
        let mut events = answer["chunk"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// Syncs until `found` picks something out of a sync answer; our presence is left alone.
    pub async fn sync_until<T>(&mut self, found: impl Fn(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: nothing found in time",
                self.user
            );
            let mut path = "sync?timeout=2000&set_presence=offline".to_owned();
            if let Some(since) = &self.since {
                path.push_str(&format!("&since={}", enc(since)));
            }
            let answer = self.call(Method::GET, &path, None).await;
            self.since = Some(answer["next_batch"].as_str().unwrap().to_owned());
            if let Some(value) = found(&answer) {
                return value;
            }
        }
    }

    pub async fn logout(&self) {
        self.call(Method::POST, "logout", Some(json!({}))).await;
    }
}

/// A `/_matrix/client/v3/` call: status and JSON answer (`null` if the body is not JSON).
pub async fn request(
    http: &reqwest::Client,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, format!("{}/_matrix/client/v3/{path}", server()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("Synapse answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Percent-encodes one path segment or query value (ids contain `@`, `:`, `!`).
pub fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Registers a throwaway user `<prefix>-<random>` named `display_name`, with the shared
/// secret (Synapse's admin registration API); returns the localpart. The password follows the
/// `<name>-pw-7Q` rule.
pub async fn register(prefix: &str, display_name: &str) -> String {
    let localpart = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let password = password_of(&localpart);
    let url = format!("{}/_synapse/admin/v1/register", server());
    let http = reqwest::Client::new();
    let nonce: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let nonce = nonce["nonce"].as_str().unwrap();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(env("SWITCHBOARD_TEST_MATRIX_SHARED_SECRET").as_bytes())
            .unwrap();
    for (i, part) in [nonce, &localpart, &password, "notadmin"]
        .iter()
        .enumerate()
    {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    let mac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = http
        .post(&url)
        .json(&json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "displayname": display_name,
            "admin": false,
            "mac": mac,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, StatusCode::OK, "{}", response.text().await.unwrap());
    localpart
}

/// Two throwaway users with a DM room between them, listed in both sides' `m.direct`; returns
/// the localparts and the room.
pub async fn fresh_pals(a_name: &str, b_name: &str) -> (String, String, String) {
    let (a_prefix, b_prefix) = (a_name.to_lowercase(), b_name.to_lowercase());
    let (a, b) = tokio::join!(register(&a_prefix, a_name), register(&b_prefix, b_name));
    let (raw_a, raw_b) = tokio::join!(Raw::login(&a), Raw::login(&b));
    let room = raw_a.create_dm(&raw_b.user).await;
    raw_b.join(&room).await;
    let mut direct = raw_b.direct().await;
    direct[&raw_a.user] = json!([room]);
    raw_b
        .call(
            Method::PUT,
            &format!("user/{}/account_data/m.direct", enc(&raw_b.user)),
            Some(direct),
        )
        .await;
    tokio::join!(raw_a.logout(), raw_b.logout());
    (a, b, room)
}
