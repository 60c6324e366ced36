//! Embedded PostgreSQL: a private cluster in the data folder for when no DATABASE_URL is set.

mod account;
mod binaries;
mod cluster;
mod command;
mod error;
mod log;
mod ports;
mod server;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use account::{check_reachable, effective_uid, postgres_account, Account};
use binaries::find_bin_dir;
use cluster::prepare_private_dir;
use command::check_shell_safe;
pub use error::EmbeddedError;
use error::{io_error, tail};

/// The database Switchboard uses inside the cluster.
const DATABASE: &str = "switchboard";
/// The superuser initdb creates; also the OS account the server runs as when we are root.
const SUPERUSER: &str = "postgres";
/// Folder names inside the data folder.
const CLUSTER_DIR: &str = "postgres";
const SOCKET_DIR: &str = "postgres-run";
const LOG_FILE: &str = "postgres.log";
/// Crash recovery and the final checkpoint can take a while on a big cluster.
const STOP_TIMEOUT_SECS: u64 = 60;

/// A running PostgreSQL cluster private to one data folder.
///
/// Dropping it without [`EmbeddedPostgres::stop`] still asks the server to shut down (without
/// waiting), so a panic or an early return does not leave a server holding the port.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    /// Set when we are root: PostgreSQL refuses to run as root, so it runs as this account.
    run_as: Option<Account>,
    /// Whether Drop still owes the server a shutdown.
    running: bool,
}

impl EmbeddedPostgres {
    /// Starts (initialising on first use) the cluster in `<data_dir>/postgres`, listening on
    /// 127.0.0.1 only, on a free port (or the port recorded from a previous run if free), with
    /// the unix socket in `<data_dir>/postgres-run`. Idempotent across restarts: an existing
    /// cluster is reused, a server left running by a previous process is adopted, and a stale
    /// `postmaster.pid` left by a crash is cleared by PostgreSQL once its process is gone.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        tokio::fs::create_dir_all(data_dir)
            .await
            .map_err(io_error("create", data_dir))?;
        // Child processes run in another working directory, so every path they see is absolute.
        let data_dir = tokio::fs::canonicalize(data_dir)
            .await
            .map_err(io_error("resolve", data_dir))?;
        check_shell_safe(&data_dir)?;
        // A cluster only runs under the major version that created it; after an upgrade that
        // keeps the old binaries (Debian does), those must win over the newest.
        let cluster_version =
            tokio::fs::read_to_string(data_dir.join(CLUSTER_DIR).join("PG_VERSION"))
                .await
                .ok()
                .map(|version| version.trim().to_owned());
        let bin_dir = find_bin_dir(cluster_version.as_deref()).await?;

        let run_as = if effective_uid().await == Some(0) {
            let account = postgres_account().await?;
            check_reachable(&data_dir, account).await?;
            Some(account)
        } else {
            None
        };

