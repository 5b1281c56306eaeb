//! IP networks as the config writes them: addresses, CIDR blocks and
//! Crossbar.io's netmask form.

use std::net::IpAddr;

/// Addresses and CIDR blocks (`options.trusted_proxies`, a bridge's
/// `require_ip`): read from the config's list of strings when the config
/// is read, so a bad entry is a problem at its key, and written back as
/// `address/prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Networks(Vec<(IpAddr, u8)>);

impl TryFrom<Vec<String>> for Networks {
    type Error = String;

    fn try_from(list: Vec<String>) -> Result<Networks, String> {
        Networks::parse(&list)
    }
}

impl From<Networks> for Vec<String> {
    fn from(n: Networks) -> Vec<String> {
        n.0.iter()
            .map(|(ip, bits)| format!("{ip}/{bits}"))
            .collect()
    }
}

/// The prefix length of a contiguous IPv4 netmask.
fn netmask_bits(mask: std::net::Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

impl Networks {
    /// Parse `10.0.0.0/8`, `127.0.0.1`, `::1`, `fd00::/8`.
    ///
    /// # Errors
    /// The entry that is neither an address nor a CIDR block, and why.
    pub fn parse(list: &[String]) -> Result<Networks, String> {
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
        Ok(Networks(out))
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
pub fn canonical(ip: IpAddr) -> IpAddr {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_contains() {
        let list = ["127.0.0.1", "10.0.0.0/8", "fd00::/8"].map(String::from);
        let t = Networks::parse(&list).unwrap();
        assert!(t.contains(ip("10.200.3.4")) && t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(t.contains(ip("fd12::1")) && !t.contains(ip("fe80::1")));
        assert!(!t.contains(ip("11.0.0.1")) && !t.contains(ip("127.0.0.2")));
        let odd = Networks::parse(&["192.168.0.0/23".into()]).unwrap();
        assert!(odd.contains(ip("192.168.1.255")) && !odd.contains(ip("192.168.2.0")));
        let e = Networks::parse(&["proxy.local".into()]).unwrap_err();
        assert!(e.contains("not an IP address or a CIDR block"), "{e}");
        assert!(Networks::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn read_from_the_config_and_written_back() {
        let n: Networks =
            serde_json::from_value(serde_json::json!(["10.0.0.0/255.0.0.0", "::1"])).unwrap();
        assert!(n.contains(ip("10.1.2.3")) && n.contains(ip("::1")));
        let back = serde_json::to_value(&n).unwrap();
        assert_eq!(back, serde_json::json!(["10.0.0.0/8", "::1/128"]));
        assert_eq!(serde_json::from_value::<Networks>(back).unwrap(), n);
        let e = serde_json::from_value::<Networks>(serde_json::json!(["proxy.local"])).unwrap_err();
        assert!(
            e.to_string().contains("not an IP address or a CIDR block"),
            "{e}"
        );
    }

    #[test]
    fn netmasks_as_crossbar_writes_them() {
        let t = Networks::parse(&["192.168.1.1/255.255.255.0".into()]).expect("netmask");
        assert!(t.contains(ip("192.168.1.200")) && !t.contains(ip("192.168.2.1")));
        let t = Networks::parse(&[
            "10.0.0.0/255.0.0.0".into(),
            "1.2.3.4/255.255.255.255".into(),
        ])
        .expect("netmasks");
        assert!(
            t.contains(ip("10.9.9.9")) && t.contains(ip("1.2.3.4")) && !t.contains(ip("1.2.3.5"))
        );
        assert!(
            Networks::parse(&["0.0.0.0/0.0.0.0".into()])
                .expect("any")
                .contains(ip("8.8.8.8"))
        );
        let e = Networks::parse(&["10.0.0.0/255.0.255.0".into()]).expect_err("holes");
        assert!(e.contains("not contiguous"), "{e}");
        let e = Networks::parse(&["::1/255.0.0.0".into()]).expect_err("v6 netmask");
        assert!(e.contains("prefix length"), "{e}");
    }
}
