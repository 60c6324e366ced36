//! Typed settings: defaults, then an optional TOML file, then the environment, then flags.
//! Secrets are wrapped so they never print.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connectors::net::Network;
use crate::connectors::RequireTls;
use crate::secret::Secret;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: run a private PostgreSQL in the data folder.
    pub database_url: Option<Secret>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base64 of 32 bytes. `None` in embedded mode: generated into the data folder.
    pub master_key: Option<Secret>,
    /// Where GraphiQL's files are (the npm install of `web/`).
    pub web_assets: PathBuf,
    pub connect_timeout: Duration,
    /// The longest wait between two reconnection attempts of one account.
    pub reconnect_max: Duration,
    pub max_db_connections: u32,
    /// PEM file of root certificates connectors trust for TLS besides the public web PKI roots.
    pub extra_ca_file: Option<PathBuf>,
    /// NIP-05 domains whose `nostr.json` is fetched from a fixed address rather than the one
    /// DNS gives (still over HTTPS): for tests on loopback. Empty: DNS for all.
    pub nip05_resolve: Vec<(String, SocketAddr)>,
    /// How long a mutation waits for the views to show its change before it answers
    /// `VIEWS_BEHIND` instead.
    pub view_wait: Duration,
    /// How long a node's hold on a user's connections lasts without renewal: after a node
    /// dies, another takes its users over within this time (plus one look, 2 s).
    pub lease_ttl: Duration,
    /// Login attempts a node runs at once at most (resuming users after a restart, or
    /// reconnecting after a network blip).
    pub login_concurrency: usize,
    /// Login attempts a node starts per second at most.
    pub login_rate: f64,
    /// When XMPP logins without TLS are refused.
    pub xmpp_require_tls: RequireTls,
    /// The DNS server XMPP asks for SRV records and their targets' addresses; `None`: the
    /// system's resolv.conf.
    pub dns_server: Option<SocketAddr>,
    /// Also deny bound accounts the private and loopback networks (public deployments).
    pub upstream_deny_private: bool,
    /// More networks bound accounts may not connect to, besides the built-in ones.
    pub upstream_deny: Vec<Network>,
    /// What a client may ask of the server at most: body size, time, hashes, subscriptions.
    pub limits: Limits,
}

/// Bounds on what one client can make the server do.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The largest request body read, in bytes; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, and then its body.
    pub request_timeout: Duration,
    /// Password hashes (argon2, ~19 MiB each) computed at once at most; more wait their turn.
    pub hash_concurrency: usize,
    /// Subscriptions open at once per session, at most.
    pub max_subscriptions: usize,
    /// The first wait imposed on logins and registrations past their free attempts; each
    /// further attempt doubles it (up to a cap per kind: see `app::throttle`). Zero turns
    /// throttling off (benchmarks).
    pub throttle_base: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            hash_concurrency: 2,
            max_subscriptions: 32,
            throttle_base: Duration::from_secs(1),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("switchboard-data"),
            master_key: None,
            web_assets: PathBuf::from("web/node_modules"),
            connect_timeout: Duration::from_secs(10),
            reconnect_max: Duration::from_secs(120),
            max_db_connections: 20,
            extra_ca_file: None,
            nip05_resolve: Vec::new(),
            view_wait: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            login_concurrency: 16,
            login_rate: 20.0,
            xmpp_require_tls: RequireTls::Auto,
            dns_server: None,
            upstream_deny_private: false,
            upstream_deny: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// The file's form: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    master_key: Option<String>,
    web_assets: Option<PathBuf>,
    connect_timeout_secs: Option<u64>,
    reconnect_max_secs: Option<u64>,
    max_db_connections: Option<u32>,
    extra_ca_file: Option<PathBuf>,
    /// Domain → `ip:port`.
    nip05_resolve: Option<BTreeMap<String, SocketAddr>>,
    view_wait_ms: Option<u64>,
    lease_secs: Option<u64>,
    login_concurrency: Option<usize>,
    login_rate: Option<f64>,
    xmpp_require_tls: Option<RequireTls>,
    dns_server: Option<SocketAddr>,
    upstream_deny_private: Option<bool>,
    upstream_deny: Option<Vec<String>>,
    max_body_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
    hash_concurrency: Option<usize>,
    max_subscriptions: Option<usize>,
    throttle_base_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{name} is not valid: {message}")]
    Env { name: &'static str, message: String },
}

