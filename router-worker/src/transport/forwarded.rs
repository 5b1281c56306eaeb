//! The client's address behind trusted reverse proxies: the
//! `Forwarded` (RFC 7239) or `X-Forwarded-For` header of a request that
//! came from a proxy the config trusts (`options.trusted_proxies`).
//!
//! The header is read from the right: each hop appends the address it
//! received the request from, so the first address that is not a trusted
//! proxy is the client. A client can write anything into the header itself;
//! only what trusted proxies appended after it counts.

use std::net::IpAddr;

use trellis_config::net::{Networks, canonical};

/// The client's address: `peer` unless it is a trusted proxy, else the
/// rightmost address in `Forwarded` (preferred) or `X-Forwarded-For` that
/// is not a trusted proxy. A hop that cannot be read (`unknown`, an
/// obfuscated name, garbage) ends the walk at the last trusted address.
pub fn client_ip(
    peer: IpAddr,
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted: &Networks,
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

    fn trusted() -> Networks {
        Networks::parse(&["127.0.0.1".into(), "10.0.0.0/8".into(), "fd00::/8".into()]).unwrap()
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
