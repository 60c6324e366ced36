//! The command line: `serve`, `migrate`, `replay`, `schema`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::{database, Application};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "One user name, many IM networks, one contact list"
)]
pub struct Cli {
    /// A TOML settings file (keys: database_url, listen, data_dir, master_key, web_assets,
    /// connect_timeout_secs, max_db_connections). The environment overrides it.
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server (with a private PostgreSQL in the data folder when DATABASE_URL is unset).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (overrides SWITCHBOARD_LISTEN).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Runs the database migrations and exits.
    Migrate,
    /// Rebuilds projections from the first event, showing progress.
    Replay {
        /// Only this projection (`contacts` or `history`); all when omitted.
        #[arg(long)]
        projection: Option<String>,
    },
    /// Prints the GraphQL schema (SDL), as kept in `schema.graphql`.
    Schema,
    /// Creates or removes auditors: read-only accounts that may read any user's data.
    Auditor {
        #[command(subcommand)]
        action: AuditorAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditorAction {
    /// Creates an auditor and prints their password, once.
    Add { name: String },
    /// Removes an auditor; their sessions end at once.
    Remove { name: String },
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        if let Command::Schema = self.command {
            print!("{}", crate::graphql::sdl());
            return Ok(());
        }
        let mut settings = Settings::load(self.config.as_deref(), |k| std::env::var(k).ok())?;
        match self.command {
            Command::Serve { listen } => {
                if let Some(listen) = listen {
                    settings.listen = listen;
                }
                Application::build(settings)
                    .await?
                    .run_until_stopped()
                    .await
            }
            Command::Migrate => with_database(&settings, |_| async { Ok(()) }).await,
            Command::Replay { projection } => {
                with_database(&settings, |pool| async move {
                    replay(&pool, projection.as_deref()).await
                })
                .await
            }
            Command::Auditor { action } => {
                with_database(
                    &settings,
                    |pool| async move { auditor(&pool, action).await },
                )
                .await
            }
            Command::Schema => Ok(()),
        }
    }
}

/// Opens (and migrates) the database for a one-off command, stopping an embedded one after.
async fn with_database<F, Fut>(settings: &Settings, work: F) -> anyhow::Result<()>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (url, embedded) = database(settings).await?;
    let result = async {
        let pool = crate::store::connect(&url, 4)
            .await
            .context("connecting to PostgreSQL")?;
        crate::store::migrate(&pool)
            .await
            .context("running migrations")?;
        crate::projections::runner::restore_indexes(&pool)
            .await
            .context("building the indexes a cut-short rebuild deferred")?;
        let result = work(pool.clone()).await;
        pool.close().await;
        result
    }
    .await;
    if let Some(embedded) = embedded {
        embedded.stop().await?;
    }
    result
}

async fn auditor(pool: &sqlx::PgPool, action: AuditorAction) -> anyhow::Result<()> {
    let store = crate::store::auditors::AuditorStore::new(pool.clone());
    match action {
        AuditorAction::Add { name } => {
            // Auditor names follow the rules of user names.
            let name = crate::domain::ids::UserName::parse(&name)
                .map_err(|e| anyhow::anyhow!("not a valid auditor name: {e}"))?
                .to_string();
            let password = crate::app::password::generate();
            let hash = crate::app::password::Hasher::new(1)
                .hash(password.clone())
                .await
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            anyhow::ensure!(
                store.add(&name, &hash).await?,
                "an auditor named {name} exists already"
            );
            println!("auditor {name} created");
            println!("password (shown once, keep it safe): {}", password.expose());
        }
        AuditorAction::Remove { name } => {
            anyhow::ensure!(store.remove(&name).await?, "no auditor named {name}");
            println!("auditor {name} removed; their sessions have ended");
        }
    }
    Ok(())
}

async fn replay(pool: &sqlx::PgPool, only: Option<&str>) -> anyhow::Result<()> {
    let projections = match only {
        Some(name) => vec![crate::projections::by_name(name)
            .with_context(|| format!("no projection named {name} (try contacts or history)"))?],
        None => crate::projections::all(),
    };
    // A bar only for a person watching: redirected, stderr gets the final lines alone.
    let terminal = std::io::stderr().is_terminal();
    for projection in projections {
        let started = std::time::Instant::now();
        let name = projection.name();
        let bar = if terminal {
            Some(progress_bar(name)?)
        } else {
            None
        };
        let done = crate::projections::runner::rebuild(pool, projection.as_ref(), |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total.max(done));
                bar.set_position(done);
            }
        })
        .await;
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let done = done?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: rebuilt from {done} events in {secs:.2} s ({:.0} events/s)",
            done as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

/// A progress bar on stderr with the rate and the time left.
fn progress_bar(name: &'static str) -> anyhow::Result<indicatif::ProgressBar> {
    let style = indicatif::ProgressStyle::with_template(
        "{prefix}: [{bar:30}] {human_pos}/{human_len} events, {rate} events/s, {eta} left",
    )
    .context("the progress bar's template")?
    // indicatif's own {per_sec} prints four decimals.
    .with_key(
        "rate",
        |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{:.0}", state.per_sec());
        },
    )
    .progress_chars("=> ");
    Ok(
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(name),
    )
}
