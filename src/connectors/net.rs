//! Small pieces every connector's settings parsing shares.

use super::ConnectorError;

/// Splits `host:port`; IPv6 literals must be bracketed (`[::1]:5222`).
pub(crate) fn parse_host_port(server: &str) -> Option<(String, u16)> {
    let (host, port) = server.trim().rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|port| *port != 0)?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').filter(|ip| ip.contains(':'))?,
        None if host.contains(':') => return None,
        None => host,
    };
    let plausible = !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '[' | ']'));
    plausible.then(|| (host.to_owned(), port))
}

/// The account's settings cannot be used (bad handle or server form).
pub(crate) fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidAccount(message.into())
}
