//! The client's address behind trusted reverse proxies: the
//! `Forwarded` (RFC 7239) or `X-Forwarded-For` header of a request that
//! came from a proxy the config trusts (`options.trusted_proxies`).
//!
//! The header is read from the right: each hop appends the address it
//! received the request from, so the first address that is not a trusted
//! proxy is the client. A client can write anything into the header itself;
//! only what trusted proxies appended after it counts.

use std::net::IpAddr;

/// Addresses and CIDR blocks of trusted proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

/// The prefix length of a contiguous IPv4 netmask.
fn netmask_bits(mask: std::net::Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

impl TrustedProxies {
    /// Parse `10.0.0.0/8`, `127.0.0.1`, `::1`, `fd00::/8`.
    ///
    /// # Errors
    /// The entry that is neither an address nor a CIDR block, and why.
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        let mut out = Vec::with_capacity(list.len());
        for entry in list {
            let (addr, bits) = match entry.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (entry.as_str(), None),
            };
            let ip: IpAddr = addr.trim().parse().map_err(|_| {
                format!("{entry:?} is not an IP address or a CIDR block such as 10.0.0.0/8")
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => match b.trim().parse::<u8>() {
                    Ok(n) if n <= max => n,
                    // Crossbar.io's netmask form: 192.168.1.0/255.255.255.0.
                    _ => match b.trim().parse::<std::net::Ipv4Addr>() {
                        Ok(mask) if ip.is_ipv4() => netmask_bits(mask).ok_or_else(|| {
                            format!(
                                "{entry:?}: the netmask {mask} is not contiguous (ones, then zeros)"
                            )
                        })?,
                        _ => {
                            return Err(format!(
                                "{entry:?}: after the / comes a prefix length 0 to {max} (or, for IPv4, a netmask such as 255.255.255.0)"
                            ));
                        }
                    },
                },
            };
            out.push((ip, bits));
        }
        Ok(TrustedProxies(out))
    }

    /// True if no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|(net, bits)| match (canonical(*net), ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
                (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
                _ => false,
            })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xFFu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The client's address: `peer` unless it is a trusted proxy, else the
/// rightmost address in `Forwarded` (preferred) or `X-Forwarded-For` that
/// is not a trusted proxy. A hop that cannot be read (`unknown`, an
/// obfuscated name, garbage) ends the walk at the last trusted address.
pub fn client_ip(
    peer: IpAddr,
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = match (forwarded, x_forwarded_for) {
        (Some(f), _) => f
            .split(',')
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| node_ip(v))
            })
            .collect(),
        (None, Some(x)) => x.split(',').map(|h| h.trim().parse().ok()).collect(),
        (None, None) => return peer,
    };
    let mut last = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if trusted.contains(ip) => last = ip,
            Some(ip) => return canonical(ip),
            None => return last,
        }
    }
    last
}

/// The address of an RFC 7239 node: `192.0.2.43`, `"192.0.2.43:47011"`,
/// `"[2001:db8:cafe::17]:4711"`.
fn node_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into(), "fd00::/8".into()])
            .unwrap()
    }

    #[test]
    fn parse_and_contains() {
        let t = trusted();
        assert!(t.contains(ip("10.200.3.4")) && t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(t.contains(ip("fd12::1")) && !t.contains(ip("fe80::1")));
        assert!(!t.contains(ip("11.0.0.1")) && !t.contains(ip("127.0.0.2")));
        let odd = TrustedProxies::parse(&["192.168.0.0/23".into()]).unwrap();
        assert!(odd.contains(ip("192.168.1.255")) && !odd.contains(ip("192.168.2.0")));
        let e = TrustedProxies::parse(&["proxy.local".into()]).unwrap_err();
        assert!(e.contains("not an IP address or a CIDR block"), "{e}");
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn netmasks_as_crossbar_writes_them() {
        let t = TrustedProxies::parse(&["192.168.1.1/255.255.255.0".into()]).expect("netmask");
        assert!(t.contains(ip("192.168.1.200")) && !t.contains(ip("192.168.2.1")));
        let t = TrustedProxies::parse(&[
            "10.0.0.0/255.0.0.0".into(),
            "1.2.3.4/255.255.255.255".into(),
        ])
        .expect("netmasks");
        assert!(
            t.contains(ip("10.9.9.9")) && t.contains(ip("1.2.3.4")) && !t.contains(ip("1.2.3.5"))
        );
        assert!(
            TrustedProxies::parse(&["0.0.0.0/0.0.0.0".into()])
                .expect("any")
                .contains(ip("8.8.8.8"))
        );
        let e = TrustedProxies::parse(&["10.0.0.0/255.0.255.0".into()]).expect_err("holes");
        assert!(e.contains("not contiguous"), "{e}");
        let e = TrustedProxies::parse(&["::1/255.0.0.0".into()]).expect_err("v6 netmask");
        assert!(e.contains("prefix length"), "{e}");
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let t = trusted();
        let c = |peer, f, x| client_ip(ip(peer), f, x, &t);
        // Not from a trusted proxy: the header is the client's own words.
        assert_eq!(c("203.0.113.9", None, Some("1.2.3.4")), ip("203.0.113.9"));
        assert_eq!(
            c("127.0.0.1", None, Some("198.51.100.7")),
            ip("198.51.100.7")
        );
        // A client that forges a hop gets its own address, not the forgery.
        assert_eq!(
            c("127.0.0.1", None, Some("6.6.6.6, 198.51.100.7, 10.1.1.1")),
            ip("198.51.100.7")
        );
        assert_eq!(
            c(
                "10.0.0.5",
                Some("for=6.6.6.6;proto=https, for=\"[2001:db8::17]:4711\""),
                Some("9.9.9.9")
            ),
            ip("2001:db8::17"),
            "Forwarded wins over X-Forwarded-For"
        );
        assert_eq!(
            c(
                "10.0.0.5",
                Some("for=192.0.2.60;proto=http;by=203.0.113.43"),
                None
            ),
            ip("192.0.2.60")
        );
        assert_eq!(
            c("10.0.0.5", Some("for=\"192.0.2.43:47011\""), None),
            ip("192.0.2.43")
        );
        // Unreadable hops stop the walk at the last trusted address.
        assert_eq!(c("127.0.0.1", Some("for=unknown"), None), ip("127.0.0.1"));
        assert_eq!(
            c("127.0.0.1", None, Some("garbage, 10.2.2.2")),
            ip("10.2.2.2")
        );
        assert_eq!(c("127.0.0.1", None, None), ip("127.0.0.1"));
    }
}
