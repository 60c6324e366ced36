//! Embedded PostgreSQL: a private cluster in the data folder for when no DATABASE_URL is set.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

/// The database Switchboard uses inside the cluster.
const DATABASE: &str = "switchboard";
/// The superuser initdb creates; also the OS account the server runs as when we are root.
const SUPERUSER: &str = "postgres";
/// Folder names inside the data folder.
const CLUSTER_DIR: &str = "postgres";
const STAGING_DIR: &str = "postgres.init";
const SOCKET_DIR: &str = "postgres-run";
const LOG_FILE: &str = "postgres.log";
/// Inside the cluster folder, so it lives and dies with the cluster it describes.
const PORT_FILE: &str = "switchboard-port";
const BIN_ENV: &str = "SWITCHBOARD_PG_BIN";
const DISTRO_ROOT: &str = "/usr/lib/postgresql";
const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// Client settings a user may have exported for another server; they must not steer ours.
const FOREIGN_ENV: [&str; 8] = [
    "PGDATA",
    "PGPORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGCTLTIMEOUT",
];
const START_TIMEOUT_SECS: u64 = 30;
/// Crash recovery and the final checkpoint can take a while on a big cluster.
const STOP_TIMEOUT_SECS: u64 = 60;
/// How long to wait for a server left by a previous run to finish starting or exiting.
const PREVIOUS_SERVER_WAIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LEFTOVER_RETRY_INTERVAL: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Another program can take the free port between our probe and the server's bind.
const START_ATTEMPTS: u32 = 3;
/// The log is appended to across runs; past this size the old part is set aside once.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;
const TAIL_LINES: usize = 20;
/// `sun_path` holds 108 bytes including the NUL; PostgreSQL refuses longer socket paths.
const MAX_SOCKET_PATH: usize = 107;
/// What PostgreSQL appends to the socket folder: `/.s.PGSQL.` and up to five port digits.
const SOCKET_NAME_LEN: usize = "/.s.PGSQL.65535".len();

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

