//! Embedded PostgreSQL: a private cluster in the data folder for when no DATABASE_URL is set.

mod account;
mod binaries;
mod cluster;
mod command;
mod error;
mod log;
mod server;
mod socket;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use account::{check_reachable, effective_uid, postgres_account, Account};
use binaries::find_bin_dir;
use cluster::prepare_private_dir;
use command::check_shell_safe;
pub use error::EmbeddedError;
use error::{io_error, tail};
use socket::{fits, prepare_short_dir, short_dir, url_host, PORT};

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

/// A running PostgreSQL cluster private to one data folder, reachable only through a unix
/// socket in a 0700 folder: no TCP port, so only the account running the server (ourselves, or
/// `postgres` when we are root) and root can connect, and they are trusted.
///
/// Dropping it without [`EmbeddedPostgres::stop`] still asks the server to shut down (without
/// waiting), so a panic or an early return does not leave a server running.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    /// Set when we are root: PostgreSQL refuses to run as root, so it runs as this account.
    run_as: Option<Account>,
    /// Whether Drop still owes the server a shutdown.
    running: bool,
}

impl EmbeddedPostgres {
    /// Starts (initialising on first use) the cluster in `<data_dir>/postgres`, listening on
    /// nothing but a unix socket in `<data_dir>/postgres-run` (mode 0700), or in
    /// `/tmp/switchboard-pg-<hash>` when that path is too long for a socket. Idempotent across
    /// restarts: an existing cluster is reused, a server left running by a previous process is
    /// adopted (or restarted, if an earlier version started it on TCP), and a stale
    /// `postmaster.pid` left by a crash is cleared by PostgreSQL once its process is gone.
    /// `pg_hba.conf` is rewritten on every start to allow local (socket) connections only.
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

