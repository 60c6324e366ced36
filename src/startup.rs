//! Building and running the server, callable from `main` and from tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{ServiceSettings, Switchboard};
use crate::config::Settings;
use crate::connectors::net::UpstreamPolicy;
use crate::connectors::supervisor::{Backoff, SupervisorSettings};
use crate::connectors::{ConnectorOptions, ConnectorRegistry};
use crate::projections::notify::ViewChanges;
use crate::store::embedded::EmbeddedPostgres;
use crate::store::vault::{MasterKey, Vault};

/// A built server: bound to its port, background work running, not yet serving HTTP.
pub struct Application {
    address: SocketAddr,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    /// How long a client may take to send a request's headers.
    header_timeout: std::time::Duration,
    app: Arc<Switchboard>,
    stop: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
    embedded: Option<EmbeddedPostgres>,
}

/// Reads the master key from the data folder, creating it (mode 0600) on first use.
pub fn master_key_in(data_dir: &Path) -> anyhow::Result<MasterKey> {
    let path = data_dir.join("master.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return MasterKey::from_base64(&text)
            .with_context(|| format!("{} is not a valid key", path.display()));
    }
    std::fs::create_dir_all(data_dir)?;
    let key = MasterKey::generate();
    write_private(&path, &key.to_base64())?;
    tracing::info!(path = %path.display(), "generated a new master key; back it up with the database");
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Opens the database: the configured one, or a private PostgreSQL in the data folder.
pub async fn database(settings: &Settings) -> anyhow::Result<(String, Option<EmbeddedPostgres>)> {
    match &settings.database_url {
        Some(url) => Ok((url.expose().to_owned(), None)),
        None => {
            std::fs::create_dir_all(&settings.data_dir)?;
            let embedded = EmbeddedPostgres::start(&settings.data_dir)
                .await
                .context("starting the embedded PostgreSQL (set DATABASE_URL to use another)")?;
            tracing::info!(socket = %embedded.socket_dir().display(), data_dir = %settings.data_dir.display(), "embedded PostgreSQL running");
            Ok((embedded.database_url(), Some(embedded)))
        }
    }
}

/// Every connector of this build, trusting the extra CA file's certificates if one is set.
fn builtin_connectors(settings: &Settings) -> anyhow::Result<ConnectorRegistry> {
    let extra_roots_pem = match &settings.extra_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the extra CA file {}", path.display()))?,
        ),
        None => None,
    };
    let options = ConnectorOptions {
        extra_roots_pem,
        nip05_resolve: settings.nip05_resolve.clone(),
        xmpp_require_tls: settings.xmpp_require_tls,
        dns_server: settings.dns_server,
        upstream: UpstreamPolicy::new(
            settings.upstream_deny_private,
            settings.upstream_deny.clone(),
        ),
    };
    ConnectorRegistry::with_builtin(&options).with_context(|| match &settings.extra_ca_file {
        Some(path) => format!("the extra CA file {}", path.display()),
        None => "setting up the connectors".to_owned(),
    })
}