/// Why the embedded PostgreSQL could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; searched {}. \
         PostgreSQL must be installed (e.g. `apt-get install postgresql`), or {BIN_ENV} set to \
         the folder holding them, or DATABASE_URL set to use an existing server",
        .searched.join(", ")
    )]
    BinariesNotFound { searched: Vec<String> },
    #[error(
        "running as root, but PostgreSQL refuses to run as root and there is no `{SUPERUSER}` \
         user to run it as; install the PostgreSQL server package (it creates that user) or run \
         switchboard as an ordinary user"
    )]
    NoPostgresUser,
    #[error(
        "the `{SUPERUSER}` user (uid {uid}) cannot enter the data folder {}; make it and its \
         parent folders searchable for that user (e.g. chmod o+x) or choose another data folder",
        .dir.display()
    )]
    DataDirUnreachable { dir: PathBuf, uid: u32 },
    #[error(
        "data folder {} cannot be used for the embedded PostgreSQL: pg_ctl passes it through a \
         shell, so it must be valid UTF-8 without \", $, `, \\ or control characters",
        .0.display()
    )]
    UnsupportedPath(PathBuf),
    #[error("initdb failed ({status}):\n{stderr_tail}")]
    InitdbFailed {
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("creating the `{DATABASE}` database failed ({status}):\n{stderr_tail}")]
    CreateDatabaseFailed {
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("PostgreSQL did not start ({reason}); the log {} ends with:\n{log_tail}", .log_file.display())]
    StartFailed {
        reason: String,
        log_file: PathBuf,
        log_tail: String,
    },
    #[error("pg_ctl stop failed ({status}):\n{stderr_tail}")]
    StopFailed {
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The uid/gid the server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Account {
    uid: u32,
    gid: u32,
}

/// What `postmaster.pid` says about a server started earlier in this cluster.
enum Previous {
    /// No live server: none ever ran, it shut down, or it crashed (a stale file the server
    /// itself clears on start, once the recorded process is gone).
    None,
    /// A live server accepting connections on this port: adopted rather than fought over.
    Answering(u16),
    /// A live process that is not (yet, or any more) accepting connections: starting up,
    /// shutting down, or a killed postmaster not yet reaped.
    Busy { pid: String },
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

    /// Creates the cluster and the `switchboard` database in a staging folder, then renames it
    /// into place: a cluster folder with `PG_VERSION` is therefore always complete, even if a
    /// first start is interrupted.
    async fn initialise(&self, data_dir: &Path) -> Result<(), EmbeddedError> {
        let staging = data_dir.join(STAGING_DIR);
        // Left by an interrupted first start; it never holds data worth keeping.
        remove_dir_if_present(&staging).await?;
        prepare_private_dir(&staging, self.run_as).await?;
        tracing::info!(cluster = %self.cluster_dir.display(), "initialising embedded PostgreSQL");

        // Trust authentication is acceptable because the server listens on 127.0.0.1 only and
        // its socket sits in a 0700 folder: nothing off this machine can reach it. Any local
        // account can still connect over 127.0.0.1 as superuser, so on a shared multi-user host
        // point DATABASE_URL at a properly secured server instead.
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&staging)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale"])
            .output()
            .await
            .map_err(io_error("run", &self.bin_dir.join("initdb")))?;
        if !output.status.success() {
            remove_dir_if_present(&staging).await?;
            return Err(EmbeddedError::InitdbFailed {
                status: output.status,
                stderr_tail: tail(&String::from_utf8_lossy(&output.stderr)),
            });
        }
        if let Err(error) = self.create_database(&staging).await {
            remove_dir_if_present(&staging).await?;
            return Err(error);
        }
        tokio::fs::rename(&staging, &self.cluster_dir)
            .await
            .map_err(io_error("move the new cluster to", &self.cluster_dir))
    }

    /// Creates the database with the server in single-user mode: it needs no port, no running
    /// server and no client binaries (which some distributions package separately).
    async fn create_database(&self, staging: &Path) -> Result<(), EmbeddedError> {
        let script = staging.join("switchboard-create-database.sql");
        // Single-user mode reads its commands from stdin; a file avoids needing async pipes.
        tokio::fs::write(&script, format!("CREATE DATABASE {DATABASE};\n"))
            .await
            .map_err(io_error("write", &script))?;
        let stdin = std::fs::File::open(&script).map_err(io_error("open", &script))?;
        let output = self
            .command("postgres")
            .args(["--single", "-D"])
            .arg(staging)
            .args(["-c", "exit_on_error=true", "postgres"])
            .stdin(Stdio::from(stdin))
            .output()
            .await
            .map_err(io_error("run", &self.bin_dir.join("postgres")));
        tokio::fs::remove_file(&script)
            .await
            .map_err(io_error("remove", &script))?;
        let output = output?;
        if !output.status.success() {
            return Err(EmbeddedError::CreateDatabaseFailed {
                status: output.status,
                stderr_tail: tail(&String::from_utf8_lossy(&output.stderr)),
            });
        }
        Ok(())
    }

    /// Brings the server up: adopts one that is already running, waits out one that is starting
    /// or exiting, otherwise starts it with `pg_ctl`, retrying on another port if ours was taken.
    async fn launch(&mut self) -> Result<(), EmbeddedError> {
        let mut preferred = self.recorded_port().await;
        let mut attempts = 0;
        // Set on the first wait for an earlier server; all such waits share one budget.
        let mut waiting_since: Option<Instant> = None;
        loop {
            match self.previous_server().await? {
                Previous::Answering(found) => {
                    tracing::warn!(
                        port = found,
                        "adopting an embedded PostgreSQL left running by a previous run"
                    );
                    return self.finish_start(found).await;
                }
                Previous::Busy { pid } => {
                    if waited_out(&mut waiting_since) {
                        let reason = format!(
                            "process {pid} is recorded in {} and alive but does not accept \
                             connections; stop it, or remove that file if the process is not \
                             PostgreSQL",
                            self.cluster_dir.join("postmaster.pid").display()
                        );
                        return Err(self.start_failed(reason, 0).await);
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                    continue;
                }
                Previous::None => {}
            }

            let port = match preferred {
                Some(port) if port_is_free(port).await => port,
                _ => free_port().await?,
            };
            preferred = Some(port);
            let log_offset = file_len(&self.log_file).await;
            let output = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.cluster_dir)
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t"])
                .arg(START_TIMEOUT_SECS.to_string())
                .arg("-o")
                .arg(self.server_options(port))
                .arg("start")
                .output()
                .await
                .map_err(io_error("run", &self.bin_dir.join("pg_ctl")))?;
            if output.status.success() {
                return self.finish_start(port).await;
            }

            // pg_ctl's own words are short ("could not start server"); the log says why.
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr.lines().collect::<Vec<_>>().join(" ");
            let failure = self.start_failed(reason, log_offset).await;
            // After a crash the old postmaster's children hold its shared memory until they
            // notice it is gone, and the server refuses to start beside them. The message is
            // stable and in English: initdb --no-locale sets lc_messages to C.
            let old_children = matches!(&failure, EmbeddedError::StartFailed { log_tail, .. }
                if log_tail.contains("pre-existing shared memory block"));
            if old_children && !waited_out(&mut waiting_since) {
                tokio::time::sleep(LEFTOVER_RETRY_INTERVAL).await;
                continue;
            }
            // pg_ctl gives up after its timeout while a long crash recovery carries on, and
            // another program may have bound the port first; both deserve another look.
            let server_left = self.registered_server().await?.is_some();
            let port_taken = !port_is_free(port).await;
            attempts += 1;
            if attempts >= START_ATTEMPTS || !(server_left || port_taken) {
                return Err(failure);
            }
            if !server_left {
                preferred = None;
            }
            tracing::warn!(port, error = %failure, "embedded PostgreSQL did not start; retrying");
        }
    }

    async fn finish_start(&mut self, port: u16) -> Result<(), EmbeddedError> {
        self.port = port;
        self.running = true;
        let port_file = self.cluster_dir.join(PORT_FILE);
        tokio::fs::write(&port_file, format!("{port}\n"))
            .await
            .map_err(io_error("write", &port_file))?;
        if let Some(account) = self.run_as {
            chown(&port_file, account)?;
        }
        tracing::info!(port, cluster = %self.cluster_dir.display(), "embedded PostgreSQL running");
        Ok(())
    }

    /// The `-o` string for pg_ctl, which pastes it into a `/bin/sh` command line.
    fn server_options(&self, port: u16) -> String {
        let socket_dir = self.socket_dir.to_string_lossy();
        // A too-long socket path would stop the server from starting at all; TCP is enough.
        let socket_dir = if socket_dir.len() + SOCKET_NAME_LEN > MAX_SOCKET_PATH {
            tracing::info!(dir = %socket_dir, "socket path too long for a unix socket; embedded PostgreSQL uses TCP only");
            String::new()
        } else {
            socket_dir.into_owned()
        };
        format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            shell_quote(&socket_dir)
        )
    }

    /// The contents of `postmaster.pid` if a live process is recorded in it.
    async fn registered_server(&self) -> Result<Option<String>, EmbeddedError> {
        let pid_file = self.cluster_dir.join("postmaster.pid");
        let contents = match tokio::fs::read_to_string(&pid_file).await {
            Ok(contents) => contents,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("read", &pid_file)(error)),
        };
        // pg_ctl judges liveness as the server will (signal 0 from the server's account).
        let status = self
            .command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.cluster_dir)
            .output()
            .await
            .map_err(io_error("run", &self.bin_dir.join("pg_ctl")))?;
        Ok(status.status.success().then_some(contents))
    }

    async fn previous_server(&self) -> Result<Previous, EmbeddedError> {
        let Some(contents) = self.registered_server().await? else {
            return Ok(Previous::None);
        };
        // Lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
        let lines: Vec<&str> = contents.lines().collect();
        let pid = lines.first().map_or("?", |line| line.trim()).to_owned();
        let port = lines
            .get(3)
            .and_then(|line| line.trim().parse::<u16>().ok());
        let ready = lines.get(7).is_some_and(|line| line.trim() == "ready");
        // A killed postmaster stays "alive" to signal 0 as a zombie until reaped, with "ready"
        // still in its file, so only an accepted connection proves the server is there.
        match port {
            Some(port) if ready && accepts_connections(port).await => Ok(Previous::Answering(port)),
            _ => Ok(Previous::Busy { pid }),
        }
    }

    async fn recorded_port(&self) -> Option<u16> {
        let text = tokio::fs::read_to_string(self.cluster_dir.join(PORT_FILE))
            .await
            .ok()?;
        text.trim().parse().ok().filter(|port| *port != 0)
    }

    /// Creates the log file ahead of pg_ctl so that it belongs to the server's account, which
    /// cannot create files in a data folder owned by root. Mode 0600: failed statements are
    /// logged with their text.
    async fn prepare_log(&self) -> Result<(), EmbeddedError> {
        if file_len(&self.log_file).await > LOG_ROTATE_BYTES {
            let old = self.log_file.with_extension("log.old");
            tokio::fs::rename(&self.log_file, &old)
                .await
                .map_err(io_error("rotate", &self.log_file))?;
        }
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log_file)
            .await
            .map_err(io_error("create", &self.log_file))?;
        tokio::fs::set_permissions(&self.log_file, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io_error("set permissions on", &self.log_file))?;
        if let Some(account) = self.run_as {
            chown(&self.log_file, account)?;
        }
        Ok(())
    }

    async fn start_failed(&self, reason: String, log_offset: u64) -> EmbeddedError {
        let log_tail = match tokio::fs::read(&self.log_file).await {
            Ok(bytes) => {
                let start = usize::try_from(log_offset).unwrap_or(0).min(bytes.len());
                tail(&String::from_utf8_lossy(&bytes[start..]))
            }
            Err(error) => format!("(log unreadable: {error})"),
        };
        EmbeddedError::StartFailed {
            reason,
            log_file: self.log_file.clone(),
            log_tail,
        }
    }

    /// A PostgreSQL binary from our bin folder, run as the server's account in a folder that
    /// account can enter (root's home is not one, and initdb complains when it cannot).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.socket_dir).stdin(Stdio::null());
        for var in FOREIGN_ENV {
            command.env_remove(var);
        }
        if let Some(account) = self.run_as {
            // std drops supplementary groups when a root parent sets the uid.
            command.uid(account.uid).gid(account.gid);
        }
        command
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

