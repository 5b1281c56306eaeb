//! `cluster`: the realms this node shares with others over NATS.

use super::*;

/// node.json's `cluster`: share this node's realms with other nodes over a
/// NATS backplane (see the README's cluster section).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name: nodes with the same name share realms.
    pub name: String,
    /// This node's name within the cluster (unique).
    pub node_id: String,
    /// How to reach NATS.
    pub nats: NatsConfig,
    /// The node is ready (`/readyz`) only while connected to NATS.
    #[serde(default = "yes")]
    pub require_backplane: bool,
    /// Messages waiting to go to NATS per router worker; more are dropped
    /// and counted, never waited for.
    #[serde(default = "default_backplane_queue")]
    pub backplane_queue: usize,
    /// Seconds after which the directory's delete markers of this node's
    /// ended registrations are purged (a router that was away longer reads
    /// the directory through again when it is back).
    #[serde(default = "default_purge_after")]
    pub purge_after: u64,
    /// Direct member links for cross-node calls (off unless given).
    #[serde(default)]
    pub links: Option<Box<LinksConfig>>,
}

/// `cluster.links`: each router worker listens on `interface:port` and
/// tells the other members (over NATS, with a token made at start) where
/// to reach it; calls, cancels and answers for its sessions then come
/// straight over TCP instead of through nats-server. Heartbeats, the
/// directory, Pub/Sub and meta queries stay on NATS, and a member without
/// a link up is reached through NATS as before. The links are plain TCP
/// (authenticated by the token, not encrypted): for loopback and private
/// networks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// The address to listen on (default `127.0.0.1`: links between the
    /// nodes of one machine).
    #[serde(default = "default_links_interface")]
    pub interface: String,
    /// The port (default 0: one the system picks, for each router worker).
    #[serde(default)]
    pub port: u16,
    /// The host the other members connect to (default: `interface`;
    /// needed when that is `0.0.0.0` or `::`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Frames waiting to go out on one link (and at most 32 MiB of them);
    /// more are dropped and counted (as on NATS), never waited for.
    #[serde(default = "default_backplane_queue")]
    pub queue: usize,
}

fn default_links_interface() -> String {
    "127.0.0.1".into()
}

impl LinksConfig {
    /// The host other members connect to.
    pub fn advertised_host(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.interface)
    }
}

fn default_purge_after() -> u64 {
    600
}

fn default_backplane_queue() -> usize {
    10_000
}

/// `cluster.nats`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port` URLs of the NATS servers (any one will do).
    pub servers: Vec<String>,
    /// A NATS credentials file (`.creds`, user JWT and NKey seed), relative
    /// to the node directory.
    #[serde(default)]
    pub credentials: Option<String>,
    /// TLS to NATS (also implied by `tls://` server URLs).
    #[serde(default)]
    pub tls: Option<Box<NatsTls>>,
}

/// `cluster.nats.tls`: the servers' certificates are verified (against
/// `ca_certificates`, else the system's roots); with `certificate` and
/// `key` this node shows its own, for servers that verify clients
/// (`verify: true` in nats-server). Paths are relative to the node
/// directory.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// PEM files of the CAs that sign the NATS servers' certificates.
    #[serde(default)]
    pub ca_certificates: Vec<String>,
    /// This node's client certificate (PEM; it may be followed by its
    /// chain).
    #[serde(default)]
    pub certificate: Option<String>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<String>,
    /// TLS first, before the server's INFO (nats-server's
    /// `handshake_first`).
    #[serde(default)]
    pub handshake_first: bool,
}

