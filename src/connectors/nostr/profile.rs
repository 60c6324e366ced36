//! Contacts' profiles: kind-0 metadata read leniently (it is whatever JSON the contact's client
//! wrote), and NIP-05 identifiers checked against their domain before they count as verified
//! addresses. The session keeps a [`ProfileBook`]; checks run in tasks of their own so that a
//! slow domain never holds up presence or messages.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nostr::{Event, EventId, Kind, PublicKey, Timestamp};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::rustls::ClientConfig;
use tracing::{debug, warn};

use crate::connectors::ContactProfile;
use crate::domain::ids::Handle;
use crate::domain::matching::Profile;

/// A nickname longer than this (in characters) is cut: it is untrusted text that ends up in
/// the user's history.
const NICKNAME_MAX: usize = 256;
/// How long opening a connection to a NIP-05 domain may take.
const NIP05_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole NIP-05 request may take, body included.
const NIP05_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a `nostr.json` read: domains with many users may serve them all at once, but a
/// check only needs one name.
const NIP05_BODY_MAX: usize = 64 * 1024;
/// NIP-05 requests one session may have open at once.
const NIP05_CONCURRENCY: usize = 4;
/// How long profiles ready to report may wait for checks still running, so that one slow
/// domain does not hold up everybody else's.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// What a kind-0 event says that Switchboard uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Metadata {
    /// `display_name`, else `name`; trimmed, never empty.
    pub nickname: Option<String>,
    /// The NIP-05 identifier, when there is a usable one.
    pub nip05: Option<Nip05Id>,
}

/// Why a kind-0 content was not read.
#[derive(Debug, thiserror::Error)]
enum MetadataError {
    #[error("the content is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the content is not a JSON object")]
    NotAnObject,
}

/// Reads a kind-0 content. Fields of the wrong type count as absent; an unusable `nip05` is
/// dropped (logged), the nickname kept.
fn parse_metadata(content: &str) -> Result<Metadata, MetadataError> {
    let value: Value = serde_json::from_str(content)?;
    let fields = value.as_object().ok_or(MetadataError::NotAnObject)?;
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|text| !text.is_empty())
    };
    let nickname = text("display_name")
        .or_else(|| text("name"))
        .map(|name| name.chars().take(NICKNAME_MAX).collect::<String>())
        // Cutting may leave trailing spaces.
        .map(|name| name.trim_end().to_owned());
    let nip05 = text("nip05").and_then(|raw| {
        let parsed = Nip05Id::parse(raw);
        if parsed.is_none() {
            debug!(
                nip05 = raw,
                "ignoring a NIP-05 identifier that is not local@domain"
            );
        }
        parsed
    });
    Ok(Metadata { nickname, nip05 })
}

/// A NIP-05 identifier, `local@domain`, in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Nip05Id {
    local: String,
    domain: String,
}

impl Nip05Id {
    /// `local@domain`, or a bare `domain` (which NIP-05 reads as `_@domain`). The local part
    /// may hold `a-z0-9-_.` only; the domain must be a DNS name (ASCII labels: letters, digits,
    /// hyphens). Case does not matter.
    fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim().to_ascii_lowercase();
        let (local, domain) = match raw.split_once('@') {
            Some((local, domain)) => (local, domain),
            None => ("_", raw.as_str()),
        };
        let local_ok = !local.is_empty()
            && local
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        (local_ok && is_dns_name(domain)).then(|| Self {
            local: local.to_owned(),
            domain: domain.to_owned(),
        })
    }

    /// The address a verified identifier stands for: `local@domain`. `None` for the domain's
    /// root identifier `_@domain`: it says the key speaks for the domain, not which mailbox-like
    /// address (JID) its owner has, and `_` is no one's user name; so it is not checked at all.
    fn address(&self) -> Option<String> {
        (self.local != "_").then(|| format!("{}@{}", self.local, self.domain))
    }

    /// Where NIP-05 says the domain lists its names: always https, the name as a query. `None`
    /// if URL parsing reads the domain as something else (`0x7f.1` is 127.0.0.1 to it).
    fn url(&self) -> Option<Url> {
        let mut url =
            Url::parse(&format!("https://{}/.well-known/nostr.json", self.domain)).ok()?;
        if url.host_str() != Some(self.domain.as_str()) {
            return None;
        }
        url.query_pairs_mut().append_pair("name", &self.local);
        Some(url)
    }
}

