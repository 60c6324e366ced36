//! Where an XMPP domain's clients connect: its DNS SRV records, `_xmpps-client._tcp` (direct
//! TLS, XEP-0368) and `_xmpp-client._tcp` (STARTTLS, RFC 6120 §3.2.1) mixed into one RFC 2782
//! order, else the domain itself on port 5222.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rand::Rng;
use tokio::sync::OnceCell;
use tracing::debug;

use crate::connectors::ConnectorError;

/// Where a domain without SRV records takes clients (RFC 6120 §3.2.2).
pub(super) const DEFAULT_PORT: u16 = 5222;

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) host: String,
    pub(super) port: u16,
    /// TLS from the first byte (an `_xmpps-client` record, or `xmpps://`), else STARTTLS.
    pub(super) direct_tls: bool,
    /// Found through DNS (an SRV target, or the domain itself): its addresses come from the same
    /// DNS server. Otherwise the account named it and the system resolves it, as it always did.
    pub(super) from_dns: bool,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.direct_tls { "xmpps://" } else { "" };
        if self.host.contains(':') {
            write!(f, "{scheme}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}{}:{}", self.host, self.port)
        }
    }
}

/// One SRV record of either service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SrvRecord {
    pub(super) priority: u16,
    pub(super) weight: u16,
    pub(super) port: u16,
    /// Without the final dot.
    pub(super) target: String,
    /// From `_xmpps-client`.
    pub(super) direct_tls: bool,
}

/// RFC 2782's order, both services' records mixed as XEP-0368 says (the operator chooses with
/// priorities and weights): lowest priority first; within a priority, records are drawn one by
/// one, each with a chance in proportion to its weight among those left. `draw(total)` returns
/// a number in `0..total`, uniformly at random in use; the record drawn is the first whose
/// running sum of weights exceeds it. Unlike RFC 2782's draw in `0..=total`, which gives the
/// first record one chance too many, this keeps the chances exactly in proportion (as Go's
/// resolver does); records of weight 0 then come after the others of their priority, in the
/// order given.
pub(super) fn srv_order(
    mut records: Vec<SrvRecord>,
    mut draw: impl FnMut(u32) -> u32,
) -> Vec<SrvRecord> {
    records.sort_by_key(|record| record.priority);
    let mut ordered = Vec::with_capacity(records.len());
    for group in records.chunk_by(|a, b| a.priority == b.priority) {
        let mut left = group.to_vec();
        loop {
            let total: u32 = left.iter().map(|record| u32::from(record.weight)).sum();
            if left.len() < 2 || total == 0 {
                ordered.append(&mut left);
                break;
            }
            let drawn = draw(total).min(total - 1);
            let mut running = 0;
            let next = left
                .iter()
                .position(|record| {
                    running += u32::from(record.weight);
                    running > drawn
                })
                .unwrap_or(0);
            ordered.push(left.remove(next));
        }
    }
    ordered
}

/// The endpoints a domain's records name, best first. `None`: no records at all, so the domain
/// itself on port 5222. A record whose target is "." says the service is decidedly not there
/// (RFC 2782); such records are dropped, and if nothing else is left the domain has no service.
fn endpoints_of(
    domain: &str,
    records: Vec<SrvRecord>,
    draw: impl FnMut(u32) -> u32,
) -> Result<Vec<Endpoint>, ConnectorError> {
    if records.is_empty() {
        return Ok(vec![Endpoint {
            host: domain.to_owned(),
            port: DEFAULT_PORT,
            direct_tls: false,
            from_dns: true,
        }]);
    }
    let usable: Vec<SrvRecord> = records
        .into_iter()
        .filter(|record| !record.target.is_empty())
        .collect();
    if usable.is_empty() {
        return Err(ConnectorError::Unreachable(format!(
            "{domain} says it offers no XMPP client service (SRV target \".\")"
        )));
    }
    Ok(srv_order(usable, draw)
        .into_iter()
        .map(|record| Endpoint {
            host: record.target,
            port: record.port,
            direct_tls: record.direct_tls,
            from_dns: true,
        })
        .collect())
}

