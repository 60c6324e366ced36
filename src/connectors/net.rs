//! Small pieces every connector shares: parsing its settings, and where it may connect.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use super::{AccountLogin, ConnectorError};
use crate::domain::ids::Protocol;

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// `10.0.0.0/8`, `fe80::/10`, or a bare address (the one host).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {bits}"))?,
            None => bits,
        };
        Ok(Self { address, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Never a place for an IM server: this host's "any" address, link-local networks (cloud
/// metadata services live there: 169.254.169.254, fd00:ec2::254), multicast, broadcast.
const ALWAYS_DENIED: [&str; 9] = [
    "0.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "100.100.100.200/32",
    "::/128",
    "fe80::/10",
    "ff00::/8",
    "fd00:ec2::254/128",
];

/// Private and loopback ranges: denied too on public deployments, where no bound account has
/// any business inside the server's own network.
const PRIVATE: [&str; 7] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "::1/128",
    "fc00::/7",
];

/// Where bound accounts may connect: everywhere but the denied networks. Checked on the
/// addresses a name resolves to, right before connecting to exactly those (no second lookup a
/// DNS answer could change in between).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPolicy {
    denied: Vec<Network>,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        Self::new(false, Vec::new())
    }
}

impl UpstreamPolicy {
    /// The networks always denied, the private ones too if `deny_private`, and `extra`.
    pub fn new(deny_private: bool, extra: Vec<Network>) -> Self {
        let private: &[&str] = if deny_private { &PRIVATE } else { &[] };
        // IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
        let mut denied: Vec<Network> = ALWAYS_DENIED
            .iter()
            .chain(private)
            .map(|n| Network::parse(n).expect("a valid built-in network"))
            .collect();
        denied.extend(extra);
        Self { denied }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        !self.denied.iter().any(|n| n.contains(ip))
    }

    /// The allowed ones of `addresses`; `Denied` when there were some and none is allowed.
    pub fn filter(&self, addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, ConnectorError> {
        let any = !addresses.is_empty();
        let allowed: Vec<SocketAddr> = addresses
            .into_iter()
            .filter(|a| self.allows(a.ip()))
            .collect();
        if any && allowed.is_empty() {
            return Err(ConnectorError::Denied(
                "the server's address is in a network Switchboard does not connect to (upstream policy)"
                    .into(),
            ));
        }
        Ok(allowed)
    }

    /// The allowed addresses of `host` (a name or an IP literal) on `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectorError> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectorError::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect();
        self.filter(addresses)
    }

    /// TCP to `host:port` on its allowed addresses, in turn.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectorError> {
        let addresses = self.resolve(host, port).await?;
        TcpStream::connect(&addresses[..]).await.map_err(|e| {
            ConnectorError::Unreachable(format!("cannot connect to {host}:{port}: {e}"))
        })
    }
}

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

/// HTTP clients (Matrix, NIP-05) resolve names through the policy: a name whose addresses are
/// all denied fails to resolve. IP literals in URLs skip resolvers: check them with
/// [`UpstreamPolicy::allows`] first.
#[cfg(any(feature = "matrix", feature = "nostr"))]
impl reqwest::dns::Resolve for UpstreamPolicy {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.clone();
        Box::pin(async move {
            let addresses = policy.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl UpstreamPolicy {
    /// `Denied` if the URL's host is an IP literal in a denied network (names are checked when
    /// they resolve).
    #[cfg(any(feature = "matrix", feature = "nostr"))]
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), ConnectorError> {
        let ip: Option<IpAddr> = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse().ok());
        match ip {
            Some(ip) => self.filter(vec![SocketAddr::new(ip, 0)]).map(|_| ()),
            None => Ok(()),
        }
    }
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
    fn the_default_policy_denies_metadata_link_local_multicast_and_unspecified_only() {
        let policy = UpstreamPolicy::default();
        for denied in [
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "ff02::1",
            "::",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(!policy.allows(denied.parse().unwrap()), "{denied}");
        }
        for allowed in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "93.184.216.34",
            "::1",
            "2001:db8::1",
        ] {
            assert!(policy.allows(allowed.parse().unwrap()), "{allowed}");
        }
        let public = UpstreamPolicy::new(true, vec![Network::parse("203.0.113.0/24").unwrap()]);
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "::1",
            "fd12::1",
            "::ffff:10.0.0.1",
            "203.0.113.9",
        ] {
            assert!(!public.allows(denied.parse().unwrap()), "{denied}");
        }
        assert!(public.allows("93.184.216.34".parse().unwrap()));
        assert!(public.allows("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn networks_parse_with_or_without_a_prefix() {
        assert!(Network::parse("10.0.0.0/8")
            .unwrap()
            .contains("10.255.0.1".parse().unwrap()));
        assert!(!Network::parse("10.0.0.0/8")
            .unwrap()
            .contains("11.0.0.1".parse().unwrap()));
        assert!(Network::parse("192.0.2.7")
            .unwrap()
            .contains("192.0.2.7".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "fe80::/129",
            "example.org/8",
            "",
            "10.0.0.0/x",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_name_whose_every_address_is_denied_is_refused_before_connecting() {
        let policy = UpstreamPolicy::new(true, Vec::new());
        let refused = policy.connect("localhost", 1).await.unwrap_err();
        assert!(matches!(refused, ConnectorError::Denied(_)), "{refused:?}");
    }

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