/// Whether `domain` is a plausible DNS name: dot-separated labels of ASCII letters, digits and
/// inner hyphens, no port, no trailing dot.
fn is_dns_name(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// The key a `nostr.json` lists under `local`, in lower case; `None` when it lists none or is
/// not a `nostr.json` at all.
fn listed_key(body: &[u8], local: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let key = value.get("names")?.as_object()?.get(local)?.as_str()?;
    Some(key.trim().to_ascii_lowercase())
}

/// Why a `nostr.json` could not be read.
#[derive(Debug, thiserror::Error)]
enum Nip05Error {
    #[error("the request failed: {0}")]
    Request(#[from] reqwest::Error),
    /// Redirects among them: NIP-05 forbids following them.
    #[error("the domain answered HTTP {0}")]
    Status(StatusCode),
    #[error("the answer is larger than {NIP05_BODY_MAX} bytes")]
    TooLarge,
    #[error("the identifier's domain is not one to ask ({0})")]
    Refused(&'static str),
}

/// The HTTPS client NIP-05 checks go through: one per connector, shared by its sessions.
#[derive(Clone)]
pub(super) struct Nip05Client {
    http: reqwest::Client,
    /// Domains dialled at a fixed address ([`crate::connectors::ConnectorOptions`]); any other
    /// must be a name with a dot, so that a contact cannot make us ask `localhost` or a host
    /// of the local network by its short name.
    fixed: Arc<HashSet<String>>,
}

impl Nip05Client {
    /// A client trusting `tls`'s roots, not following redirects, bounded in time; `resolve`
    /// dials those domains at those addresses instead of looking them up. `None` (logged) if
    /// the client cannot be built, which leaves every identifier unverified.
    pub fn new(
        tls: &Arc<ClientConfig>,
        resolve: &[(String, SocketAddr)],
        upstream: &crate::connectors::net::UpstreamPolicy,
    ) -> Option<Self> {
        let mut builder = reqwest::Client::builder()
            .dns_resolver(Arc::new(upstream.clone()))
            .use_preconfigured_tls((**tls).clone())
            .connect_timeout(NIP05_CONNECT_TIMEOUT)
            .timeout(NIP05_TIMEOUT)
            .user_agent(concat!("Switchboard/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        let mut fixed = HashSet::new();
        for (domain, address) in resolve {
            let domain = domain.trim().to_ascii_lowercase();
            builder = builder.resolve(&domain, *address);
            fixed.insert(domain);
        }
        if !fixed.is_empty() {
            // A proxy would dial the domain by its name, not at the address given.
            builder = builder.no_proxy();
        }
        match builder.build() {
            Ok(http) => Some(Self {
                http,
                fixed: Arc::new(fixed),
            }),
            Err(e) => {
                warn!("no HTTP client for NIP-05 checks, no identifier will be verified: {e}");
                None
            }
        }
    }

    /// The key `id`'s domain lists for it (lower-case hex), if any.
    async fn listed_key(&self, id: &Nip05Id) -> Result<Option<String>, Nip05Error> {
        if !self.fixed.contains(&id.domain) {
            if !id.domain.contains('.') {
                return Err(Nip05Error::Refused("a name without a dot"));
            }
            if id.domain.parse::<std::net::Ipv4Addr>().is_ok() {
                return Err(Nip05Error::Refused("an IP address"));
            }
        }
        let url = id
            .url()
            .ok_or(Nip05Error::Refused("an IP address to URL parsing"))?;
        let body = fetch(&self.http, url).await?;
        Ok(listed_key(&body, &id.local))
    }
}

/// GETs `url` without following redirects; the body if the answer is a success of at most
/// [`NIP05_BODY_MAX`] bytes.
async fn fetch(http: &reqwest::Client, url: Url) -> Result<Vec<u8>, Nip05Error> {
    let mut response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await?;
    if response.status() != StatusCode::OK {
        return Err(Nip05Error::Status(response.status()));
    }
    if response
        .content_length()
        .is_some_and(|length| length > NIP05_BODY_MAX as u64)
    {
        return Err(Nip05Error::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > NIP05_BODY_MAX {
            return Err(Nip05Error::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One session's NIP-05 checks: each identifier is asked once per session (whatever the
/// outcome; a failure is not retried before the next login), a few at a time.
struct Nip05Checks {
    client: Option<Nip05Client>,
    limit: Semaphore,
    /// The key each identifier's domain listed; `None` for none or a failed request.
    answers: Mutex<HashMap<Nip05Id, Arc<OnceCell<Option<String>>>>>,
}

impl Nip05Checks {
    pub fn new(client: Option<Nip05Client>) -> Self {
        Self {
            client,
            limit: Semaphore::new(NIP05_CONCURRENCY),
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `id`'s domain says `id` is `key`'s. Failures are logged (debug) and mean no.
    pub async fn verify(&self, id: &Nip05Id, key: &PublicKey) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let answer = {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(answers.entry(id.clone()).or_default())
        };
        let listed = answer
            .get_or_init(|| async {
                // Never closed, so acquiring cannot fail; if it did, asking anyway is harmless.
                let _permit = self.limit.acquire().await.ok();
                match client.listed_key(id).await {
                    Ok(listed) => listed,
                    Err(e) => {
                        debug!(domain = %id.domain, name = %id.local, "NIP-05 check failed: {e}");
                        None
                    }
                }
            })
            .await;
        let verified = listed.as_deref() == Some(key.to_hex().as_str());
        if !verified {
            debug!(domain = %id.domain, name = %id.local, %key, "NIP-05 identifier not confirmed");
        }
        verified
    }
}

/// A finished NIP-05 check, for the profile of one kind-0 event.
pub(super) struct Checked {
    key: PublicKey,
    event: EventId,
    profile: Profile,
}

/// The newest kind-0 event read of a contact.
struct Newest {
    at: Timestamp,
    id: EventId,
}

/// What the session knows of its contacts' profiles and what it has reported of them.
pub(super) struct ProfileBook {
    checks: Arc<Nip05Checks>,
    running: JoinSet<Checked>,
    newest: HashMap<PublicKey, Newest>,
    /// Profiles ready to report, and since when the oldest of them waits.
    ready: HashMap<PublicKey, Profile>,
    ready_since: Option<Instant>,
    reported: HashMap<PublicKey, Profile>,
    /// Stored kind-0 events are still coming (until the subscription's EOSE).
    pub loading: bool,
}

impl ProfileBook {
    pub fn new(client: Option<Nip05Client>) -> Self {
        Self {
            checks: Arc::new(Nip05Checks::new(client)),
            running: JoinSet::new(),
            newest: HashMap::new(),
            ready: HashMap::new(),
            ready_since: None,
            reported: HashMap::new(),
            loading: false,
        }
    }

    /// Takes in a contact's kind-0 event (the caller checked it is a contact's): the newest one
    /// per contact counts (NIP-01: on a tie, the lowest id). Its NIP-05 identifier, if any, is
    /// checked in a task of its own, whose result comes back through [`Self::next_checked`].
    pub fn on_metadata(&mut self, event: &Event) {
        if event.kind != Kind::Metadata {
            return;
        }
        let key = event.pubkey;
        let newer = self.newest.get(&key).is_none_or(|current| {
            event.created_at > current.at
                || (event.created_at == current.at && event.id < current.id)
        });
        if !newer {
            return;
        }
        let metadata = match parse_metadata(&event.content) {
            Ok(metadata) => metadata,
            Err(e) => {
                debug!(id = %event.id, author = %key, "ignoring unreadable kind-0 metadata: {e}");
                return;
            }
        };
        self.newest.insert(
            key,
            Newest {
                at: event.created_at,
                id: event.id,
            },
        );
        // Whatever was ready for this contact is older than this.
        self.ready.remove(&key);
        let profile = Profile {
            nickname: metadata.nickname,
            emails: Vec::new(),
            verified_address: None,
        };
        let Some((id, address)) = metadata
            .nip05
            .and_then(|id| id.address().map(|address| (id, address)))
        else {
            self.make_ready(key, profile);
            return;
        };
        let checks = Arc::clone(&self.checks);
        let event = event.id;
        self.running.spawn(async move {
            let verified = checks.verify(&id, &key).await;
            Checked {
                key,
                event,
                profile: Profile {
                    verified_address: verified.then_some(address),
                    ..profile
                },
            }
        });
    }

    /// The next finished check; pending for ever while none runs (for `select!`).
    pub async fn next_checked(&mut self) -> Checked {
        loop {
            match self.running.join_next().await {
                Some(Ok(checked)) => return checked,
                Some(Err(e)) => debug!("a NIP-05 check task ended early: {e}"),
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// A check's outcome: ready to report, unless a newer kind-0 came meanwhile.
    pub fn on_checked(&mut self, checked: Checked) {
        if self
            .newest
            .get(&checked.key)
            .is_some_and(|newest| newest.id == checked.event)
        {
            self.make_ready(checked.key, checked.profile);
        }
    }

    fn make_ready(&mut self, key: PublicKey, profile: Profile) {
        self.ready.insert(key, profile);
        self.ready_since.get_or_insert_with(Instant::now);
    }

    /// Forgets what concerns contacts no longer in `contacts`: should they come back, their
    /// profile is news again. Their running checks finish, and their outcome is dropped.
    pub fn retain(&mut self, contacts: &HashMap<PublicKey, Handle>) {
        self.newest.retain(|key, _| contacts.contains_key(key));
        self.ready.retain(|key, _| contacts.contains_key(key));
        self.reported.retain(|key, _| contacts.contains_key(key));
        if self.ready.is_empty() {
            self.ready_since = None;
        }
    }

    /// The profiles to report now (ordered by handle), leaving out those reported already
    /// exactly so and those of anyone not in `contacts`; `None` while stored events are still
    /// coming, or while checks run that the ready profiles have waited for less than
    /// [`BATCH_WAIT`].
    pub fn batch(&mut self, contacts: &HashMap<PublicKey, Handle>) -> Option<Vec<ContactProfile>> {
        let since = self.ready_since?;
        if self.loading || (!self.running.is_empty() && since.elapsed() < BATCH_WAIT) {
            return None;
        }
        self.ready_since = None;
        let mut batch = Vec::new();
        for (key, profile) in self.ready.drain() {
            let Some(handle) = contacts.get(&key) else {
                continue;
            };
            if self.reported.get(&key) == Some(&profile) {
                continue;
            }
            self.reported.insert(key, profile.clone());
            batch.push(ContactProfile {
                handle: handle.clone(),
                profile,
            });
        }
        batch.sort_by(|a, b| a.handle.cmp(&b.handle));
        (!batch.is_empty()).then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, SecretKey};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::domain::ids::Protocol;

    fn keys(seed: u8) -> Keys {
        Keys::new(SecretKey::from_slice(&[seed; 32]).unwrap())
    }

    fn id(raw: &str) -> Nip05Id {
        Nip05Id::parse(raw).unwrap_or_else(|| panic!("{raw} refused"))
    }

    #[test]
    fn kind0_names_prefer_display_name_and_are_trimmed() {
        let read = |content: &str| parse_metadata(content).unwrap().nickname;
        assert_eq!(
            read(r#"{"name":"bob","display_name":" Bob Smith "}"#),
            Some("Bob Smith".to_owned())
        );
        assert_eq!(
            read(r#"{"name":" bob ","display_name":"  "}"#),
            Some("bob".to_owned())
        );
        assert_eq!(read(r#"{"name":"","display_name":42}"#), None);
        assert_eq!(read(r#"{"about":"no name"}"#), None);
        let long = "é".repeat(NICKNAME_MAX + 10);
        assert_eq!(
            read(&serde_json::json!({ "name": long }).to_string())
                .unwrap()
                .chars()
                .count(),
            NICKNAME_MAX
        );
    }

    #[test]
    fn malformed_kind0_content_is_an_error_not_a_panic() {
        for bad in [
            "",
            "not json",
            "{\"name\":",
            "[\"name\"]",
            "\"bob\"",
            "null",
        ] {
            assert!(parse_metadata(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kind0_nip05_is_read_when_usable() {
        let read = |content: &str| parse_metadata(content).unwrap().nip05;
        assert_eq!(
            read(r#"{"name":"bob","nip05":"Bob@Example.org"}"#),
            Some(id("bob@example.org"))
        );
        // A bad identifier is dropped; the name stays.
        let metadata = parse_metadata(r#"{"name":"bob","nip05":"bob@@x"}"#).unwrap();
        assert_eq!(metadata.nip05, None);
        assert_eq!(metadata.nickname, Some("bob".to_owned()));
        assert_eq!(read(r#"{"nip05":17}"#), None);
    }

    #[test]
    fn nip05_identifiers_split_and_normalise() {
        let bob = id(" Bob.Smith_1-x@Sub.Example.ORG ");
        assert_eq!(
            (bob.local.as_str(), bob.domain.as_str()),
            ("bob.smith_1-x", "sub.example.org")
        );
        assert_eq!(
            bob.address(),
            Some("bob.smith_1-x@sub.example.org".to_owned())
        );
        assert_eq!(
            bob.url().unwrap().as_str(),
            "https://sub.example.org/.well-known/nostr.json?name=bob.smith_1-x"
        );
        // A bare domain is the domain's root identifier: no address, hence never checked.
        let root = id("Example.org");
        assert_eq!(
            (root.local.as_str(), root.domain.as_str()),
            ("_", "example.org")
        );
        assert_eq!(root.address(), None);
        assert_eq!(id("_@example.org"), root);
        assert_eq!(id("localhost").domain, "localhost");
        for bad in [
            "",
            "@example.org",
            "bob@",
            "bob@@example.org",
            "bob@ex@ample.org",
            "bob smith@example.org",
            "bob+tag@example.org",
            "bob@example.org:8443",
            "bob@example.org/path",
            "bob@example.org.",
            "bob@-example.org",
            "bob@exa_mple.org",
            "bob@ex..org",
            "bob@[::1]",
            "bøb@example.org",
            "bob@exämple.org",
        ] {
            assert_eq!(Nip05Id::parse(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn nostr_json_must_list_the_key_under_the_name() {
        let bob = keys(2).public_key();
        let other = keys(3).public_key();
        let body = serde_json::json!({
            "names": { "bob": bob.to_hex().to_uppercase(), "eve": other.to_hex() },
            "relays": {}
        })
        .to_string();
        assert_eq!(listed_key(body.as_bytes(), "bob"), Some(bob.to_hex()));
        assert_eq!(listed_key(body.as_bytes(), "eve"), Some(other.to_hex()));
        assert_eq!(listed_key(body.as_bytes(), "carl"), None);
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"names":[]}"#,
            r#"{"names":{"bob":1}}"#,
            r#"{"bob":"x"}"#,
        ] {
            assert_eq!(listed_key(bad.as_bytes(), "bob"), None, "{bad}");
        }
    }

    fn handle(key: &PublicKey) -> Handle {
        Handle::parse(Protocol::Nostr, &key.to_hex()).unwrap()
    }

    fn metadata(keys: &Keys, content: &str, at: u64) -> Event {
        EventBuilder::new(Kind::Metadata, content)
            .custom_created_at(Timestamp::from_secs(at))
            .sign_with_keys(keys)
            .unwrap()
    }

    #[tokio::test]
    async fn the_book_reports_the_newest_profile_once() {
        let (ann, ben) = (keys(2), keys(3));
        let mut order = [
            (ann.public_key(), handle(&ann.public_key())),
            (ben.public_key(), handle(&ben.public_key())),
        ];
        order.sort_by(|a, b| a.1.cmp(&b.1));
        let (first, second) = (order[0].0, order[1].0);
        let contacts: HashMap<PublicKey, Handle> = order.iter().cloned().collect();
        let name = |key: PublicKey, name: &str| {
            if key == ann.public_key() {
                format!("Ann{name}")
            } else {
                format!("Ben{name}")
            }
        };
        let nick = |name: &str| Profile {
            nickname: Some(name.to_owned()),
            ..Profile::default()
        };
        let mut book = ProfileBook::new(None);
        book.loading = true;
        book.on_metadata(&metadata(&ben, r#"{"name":"Ben"}"#, 100));
        book.on_metadata(&metadata(&ann, r#"{"name":"Ann old"}"#, 100));
        book.on_metadata(&metadata(&ann, r#"{"name":"Ann"}"#, 200));
        book.on_metadata(&metadata(&ann, r#"{"name":"Ann older"}"#, 50));
        book.on_metadata(&metadata(&ann, "{not json", 300));
        assert_eq!(book.batch(&contacts), None, "nothing before the EOSE");
        book.loading = false;
        let batch = book.batch(&contacts).unwrap();
        assert_eq!(
            batch,
            vec![
                ContactProfile {
                    handle: order[0].1.clone(),
                    profile: nick(&name(first, "")),
                },
                ContactProfile {
                    handle: order[1].1.clone(),
                    profile: nick(&name(second, "")),
                },
            ]
        );
        assert_eq!(book.batch(&contacts), None);
        // The same profile in a newer event is no news; a changed one is.
        book.on_metadata(&metadata(&ann, r#"{"name":" Ann "}"#, 400));
        assert_eq!(book.batch(&contacts), None);
        book.on_metadata(&metadata(&ben, r#"{"display_name":"Benny"}"#, 400));
        assert_eq!(
            book.batch(&contacts).unwrap(),
            vec![ContactProfile {
                handle: handle(&ben.public_key()),
                profile: nick("Benny"),
            }]
        );
        // A contact that left and came back is news again; one that is gone is not reported.
        let only_ben = contacts
            .iter()
            .filter(|(key, _)| **key == ben.public_key())
            .map(|(key, handle)| (*key, handle.clone()))
            .collect();
        book.on_metadata(&metadata(&ann, r#"{"name":"Ann X"}"#, 450));
        book.retain(&only_ben);
        assert_eq!(book.batch(&only_ben), None);
        book.retain(&contacts);
        book.on_metadata(&metadata(&ann, r#"{"name":"Ann"}"#, 500));
        assert_eq!(
            book.batch(&contacts).unwrap(),
            vec![ContactProfile {
                handle: handle(&ann.public_key()),
                profile: nick("Ann"),
            }]
        );
    }

    #[tokio::test]
    async fn without_a_client_nip05_is_not_verified_and_the_nickname_still_reported() {
        let ann = keys(2);
        let contacts = HashMap::from([(ann.public_key(), handle(&ann.public_key()))]);
        let mut book = ProfileBook::new(None);
        book.on_metadata(&metadata(
            &ann,
            r#"{"name":"Ann","nip05":"ann@example.org"}"#,
            100,
        ));
        let checked = tokio::time::timeout(Duration::from_secs(5), book.next_checked())
            .await
            .unwrap();
        book.on_checked(checked);
        let batch = book.batch(&contacts).unwrap();
        assert_eq!(batch[0].profile.nickname, Some("Ann".to_owned()));
        assert_eq!(batch[0].profile.verified_address, None);
    }

    /// A plain-HTTP server on loopback answering every request with `response`, counting them.
    async fn serve(response: Vec<u8>) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!(
            "http://{}/.well-known/nostr.json?name=bob",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.ends_with(b"\r\n\r\n") {
                        match tcp.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = tcp.write_all(&response).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        (url, count)
    }

    fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut response =
            format!("HTTP/1.1 {status}\r\nconnection: close\r\n{headers}\r\n").into_bytes();
        response.extend_from_slice(body);
        response
    }

    #[tokio::test]
    async fn fetch_takes_ok_answers_and_refuses_redirects_and_big_ones() {
        // The connector's own client (a fixed address keeps proxies out of it); plain http
        // here, which only `fetch` called directly can be made to use.
        let tls = crate::connectors::tls::client_config(crate::connectors::tls::public_roots());
        let unused = ("unused.test".to_owned(), "127.0.0.1:1".parse().unwrap());
        let http = Nip05Client::new(&tls, &[unused], &Default::default())
            .unwrap()
            .http;
        let json = br#"{"names":{"bob":"00"}}"#;
        let (url, _) = serve(answer(
            "200 OK",
            &format!("content-length: {}\r\n", json.len()),
            json,
        ))
        .await;
        assert_eq!(fetch(&http, url).await.unwrap(), json);

        let (url, count) = serve(answer(
            "302 Found",
            "location: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n",
            b"",
        ))
        .await;
        let error = fetch(&http, url).await.unwrap_err();
        assert!(
            matches!(error, Nip05Error::Status(StatusCode::FOUND)),
            "{error}"
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

        let (url, _) = serve(answer("404 Not Found", "content-length: 0\r\n", b"")).await;
        assert!(matches!(
            fetch(&http, url).await,
            Err(Nip05Error::Status(StatusCode::NOT_FOUND))
        ));

        // Too big, whether the length is announced or not.
        let big = vec![b' '; NIP05_BODY_MAX + 1];
        let (url, _) = serve(answer(
            "200 OK",
            &format!("content-length: {}\r\n", big.len()),
            &big,
        ))
        .await;
        assert!(matches!(fetch(&http, url).await, Err(Nip05Error::TooLarge)));
        let (url, _) = serve(answer("200 OK", "", &big)).await;
        assert!(matches!(fetch(&http, url).await, Err(Nip05Error::TooLarge)));
        // Exactly the cap is fine.
        let (url, _) = serve(answer("200 OK", "", &big[1..])).await;
        assert_eq!(fetch(&http, url).await.unwrap().len(), NIP05_BODY_MAX);
    }

    #[tokio::test]
    async fn short_names_and_ip_addresses_are_not_asked_unless_given_an_address() {
        let tls = crate::connectors::tls::client_config(crate::connectors::tls::public_roots());
        let client = Nip05Client::new(&tls, &[], &Default::default()).unwrap();
        for raw in [
            "bob@localhost",
            "bob@intranet",
            "bob@10.0.0.1",
            "bob@0x7f.1",
            "bob@127.1",
        ] {
            assert!(
                matches!(
                    client.listed_key(&id(raw)).await,
                    Err(Nip05Error::Refused(_))
                ),
                "{raw}"
            );
        }
        // With a fixed address the name is asked (and here nobody listens there).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let client = Nip05Client::new(
            &tls,
            &[("LocalHost".to_owned(), address)],
            &Default::default(),
        )
        .unwrap();
        assert!(matches!(
            client.listed_key(&id("bob@localhost")).await,
            Err(Nip05Error::Request(_))
        ));
    }

    #[tokio::test]
    async fn one_identifier_is_asked_once_per_session() {
        // A domain that hangs up on every connection: each request fails in the TLS handshake,
        // and the failure is what the other checks of the same identifier get.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(tcp);
            }
        });
        let tls = crate::connectors::tls::client_config(crate::connectors::tls::public_roots());
        let client = Nip05Client::new(
            &tls,
            &[("localhost".to_owned(), address)],
            &Default::default(),
        )
        .unwrap();
        let checks = Arc::new(Nip05Checks::new(Some(client)));
        let bob = id("bob@localhost");
        let mut all = JoinSet::new();
        for seed in 1..=20u8 {
            let (checks, bob) = (Arc::clone(&checks), bob.clone());
            all.spawn(async move { checks.verify(&bob, &keys(seed).public_key()).await });
        }
        while let Some(verified) = all.join_next().await {
            assert!(!verified.unwrap());
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            !checks
                .verify(&id("carl@localhost"), &keys(1).public_key())
                .await
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
