//! The OS account the server runs as when we are root, since PostgreSQL refuses to run as root.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::error::io_error;
use super::{EmbeddedError, SUPERUSER};

/// The uid/gid the server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Account {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The effective uid from /proc (no libc needed); `None` where /proc is missing, in which case
/// we run as ourselves and initdb reports plainly if that is root.
pub(super) async fn effective_uid() -> Option<u32> {
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

pub(super) async fn postgres_account() -> Result<Account, EmbeddedError> {
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
pub(super) async fn check_reachable(
    data_dir: &Path,
    account: Account,
) -> Result<(), EmbeddedError> {
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

/// A single syscall on a local path: not worth a blocking-pool round trip.
pub(super) fn chown(path: &Path, account: Account) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
        .map_err(io_error("change the owner of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
