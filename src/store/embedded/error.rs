//! Why the embedded PostgreSQL could not be started or stopped, and helpers to build the errors.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::binaries::BIN_ENV;
use super::{DATABASE, SUPERUSER};

const TAIL_LINES: usize = 20;

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
    #[error(
        "the socket folder {} {reason}; remove it, or choose a data folder with a shorter path \
         (then the socket lives inside it)",
        .dir.display()
    )]
    UnsafeSocketDir { dir: PathBuf, reason: String },
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

pub(super) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

pub(super) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let path = path.to_owned();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}