impl Settings {
    /// Loads defaults, then `file` (if given), then the environment read through `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let parsed: FileSettings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            settings.apply_file(parsed, path)?;
        }
        settings.apply_env(env)?;
        Ok(settings)
    }

    fn apply_file(&mut self, f: FileSettings, path: &Path) -> Result<(), ConfigError> {
        if let Some(v) = f.database_url {
            self.database_url = Some(Secret::new(v));
        }
        if let Some(v) = f.listen {
            self.listen = v;
        }
        if let Some(v) = f.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = f.master_key {
            self.master_key = Some(Secret::new(v));
        }
        if let Some(v) = f.web_assets {
            self.web_assets = v;
        }
        if let Some(v) = f.connect_timeout_secs {
            self.connect_timeout = Duration::from_secs(v);
        }
        if let Some(v) = f.reconnect_max_secs {
            self.reconnect_max = Duration::from_secs(v);
        }
        if let Some(v) = f.max_db_connections {
            self.max_db_connections = v;
        }
        if let Some(v) = f.extra_ca_file {
            self.extra_ca_file = Some(v);
        }
        if let Some(v) = f.nip05_resolve {
            self.nip05_resolve = v
                .into_iter()
                .map(|(domain, address)| (domain.trim().to_ascii_lowercase(), address))
                .collect();
        }
        if let Some(v) = f.view_wait_ms {
            self.view_wait = Duration::from_millis(v);
        }
        if let Some(v) = f.lease_secs {
            self.lease_ttl = Duration::from_secs(v);
        }
        if let Some(v) = f.login_concurrency {
            self.login_concurrency = v;
        }
        if let Some(v) = f.login_rate {
            self.login_rate = v;
        }
        if let Some(v) = f.xmpp_require_tls {
            self.xmpp_require_tls = v;
        }
        if let Some(v) = f.upstream_deny_private {
            self.upstream_deny_private = v;
        }
        if let Some(v) = f.upstream_deny {
            self.upstream_deny = v
                .iter()
                .map(|n| Network::parse(n))
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message: format!("upstream_deny: {message}"),
                })?;
        }
        if let Some(v) = f.dns_server {
            self.dns_server = Some(v);
        }
        if let Some(v) = f.max_body_bytes {
            self.limits.max_body_bytes = v;
        }
        if let Some(v) = f.request_timeout_secs {
            self.limits.request_timeout = Duration::from_secs(v);
        }
        if let Some(v) = f.hash_concurrency {
            self.limits.hash_concurrency = v.max(1);
        }
        if let Some(v) = f.max_subscriptions {
            self.limits.max_subscriptions = v;
        }
        if let Some(v) = f.throttle_base_ms {
            self.limits.throttle_base = Duration::from_millis(v);
        }
        Ok(())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("DATABASE_URL") {
            self.database_url = Some(Secret::new(v));
        }
        if let Some(v) = get("SWITCHBOARD_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                    name: "SWITCHBOARD_LISTEN",
                    message: e.to_string(),
                })?;
        }
        if let Some(v) = get("SWITCHBOARD_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("SWITCHBOARD_MASTER_KEY") {
            self.master_key = Some(Secret::new(v));
        }
        if let Some(v) = get("SWITCHBOARD_WEB_ASSETS") {
            self.web_assets = PathBuf::from(v);
        }
        if let Some(v) = get("SWITCHBOARD_CONNECT_TIMEOUT_SECS") {
            self.connect_timeout = seconds("SWITCHBOARD_CONNECT_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_RECONNECT_MAX_SECS") {
            self.reconnect_max = seconds("SWITCHBOARD_RECONNECT_MAX_SECS", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_EXTRA_CA_FILE") {
            self.extra_ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("SWITCHBOARD_NIP05_RESOLVE") {
            self.nip05_resolve = domain_addresses(&v).map_err(|message| ConfigError::Env {
                name: "SWITCHBOARD_NIP05_RESOLVE",
                message,
            })?;
        }
        if let Some(v) = get("SWITCHBOARD_VIEW_WAIT_MS") {
            self.view_wait =
                v.trim()
                    .parse()
                    .map(Duration::from_millis)
                    .map_err(|_| ConfigError::Env {
                        name: "SWITCHBOARD_VIEW_WAIT_MS",
                        message: "must be a whole number of milliseconds".into(),
                    })?;
        }
        if let Some(v) = get("SWITCHBOARD_LEASE_SECS") {
            self.lease_ttl = seconds("SWITCHBOARD_LEASE_SECS", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_LOGIN_CONCURRENCY") {
            self.login_concurrency = positive("SWITCHBOARD_LOGIN_CONCURRENCY", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_LOGIN_RATE") {
            self.login_rate = v
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r > 0.0)
                .ok_or_else(|| ConfigError::Env {
                    name: "SWITCHBOARD_LOGIN_RATE",
                    message: "must be a number of logins per second above 0".into(),
                })?;
        }
        if let Some(v) = get("SWITCHBOARD_XMPP_REQUIRE_TLS") {
            self.xmpp_require_tls = v.parse().map_err(|message| ConfigError::Env {
                name: "SWITCHBOARD_XMPP_REQUIRE_TLS",
                message,
            })?;
        }
        if let Some(v) = get("SWITCHBOARD_UPSTREAM_DENY_PRIVATE") {
            self.upstream_deny_private = match v.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "SWITCHBOARD_UPSTREAM_DENY_PRIVATE",
                        message: "must be true or false".into(),
                    })
                }
            };
        }
        if let Some(v) = get("SWITCHBOARD_UPSTREAM_DENY") {
            self.upstream_deny = v
                .split(',')
                .filter(|n| !n.trim().is_empty())
                .map(Network::parse)
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Env {
                    name: "SWITCHBOARD_UPSTREAM_DENY",
                    message,
                })?;
        }
        if let Some(v) = get("SWITCHBOARD_DNS_SERVER") {
            self.dns_server = Some(v.trim().parse().map_err(|_| ConfigError::Env {
                name: "SWITCHBOARD_DNS_SERVER",
                message: "must be ip:port (IPv6 in brackets)".into(),
            })?);
        }
        if let Some(v) = get("SWITCHBOARD_MAX_BODY_BYTES") {
            self.limits.max_body_bytes = positive("SWITCHBOARD_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_REQUEST_TIMEOUT_SECS") {
            self.limits.request_timeout = seconds("SWITCHBOARD_REQUEST_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_HASH_CONCURRENCY") {
            self.limits.hash_concurrency = positive("SWITCHBOARD_HASH_CONCURRENCY", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_MAX_SUBSCRIPTIONS") {
            self.limits.max_subscriptions = positive("SWITCHBOARD_MAX_SUBSCRIPTIONS", &v)?;
        }
        if let Some(v) = get("SWITCHBOARD_THROTTLE_BASE_MS") {
            self.limits.throttle_base =
                v.trim()
                    .parse()
                    .map(Duration::from_millis)
                    .map_err(|_| ConfigError::Env {
                        name: "SWITCHBOARD_THROTTLE_BASE_MS",
                        message: "must be a whole number of milliseconds (0: off)".into(),
                    })?;
        }
        Ok(())
    }
}

/// A whole number above 0.
fn positive(name: &'static str, value: &str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ConfigError::Env {
            name,
            message: "must be a whole number above 0".into(),
        })
}