impl Application {
    /// Builds the server with every connector of this build.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let connectors = builtin_connectors(&settings)?;
        Self::build_with(settings, connectors).await
    }

    /// Builds the server with the given connectors (benchmarks plug in a synthetic one).
    pub async fn build_with(
        settings: Settings,
        connectors: ConnectorRegistry,
    ) -> anyhow::Result<Self> {
        let (url, embedded) = database(&settings).await?;
        let key = match (&settings.master_key, &embedded) {
            (Some(key), _) => MasterKey::from_base64(key.expose())?,
            (None, Some(_)) => master_key_in(&settings.data_dir)?,
            (None, None) => {
                anyhow::bail!("SWITCHBOARD_MASTER_KEY is required when DATABASE_URL is set")
            }
        };
        let pool = crate::store::connect(&url, settings.max_db_connections)
            .await
            .context("connecting to PostgreSQL")?;
        crate::store::migrate(&pool)
            .await
            .context("running migrations")?;
        crate::projections::runner::restore_indexes(&pool)
            .await
            .context("building the indexes a cut-short rebuild deferred")?;

        let (stop, stopped) = watch::channel(false);
        let vault = Vault::new(pool.clone(), &key);
        let views = ViewChanges::default();
        let app = Switchboard::new(
            pool.clone(),
            vault.clone(),
            connectors,
            views.clone(),
            ServiceSettings {
                supervisor: SupervisorSettings {
                    connect_timeout: settings.connect_timeout,
                    backoff: Backoff {
                        max: settings.reconnect_max,
                        ..Backoff::default()
                    },
                    ..SupervisorSettings::default()
                },
                view_wait: settings.view_wait,
                lease_ttl: settings.lease_ttl,
                login_concurrency: settings.login_concurrency,
                login_rate: settings.login_rate,
                hash_concurrency: settings.limits.hash_concurrency,
                max_subscriptions: settings.limits.max_subscriptions,
                throttle_base: settings.limits.throttle_base,
            },
        );
        let background = vec![
            tokio::spawn(crate::projections::runner::run(
                pool.clone(),
                crate::projections::all(),
                views.progress().clone(),
                stopped.clone(),
            )),
            tokio::spawn(views.run(pool.clone(), stopped.clone())),
            tokio::spawn(sweep_vault(vault, stopped.clone())),
            tokio::spawn(renew_leases(app.clone(), stopped.clone())),
            tokio::spawn(app.clone().run_outbox(stopped.clone())),
            tokio::spawn(app.clone().run_session_watch(stopped.clone())),
            tokio::spawn(app.clone().run_presence_feeds(stopped.clone())),
            tokio::spawn(app.clone().run_resumption(stopped)),
        ];
        let schema = crate::graphql::schema(app.clone());
        let router = crate::http::router(
            schema,
            app.clone(),
            settings.web_assets.clone(),
            settings.limits.clone(),
        );
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let address = listener.local_addr()?;
        Ok(Self {
            address,
            listener,
            router,
            header_timeout: settings.limits.request_timeout,
            app,
            stop,
            background,
            embedded,
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A handle that stops the server when sent `true`.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Serves until `stop` is sent or the process gets SIGINT/SIGTERM, then shuts down:
    /// upstream connections, background tasks, and the embedded PostgreSQL.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut stopped = self.stop.subscribe();
        let stop = self.stop.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => {}
                _ = os_signal() => { tracing::info!("shutting down"); }
            }
            let _ = stop.send(true);
        };
        tracing::info!(address = %self.address, "serving GraphQL at /graphql");
        crate::http::serve(self.listener, self.router, self.header_timeout, shutdown).await;
        let _ = self.stop.send(true);
        self.app.shutdown().await;
        for task in self.background {
            let _ = task.await;
        }
        self.app.pool().close().await;
        if let Some(embedded) = self.embedded {
            embedded
                .stop()
                .await
                .context("stopping the embedded PostgreSQL")?;
        }
        Ok(())
    }
}

/// Secrets younger than this are never swept: their binding may still be in flight.
const VAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
const VAULT_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Destroys orphaned secrets at start-up and then hourly, until `stop`.
async fn sweep_vault(vault: Vault, mut stop: watch::Receiver<bool>) {
    loop {
        match vault.sweep_orphans(VAULT_GRACE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                count = n,
                "destroyed secrets of accounts that are not bound"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot sweep the credential vault"),
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(VAULT_SWEEP_EVERY) => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Keeps this node's hold on its users' connections, until `stop`.
async fn renew_leases(app: std::sync::Arc<Switchboard>, mut stop: watch::Receiver<bool>) {
    let every = app.lease_renewal_interval();
    loop {
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(every) => {}
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = app.renew_leases().await {
            tracing::warn!(error = %e, "leases not renewed; retrying");
        }
    }
}

async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
