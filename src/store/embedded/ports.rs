//! Probing TCP ports on 127.0.0.1: whether one is free, a free one, whether a server answers.

use std::path::Path;
use std::time::Duration;

use super::error::io_error;
use super::EmbeddedError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Binding is the only reliable test: something may listen on 0.0.0.0 or ::, not just on
/// 127.0.0.1.
pub(super) async fn port_is_free(port: u16) -> bool {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .is_ok()
}

/// A port the kernel considers free now; the server binds it moments later, and `launch`
/// retries if something else got there first.
pub(super) async fn free_port() -> Result<u16, EmbeddedError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(io_error("bind a probe socket on", Path::new("127.0.0.1:0")))?;
    let address = listener
        .local_addr()
        .map_err(io_error("read the address of", Path::new("127.0.0.1:0")))?;
    Ok(address.port())
}

pub(super) async fn accepts_connections(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}