/// `domain=ip:port` pairs, comma-separated; domains in lower case.
fn domain_addresses(value: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (domain, address) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not domain=ip:port"))?;
            let domain = domain.trim().to_ascii_lowercase();
            if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == ':') {
                return Err(format!("{domain:?} is not a domain name"));
            }
            let address = address
                .trim()
                .parse()
                .map_err(|e| format!("{address:?} is not ip:port: {e}"))?;
            Ok((domain, address))
        })
        .collect()
}

fn seconds(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| ConfigError::Env {
            name,
            message: "must be a whole number of seconds".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\nextra_ca_file = \"/tmp/ca.pem\"\nview_wait_ms = 1500\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file), |name| {
            (name == "SWITCHBOARD_DATA_DIR").then(|| "/tmp/y".to_owned())
        })
        .unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.data_dir, PathBuf::from("/tmp/y"));
        assert_eq!(settings.extra_ca_file, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(settings.view_wait, Duration::from_millis(1500));
        let settings = Settings::load(Some(&file), |name| {
            (name == "SWITCHBOARD_EXTRA_CA_FILE").then(|| "/etc/private-ca.pem".to_owned())
        })
        .unwrap();
        assert_eq!(
            settings.extra_ca_file,
            Some(PathBuf::from("/etc/private-ca.pem"))
        );
        assert!(settings.database_url.is_none());
        std::fs::write(&file, "lisen = 1\n").unwrap();
        assert!(matches!(
            Settings::load(Some(&file), |_| None),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nip05_addresses_come_from_the_file_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(&file, "[nip05_resolve]\nLocalhost = \"127.0.0.1:8443\"\n").unwrap();
        let settings = Settings::load(Some(&file), |_| None).unwrap();
        assert_eq!(
            settings.nip05_resolve,
            vec![("localhost".to_owned(), "127.0.0.1:8443".parse().unwrap())]
        );
        std::fs::remove_dir_all(dir).unwrap();

        let settings = Settings::load(None, |name| {
            (name == "SWITCHBOARD_NIP05_RESOLVE")
                .then(|| " Example.org=127.0.0.1:443, b.test=[::1]:8443 ,".to_owned())
        })
        .unwrap();
        assert_eq!(
            settings.nip05_resolve,
            vec![
                ("example.org".to_owned(), "127.0.0.1:443".parse().unwrap()),
                ("b.test".to_owned(), "[::1]:8443".parse().unwrap()),
            ]
        );
        assert!(Settings::load(None, |_| None)
            .unwrap()
            .nip05_resolve
            .is_empty());
        for bad in [
            "example.org",
            "example.org=127.0.0.1",
            "=127.0.0.1:1",
            "a b=127.0.0.1:1",
        ] {
            let result = Settings::load(None, |name| {
                (name == "SWITCHBOARD_NIP05_RESOLVE").then(|| bad.to_owned())
            });
            assert!(
                matches!(
                    result,
                    Err(ConfigError::Env {
                        name: "SWITCHBOARD_NIP05_RESOLVE",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn xmpp_transport_settings_come_from_the_file_or_the_environment() {
        let defaults = Settings::load(None, |_| None).unwrap();
        assert_eq!(defaults.xmpp_require_tls, RequireTls::Auto);
        assert_eq!(defaults.dns_server, None);

        let dir = std::env::temp_dir().join(format!("sb-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(
            &file,
            "xmpp_require_tls = \"never\"\ndns_server = \"127.0.0.1:5353\"\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file), |_| None).unwrap();
        assert_eq!(settings.xmpp_require_tls, RequireTls::Never);
        assert_eq!(settings.dns_server, Some("127.0.0.1:5353".parse().unwrap()));
        let settings = Settings::load(Some(&file), |name| match name {
            "SWITCHBOARD_XMPP_REQUIRE_TLS" => Some(" Always ".to_owned()),
            "SWITCHBOARD_DNS_SERVER" => Some("[::1]:53".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(settings.xmpp_require_tls, RequireTls::Always);
        assert_eq!(settings.dns_server, Some("[::1]:53".parse().unwrap()));
        std::fs::write(&file, "xmpp_require_tls = \"sometimes\"\n").unwrap();
        assert!(matches!(
            Settings::load(Some(&file), |_| None),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();

        for (name, bad) in [
            ("SWITCHBOARD_XMPP_REQUIRE_TLS", "yes"),
            ("SWITCHBOARD_DNS_SERVER", "127.0.0.1"),
            ("SWITCHBOARD_DNS_SERVER", "dns.example.org:53"),
        ] {
            let result = Settings::load(None, |asked| (asked == name).then(|| bad.to_owned()));
            assert!(
                matches!(&result, Err(ConfigError::Env { name: got, .. }) if *got == name),
                "{name}={bad}: {result:?}"
            );
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let settings = Settings::load(None, |name| match name {
            "DATABASE_URL" => Some("postgres://u:pw-SECRET@h/db".into()),
            "SWITCHBOARD_MASTER_KEY" => Some("KEY-SECRET".into()),
            _ => None,
        })
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
