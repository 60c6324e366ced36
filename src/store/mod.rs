//! Storage: the PostgreSQL pool and migrations, the event store, the credential vault,
//! sessions, and the embedded PostgreSQL used when no database is configured.

pub mod auditors;
pub mod embedded;
pub mod event_store;
pub mod intake;
pub mod lease;
pub mod messages;
pub mod sessions;
pub mod throttle;
pub mod vault;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Opens a pool to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// Runs the SQL migrations in `migrations/` (embedded at build time).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}