/// `SWITCHBOARD_PG_BIN`, else `/usr/lib/postgresql/*/bin` (Debian and Ubuntu keep the server
/// binaries there, off PATH): the existing cluster's major version if installed, otherwise the
/// newest; else `pg_config --bindir`, else PATH.
async fn find_bin_dir(cluster_version: Option<&str>) -> Result<PathBuf, EmbeddedError> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        // An explicit choice is not second-guessed with a fallback the user did not ask for.
        return if has_server_binaries(&dir).await {
            Ok(dir)
        } else {
            Err(EmbeddedError::BinariesNotFound {
                searched: vec![format!("{} (from {BIN_ENV})", dir.display())],
            })
        };
    }

    let mut searched = Vec::new();
    let mut versions = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(DISTRO_ROOT).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            if let Some(key) = entry.file_name().to_str().and_then(version_key) {
                versions.push((key, entry.path().join("bin")));
            }
        }
    }
    if versions.is_empty() {
        searched.push(format!("{DISTRO_ROOT}/*/bin"));
    }
    rank_versions(&mut versions, cluster_version);
    for (_, dir) in versions {
        if has_server_binaries(&dir).await {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }

    match Command::new("pg_config").arg("--bindir").output().await {
        Ok(output) if output.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if has_server_binaries(&dir).await {
                return Ok(dir);
            }
            searched.push(format!("{} (pg_config --bindir)", dir.display()));
        }
        _ => searched.push("pg_config --bindir (not available)".to_owned()),
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_server_binaries(&dir).await {
                return Ok(dir);
            }
        }
    }
    searched.push("PATH".to_owned());
    Err(EmbeddedError::BinariesNotFound { searched })
}

