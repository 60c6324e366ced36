//! Creating the cluster on first use (initdb, the `switchboard` database) and private folders.

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
}

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