        let mut pg = EmbeddedPostgres {
            cluster_dir: data_dir.join(CLUSTER_DIR),
            socket_dir: data_dir.join(SOCKET_DIR),
            log_file: data_dir.join(LOG_FILE),
            bin_dir,
            port: 0,
            run_as,
            running: false,
        };
        // Mode 0700: only the server account (and root) may use the socket.
        prepare_private_dir(&pg.socket_dir, run_as).await?;
        pg.prepare_log().await?;
        let initialised = tokio::fs::try_exists(pg.cluster_dir.join("PG_VERSION"))
            .await
            .map_err(io_error("inspect", &pg.cluster_dir))?;
        if !initialised {
            pg.initialise(&data_dir).await?;
        }
        pg.launch().await?;
        Ok(pg)
    }

    /// postgres://postgres@127.0.0.1:PORT/switchboard — the database `switchboard` is created
    /// on first start.
    pub fn database_url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pg_ctl stop -m fast`; waits until the server has exited. A server that is already gone
    /// counts as stopped.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        self.running = false;
        if self.registered_server().await?.is_none() {
            tracing::warn!(cluster = %self.cluster_dir.display(), "embedded PostgreSQL was already stopped");
            return Ok(());
        }
        let output = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "fast", "-w", "-t"])
            .arg(STOP_TIMEOUT_SECS.to_string())
            .output()
            .await
            .map_err(io_error("run", &self.bin_dir.join("pg_ctl")))?;
        // A server that exited by itself between our check and pg_ctl is stopped all the same.
        if !output.status.success() && self.registered_server().await?.is_some() {
            return Err(EmbeddedError::StopFailed {
                status: output.status,
                stderr_tail: tail(&String::from_utf8_lossy(&output.stderr)),
            });
        }
        tracing::info!(port = self.port, "embedded PostgreSQL stopped");
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Drop cannot await, so ask for a fast shutdown without waiting for it; a later start
        // waits for a server that is still exiting.
        let mut command = std::process::Command::new(self.bin_dir.join("pg_ctl"));
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "fast", "--no-wait"])
            .current_dir(&self.socket_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(account) = self.run_as {
            std::os::unix::process::CommandExt::uid(&mut command, account.uid);
            std::os::unix::process::CommandExt::gid(&mut command, account.gid);
        }
        match command.status() {
            Ok(status) if status.success() => {
                tracing::info!(
                    port = self.port,
                    "embedded PostgreSQL asked to stop on drop"
                );
            }
            Ok(status) => tracing::warn!(%status, "pg_ctl stop on drop failed"),
            Err(error) => tracing::warn!(%error, "could not run pg_ctl stop on drop"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::process::Command;

    use super::ports::port_is_free;
    use super::server::MAX_SOCKET_PATH;
    use super::*;

    /// A fresh folder under the system temp dir, removed on drop (std only: no tempfile crate).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "switchboard-embedded-{label}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// These tests run the real server: without PostgreSQL installed they fail, loudly.
    async fn start_cluster(dir: &Path) -> Option<EmbeddedPostgres> {
        match EmbeddedPostgres::start(dir).await {
            Ok(pg) => Some(pg),
            Err(error) => panic!("start failed (is PostgreSQL installed?): {error}"),
        }
    }

    /// Runs one statement through the psql from the same bin folder, over TCP like the app.
    async fn psql(pg: &EmbeddedPostgres, sql: &str) -> String {
        psql_with(pg, &[&pg.database_url()], sql).await
    }

    async fn psql_with(pg: &EmbeddedPostgres, connection: &[&str], sql: &str) -> String {
        let output = Command::new(pg.bin_dir.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .args(connection)
            .args(["-c", sql])
            .output()
            .await
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn socket_path(pg: &EmbeddedPostgres) -> PathBuf {
        pg.socket_dir.join(format!(".s.PGSQL.{}", pg.port()))
    }

    async fn postmaster_pid(pg: &EmbeddedPostgres) -> String {
        let contents = tokio::fs::read_to_string(pg.cluster_dir.join("postmaster.pid"))
            .await
            .expect("read postmaster.pid");
        contents.lines().next().expect("pid line").trim().to_owned()
    }

    #[tokio::test]
    async fn starts_serves_stops_and_restarts_with_the_same_data() {
        let dir = TempDir::new("restart");
        let Some(pg) = start_cluster(&dir.0).await else {
            return;
        };
        assert_eq!(
            pg.database_url(),
            format!("postgres://postgres@127.0.0.1:{}/switchboard", pg.port())
        );
        assert_eq!(psql(&pg, "select 1").await, "1");
        psql(
            &pg,
            "create table kept (x int); insert into kept values (42)",
        )
        .await;
        let port = pg.port();
        pg.stop().await.expect("stop");
        assert!(
            port_is_free(port).await,
            "port still held after stop returned"
        );

        let pg = start_cluster(&dir.0).await.expect("second start");
        assert_eq!(pg.port(), port, "the recorded port is reused when free");
        assert_eq!(psql(&pg, "select x from kept").await, "42");
        pg.stop().await.expect("second stop");
    }

    #[tokio::test]
    async fn starts_again_after_the_postmaster_is_killed() {
        let dir = TempDir::new("crash");
        let Some(pg) = start_cluster(&dir.0).await else {
            return;
        };
        let pid = postmaster_pid(&pg).await;
        let killed = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(killed.success());
        // The handle believes it still owns a server; its Drop must not disturb the next one.
        drop(pg);

        let pg = start_cluster(&dir.0).await.expect("start after crash");
        assert_eq!(psql(&pg, "select 1").await, "1");
        assert_ne!(postmaster_pid(&pg).await, pid);
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn adopts_a_server_left_running_and_stop_is_idempotent() {
        let dir = TempDir::new("adopt");
        let Some(first) = start_cluster(&dir.0).await else {
            return;
        };
        let second = start_cluster(&dir.0).await.expect("second start");
        assert_eq!(second.port(), first.port());
        assert_eq!(psql(&second, "select 1").await, "1");
        second.stop().await.expect("stop through the adopter");
        first
            .stop()
            .await
            .expect("stopping a stopped server is fine");
    }

    #[tokio::test]
    async fn a_deep_data_folder_falls_back_to_tcp_only() {
        let dir = TempDir::new("deep");
        let deep = dir
            .0
            .join("a-folder-name-long-enough-to-push-the-socket-path-past-its-limit-of-107-bytes");
        let Some(pg) = start_cluster(&deep).await else {
            return;
        };
        assert!(socket_path(&pg).as_os_str().len() > MAX_SOCKET_PATH);
        assert!(!socket_path(&pg).exists());
        assert_eq!(psql(&pg, "select 1").await, "1");
        pg.stop().await.expect("stop");
    }
}