        let in_data_dir = data_dir.join(SOCKET_DIR);
        let socket_fits = fits(&in_data_dir);
        let socket_dir = if socket_fits {
            in_data_dir
        } else {
            short_dir(&data_dir)
        };
        let mut pg = EmbeddedPostgres {
            cluster_dir: data_dir.join(CLUSTER_DIR),
            socket_dir,
            log_file: data_dir.join(LOG_FILE),
            bin_dir,
            run_as,
            running: false,
        };
        pg.prepare_log().await?;
        // Mode 0700: only the server account (and root) may use the socket; with trust
        // authentication that folder is the only lock.
        if socket_fits {
            prepare_private_dir(&pg.socket_dir, run_as).await?;
        } else {
            tracing::info!(
                socket = %pg.socket_dir.display(),
                "the data folder's path is too long for a unix socket; using a private folder under /tmp"
            );
            // The log was just made the server account's: by chown as root, else by creating
            // or chmod-ing it, which only its owner may do.
            let owner = tokio::fs::metadata(&pg.log_file)
                .await
                .map_err(io_error("inspect", &pg.log_file))?
                .uid();
            prepare_short_dir(&pg.socket_dir, run_as, owner).await?;
        }
        let initialised = tokio::fs::try_exists(pg.cluster_dir.join("PG_VERSION"))
            .await
            .map_err(io_error("inspect", &pg.cluster_dir))?;
        if !initialised {
            pg.initialise(&data_dir).await?;
        }
        // Also for a cluster made by an earlier version, whose pg_hba.conf trusted TCP.
        pg.write_hba().await?;
        pg.launch().await?;
        Ok(pg)
    }

    /// `postgres://postgres@%2F…%2Fpostgres-run:5432/switchboard`: the socket folder as the
    /// percent-encoded host, which sqlx and libpq both read as a unix socket. The database
    /// `switchboard` is created on first start.
    pub fn database_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@{}:{PORT}/{DATABASE}",
            url_host(&self.socket_dir)
        )
    }

    /// The folder holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// `pg_ctl stop -m fast`; waits until the server has exited. A server that is already gone
    /// counts as stopped.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        self.running = false;
        self.shut_down().await
    }

    async fn shut_down(&self) -> Result<(), EmbeddedError> {
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
        tracing::info!(cluster = %self.cluster_dir.display(), "embedded PostgreSQL stopped");
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
                    cluster = %self.cluster_dir.display(),
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
    use std::os::unix::fs::PermissionsExt;

    use tokio::process::Command;

    use super::socket::{accepts_tcp, socket_file, MAX_SOCKET_PATH};
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

    /// Runs one statement through the psql from the same bin folder, over the socket like the
    /// app.
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

    async fn postmaster_lines(pg: &EmbeddedPostgres) -> Vec<String> {
        let contents = tokio::fs::read_to_string(pg.cluster_dir.join("postmaster.pid"))
            .await
            .expect("read postmaster.pid");
        contents
            .lines()
            .map(|line| line.trim().to_owned())
            .collect()
    }

    async fn postmaster_pid(pg: &EmbeddedPostgres) -> String {
        postmaster_lines(pg).await[0].clone()
    }

    /// The server listens on its socket alone, in a 0700 folder of the server's account (the
    /// one it runs as: `postgres` when the tests run as root), and the app's pool reaches it.
    async fn assert_socket_only(pg: &EmbeddedPostgres) {
        let lines = postmaster_lines(pg).await;
        assert_eq!(lines[3], PORT.to_string(), "{lines:?}");
        assert_eq!(Path::new(&lines[4]), pg.socket_dir, "{lines:?}");
        assert_eq!(lines[5], "", "no TCP listen address: {lines:?}");
        let meta = std::fs::symlink_metadata(&pg.socket_dir).expect("the socket folder");
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let server_uid = std::fs::metadata(pg.cluster_dir.join("PG_VERSION"))
            .expect("PG_VERSION")
            .uid();
        assert_eq!(meta.uid(), server_uid, "owned by the server's account");
        let socket = std::fs::metadata(socket_file(&pg.socket_dir)).expect("the socket");
        assert_eq!(socket.permissions().mode() & 0o777, 0o700);
        let hba = std::fs::read_to_string(pg.cluster_dir.join("pg_hba.conf")).expect("hba");
        let rules: Vec<&str> = hba
            .lines()
            .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
            .collect();
        assert_eq!(rules, ["local all all trust"]);

        let pool = crate::store::connect(&pg.database_url(), 2)
            .await
            .expect("the app's pool connects over the socket");
        let (one,): (i32,) = sqlx::query_as("select 1")
            .fetch_one(&pool)
            .await
            .expect("a query through the pool");
        assert_eq!(one, 1);
        let (address,): (Option<String>,) = sqlx::query_as("select inet_server_addr()::text")
            .fetch_one(&pool)
            .await
            .expect("the server address");
        assert_eq!(address, None, "connected through the unix socket");
        pool.close().await;
    }

    #[tokio::test]
    async fn listens_on_its_private_socket_only_and_the_app_pool_works() {
        let dir = TempDir::new("socket");
        let Some(pg) = start_cluster(&dir.0).await else {
            return;
        };
        assert_eq!(
            pg.socket_dir(),
            dir.0.canonicalize().unwrap().join(SOCKET_DIR)
        );
        assert_socket_only(&pg).await;
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn starts_serves_stops_and_restarts_with_the_same_data() {
        let dir = TempDir::new("restart");
        let Some(pg) = start_cluster(&dir.0).await else {
            return;
        };
        assert!(
            pg.database_url().starts_with("postgres://postgres@%2F")
                && pg.database_url().ends_with(":5432/switchboard"),
            "{}",
            pg.database_url()
        );
        assert_eq!(psql(&pg, "select 1").await, "1");
        psql(
            &pg,
            "create table kept (x int); insert into kept values (42)",
        )
        .await;
        let socket = socket_file(pg.socket_dir());
        pg.stop().await.expect("stop");
        assert!(!socket.exists(), "socket still there after stop returned");

        let pg = start_cluster(&dir.0).await.expect("second start");
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
        assert_eq!(postmaster_pid(&second).await, postmaster_pid(&first).await);
        assert_eq!(psql(&second, "select 1").await, "1");
        second.stop().await.expect("stop through the adopter");
        first
            .stop()
            .await
            .expect("stopping a stopped server is fine");
    }

    /// A cluster made and left running by an earlier version: trust on 127.0.0.1 in
    /// pg_hba.conf, a TCP listener. Starting closes both and keeps the data.
    #[tokio::test]
    async fn an_earlier_versions_tcp_server_is_restarted_on_the_socket_alone() {
        let dir = TempDir::new("upgrade");
        let Some(mut pg) = start_cluster(&dir.0).await else {
            return;
        };
        psql(
            &pg,
            "create table kept (x int); insert into kept values (7)",
        )
        .await;
        pg.shut_down().await.expect("stop");
        pg.running = false;
        let hba = pg.cluster_dir.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n",
        )
        .expect("the old rules");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let old_options = format!(
            "-p {port} -k '{}' -c listen_addresses=127.0.0.1",
            pg.socket_dir.display()
        );
        let started = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&pg.cluster_dir)
            .arg("-l")
            .arg(&pg.log_file)
            .args(["-w", "-o", &old_options, "start"])
            .output()
            .await
            .expect("run pg_ctl");
        assert!(started.status.success(), "{started:?}");
        let tcp = format!("postgres://postgres@127.0.0.1:{port}/switchboard");
        assert_eq!(psql_with(&pg, &[&tcp], "select x from kept").await, "7");
        drop(pg);

        let pg = start_cluster(&dir.0)
            .await
            .expect("start after the upgrade");
        assert!(!accepts_tcp(port).await, "the TCP port is closed");
        assert_socket_only(&pg).await;
        assert_eq!(psql(&pg, "select x from kept").await, "7");
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_deep_data_folder_gets_its_socket_in_a_private_folder_under_tmp() {
        let dir = TempDir::new("deep");
        let deep = dir
            .0
            .join("a-folder-name-long-enough-to-push-the-socket-path-past-its-limit-of-107-bytes");
        let Some(pg) = start_cluster(&deep).await else {
            return;
        };
        let in_data_dir = deep.canonicalize().unwrap().join(SOCKET_DIR);
        assert!(socket_file(&in_data_dir).as_os_str().len() > MAX_SOCKET_PATH);
        assert!(pg.socket_dir().starts_with("/tmp"), "{:?}", pg.socket_dir());
        assert_socket_only(&pg).await;
        assert_eq!(psql(&pg, "select 1").await, "1");
        let socket_dir = pg.socket_dir().to_owned();
        pg.stop().await.expect("stop");
        let _ = std::fs::remove_dir(socket_dir);
    }

    #[tokio::test]
    async fn a_short_socket_folder_someone_else_prepared_is_refused() {
        let dir = TempDir::new("squat");
        let deep = dir.0.join("d".repeat(100));
        std::fs::create_dir_all(&deep).unwrap();
        let squatted = short_dir(&deep.canonicalize().unwrap());
        std::fs::create_dir(&squatted).unwrap();
        std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = EmbeddedPostgres::start(&deep).await;
        let _ = std::fs::remove_dir(&squatted);
        match refused {
            Err(EmbeddedError::UnsafeSocketDir { dir, .. }) => assert_eq!(dir, squatted),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
