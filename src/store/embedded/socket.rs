//! The server's only way in: a unix socket in a 0700 folder, in the data folder or, when that
//! path is too long for a socket, in a private folder under /tmp.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::account::{chown, Account};
use super::error::io_error;
use super::EmbeddedError;

/// PostgreSQL names its socket after the port (`.s.PGSQL.5432`) even with no TCP listener; the
/// folder belongs to one cluster, so a fixed number never clashes.
pub(super) const PORT: u16 = 5432;
/// `sun_path` holds 108 bytes including the NUL; PostgreSQL refuses longer socket paths.
pub(super) const MAX_SOCKET_PATH: usize = 107;
/// Not `$TMPDIR` nor `$XDG_RUNTIME_DIR`: those may be long, unreachable for the server's
/// account, or removed at logout under a server that keeps running.
const SHORT_PARENT: &str = "/tmp";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn socket_file(dir: &Path) -> PathBuf {
    dir.join(format!(".s.PGSQL.{PORT}"))
}

pub(super) fn fits(dir: &Path) -> bool {
    socket_file(dir).as_os_str().len() <= MAX_SOCKET_PATH
}

/// `/tmp/switchboard-pg-<hash of the data folder>`: the same folder on every run, so that a
/// server left running is found again, and a different one for each data folder.
pub(super) fn short_dir(data_dir: &Path) -> PathBuf {
    Path::new(SHORT_PARENT).join(format!(
        "switchboard-pg-{:016x}",
        fnv1a(data_dir.as_os_str().as_encoded_bytes())
    ))
}

/// FNV-1a: stable across Rust versions and runs, unlike std's hashers; a name, not a secret.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Makes the short folder 0700 for the server's account (`owner`), or accepts one found only if
/// it is already such a folder. /tmp is shared: a folder another account made (or a symlink)
/// could let it swap the socket for its own, so it is refused, never repaired.
pub(super) async fn prepare_short_dir(
    dir: &Path,
    run_as: Option<Account>,
    owner: u32,
) -> Result<(), EmbeddedError> {
    let created = tokio::fs::DirBuilder::new().mode(0o700).create(dir).await;
    match created {
        Ok(()) => {
            // The umask may have taken bits from 0700; nobody else can reach the folder yet.
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(io_error("set permissions on", dir))?;
            if let Some(account) = run_as {
                chown(dir, account)?;
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io_error("create", dir)(error)),
    }
    let meta = tokio::fs::symlink_metadata(dir)
        .await
        .map_err(io_error("inspect", dir))?;
    let unsafe_because = if !meta.file_type().is_dir() {
        Some("is not a folder (or is a symbolic link)".to_owned())
    } else if meta.uid() != owner {
        Some(format!(
            "belongs to uid {}, not to the server's uid {owner}",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "is open to other accounts (mode {:o})",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    match unsafe_because {
        Some(reason) => Err(EmbeddedError::UnsafeSocketDir {
            dir: dir.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Whether a server accepts connections on the socket. Root may connect whatever the owner:
/// that is how a root app reaches the server run as `postgres`.
pub(super) async fn accepts_connections(socket: &Path) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(socket)).await,
        Ok(Ok(_))
    )
}

/// Only for servers started by an earlier version, which listened on 127.0.0.1.
pub(super) async fn accepts_tcp(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Percent-encodes every byte but ASCII letters and digits, as a URL host: the form libpq and
/// sqlx read as a socket folder (`postgres://user@%2Fpath%2Fto%2Fdir:5432/db`).
pub(super) fn url_host(dir: &Path) -> String {
    dir.as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(*byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_folders_are_stable_distinct_and_fit() {
        let a = short_dir(Path::new("/srv/a"));
        assert_eq!(a, short_dir(Path::new("/srv/a")));
        assert_ne!(a, short_dir(Path::new("/srv/b")));
        assert!(a.starts_with("/tmp"));
        assert!(fits(&a));
        assert!(!fits(&Path::new("/x").join("y".repeat(100))));
    }

    #[test]
    fn encodes_a_socket_folder_as_a_url_host() {
        assert_eq!(url_host(Path::new("/a b/c-1")), "%2Fa%20b%2Fc%2D1");
    }
}