/// A cluster or node name: 1 to 64 of `A-Z a-z 0-9 _ -` (it is part of
/// NATS subjects).
fn valid_cluster_token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ClusterConfig {
    /// Problems, with key paths under `cluster`.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut p = |path: &str, message: String| {
            out.push(ConfigProblem {
                path: path.into(),
                message,
            })
        };
        for (key, v) in [("name", &self.name), ("node_id", &self.node_id)] {
            if !valid_cluster_token(v) {
                p(
                    key,
                    format!(
                        "{v:?}: use 1 to 64 letters, digits, '_' or '-' (it becomes part of NATS subjects)"
                    ),
                );
            }
        }
        if self.nats.servers.is_empty() {
            p(
                "nats.servers",
                "empty: list the NATS servers, e.g. [\"nats://127.0.0.1:4222\"]".into(),
            );
        }
        for (i, s) in self.nats.servers.iter().enumerate() {
            let ok = s
                .strip_prefix("nats://")
                .or_else(|| s.strip_prefix("tls://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
            if !ok {
                p(
                    &format!("nats.servers[{i}]"),
                    format!("{s:?}: expected a nats://HOST:PORT or tls://HOST:PORT URL"),
                );
            }
        }
        if let Some(t) = &self.nats.tls
            && t.certificate.is_some() != t.key.is_some()
        {
            p(
                "nats.tls",
                "give both certificate and key (a client certificate for NATS), or neither".into(),
            );
        }
        if self.purge_after == 0 {
            p(
                "purge_after",
                "must be at least 1 (seconds the other nodes have to see a registration's end before its marker goes; default 600)".into(),
            );
        }
        if self.backplane_queue == 0 {
            p(
                "backplane_queue",
                "must be at least 1 (messages waiting to go to NATS)".into(),
            );
        }
        if let Some(l) = &self.links {
            match l.interface.parse::<std::net::IpAddr>() {
                Err(_) => p(
                    "links.interface",
                    format!(
                        "{:?}: expected an IP address to listen on, e.g. \"127.0.0.1\" or \"0.0.0.0\"",
                        l.interface
                    ),
                ),
                Ok(ip) if ip.is_unspecified() && l.advertise.is_none() => p(
                    "links.advertise",
                    format!(
                        "missing: with links.interface {:?} the other members need this node's address: give its host name or IP",
                        l.interface
                    ),
                ),
                Ok(_) => {}
            }
            if let Some(a) = &l.advertise
                && (a.is_empty()
                    || a.contains(|c: char| c.is_whitespace() || c == '/')
                    || (a.contains(':') && a.parse::<std::net::Ipv6Addr>().is_err()))
            {
                p(
                    "links.advertise",
                    format!("{a:?}: expected a host name or IP address, without port or scheme"),
                );
            }
            if l.queue == 0 {
                p(
                    "links.queue",
                    "must be at least 1 (frames waiting to go out on one link)".into(),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(json: serde_json::Value) -> ClusterConfig {
        serde_json::from_value(json).expect("a cluster block")
    }

    #[test]
    fn a_good_cluster_block_has_no_problem_and_the_defaults() {
        let c = cluster(serde_json::json!({
            "name": "prod-eu", "node_id": "node_1",
            "nats": {"servers": ["nats://127.0.0.1:4222", "tls://nats.example.com:4222"]}
        }));
        assert_eq!(c.validate(), vec![]);
        assert_eq!((c.purge_after, c.backplane_queue), (600, 10_000));
        assert_eq!(c.links, None, "member links are off unless given");
        let l: LinksConfig = serde_json::from_value(serde_json::json!({})).expect("links");
        assert_eq!(
            (l.interface.as_str(), l.port, l.advertised_host(), l.queue),
            ("127.0.0.1", 0, "127.0.0.1", 10_000)
        );
        assert!(
            c.require_backplane,
            "ready only with NATS, unless told otherwise"
        );
    }

    #[test]
    fn each_problem_of_a_cluster_block_names_its_key() {
        let c = cluster(serde_json::json!({
            "name": "prod.eu", "node_id": "",
            "nats": {"servers": ["127.0.0.1:4222", "nats://"],
                     "tls": {"certificate": "client.crt"}},
            "purge_after": 0, "backplane_queue": 0
        }));
        let at: Vec<String> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            at,
            [
                "name",
                "node_id",
                "nats.servers[0]",
                "nats.servers[1]",
                "nats.tls",
                "purge_after",
                "backplane_queue"
            ]
        );
        let none =
            cluster(serde_json::json!({"name": "a", "node_id": "b", "nats": {"servers": []}}));
        assert_eq!(none.validate()[0].path, "nats.servers");
        let links = |l: serde_json::Value| {
            let c = cluster(serde_json::json!({
                "name": "a", "node_id": "b", "nats": {"servers": ["nats://127.0.0.1:4222"]},
                "links": l
            }));
            c.validate().into_iter().map(|p| p.path).collect::<Vec<_>>()
        };
        assert_eq!(links(serde_json::json!({})), Vec::<String>::new());
        assert_eq!(
            links(serde_json::json!({"interface": "0.0.0.0"})),
            ["links.advertise"]
        );
        assert_eq!(
            links(serde_json::json!({"interface": "::", "advertise": "node1.example.com"})),
            Vec::<String>::new()
        );
        assert_eq!(
            links(serde_json::json!({"interface": "localhost", "advertise": "a b", "queue": 0})),
            ["links.interface", "links.advertise", "links.queue"]
        );
        assert_eq!(
            links(serde_json::json!({"advertise": "node1.example.com:7000"})),
            ["links.advertise"],
            "a host, without its port"
        );
        assert_eq!(
            links(serde_json::json!({"advertise": "fd00::1"})),
            Vec::<String>::new()
        );
        assert!(!valid_cluster_token(&"x".repeat(65)) && valid_cluster_token(&"x".repeat(64)));
    }
}
