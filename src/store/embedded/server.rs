//! Bringing the server up with pg_ctl: adopting a previous one, choosing the port, retrying.

use std::time::Duration;

use tokio::time::Instant;

use super::account::chown;
use super::command::shell_quote;
use super::error::io_error;
use super::log::file_len;
use super::ports::{accepts_connections, free_port, port_is_free};
use super::{EmbeddedError, EmbeddedPostgres};

/// Inside the cluster folder, so it lives and dies with the cluster it describes.
const PORT_FILE: &str = "switchboard-port";
const START_TIMEOUT_SECS: u64 = 30;
/// How long to wait for a server left by a previous run to finish starting or exiting.
const PREVIOUS_SERVER_WAIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LEFTOVER_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Another program can take the free port between our probe and the server's bind.
const START_ATTEMPTS: u32 = 3;
/// `sun_path` holds 108 bytes including the NUL; PostgreSQL refuses longer socket paths.
pub(super) const MAX_SOCKET_PATH: usize = 107;
/// What PostgreSQL appends to the socket folder: `/.s.PGSQL.` and up to five port digits.
const SOCKET_NAME_LEN: usize = "/.s.PGSQL.65535".len();

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
    /// Brings the server up: adopts one that is already running, waits out one that is starting
    /// or exiting, otherwise starts it with `pg_ctl`, retrying on another port if ours was taken.
    pub(super) async fn launch(&mut self) -> Result<(), EmbeddedError> {
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
}

/// Starts the shared wait budget on first use; true once it is spent.
fn waited_out(since: &mut Option<Instant>) -> bool {
    since.get_or_insert_with(Instant::now).elapsed() >= PREVIOUS_SERVER_WAIT
}
