//! Small pieces every connector's settings parsing shares.

use super::{AccountLogin, ConnectorError};
use crate::domain::ids::Protocol;

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

/// Refuses an account of another network than the connector's.
pub(crate) fn require_protocol(
    login: &AccountLogin,
    protocol: Protocol,
) -> Result<(), ConnectorError> {
    if login.protocol == protocol {
        return Ok(());
    }
    Err(invalid(format!(
        "a {} account cannot log in over {protocol}",
        login.protocol
    )))
}

/// The account's settings cannot be used (bad handle or server form).
pub(crate) fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidAccount(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_must_be_host_and_port() {
        assert_eq!(
            parse_host_port("localhost:5222"),
            Some(("localhost".to_owned(), 5222))
        );
        assert_eq!(
            parse_host_port(" 127.0.0.1:1 "),
            Some(("127.0.0.1".to_owned(), 1))
        );
        assert_eq!(
            parse_host_port("[::1]:15222"),
            Some(("::1".to_owned(), 15222))
        );
        for bad in [
            "",
            "localhost",
            "localhost:",
            ":5222",
            "localhost:0",
            "localhost:65536",
            "localhost:x",
            "::1:5222",
            "[localhost]:5222",
            "user@host:5222",
            "xmpp://host:5222",
            "irc://h:6667",
            "two words:5222",
        ] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }
}
