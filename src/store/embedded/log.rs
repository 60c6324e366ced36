//! The server's log in the data folder: owned by the server's account, rotated, quoted on failure.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::account::chown;
use super::error::{io_error, tail};
use super::{EmbeddedError, EmbeddedPostgres};

/// The log is appended to across runs; past this size the old part is set aside once.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

impl EmbeddedPostgres {
    /// Creates the log file ahead of pg_ctl so that it belongs to the server's account, which
    /// cannot create files in a data folder owned by root. Mode 0600: failed statements are
    /// logged with their text.
    pub(super) async fn prepare_log(&self) -> Result<(), EmbeddedError> {
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

    pub(super) async fn start_failed(&self, reason: String, log_offset: u64) -> EmbeddedError {
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
}

pub(super) async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |meta| meta.len())
}