async fn has_server_binaries(dir: &Path) -> bool {
    for name in SERVER_BINARIES {
        match tokio::fs::metadata(dir.join(name)).await {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {}
            _ => return false,
        }
    }
    true
}

/// Newest first, with the cluster's own version ahead of all.
fn rank_versions(versions: &mut [(Vec<u32>, PathBuf)], cluster_version: Option<&str>) {
    let cluster_key = cluster_version.and_then(version_key);
    let is_cluster_version = |key: &Vec<u32>| Some(key) == cluster_key.as_ref();
    versions.sort_by(|a, b| {
        is_cluster_version(&b.0)
            .cmp(&is_cluster_version(&a.0))
            .then_with(|| b.0.cmp(&a.0))
    });
}

/// "15" → [15], "9.6" → [9, 6]: numeric so that 10 sorts above 9.6.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The effective uid from /proc (no libc needed); `None` where /proc is missing, in which case
/// we run as ourselves and initdb reports plainly if that is root.
async fn effective_uid() -> Option<u32> {
    let status = tokio::fs::read_to_string("/proc/self/status").await.ok()?;
    parse_effective_uid(&status)
}

/// The `Uid:` line lists real, effective, saved and filesystem uids.
fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

async fn postgres_account() -> Result<Account, EmbeddedError> {
    if let Ok(passwd) = tokio::fs::read_to_string("/etc/passwd").await {
        if let Some(account) = parse_passwd(&passwd, SUPERUSER) {
            return Ok(account);
        }
    }
    // Directory-service accounts (LDAP, sssd) are not in /etc/passwd; getent asks NSS.
    if let Ok(output) = Command::new("getent")
        .args(["passwd", SUPERUSER])
        .output()
        .await
    {
        if output.status.success() {
            if let Some(account) = parse_passwd(&String::from_utf8_lossy(&output.stdout), SUPERUSER)
            {
                return Ok(account);
            }
        }
    }
    Err(EmbeddedError::NoPostgresUser)
}

/// Finds `name:password:uid:gid:...` in passwd-format text.
fn parse_passwd(passwd: &str, name: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Account { uid, gid })
    })
}

