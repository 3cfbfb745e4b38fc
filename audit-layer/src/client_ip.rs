//! The client's IP address: the socket peer, or the client a trusted proxy forwarded for.
//!
//! `X-Forwarded-For` and `Forwarded` are written by whoever sends the request, so they are
//! believed only when the socket peer is a configured trusted proxy. The chain is then read from
//! the right (the hop closest to us) and the first address that is not itself a trusted proxy is
//! the client. Only the header the proxies write ([`ForwardingHeader`]) is read: a proxy appends
//! to its own header and passes the other through as the client sent it, so reading the other
//! would let a client name its own address.

use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap};
use ipnet::IpNet;

/// Which header the trusted proxies write the client's address in (see
/// [`AuditLayer::forwarding_header`](crate::AuditLayer::forwarding_header)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardingHeader {
    /// `X-Forwarded-For`, as nginx, HAProxy, Envoy, Caddy, Traefik and the cloud load
    /// balancers write it. The default.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), its `for=` parameters.
    Forwarded,
}

/// The proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardingHeader,
}

impl TrustedProxies {
    pub(crate) fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().collect(),
            header: ForwardingHeader::default(),
        }
    }

    /// The same proxies, writing `header`.
    pub(crate) fn writing(mut self, header: ForwardingHeader) -> Self {
        self.header = header;
        self
    }

    /// The header these proxies write.
    pub(crate) fn header(&self) -> ForwardingHeader {
        self.header
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether the socket peer `peer` is a trusted proxy, whose headers (forwarding, request
    /// id) are believed. An unknown peer is not.
    pub(crate) fn trusts_peer(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|peer| self.trusts(peer))
    }

    /// The client address for a request whose socket peer is `peer`.
    pub(crate) fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?);
        if self.nets.is_empty() || !self.trusts(peer) {
            return Some(peer);
        }
        let mut hops = forwarded_for(headers, self.header);
        // Right to left: skip our own proxies; the first other address is the client. An
        // unparseable hop ends the walk at the last trusted address: it cannot be verified.
        let mut client = peer;
        while let Some(hop) = hops.pop() {
            match hop {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        Some(client)
    }
}

/// The socket peer: axum's `ConnectInfo<SocketAddr>` (feature `axum`), else a bare
/// `SocketAddr` the server put in the request's extensions.
pub(crate) fn peer_addr(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The forwarded-for chain of `header`, left (original client) to right (nearest proxy).
/// `None` marks a hop that is not an IP address (`unknown`, an obfuscated identifier,
/// garbage).
fn forwarded_for(headers: &HeaderMap, header: ForwardingHeader) -> Vec<Option<IpAddr>> {
    match header {
        ForwardingHeader::Forwarded => headers
            .get_all(http::header::FORWARDED)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (key, value) = pair.trim().split_once('=')?;
                        key.eq_ignore_ascii_case("for").then_some(value)
                    })
                    .and_then(parse_forwarded_node)
            })
            .collect(),
        ForwardingHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(|hop| parse_node(hop.trim()))
            .collect(),
    }
}

/// A `for=` node of RFC 7239: `192.0.2.43`, `"[2001:db8::1]:4711"`, `"192.0.2.43:47011"`.
fn parse_forwarded_node(value: &str) -> Option<IpAddr> {
    parse_node(value.trim().trim_matches('"'))
}

fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    /// The client behind `peer` with these headers, `10.0.0.0/8` and `::1` trusted.
    fn client(peer: &str, pairs: &[(&'static str, &'static str)]) -> Option<IpAddr> {
        proxies().client_ip(Some(ip(peer)), &headers(pairs))
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let pairs = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")];
        assert_eq!(client("203.0.113.9", &pairs), Some(ip("203.0.113.9")));
        assert_eq!(
            TrustedProxies::default().client_ip(Some(ip("10.0.0.1")), &headers(&pairs)),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let pairs = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")];
        assert_eq!(client("10.0.0.1", &pairs), Some(ip("198.51.100.7")));
    }

    #[test]
    fn only_the_header_the_proxies_write_is_read() {
        // The proxy appends to X-Forwarded-For and passes on the client's own `Forwarded`.
        let pairs = [
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ];
        assert_eq!(client("10.0.0.1", &pairs), Some(ip("198.51.100.7")));
        // A proxy that writes `Forwarded`: the client's own X-Forwarded-For is not read.
        let rfc_7239 = proxies().writing(ForwardingHeader::Forwarded);
        let pairs = [
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=198.51.100.7"),
        ];
        assert_eq!(
            rfc_7239.client_ip(Some(ip("10.0.0.1")), &headers(&pairs)),
            Some(ip("198.51.100.7"))
        );
        // Neither header of the kind read: the proxy itself.
        let pairs = [("x-forwarded-for", "6.6.6.6")];
        assert_eq!(
            rfc_7239.client_ip(Some(ip("10.0.0.1")), &headers(&pairs)),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn forwarded_is_parsed_per_rfc_7239() {
        let rfc_7239 = proxies().writing(ForwardingHeader::Forwarded);
        let pairs = [(
            "forwarded",
            r#"for="[2001:db8::1]:4711";proto=https, for=10.2.2.2"#,
        )];
        assert_eq!(
            rfc_7239.client_ip(Some(ip("::1")), &headers(&pairs)),
            Some(ip("2001:db8::1"))
        );
        let pairs = [("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")];
        assert_eq!(
            rfc_7239.client_ip(Some(ip("10.0.0.1")), &headers(&pairs)),
            Some(ip("192.0.2.60"))
        );
        let pairs = [("forwarded", "for=unknown")];
        assert_eq!(
            rfc_7239.client_ip(Some(ip("10.0.0.1")), &headers(&pairs)),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn an_unverifiable_hop_stops_at_the_last_trusted_address() {
        let pairs = [("x-forwarded-for", "1.1.1.1, garbage, 10.3.3.3")];
        assert_eq!(client("10.0.0.1", &pairs), Some(ip("10.3.3.3")));
    }

    #[test]
    fn only_a_peer_in_a_trusted_net_is_a_trusted_proxy() {
        assert!(proxies().trusts_peer(Some(ip("10.9.8.7"))));
        assert!(proxies().trusts_peer(Some(ip("::ffff:10.0.0.5"))));
        assert!(proxies().trusts_peer(Some(ip("::1"))));
        assert!(!proxies().trusts_peer(Some(ip("203.0.113.9"))));
        assert!(!proxies().trusts_peer(None));
        assert!(!TrustedProxies::default().trusts_peer(Some(ip("127.0.0.1"))));
    }

    #[test]
    fn ipv4_mapped_peers_are_matched_as_ipv4() {
        let pairs = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(client("::ffff:10.0.0.5", &pairs), Some(ip("198.51.100.1")));
        assert_eq!(proxies().client_ip(None, &headers(&pairs)), None);
    }

    #[test]
    fn the_peer_is_connect_info_with_the_axum_feature_else_a_socket_addr() {
        let mut extensions = Extensions::new();
        assert_eq!(peer_addr(&extensions), None);
        extensions.insert(SocketAddr::from(([192, 0, 2, 7], 51000)));
        assert_eq!(peer_addr(&extensions), Some(ip("192.0.2.7")));
        let connect_info = SocketAddr::from(([198, 51, 100, 1], 51000));
        extensions.insert(axum::extract::ConnectInfo(connect_info));
        let expected = if cfg!(feature = "axum") {
            "198.51.100.1"
        } else {
            "192.0.2.7"
        };
        assert_eq!(peer_addr(&extensions), Some(ip(expected)));
    }
}
