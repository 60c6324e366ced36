//! Creating the cluster on first use (initdb, the `switchboard` database), its pg_hba.conf, and
//! private folders.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use super::account::{chown, Account};
use super::error::{io_error, tail};
use super::{EmbeddedError, EmbeddedPostgres, DATABASE, SUPERUSER};

const STAGING_DIR: &str = "postgres.init";

impl EmbeddedPostgres {
    /// Creates the cluster and the `switchboard` database in a staging folder, then renames it
    /// into place: a cluster folder with `PG_VERSION` is therefore always complete, even if a
    /// first start is interrupted.
    pub(super) async fn initialise(&self, data_dir: &Path) -> Result<(), EmbeddedError> {
        let staging = data_dir.join(STAGING_DIR);
        // Left by an interrupted first start; it never holds data worth keeping.
        remove_dir_if_present(&staging).await?;
        prepare_private_dir(&staging, self.run_as).await?;
        tracing::info!(cluster = %self.cluster_dir.display(), "initialising embedded PostgreSQL");

        // Trust on the socket only, TCP refused: see `write_hba`, which replaces this file's
        // rules on every start anyway.
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&staging)
            .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=reject"])
            .args(["-E", "UTF8", "--no-locale"])
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
}

impl EmbeddedPostgres {
    /// Socket connections are trusted, and nothing else is allowed: the server has no TCP
    /// listener, and were one configured by hand, no `host` rule would let anyone in. Trust is
    /// safe because the socket's folder is 0700, owned by the server's account: only that
    /// account and root can reach it (`peer` would not do: a root app connecting to a server
    /// run as `postgres` is not `postgres`). Rewritten on every start, so that a cluster made
    /// by an earlier version, which trusted 127.0.0.1, is closed too.
    pub(super) async fn write_hba(&self) -> Result<(), EmbeddedError> {
        let path = self.cluster_dir.join("pg_hba.conf");
        if tokio::fs::read_to_string(&path).await.ok().as_deref() == Some(HBA) {
            return Ok(());
        }
        // Written in place: the file keeps its owner (the server's account) and mode 0600.
        tokio::fs::write(&path, HBA)
            .await
            .map_err(io_error("write", &path))?;
        if let Some(account) = self.run_as {
            chown(&path, account)?;
        }
        Ok(())
    }
}

const HBA: &str = "\
# Written by Switchboard on every start of its embedded PostgreSQL; edits are lost.
# The server listens on a unix socket in a 0700 folder only, so only the account running it
# (and root) can connect: trust them. No host rules: TCP connections are refused.
local all all trust
";

/// PostgreSQL insists its data folder is 0700 (or 0750) and owned by the server's account.
pub(super) async fn prepare_private_dir(
    dir: &Path,
    run_as: Option<Account>,
) -> Result<(), EmbeddedError> {
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

async fn remove_dir_if_present(dir: &Path) -> Result<(), EmbeddedError> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("remove", dir)(error))
        }
        _ => Ok(()),
    }
}