/// The resolver for SRV records and the addresses of what they name: the configured DNS server,
/// else the system's configuration. Made at first use (reading resolv.conf then) and kept, with
/// its cache, for every later login; a failure to make it is retried at the next.
#[derive(Clone)]
pub(super) struct Dns {
    server: Option<SocketAddr>,
    resolver: Arc<OnceCell<TokioResolver>>,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Dns {
    pub(super) fn new(server: Option<SocketAddr>) -> Self {
        Self {
            server,
            resolver: Arc::default(),
        }
    }

    async fn resolver(&self) -> Result<&TokioResolver, ConnectorError> {
        self.resolver
            .get_or_try_init(|| async {
                let provider = TokioRuntimeProvider::default();
                let builder = match self.server {
                    Some(server) => {
                        let connection = |mut config: ConnectionConfig| {
                            config.port = server.port();
                            config
                        };
                        let name_server = NameServerConfig::new(
                            server.ip(),
                            true,
                            vec![
                                connection(ConnectionConfig::udp()),
                                connection(ConnectionConfig::tcp()),
                            ],
                        );
                        TokioResolver::builder_with_config(
                            ResolverConfig::from_name_servers(vec![name_server]),
                            provider,
                        )
                    }
                    None => TokioResolver::builder(provider).map_err(|e| {
                        ConnectorError::Unreachable(format!(
                            "cannot read the system's DNS settings: {e}"
                        ))
                    })?,
                };
                builder.build().map_err(|e| {
                    ConnectorError::Unreachable(format!("cannot set up DNS lookups: {e}"))
                })
            })
            .await
    }

    /// Where to connect for `domain`, best first.
    pub(super) async fn endpoints(&self, domain: &str) -> Result<Vec<Endpoint>, ConnectorError> {
        let resolver = self.resolver().await?;
        let (direct, starttls) = tokio::join!(
            srv_records(resolver, "_xmpps-client", domain, true),
            srv_records(resolver, "_xmpp-client", domain, false),
        );
        let records = [direct, starttls].into_iter().flatten().collect();
        let mut random = rand::thread_rng();
        endpoints_of(domain, records, |total| random.gen_range(0..total))
    }

    /// The addresses of an endpoint found through DNS.
    pub(super) async fn addresses(&self, endpoint: &Endpoint) -> io::Result<Vec<SocketAddr>> {
        let resolver = self
            .resolver()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        // Fully qualified: the search domains of resolv.conf have no say.
        let found = resolver
            .lookup_ip(format!("{}.", endpoint.host))
            .await
            .map_err(io::Error::other)?;
        Ok(found
            .iter()
            .map(|ip| SocketAddr::new(ip, endpoint.port))
            .collect())
    }
}

/// One service's SRV records; none when there are none. A failed lookup counts as none (RFC
/// 6120 §3.2.1 then falls back to the domain itself), logged at debug level.
async fn srv_records(
    resolver: &TokioResolver,
    service: &str,
    domain: &str,
    direct_tls: bool,
) -> Vec<SrvRecord> {
    let name = format!("{service}._tcp.{domain}.");
    let lookup = match resolver.srv_lookup(name.as_str()).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_no_records_found() => return Vec::new(),
        Err(e) => {
            debug!(%name, error = %e, "SRV lookup failed; taken as no records");
            return Vec::new();
        }
    };
    let records: Vec<SrvRecord> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv
                    .target
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
                direct_tls,
            }),
            _ => None,
        })
        .collect();
    debug!(%name, ?records, "SRV records");
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn record(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5222,
            target: target.to_owned(),
            direct_tls: false,
        }
    }

    fn targets(records: &[SrvRecord]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    /// Draws that always give the same number: 0 picks the first record with a weight,
    /// `u32::MAX` (clamped to the total) the last.
    fn always(drawn: u32) -> impl FnMut(u32) -> u32 {
        move |_| drawn
    }

    #[test]
    fn lower_priority_comes_first_whatever_the_weights() {
        let records = vec![
            record(20, 100, "c"),
            record(10, 0, "a"),
            record(30, 65535, "d"),
            record(10, 0, "b"),
        ];
        for drawn in [0, u32::MAX] {
            let ordered = srv_order(records.clone(), always(drawn));
            assert_eq!(&targets(&ordered)[2..], ["c", "d"], "{drawn}");
            assert_eq!(ordered.len(), 4);
        }
    }

    #[test]
    fn within_a_priority_the_draw_picks_by_running_weight() {
        // Running sums in this order: a 10, b 30, c 60 (total 60).
        let records = vec![record(0, 10, "a"), record(0, 20, "b"), record(0, 30, "c")];
        let mut draws = vec![25, 0].into_iter();
        // 25 → b (first running sum above 25); then a 10, c 40: 0 → a; then c, no draw.
        let ordered = srv_order(records.clone(), |_| draws.next().unwrap());
        assert_eq!(targets(&ordered), ["b", "a", "c"]);
        // The top of the range picks the last record, however large the draw.
        let ordered = srv_order(records.clone(), always(u32::MAX));
        assert_eq!(targets(&ordered), ["c", "b", "a"]);
        // a takes the draws 0..10, b 10..30.
        let ordered = srv_order(records.clone(), always(9));
        assert_eq!(targets(&ordered)[0], "a");
        let ordered = srv_order(records, always(10));
        assert_eq!(targets(&ordered)[0], "b");
    }

    #[test]
    fn the_draw_is_asked_for_the_weights_left() {
        let records = vec![record(0, 1, "a"), record(0, 2, "b"), record(0, 4, "c")];
        let mut asked = Vec::new();
        srv_order(records, |total| {
            asked.push(total);
            0
        });
        // a (1) goes first, then b (2) of the 6 left; c is left alone, without a draw.
        assert_eq!(asked, [7, 6]);
    }

    #[test]
    fn zero_weights_come_after_the_weighted_records_in_the_order_given() {
        let records = vec![
            record(0, 0, "light"),
            record(0, 5, "heavy"),
            record(0, 0, "feather"),
        ];
        for drawn in [0, u32::MAX] {
            let ordered = srv_order(records.clone(), always(drawn));
            assert_eq!(targets(&ordered), ["heavy", "light", "feather"]);
        }
        let mut asked = 0;
        let ordered = srv_order(vec![record(0, 0, "x"), record(0, 0, "y")], |_| {
            asked += 1;
            0
        });
        assert_eq!((targets(&ordered), asked), (vec!["x", "y"], 0));
    }

    #[test]
    fn weights_share_the_first_place_in_proportion() {
        // With a fair draw, weight 3 against 1 should lead about three times in four.
        let records = vec![record(0, 1, "one"), record(0, 3, "three")];
        let mut random = rand::rngs::StdRng::seed_from_u64(2782);
        let mut first = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..4000 {
            let ordered = srv_order(records.clone(), |total| random.gen_range(0..total));
            *first.entry(ordered[0].target.clone()).or_default() += 1;
        }
        let three = first["three"];
        assert!((2850..3150).contains(&three), "{first:?}");
    }

    #[test]
    fn both_services_mix_and_keep_their_transport() {
        let mut direct = record(5, 0, "tls.example.org");
        direct.direct_tls = true;
        direct.port = 5223;
        let records = vec![record(10, 0, "xmpp.example.org"), direct];
        let endpoints = endpoints_of("example.org", records, always(0)).unwrap();
        assert_eq!(
            endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["xmpps://tls.example.org:5223", "xmpp.example.org:5222"]
        );
        assert!(endpoints.iter().all(|endpoint| endpoint.from_dns));
    }

    #[test]
    fn no_records_fall_back_to_the_domain_on_5222() {
        let endpoints = endpoints_of("example.org", Vec::new(), always(0)).unwrap();
        assert_eq!(
            endpoints,
            [Endpoint {
                host: "example.org".to_owned(),
                port: 5222,
                direct_tls: false,
                from_dns: true,
            }]
        );
    }

    #[test]
    fn a_dot_target_means_no_service_unless_other_records_say_otherwise() {
        let error = endpoints_of("example.org", vec![record(0, 0, "")], always(0)).unwrap_err();
        assert!(
            matches!(&error, ConnectorError::Unreachable(why) if why.contains("offers no XMPP client service")),
            "{error:?}"
        );
        let endpoints = endpoints_of(
            "example.org",
            vec![record(0, 0, ""), record(5, 0, "xmpp.example.org")],
            always(0),
        )
        .unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].host, "xmpp.example.org");
    }

    #[test]
    fn endpoints_show_as_the_server_forms() {
        let endpoint = |host: &str, direct_tls| Endpoint {
            host: host.to_owned(),
            port: 5223,
            direct_tls,
            from_dns: false,
        };
        assert_eq!(endpoint("::1", true).to_string(), "xmpps://[::1]:5223");
        assert_eq!(endpoint("a.example", false).to_string(), "a.example:5223");
    }
}
