//! Running PostgreSQL binaries as the server's account, free of foreign PG* settings, shell-safe.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::{EmbeddedError, EmbeddedPostgres};

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

impl EmbeddedPostgres {
    /// A PostgreSQL binary from our bin folder, run as the server's account in a folder that
    /// account can enter (root's home is not one, and initdb complains when it cannot).
    pub(super) fn command(&self, program: &str) -> Command {
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

/// pg_ctl builds a `/bin/sh` command line with the data and log paths in double quotes, so
/// characters special inside double quotes would break it or be interpreted.
pub(super) fn check_shell_safe(data_dir: &Path) -> Result<(), EmbeddedError> {
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
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell_and_rejects_what_pg_ctl_cannot_pass() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert!(check_shell_safe(Path::new("/srv/switch board/data")).is_ok());
        assert!(check_shell_safe(Path::new("/srv/$HOME")).is_err());
        assert!(check_shell_safe(Path::new("/srv/\"x\"")).is_err());
    }
}
