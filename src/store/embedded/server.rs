//! Bringing the server up with pg_ctl, on its private unix socket only: adopting a previous
//! one, restarting one of an earlier version (which listened on TCP), retrying.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::command::shell_quote;
use super::error::io_error;
use super::log::file_len;
use super::socket::{accepts_connections, accepts_tcp, PORT};
use super::{EmbeddedError, EmbeddedPostgres};

const START_TIMEOUT_SECS: u64 = 30;
/// How long to wait for a server left by a previous run to finish starting or exiting.
const PREVIOUS_SERVER_WAIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LEFTOVER_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// A long crash recovery can outlast pg_ctl's wait.
const START_ATTEMPTS: u32 = 3;

/// What `postmaster.pid` says about a server started earlier in this cluster.
enum Previous {
    /// No live server: none ever ran, it shut down, or it crashed (a stale file the server
    /// itself clears on start, once the recorded process is gone).
    None,
    /// A live server of ours (socket only, in our socket folder) accepting connections:
    /// adopted rather than fought over.
    Answering,
    /// A live server started with other settings, by an earlier version listening on TCP:
    /// stopped and started again on the socket alone.
    Outdated { pid: String },
    /// A live process that is not (yet, or any more) accepting connections: starting up,
    /// shutting down, or a killed postmaster not yet reaped.
    Busy { pid: String },
}

impl EmbeddedPostgres {
    /// Brings the server up: adopts one of ours that is already running, restarts one started
    /// with other settings, waits out one that is starting or exiting, otherwise starts it.
    pub(super) async fn launch(&mut self) -> Result<(), EmbeddedError> {
        let mut attempts = 0;
        // Set on the first wait for an earlier server; all such waits share one budget.
        let mut waiting_since: Option<Instant> = None;
        loop {
            match self.previous_server().await? {
                Previous::Answering => {
                    tracing::warn!(
                        "adopting an embedded PostgreSQL left running by a previous run"
                    );
                    return self.finish_start();
                }
                Previous::Outdated { pid } => {
                    tracing::warn!(
                        pid,
                        "restarting an embedded PostgreSQL started with older settings, so that \
                         it listens on its private socket only"
                    );
                    self.shut_down().await?;
                    continue;
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
                .arg(self.server_options())
                .arg("start")
                .output()
                .await
                .map_err(io_error("run", &self.bin_dir.join("pg_ctl")))?;
            if output.status.success() {
                return self.finish_start();
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
            // pg_ctl gives up after its timeout while a long crash recovery carries on.
            attempts += 1;
            if attempts >= START_ATTEMPTS || self.registered_server().await?.is_none() {
                return Err(failure);
            }
            tracing::warn!(error = %failure, "embedded PostgreSQL did not start; retrying");
        }
    }

    fn finish_start(&mut self) -> Result<(), EmbeddedError> {
        self.running = true;
        tracing::info!(
            socket = %self.socket_dir.display(),
            cluster = %self.cluster_dir.display(),
            "embedded PostgreSQL running"
        );
        Ok(())
    }

    /// The `-o` string for pg_ctl, which pastes it into a `/bin/sh` command line. No listen
    /// address: no TCP port at all, whatever postgresql.conf says.
    fn server_options(&self) -> String {
        format!(
            "-p {PORT} -k {} -c listen_addresses='' -c unix_socket_permissions=0700",
            shell_quote(&self.socket_dir.to_string_lossy())
        )
    }

    /// The contents of `postmaster.pid` if a live process is recorded in it.
    pub(super) async fn registered_server(&self) -> Result<Option<String>, EmbeddedError> {
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
        let recorded = Recorded::parse(&contents);
        let pid = recorded.pid.to_owned();
        // A killed postmaster stays "alive" to signal 0 as a zombie until reaped, with "ready"
        // still in its file, so only an accepted connection proves the server is there.
        let answers = recorded.ready && recorded.answers().await;
        let ours = recorded.listen_address.is_empty()
            && recorded.port == Some(PORT)
            && Path::new(recorded.socket_dir) == self.socket_dir;
        Ok(match (answers, ours) {
            (true, true) => Previous::Answering,
            (true, false) => Previous::Outdated { pid },
            (false, _) => Previous::Busy { pid },
        })
    }
}

/// The lines of `postmaster.pid`: pid, data folder, start time, port, socket folder, listen
/// address (empty when there is no TCP listener), shared memory key, status.
struct Recorded<'a> {
    pid: &'a str,
    port: Option<u16>,
    socket_dir: &'a str,
    listen_address: &'a str,
    ready: bool,
}

impl<'a> Recorded<'a> {
    fn parse(contents: &'a str) -> Self {
        let lines: Vec<&str> = contents.lines().map(str::trim).collect();
        let line = |index: usize| lines.get(index).copied().unwrap_or("");
        Recorded {
            pid: Some(line(0)).filter(|pid| !pid.is_empty()).unwrap_or("?"),
            port: line(3).parse().ok(),
            socket_dir: line(4),
            listen_address: line(5),
            ready: line(7) == "ready",
        }
    }

    /// Through its socket if it has one, else (an earlier version's server in a folder too
    /// deep for a socket) on the TCP port it recorded.
    async fn answers(&self) -> bool {
        let Some(port) = self.port else {
            return false;
        };
        if !self.socket_dir.is_empty() {
            let socket = Path::new(self.socket_dir).join(format!(".s.PGSQL.{port}"));
            if accepts_connections(&socket).await {
                return true;
            }
        }
        !self.listen_address.is_empty() && accepts_tcp(port).await
    }
}

/// Starts the shared wait budget on first use; true once it is spent.
fn waited_out(since: &mut Option<Instant>) -> bool {
    since.get_or_insert_with(Instant::now).elapsed() >= PREVIOUS_SERVER_WAIT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_postmaster_pid_records() {
        let old = "4242\n/data/postgres\n1700000000\n41234\n/data/postgres-run\n127.0.0.1\n  1 2\nready   \n";
        let recorded = Recorded::parse(old);
        assert_eq!(recorded.pid, "4242");
        assert_eq!(recorded.port, Some(41234));
        assert_eq!(recorded.socket_dir, "/data/postgres-run");
        assert_eq!(recorded.listen_address, "127.0.0.1");
        assert!(recorded.ready);
        let starting = Recorded::parse("4243\n/data/postgres\n1700000000\n5432\n/s\n\n");
        assert_eq!(starting.listen_address, "");
        assert!(!starting.ready);
    }
}