/// Running as root we create the folders, but the server account must be able to walk into
/// them; a 0700 home or data folder would otherwise surface as an obscure initdb error.
async fn check_reachable(data_dir: &Path, account: Account) -> Result<(), EmbeddedError> {
    let probe = Command::new("/bin/sh")
        .args(["-c", r#"test -x "$1""#, "probe"])
        .arg(data_dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(account.uid)
        .gid(account.gid)
        .status()
        .await;
    match probe {
        Ok(status) if !status.success() => Err(EmbeddedError::DataDirUnreachable {
            dir: data_dir.to_owned(),
            uid: account.uid,
        }),
        // If the probe itself cannot run, initdb or pg_ctl will say what is wrong.
        _ => Ok(()),
    }
}

/// pg_ctl builds a `/bin/sh` command line with the data and log paths in double quotes, so
/// characters special inside double quotes would break it or be interpreted.
fn check_shell_safe(data_dir: &Path) -> Result<(), EmbeddedError> {
    let safe = data_dir.to_str().is_some_and(|path| {
        !path
            .chars()
            .any(|c| matches!(c, '"' | '$' | '`' | '\\') || c.is_control())
    });
    if safe {
        Ok(())
    } else {
        Err(EmbeddedError::UnsupportedPath(data_dir.to_owned()))
    }
}

/// Single-quotes for `/bin/sh`: nothing inside is special except the quote itself.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// PostgreSQL insists its data folder is 0700 (or 0750) and owned by the server's account.
async fn prepare_private_dir(dir: &Path, run_as: Option<Account>) -> Result<(), EmbeddedError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io_error("create", dir))?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(io_error("set permissions on", dir))?;
    if let Some(account) = run_as {
        chown(dir, account)?;
    }
    Ok(())
}

/// A single syscall on a local path: not worth a blocking-pool round trip.
fn chown(path: &Path, account: Account) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
        .map_err(io_error("change the owner of", path))
}

async fn remove_dir_if_present(dir: &Path) -> Result<(), EmbeddedError> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("remove", dir)(error))
        }
        _ => Ok(()),
    }
}

async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |meta| meta.len())
}

/// Binding is the only reliable test: something may listen on 0.0.0.0 or ::, not just on
/// 127.0.0.1.
async fn port_is_free(port: u16) -> bool {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .is_ok()
}

/// A port the kernel considers free now; the server binds it moments later, and `launch`
/// retries if something else got there first.
async fn free_port() -> Result<u16, EmbeddedError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(io_error("bind a probe socket on", Path::new("127.0.0.1:0")))?;
    let address = listener
        .local_addr()
        .map_err(io_error("read the address of", Path::new("127.0.0.1:0")))?;
    Ok(address.port())
}

async fn accepts_connections(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Starts the shared wait budget on first use; true once it is spent.
fn waited_out(since: &mut Option<Instant>) -> bool {
    since.get_or_insert_with(Instant::now).elapsed() >= PREVIOUS_SERVER_WAIT
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let path = path.to_owned();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn parses_the_effective_uid() {
        let status = "Name:\tswitchboard\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
    }

    #[test]
    fn finds_accounts_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            parse_passwd(passwd, "postgres"),
            Some(Account { uid: 101, gid: 104 })
        );
        assert_eq!(parse_passwd(passwd, "nobody"), None);
    }

    #[test]
    fn orders_versions_numerically() {
        assert!(version_key("10") > version_key("9.6"));
        assert_eq!(version_key("15"), Some(vec![15]));
        assert_eq!(version_key("common"), None);
    }

    #[test]
    fn prefers_the_clusters_own_version_then_the_newest() {
        let installed = || {
            ["9.6", "16", "15"]
                .map(|name| (version_key(name).expect("numeric"), PathBuf::from(name)))
        };
        let order = |cluster: Option<&str>| {
            let mut versions = installed();
            rank_versions(&mut versions, cluster);
            versions.map(|(_, dir)| dir.display().to_string())
        };
        assert_eq!(order(None), ["16", "15", "9.6"]);
        assert_eq!(order(Some("15")), ["15", "16", "9.6"]);
        assert_eq!(order(Some("14")), ["16", "15", "9.6"]);
    }

    #[test]
    fn quotes_for_the_shell_and_rejects_what_pg_ctl_cannot_pass() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert!(check_shell_safe(Path::new("/srv/switch board/data")).is_ok());
        assert!(check_shell_safe(Path::new("/srv/$HOME")).is_err());
        assert!(check_shell_safe(Path::new("/srv/\"x\"")).is_err());
    }
}
