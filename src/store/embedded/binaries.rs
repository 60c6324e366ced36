//! Finding the PostgreSQL server binaries (initdb, pg_ctl, postgres) on this machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::EmbeddedError;

pub(super) const BIN_ENV: &str = "SWITCHBOARD_PG_BIN";
const DISTRO_ROOT: &str = "/usr/lib/postgresql";
const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// `SWITCHBOARD_PG_BIN`, else `/usr/lib/postgresql/*/bin` (Debian and Ubuntu keep the server
/// binaries there, off PATH): the existing cluster's major version if installed, otherwise the
/// newest; else `pg_config --bindir`, else PATH.
pub(super) async fn find_bin_dir(cluster_version: Option<&str>) -> Result<PathBuf, EmbeddedError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
