//! The bench's upstream accounts on each network, from what scripts/bench-live.sh started: as
//! many as a step needs, each an `AccountInput` for GraphQL.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use switchboard::connectors::{AccountLogin, Credential};
use switchboard::domain::ids::{Handle, Protocol};
use switchboard::secret::Secret;

/// A network the memory bench measures, and how to get its `n`th account.
pub enum Network {
    /// The bench Prosody: users bench1..benchN, password `bench-pw`.
    Xmpp { server: String },
    /// ngIRCd: any nick, with the server password.
    Irc { server: String, password: String },
    /// Synapse: users registered here through the admin API (shared secret).
    Matrix {
        server: String,
        shared_secret: String,
    },
    /// nostr-relay: identities the bench script granted read and write, one per line of
    /// `name secret_hex public_hex nsec npub`.
    Nostr {
        relay: String,
        keys: Vec<(String, String)>,
    },
}

impl Network {
    /// Every network the environment offers, in the README's order.
    pub fn offered() -> Vec<Network> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut networks = Vec::new();
        if let Some(server) = var("SWITCHBOARD_BENCH_XMPP_SERVER") {
            networks.push(Network::Xmpp { server });
        }
        if let (Some(server), Some(password)) = (
            var("SWITCHBOARD_TEST_NGIRCD_SERVER"),
            var("SWITCHBOARD_TEST_NGIRCD_PASSWORD"),
        ) {
            networks.push(Network::Irc { server, password });
        }
        if let (Some(server), Some(shared_secret)) = (
            var("SWITCHBOARD_TEST_MATRIX_SERVER"),
            var("SWITCHBOARD_TEST_MATRIX_SHARED_SECRET"),
        ) {
            networks.push(Network::Matrix {
                server,
                shared_secret,
            });
        }
        if let (Some(relay), Some(file)) = (
            var("SWITCHBOARD_TEST_NOSTR_RELAY"),
            var("SWITCHBOARD_BENCH_NOSTR_KEYS"),
        ) {
            let keys = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    (fields.len() == 5).then(|| (fields[4].to_owned(), fields[1].to_owned()))
                })
                .collect();
            networks.push(Network::Nostr { relay, keys });
        }
        networks
    }

    pub fn name(&self) -> &'static str {
        match self {
            Network::Xmpp { .. } => "XMPP",
            Network::Irc { .. } => "IRC",
            Network::Matrix { .. } => "Matrix",
            Network::Nostr { .. } => "Nostr",
        }
    }

    /// Accounts 1..=`count` (made upstream first where the network needs it).
    pub async fn accounts(&self, count: usize) -> Vec<Value> {
        let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let mut accounts = Vec::with_capacity(count);
        for n in 1..=count {
            accounts.push(match self {
                Network::Xmpp { server } => xmpp_account(server, n),
                Network::Irc { server, password } => json!({
                    "protocol": "IRC", "server": server,
                    "handle": format!("mb{run}n{n}"), "secret": password,
                }),
                Network::Matrix {
                    server,
                    shared_secret,
                } => {
                    let user = format!("mb-{run}-{n}");
                    let password = format!("{user}-pw");
                    register_matrix_user(server, shared_secret, &user, &password).await;
                    json!({
                        "protocol": "MATRIX", "server": server,
                        "handle": format!("@{user}:localhost"), "secret": password,
                    })
                }
                Network::Nostr { relay, keys } => {
                    let (npub, secret) = keys.get(n - 1).unwrap_or_else(|| {
                        panic!("only {} Nostr bench keys: raise SWITCHBOARD_BENCH_NOSTR_USERS", keys.len())
                    });
                    json!({ "protocol": "NOSTR", "server": relay, "handle": npub, "secret": secret })
                }
            });
        }
        accounts
    }
}

/// The `n`th user of the bench Prosody.
pub fn xmpp_account(server: &str, n: usize) -> Value {
    json!({ "protocol": "XMPP", "server": server, "handle": format!("bench{n}@localhost"), "secret": "bench-pw" })
}

/// The login of the `n`th user of the bench Prosody, for the connector alone.
pub fn xmpp_login(server: &str, n: usize) -> AccountLogin {
    AccountLogin {
        protocol: Protocol::Xmpp,
        server: server.to_owned(),
        handle: Handle::parse(Protocol::Xmpp, &format!("bench{n}@localhost")).unwrap(),
        credential: Credential::Password(Secret::new("bench-pw")),
        contacts: Vec::new(),
        message_cursor: None,
    }
}

/// Registers a Matrix user with Synapse's shared-secret admin API (HMAC-SHA1 over nonce, user,
/// password and "notadmin").
async fn register_matrix_user(server: &str, shared_secret: &str, user: &str, password: &str) {
    let url = format!("{server}/_synapse/admin/v1/register");
    let http = reqwest::Client::new();
    let nonce: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let nonce = nonce["nonce"].as_str().expect("a registration nonce");
    let mut mac = Hmac::<Sha1>::new_from_slice(shared_secret.as_bytes()).unwrap();
    mac.update(format!("{nonce}\0{user}\0{password}\0notadmin").as_bytes());
    let mac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = http
        .post(&url)
        .json(&json!({
            "nonce": nonce, "username": user, "password": password, "admin": false, "mac": mac,
        }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "registering {user} on Synapse: {}",
        response.text().await.unwrap_or_default()
    );
}
