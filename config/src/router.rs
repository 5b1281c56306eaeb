//! The router worker's part of `node.json`, in Crossbar.io's shape.
//!
//! Parsed with `deny_unknown_fields` everywhere, so a misspelt key is an
//! error that names the key, never silently ignored. Cross-reference checks
//! (a transport's auth role exists in every realm, ...) are in
//! [`RouterConfig::validate`]; the controller adds file names and key paths.

use std::collections::BTreeMap;

use proto::uri::MatchPolicy;
use serde::{Deserialize, Serialize};

/// One router worker: its realms and the transports clients connect on.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Worker id, used in logs (`worker-001` when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Realms served by this router.
    #[serde(default)]
    pub realms: Vec<RealmConfig>,
    /// Listening transports.
    #[serde(default)]
    pub transports: Vec<TransportConfig>,
    /// Router components: sessions inside the router process.
    #[serde(default)]
    pub components: Vec<RouterComponentConfig>,
    /// The interpreter for Python router components (`options.python`),
    /// filled in by the controller; not a key of the router itself.
    #[serde(default, rename = "_python", skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// `options.pythonpath`, filled in by the controller.
    #[serde(default, rename = "_pythonpath", skip_serializing_if = "Vec::is_empty")]
    pub pythonpath: Vec<String>,
    /// The node's `cluster` block, filled in by the controller: the
    /// router's realms are shared with other nodes over NATS.
    #[serde(default, rename = "_cluster", skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// The worker's `options.compat`, filled in by the controller.
    #[serde(default, rename = "_compat")]
    pub compat: Compat,
}

/// Where the WAMP specification and Crossbar.io differ on the wire, and
/// users' code follows Crossbar.io: the router worker's `options.compat`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compat {
    /// As Crossbar.io: GOODBYE is answered with `wamp.close.normal`,
    /// `wamp.session.on_leave` carries the session id alone, the webhook
    /// keeps header names as sent.
    #[default]
    Crossbar,
    /// As the specification: `wamp.close.goodbye_and_out`, `on_leave` with
    /// session, authid and authrole, header names lowercased.
    Spec,
}

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
        out
    }
}

/// A router component, in Crossbar.io's shape.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouterComponentConfig {
    /// Must be `class`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A built-in component (`trellis.…`), or a Python class
    /// (`package.module.Class`) run in an interpreter the router worker
    /// starts, joined over a private Unix socket.
    pub classname: String,
    /// The realm it joins.
    pub realm: String,
    /// The role it has there: `anonymous` when absent, as in Crossbar.io.
    #[serde(default = "anonymous_role")]
    pub role: String,
    /// Its authid; the classname for built-ins and a random one for Python
    /// components when absent.
    #[serde(default)]
    pub authid: Option<String>,
    /// The component's own settings.
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
    /// Crossbar.io's; router components join in the node, so it is
    /// accepted and not used.
    #[serde(default)]
    pub transport: Option<serde_json::Value>,
}

impl RouterComponentConfig {
    /// A Python class rather than a built-in (`trellis.` classnames).
    pub fn is_python(&self) -> bool {
        !self.classname.starts_with("trellis.")
    }
}

/// A realm: a routing and authorization domain.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// The realm's URI (`realm1`).
    pub name: String,
    /// Roles that sessions in this realm may have.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    /// Realm options.
    #[serde(default)]
    pub options: RealmOptions,
    /// Event history (Crossbar.io's realm `store`).
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Crossbar.io's session statistics: `wamp.session.on_stats` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsConfig>,
    /// Crossbar.io's message tracing: accepted with a warning (Trellis
    /// logs each message of a realm at the `trace` level instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<serde_json::Value>,
}

/// Crossbar.io's realm `stats`: each session's traffic, published as
/// `wamp.session.on_stats` after so many rated messages or seconds, and on
/// join and leave if asked.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Bytes of one rated message (a power of two): a message counts as
    /// `ceil(size / rated_message_size)` rated messages.
    #[serde(default = "default_rated_message_size")]
    pub rated_message_size: u64,
    /// Publish after this many rated messages (0: never by count).
    #[serde(default)]
    pub trigger_after_rated_messages: u64,
    /// Publish after this many seconds (0: never by time).
    #[serde(default)]
    pub trigger_after_duration: u64,
    /// Publish when the session joins.
    #[serde(default)]
    pub trigger_on_join: bool,
    /// Publish when the session leaves.
    #[serde(default = "yes")]
    pub trigger_on_leave: bool,
}

fn default_rated_message_size() -> u64 {
    512
}

/// Crossbar.io's realm store: which topics keep an event history.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Only `memory` (history is lost on restart).
    #[serde(rename = "type")]
    pub kind: StoreKind,
    /// Default number of events kept per history entry.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Topics (or patterns) whose events are kept.
    #[serde(rename = "event-history", default)]
    pub event_history: Vec<HistoryConfig>,
    /// Procedures (or patterns) whose calls wait, bounded, when no callee
    /// can take them now (none registered, or every one at its
    /// `concurrency`), until one can or the call's timeout fires.
    #[serde(rename = "call-queue", default)]
    pub call_queue: Vec<HistoryConfig>,
    /// Crossbar.io's store flushing interval: accepted and not used (the
    /// memory store has nothing to flush).
    #[serde(
        rename = "buffer-flush",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub buffer_flush: Option<serde_json::Value>,
    /// Crossbar.io's database size bound: accepted and not used (the
    /// memory store is bounded by its `limit`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxsize: Option<serde_json::Value>,
}

/// Store types.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In memory.
    Memory,
}

/// One topic (or pattern) with an event history, or one procedure (or
/// pattern) with a call queue; `limit` is the events kept, or the calls
/// that may wait.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Topic or pattern.
    pub uri: String,
    /// How `uri` matches topics (`exact` default).
    #[serde(default, rename = "match", with = "match_policy")]
    pub match_policy: MatchPolicy,
    /// Events kept (default: the store's `limit`, else 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Options of a realm.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RealmOptions {
    /// `"strict"` (components of `[0-9a-z_]`) or `"loose"` (the default, as
    /// in Crossbar.io).
    #[serde(default)]
    pub uri_check: UriCheck,
    /// Crossbar.io's switch for the meta API; Trellis's is always on
    /// (authorize `wamp.` URIs to restrict it). Accepted, warned about
    /// when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_meta_api: Option<bool>,
    /// Crossbar.io's forwarding of meta events to its management realm,
    /// which Trellis does not have. Accepted, warned about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_meta_api: Option<bool>,
    /// Crossbar.io's batching of event deliveries; Trellis hands each
    /// subscriber its event at once. Accepted (a positive integer), warned
    /// about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_dispatching_chunk_size: Option<u64>,
}

/// Which URI rule a realm enforces on client URIs.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UriCheck {
    /// Components of `[0-9a-z_]` only.
    Strict,
    /// No whitespace, `.` or `#` inside a component.
    #[default]
    Loose,
}

/// A role and what it may do.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The role's name (`anonymous`, `backend`, ...).
    pub name: String,
    /// Static permissions; everything not allowed here is denied.
    #[serde(default)]
    pub permissions: Vec<PermissionConfig>,
    /// A dynamic authorizer procedure (in the same realm), called with
    /// `(session, uri, action, options)`. Its answers are cached per session
    /// when it says so.
    #[serde(default)]
    pub authorizer: Option<String>,
    /// Crossbar.io's old `allow-by-default`: what no rule matches is
    /// allowed (every action) instead of denied. Read as a last rule
    /// `{"uri": "", "match": "prefix"}` allowing all four actions, which
    /// every other matching rule takes precedence over.
    #[serde(rename = "allow-by-default", default)]
    pub allow_by_default: bool,
}

impl RoleConfig {
    /// The permissions in force: the configured ones, plus the catch-all
    /// rule of `allow-by-default` unless an explicit `""` prefix rule
    /// already decides what nothing else matches.
    pub fn effective_permissions(&self) -> Vec<PermissionConfig> {
        let mut out = self.permissions.clone();
        let has_catch_all = out
            .iter()
            .any(|p| p.uri.is_empty() && p.match_policy == MatchPolicy::Prefix);
        if self.allow_by_default && !has_catch_all {
            out.push(PermissionConfig {
                uri: String::new(),
                match_policy: MatchPolicy::Prefix,
                allow: AllowConfig {
                    call: true,
                    register: true,
                    publish: true,
                    subscribe: true,
                },
                disclose: DiscloseConfig::default(),
                cache: true,
            });
        }
        out
    }
}

/// One static permission rule. Crossbar.io's version-1 form is read too:
/// the action flags at the top (`"call": true`, ...) instead of in `allow`,
/// and a URI with `*` and no `match` (`com.example.*` is the prefix
/// `com.example.`, `*` alone every URI, `com.*.status` the wildcard
/// `com..status`), as `crossbar upgrade` converts them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawPermission")]
pub struct PermissionConfig {
    /// The URI or pattern the rule covers (`""` with prefix match covers all).
    pub uri: String,
    /// How `uri` matches: `exact` (default), `prefix` or `wildcard`.
    #[serde(rename = "match", with = "match_policy")]
    pub match_policy: MatchPolicy,
    /// Which actions are allowed.
    #[serde(default)]
    pub allow: AllowConfig,
    /// Whether the caller/publisher identity is disclosed to callees/subscribers.
    #[serde(default)]
    pub disclose: DiscloseConfig,
    /// Whether the decision may be cached (always true for static rules).
    #[serde(default = "yes")]
    pub cache: bool,
}

fn yes() -> bool {
    true
}

/// A permission as written: today's form or Crossbar.io's version-1 form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    uri: String,
    #[serde(default, rename = "match", with = "match_policy_opt")]
    match_policy: Option<MatchPolicy>,
    #[serde(default)]
    allow: Option<AllowConfig>,
    #[serde(default)]
    disclose: DiscloseConfig,
    #[serde(default = "yes")]
    cache: bool,
    // Version 1: the action flags at the top.
    #[serde(default)]
    call: Option<bool>,
    #[serde(default)]
    register: Option<bool>,
    #[serde(default)]
    publish: Option<bool>,
    #[serde(default)]
    subscribe: Option<bool>,
}

impl TryFrom<RawPermission> for PermissionConfig {
    type Error = String;

    fn try_from(r: RawPermission) -> Result<PermissionConfig, String> {
        let flat = [r.call, r.register, r.publish, r.subscribe];
        let allow = match (r.allow, flat.iter().any(Option::is_some)) {
            (Some(_), true) => {
                return Err(format!(
                    "permission {:?} gives both \"allow\" and the version-1 flags call/register/publish/subscribe: keep one form",
                    r.uri
                ));
            }
            (Some(a), false) => a,
            (None, _) => AllowConfig {
                call: r.call.unwrap_or(false),
                register: r.register.unwrap_or(false),
                publish: r.publish.unwrap_or(false),
                subscribe: r.subscribe.unwrap_or(false),
            },
        };
        let (uri, match_policy) = match r.match_policy {
            Some(m) => (r.uri, m),
            None => starred_uri(&r.uri),
        };
        Ok(PermissionConfig {
            uri,
            match_policy,
            allow,
            disclose: r.disclose,
            cache: r.cache,
        })
    }
}

/// A version-1 URI: no `*` is exact, one trailing `*` a prefix, any other
/// `*` a wildcard component.
pub fn starred_uri(uri: &str) -> (String, MatchPolicy) {
    match uri.matches('*').count() {
        0 => (uri.to_owned(), MatchPolicy::Exact),
        1 if uri.ends_with('*') => (uri[..uri.len() - 1].to_owned(), MatchPolicy::Prefix),
        _ => (uri.replace('*', ""), MatchPolicy::Wildcard),
    }
}

mod match_policy_opt {
    use proto::uri::MatchPolicy;
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MatchPolicy>, D::Error> {
        super::match_policy::deserialize(d).map(Some)
    }
}

/// Per-action allow flags (absent means denied).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    #[serde(default)]
    pub call: bool,
    #[serde(default)]
    pub register: bool,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
}

/// Identity disclosure settings.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscloseConfig {
    /// Disclose the caller to the callee even if the caller did not ask.
    #[serde(default)]
    pub caller: bool,
    /// Disclose the publisher to subscribers even if the publisher did not ask.
    #[serde(default)]
    pub publisher: bool,
    /// Honour a client's own `disclose_me` (default true: disclosing
    /// oneself harms no one, and clients such as swampyer always ask).
    /// False refuses such calls and publications with
    /// `wamp.error.option_disallowed.disclose_me`.
    #[serde(default = "yes")]
    pub on_request: bool,
}

impl Default for DiscloseConfig {
    fn default() -> Self {
        DiscloseConfig {
            caller: false,
            publisher: false,
            on_request: true,
        }
    }
}

mod match_policy {
    use proto::uri::MatchPolicy;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &MatchPolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MatchPolicy, D::Error> {
        let s = String::deserialize(d)?;
        MatchPolicy::from_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown match policy {s:?}, expected \"exact\", \"prefix\" or \"wildcard\""
            ))
        })
    }
}

/// A listening transport. One flat struct with a `type` field rather than
/// an internally tagged enum: serde buffers tagged enums, which would lose
/// the key path of errors inside them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// The transport type.
    #[serde(rename = "type")]
    pub kind: TransportKind,
    /// An id for logs.
    #[serde(default)]
    pub id: Option<String>,
    /// Where to listen.
    pub endpoint: Endpoint,
    /// Serializers offered (`json`, `msgpack`, `cbor`); all when absent.
    #[serde(default)]
    pub serializers: Option<Vec<String>>,
    /// Limits and timeouts.
    #[serde(default)]
    pub options: WebSocketOptions,
    /// Authentication methods; anonymous with role `anonymous` when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// WebSocket: cookie tracking (Crossbar.io's `cookie`), for the
    /// `cookie` auth method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieConfig>,
    /// `flashpolicy`: Crossbar.io's keys, accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domain: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ports: Option<serde_json::Value>,
    /// Crossbar.io's per-transport debug flag; accepted for compatibility,
    /// log levels are set with `--loglevel`/`RUST_LOG` instead.
    #[serde(default)]
    pub debug: bool,
    /// Crossbar.io's advertised URL; informational.
    #[serde(default)]
    pub url: Option<String>,
    /// `web` transports: what each URL path serves (`"/"`, `"ws"`, ...).
    #[serde(default)]
    pub paths: Option<BTreeMap<String, WebPath>>,
    /// A private link of the router worker (to its Python components),
    /// which may join the router's internal realms; set by the router
    /// itself, not a config key.
    #[serde(skip)]
    pub internal: bool,
    /// `universal`: WAMP over RawSocket on the same port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rawsocket: Option<UniversalRawsocket>,
    /// `universal`: WebSocket paths by name (`{"ws": {"type":
    /// "websocket", ...}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<BTreeMap<String, WebPath>>,
    /// `universal`: the web part (`{"paths": {...}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<UniversalWeb>,
}

/// A `universal` transport's RawSocket part.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct UniversalRawsocket {
    #[serde(default)]
    pub serializers: Option<Vec<String>>,
    #[serde(default)]
    pub options: Option<WebSocketOptions>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub debug: bool,
}

/// A `universal` transport's web part.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct UniversalWeb {
    #[serde(default)]
    pub paths: BTreeMap<String, WebPath>,
}

impl TransportConfig {
    /// A RawSocket transport on a Unix socket whose anonymous sessions get
    /// `anonymous` (the controller's control socket, the private links of
    /// Python router components).
    pub fn unix_anonymous(
        id: &str,
        path: String,
        mode: Option<String>,
        anonymous: AnonymousAuth,
    ) -> TransportConfig {
        TransportConfig {
            kind: TransportKind::Rawsocket,
            id: Some(id.to_owned()),
            endpoint: Endpoint {
                kind: EndpointKind::Unix,
                port: None,
                path: Some(path),
                mode,
                interface: None,
                version: None,
                backlog: None,
                shared: false,
                tls: None,
            },
            serializers: Some(vec!["json".into()]),
            options: WebSocketOptions::default(),
            auth: Some(AuthConfig {
                anonymous: Some(anonymous),
                ticket: None,
                wampcra: None,
                cryptosign: None,
                scram: None,
                tls: None,
                cookie: None,
                token: None,
                peercred: None,
            }),
            cookie: None,
            allowed_domain: None,
            allowed_ports: None,
            debug: false,
            url: None,
            paths: None,
            internal: false,
            rawsocket: None,
            websocket: None,
            web: None,
        }
    }
}

/// One path of a web transport.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebPath {
    /// `static`, `websocket`, `json` or `redirect`.
    #[serde(rename = "type")]
    pub kind: WebPathKind,
    /// `static`: the directory served (relative to the node directory).
    #[serde(default)]
    pub directory: Option<String>,
    /// `websocket`: serializers offered; all when absent.
    #[serde(default)]
    pub serializers: Option<Vec<String>>,
    /// `websocket`: limits and timeouts ([`WebSocketOptions`]); `static`:
    /// [`StaticOptions`]. Read by kind in [`RouterConfig::validate`].
    #[serde(default)]
    pub options: Option<serde_json::Value>,
    /// `json`: the value served.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// `redirect`: where to send browsers (an absolute URL or a path).
    #[serde(default)]
    pub url: Option<String>,
    /// `archive`: the zip file served (relative to the node directory).
    #[serde(default)]
    pub archive: Option<String>,
    /// `archive`: where Crossbar.io downloads the archive from; not
    /// supported (named so when the file is missing).
    #[serde(default)]
    pub origin: Option<String>,
    /// `archive`: prefix of the objects in the zip (`web/`).
    #[serde(default)]
    pub object_prefix: Option<String>,
    /// `archive`: the object for a directory (`index.html`).
    #[serde(default)]
    pub default_object: Option<String>,
    /// `archive`: Crossbar.io's download switch; `true` is not supported.
    #[serde(default)]
    pub download: Option<bool>,
    /// `archive`: Crossbar.io's in-memory cache switch; accepted.
    #[serde(default)]
    pub cache: Option<bool>,
    /// `archive`: content types by extension, over the built-in table.
    #[serde(default)]
    pub mime_types: Option<BTreeMap<String, String>>,
    /// `archive`: the SHA-256 fingerprints (hex) the file may have; it is
    /// checked at start and refused when it has none of them.
    #[serde(default)]
    pub hashes: Option<Vec<String>>,
    /// `path`: the paths under this one, as a web transport's.
    #[serde(default)]
    pub paths: Option<BTreeMap<String, WebPath>>,
    /// `caller`, `publisher`: the realm the bridge's session joins.
    #[serde(default)]
    pub realm: Option<String>,
    /// `caller`, `publisher`: the role it joins with (its permissions
    /// decide what HTTP clients may call or publish).
    #[serde(default)]
    pub role: Option<String>,
    /// `websocket`: authentication methods; anonymous when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// `websocket`: cookie tracking (Crossbar.io's `cookie`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieConfig>,
    /// `websocket`: Crossbar.io's debug flag; accepted for compatibility,
    /// log levels are set with `--loglevel`/`RUST_LOG` instead.
    #[serde(default)]
    pub debug: bool,
}

/// What a web path serves.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebPathKind {
    /// Files from a directory.
    Static,
    /// WAMP over WebSocket.
    Websocket,
    /// A fixed JSON value.
    Json,
    /// A redirect (302) to `url`.
    Redirect,
    /// A page about the node: version, workers, realms, sessions.
    Nodeinfo,
    /// The HTTP bridge: POST JSON to call a procedure.
    Caller,
    /// The HTTP bridge: POST JSON to publish an event.
    Publisher,
    /// The HTTP bridge: any POST published as an event (`headers`, `body`).
    Webhook,
    /// Paths under this one (`{"type": "path", "paths": {...}}`).
    Path,
    /// Files from a zip archive.
    Archive,
    /// WAMP over HTTP long-poll.
    Longpoll,
}

/// A `caller` or `publisher` path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeOptions {
    /// With `secret`: requests must be signed with this key.
    pub key: Option<String>,
    /// The signing secret.
    pub secret: Option<String>,
    /// Largest request body in bytes (0: the limit of 16 MiB); larger
    /// requests get 413 before their body is read.
    pub post_body_limit: u64,
    /// Seconds a signed request's timestamp may be off (0: not checked).
    pub timestamp_delta_limit: u64,
    /// Refuse requests not made over TLS.
    pub require_tls: bool,
    /// Accept requests only from these addresses or networks (CIDR).
    pub require_ip: Option<Vec<String>>,
    /// `caller`: milliseconds a call may take (the CALL's `timeout`).
    pub timeout: u64,
    /// Crossbar.io's debug flag: accepted.
    pub debug: bool,
    /// `webhook`: the topic each request is published to.
    pub topic: Option<String>,
    /// `webhook`: the body of the 202 answer.
    pub success_response: String,
    /// `webhook`: the body of the 500 answer.
    pub error_response: String,
    /// `webhook`: GitHub's webhook secret; requests must carry a valid
    /// `X-Hub-Signature-256`.
    pub github_secret: Option<String>,
    /// With `key` and `secret`: a signed request is taken once; the same
    /// signature again within `timestamp_delta_limit` is refused (401).
    /// Trellis's own option (Crossbar.io has none).
    pub replay_protection: bool,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            key: None,
            secret: None,
            post_body_limit: 0,
            timestamp_delta_limit: 300,
            require_tls: false,
            require_ip: None,
            timeout: 30_000,
            debug: false,
            topic: None,
            success_response: "OK".into(),
            error_response: "NOT OK".into(),
            github_secret: None,
            replay_protection: false,
        }
    }
}

/// A `longpoll` path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LongPollOptions {
    /// Seconds a `receive` waits for a message before answering 204
    /// (0: until one comes).
    pub request_timeout: u64,
    /// Seconds without any request after which a transport is closed
    /// (0: never).
    pub session_timeout: u64,
    /// Bytes of the router's messages waiting for a poll; a client over it
    /// is closed (0: no limit besides the messages).
    pub queue_limit_bytes: usize,
    /// Messages waiting for a poll; a client over it is closed.
    pub queue_limit_messages: usize,
    /// Crossbar.io's debug flag: accepted.
    pub debug: bool,
    /// Crossbar.io's fixed transport id for debugging: accepted and not
    /// used (ids are always random).
    pub debug_transport_id: Option<String>,
}

impl Default for LongPollOptions {
    fn default() -> Self {
        LongPollOptions {
            request_timeout: 10,
            session_timeout: 30,
            queue_limit_bytes: 131_072,
            queue_limit_messages: 100,
            debug: false,
            debug_transport_id: None,
        }
    }
}

/// The largest HTTP bridge request body (and `post_body_limit` 0).
pub const MAX_BRIDGE_BODY: u64 = 16 << 20;

/// A `json` path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JsonOptions {
    /// Indented JSON.
    pub prettify: bool,
    /// `Access-Control-Allow-Origin: *` (and credentials).
    pub allow_cross_origin: bool,
    /// `Cache-Control: no-store, ...`.
    pub discourage_caching: bool,
}

/// A static path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StaticOptions {
    /// List a directory that has no `index.html`.
    pub enable_directory_listing: bool,
    /// Content types by file extension (`".wasm": "application/wasm"`),
    /// over the built-in table.
    pub mime_types: BTreeMap<String, String>,
    /// Seconds browsers may cache files (`Cache-Control: max-age`); absent
    /// or 0: `no-cache`.
    pub cache_timeout: Option<u64>,
}

impl WebPath {
    /// Its `options` read as `T`, with the key path of what is wrong.
    fn options_as<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, (String, String)> {
        match &self.options {
            None => Ok(T::default()),
            Some(v) => serde_path_to_error::deserialize(v).map_err(|e| {
                let at = e.path().to_string();
                (at, e.into_inner().to_string())
            }),
        }
    }

    /// A bridge path's options (defaults where invalid; `validate` says so).
    pub fn bridge_options(&self) -> BridgeOptions {
        self.options_as().unwrap_or_default()
    }

    /// A static path's options (defaults where invalid; `validate` says so).
    pub fn static_options(&self) -> StaticOptions {
        self.options_as().unwrap_or_default()
    }

    /// A json path's options (defaults where invalid; `validate` says so).
    pub fn json_options(&self) -> JsonOptions {
        self.options_as().unwrap_or_default()
    }

    /// A longpoll path's options (defaults where invalid; `validate` says so).
    pub fn longpoll_options(&self) -> LongPollOptions {
        self.options_as().unwrap_or_default()
    }
}

/// Transport types.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// WAMP over WebSocket.
    Websocket,
    /// WAMP over RawSocket (TCP).
    Rawsocket,
    /// HTTP: static files and WebSocket paths on one port.
    Web,
    /// A plain WebSocket echo endpoint for conformance testing
    /// (Autobahn|TestSuite), as Crossbar.io's `websocket.testee`.
    #[serde(rename = "websocket.testee")]
    WebsocketTestee,
    /// RawSocket, WebSocket and web on one port, told apart by the first
    /// bytes (Crossbar.io's `universal`); served as a web transport whose
    /// connections starting with RawSocket's 0x7F go to its RawSocket part.
    Universal,
    /// Crossbar.io's Adobe Flash socket policy server: accepted and not
    /// opened (no browser has run Flash since 2021), with a warning.
    Flashpolicy,
}

/// Where a transport listens.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The endpoint type.
    #[serde(rename = "type")]
    pub kind: EndpointKind,
    /// The TCP port (0 picks a free one); `tcp` endpoints only.
    #[serde(default)]
    pub port: Option<u16>,
    /// The socket file; `unix` endpoints only. A relative path is taken
    /// from the node directory.
    #[serde(default)]
    pub path: Option<String>,
    /// The socket file's mode, octal (`"0660"` lets the group in); `unix`
    /// endpoints only; `"0600"` when absent.
    #[serde(default)]
    pub mode: Option<String>,
    /// The address to bind; all interfaces when absent.
    #[serde(default)]
    pub interface: Option<String>,
    /// IP version (4 or 6) when `interface` is absent.
    #[serde(default)]
    pub version: Option<u8>,
    /// Listen backlog (accepted for compatibility; the OS default is used).
    #[serde(default)]
    pub backlog: Option<u32>,
    /// `tcp` endpoints: let several router workers listen on this port
    /// (SO_REUSEPORT); the kernel spreads connections over them.
    #[serde(default)]
    pub shared: bool,
    /// `tcp` endpoints: TLS (`wss://`, TLS RawSocket, HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// An endpoint's TLS, as Crossbar.io names it. Files are PEM, relative to
/// the node directory.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: String,
    /// The server certificate (it may be followed by its chain).
    pub certificate: String,
    /// Intermediate certificates sent after the server's.
    #[serde(default)]
    pub chain_certificates: Vec<String>,
    /// Crossbar.io: verify client certificates against these; not
    /// supported yet (refused with a message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<Vec<String>>,
    /// Crossbar.io's Diffie-Hellman parameters: accepted and unused
    /// (rustls does ECDHE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhparam: Option<String>,
    /// Crossbar.io's OpenSSL cipher list: accepted and unused (rustls
    /// offers its own safe TLS 1.2 and 1.3 suites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<String>,
}

/// Endpoint types.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// A TCP port.
    Tcp,
    /// A Unix domain socket (a file, mode 0600).
    Unix,
}

/// Largest `options.write_buffer_size`: 16 MiB.
pub const MAX_WRITE_BUFFER: usize = 16 << 20;
/// `options.write_buffer_size` when unset, on WebSocket: its data frames are
/// not copied into a buffer, so this only bounds one vectored write.
pub const WEBSOCKET_WRITE_BUFFER: usize = 256 * 1024;
/// `options.write_buffer_size` when unset, on RawSocket: a buffer of about
/// this size stays with a session that received a burst.
pub const RAWSOCKET_WRITE_BUFFER: usize = 64 * 1024;

/// Limits and timeouts of a WebSocket transport. Times are in milliseconds,
/// as in Crossbar.io.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketOptions {
    /// Largest WAMP message accepted, in bytes (after reassembly of fragments).
    pub max_message_size: usize,
    /// Largest single WebSocket frame accepted, in bytes.
    pub max_frame_size: usize,
    /// Deadline for the whole HTTP upgrade, from TCP accept.
    pub open_handshake_timeout: u64,
    /// Deadline for HELLO after the upgrade.
    pub hello_timeout: u64,
    /// Refuse clients that offer no WAMP subprotocol (Crossbar.io's default).
    pub require_websocket_subprotocol: bool,
    /// Messages queued for one session before it counts as too slow and is
    /// closed.
    pub max_queue_messages: usize,
    /// Concurrent connections on this transport; more are refused at once.
    pub max_connections: usize,
    /// Deadline for AUTHENTICATE after CHALLENGE.
    pub authenticate_timeout: u64,
    /// Deadline for a dynamic authenticator's answer.
    pub authenticator_timeout: u64,
    /// Failed authentications allowed per (peer address, authid) within
    /// `auth_failure_window` before further attempts of that authid from
    /// that address are refused at once; an address over it (with any
    /// authids) has its attempts slowed instead.
    pub max_auth_failures: u32,
    /// The window for `max_auth_failures`, in milliseconds.
    pub auth_failure_window: u64,
    /// The longest pause, in milliseconds, for an attempt from an address
    /// that has failed more than `max_auth_failures` times: 100 ms per
    /// failure over, at most this. A correct login waits no longer.
    pub auth_failure_delay: u64,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For`
    /// or `Forwarded` header names the client: its address then counts for
    /// the login limits and the transport details, not the proxy's.
    pub trusted_proxies: Vec<String>,
    /// Calls one session may have in flight; more get an error at once.
    pub max_calls_in_flight: usize,
    /// Milliseconds a write to the peer may stay blocked (the peer stopped
    /// reading) before the router closes the connection.
    pub write_timeout: u64,
    /// Bytes of outgoing messages collected for one session before they are
    /// written to its socket (the session also writes whenever its queue is
    /// empty). Larger means fewer system calls under load. Unset: 256 KiB
    /// on WebSocket, whose frames go out without a copy; 64 KiB on
    /// RawSocket, where a session that received a burst keeps a buffer of
    /// about this size. See [`WebSocketOptions::write_buffer_for`].
    pub write_buffer_size: Option<usize>,
    /// Milliseconds of silence from a peer before the router pings it
    /// (0: never). Unset: 30000 on WebSocket; 0 on RawSocket, as in
    /// Crossbar.io (clients such as swampyer never answer a RawSocket
    /// ping; `tcp_keepalive` finds dead peers there).
    pub auto_ping_interval: Option<u64>,
    /// Milliseconds the router waits for anything (the pong) after its
    /// ping before it closes the connection as dead.
    pub auto_ping_timeout: u64,
    /// TCP keepalive on every TCP connection, in milliseconds: idle time
    /// before the first probe and the time between probes; a peer that
    /// answers none of 4 probes is dead. 0 turns it off.
    pub tcp_keepalive: u64,
    /// Browser origins allowed to open the WebSocket (`*` wildcards, e.g.
    /// `https://*.example.com`); any when absent. Clients that send no
    /// `Origin` (non-browsers) are not affected.
    pub allowed_origins: Option<Vec<String>>,
    /// With `allowed_origins`: also let in browsers that send
    /// `Origin: null` (pages opened from `file://`, sandboxed frames).
    pub allow_null_origin: bool,
    /// A plain HTTP GET on the WebSocket endpoint gets a small status page
    /// (200); `false`: 426 Upgrade Required.
    pub enable_webstatus: bool,
    /// Outgoing messages larger than this many bytes are sent as several
    /// frames of at most this payload (0: one frame per message).
    pub auto_fragment_size: usize,
    /// Payload bytes of the router's pings (4 to 125).
    pub auto_ping_size: usize,
    /// Milliseconds the router waits for the peer's close frame after
    /// sending its own before it drops the connection.
    pub close_handshake_timeout: u64,
    /// On a protocol violation or an oversized message, drop the TCP
    /// connection instead of sending a close frame.
    pub fail_by_drop: bool,
    /// WebSocket compression (`{"deflate": {...}}`: permessage-deflate).
    pub compression: Option<CompressionConfig>,
}

/// `options.compression` of a WebSocket transport.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// permessage-deflate (RFC 7692), negotiated with clients that offer it.
    pub deflate: Option<DeflateConfig>,
}

/// permessage-deflate parameters, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeflateConfig {
    /// Ask clients not to keep their compression context between messages.
    pub request_no_context_takeover: bool,
    /// Ask clients to compress with at most this window (8 to 15 bits).
    pub request_max_window_bits: u8,
    /// Do not keep the router's compression context between messages (less
    /// memory per connection, less compression).
    pub no_context_takeover: bool,
    /// The router compresses with at most this window (8 to 15 bits; 8 is
    /// used as 9, which zlib's raw deflate needs at least).
    pub max_window_bits: u8,
    /// Accepted for Crossbar.io configs (1 to 9); the router uses zlib's
    /// default memory level.
    pub memory_level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            request_no_context_takeover: false,
            request_max_window_bits: 15,
            no_context_takeover: false,
            max_window_bits: 15,
            memory_level: 8,
        }
    }
}

impl WebSocketOptions {
    /// `auto_ping_interval`, or its default for a transport of `kind`.
    pub fn auto_ping_for(&self, kind: TransportKind) -> u64 {
        self.auto_ping_interval.unwrap_or(match kind {
            TransportKind::Rawsocket => 0,
            _ => 30_000,
        })
    }

    /// `write_buffer_size`, or its default for a transport of `kind`.
    pub fn write_buffer_for(&self, kind: TransportKind) -> usize {
        self.write_buffer_size.unwrap_or(match kind {
            TransportKind::Rawsocket => RAWSOCKET_WRITE_BUFFER,
            _ => WEBSOCKET_WRITE_BUFFER,
        })
    }
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            open_handshake_timeout: 10_000,
            hello_timeout: 10_000,
            require_websocket_subprotocol: true,
            max_queue_messages: 2048,
            max_connections: 50_000,
            authenticate_timeout: 10_000,
            authenticator_timeout: 5_000,
            max_auth_failures: 10,
            auth_failure_window: 60_000,
            auth_failure_delay: 1_000,
            trusted_proxies: Vec::new(),
            max_calls_in_flight: 1000,
            write_timeout: 10_000,
            write_buffer_size: None,
            auto_ping_interval: None,
            auto_ping_timeout: 10_000,
            tcp_keepalive: 30_000,
            allowed_origins: None,
            allow_null_origin: true,
            enable_webstatus: true,
            auto_fragment_size: 0,
            auto_ping_size: 12,
            close_handshake_timeout: 1_000,
            fail_by_drop: false,
            compression: None,
        }
    }
}

/// Per-transport authentication, keyed by method as in Crossbar.io.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Anonymous access.
    #[serde(default)]
    pub anonymous: Option<AnonymousAuth>,
    /// WAMP-Ticket.
    #[serde(default)]
    pub ticket: Option<MethodAuth<TicketPrincipal>>,
    /// WAMP-CRA.
    #[serde(default)]
    pub wampcra: Option<MethodAuth<CraUser>>,
    /// WAMP-cryptosign.
    #[serde(default)]
    pub cryptosign: Option<MethodAuth<CryptosignPrincipal>>,
    /// TLS client certificates (the endpoint's `tls.ca_certificates`
    /// verifies them): principals by certificate fingerprint.
    #[serde(default)]
    pub tls: Option<MethodAuth<TlsPrincipal>>,
    /// Cookie authentication: a browser whose tracking cookie logged in
    /// before is welcomed as the same principal (needs the transport's
    /// `cookie`).
    #[serde(default)]
    pub cookie: Option<CookieAuth>,
    /// WAMP-SCRAM: the router keeps derived keys, never the password.
    #[serde(default)]
    pub scram: Option<MethodAuth<ScramPrincipal>>,
    /// One-time login tokens from a token store.
    #[serde(default)]
    pub token: Option<TokenAuth>,
    /// Unix-socket transports only: the connecting process's user
    /// (SO_PEERCRED) decides the session's identity and role.
    #[serde(default)]
    pub peercred: Option<PeerCredAuth>,
}

impl AuthConfig {
    /// The kinds of the methods that have one (anonymous, ticket, wampcra,
    /// cryptosign).
    pub fn method_kinds(&self) -> Vec<(&'static str, AuthKind)> {
        [
            ("anonymous", self.anonymous.as_ref().map(|m| m.kind)),
            ("ticket", self.ticket.as_ref().map(|m| m.kind)),
            ("wampcra", self.wampcra.as_ref().map(|m| m.kind)),
            ("cryptosign", self.cryptosign.as_ref().map(|m| m.kind)),
            ("scram", self.scram.as_ref().map(|m| m.kind)),
            ("tls", self.tls.as_ref().map(|m| m.kind)),
        ]
        .into_iter()
        .filter_map(|(n, k)| Some((n, k?)))
        .collect()
    }
}

/// Peer-credential authentication: a local process is known by its user.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerCredAuth {
    /// Must be `static`.
    #[serde(rename = "type", default = "static_kind")]
    pub kind: String,
    /// By user name or numeric uid (as a string), or `*` for any user who
    /// can open the socket: who the session is.
    pub principals: BTreeMap<String, PeerCredPrincipal>,
}

/// The identity a local user gets.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerCredPrincipal {
    /// The role.
    pub role: String,
    /// The authid; the user name (else the uid) when absent.
    #[serde(default)]
    pub authid: Option<String>,
    /// The only realm this user may join; any when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// One-time token login: a ticket-style method whose principal comes from
/// a token store. The token arrives as a query parameter of the WebSocket
/// URL or as the WAMP ticket.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenAuth {
    /// Where tokens live (embedded by default).
    #[serde(default)]
    pub store: TokenStoreConfig,
    /// Seconds a token is valid after minting.
    #[serde(rename = "max-age", default = "default_token_age")]
    pub max_age: u64,
    /// The URL query parameter carrying the token.
    #[serde(rename = "query-param", default = "default_token_param")]
    pub query_param: String,
    /// The role for tokens minted without one.
    #[serde(default)]
    pub role: Option<String>,
}

fn default_token_age() -> u64 {
    20
}
fn default_token_param() -> String {
    "ws_token".into()
}

/// A token store.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenStoreConfig {
    /// `embedded` (default) or `redis`.
    #[serde(rename = "type", default)]
    pub kind: TokenStoreKind,
    /// Redis URL (`redis://host:port`), default `redis://127.0.0.1:6379`.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis database number.
    #[serde(default)]
    pub database: Option<i64>,
    /// Redis key prefix, default `trellis:token:`.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Token store kinds.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenStoreKind {
    /// In the router's memory.
    #[default]
    Embedded,
    /// In Redis.
    Redis,
}

/// Anonymous authentication: every session gets `role`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnonymousAuth {
    /// `static` (the config gives role and authid), `dynamic` (an
    /// authenticator procedure decides, Crossbar.io's shape) or `function`.
    #[serde(rename = "type", default = "static_auth_kind")]
    pub kind: AuthKind,
    /// The role anonymous sessions get (static).
    #[serde(default = "anonymous_role")]
    pub role: String,
    /// The authid anonymous sessions get (Crossbar.io's key); without it
    /// each session gets a fresh random one. The client's HELLO authid is
    /// never used.
    #[serde(default)]
    pub authid: Option<String>,
    /// The only realm anonymous sessions may join; a HELLO without a realm
    /// joins it. Any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
    /// `dynamic`: the authenticator procedure, called with `(realm, authid,
    /// details)` (authid: the HELLO's, or null) and answering a role or
    /// `{role, authid, realm, extra}`.
    #[serde(default)]
    pub authenticator: Option<String>,
    /// `dynamic`: the realm the authenticator is registered in.
    #[serde(rename = "authenticator-realm", default)]
    pub authenticator_realm: Option<String>,
    /// `function`: the Python callable that creates the authenticator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// `function`: the first argument of `create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// `function`: accepted, as for the other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_controller: Option<bool>,
    /// Whatever methods the client offers (the private link of a Python
    /// router component, which Crossbar.io joins without authentication);
    /// set by the router itself, not a config key.
    #[serde(skip)]
    pub any_method: bool,
}

impl AnonymousAuth {
    /// A static anonymous login with a fixed role (the router's private
    /// links).
    pub fn fixed(
        role: &str,
        authid: Option<String>,
        realm: Option<String>,
        any_method: bool,
    ) -> AnonymousAuth {
        AnonymousAuth {
            kind: AuthKind::Static,
            role: role.to_owned(),
            authid,
            realm,
            authenticator: None,
            authenticator_realm: None,
            create: None,
            config: None,
            expose_controller: None,
            any_method,
        }
    }

    /// Its authenticator fields as the other methods have them (no
    /// principals), for the checks and the function rewrite they share.
    pub fn as_method(&self) -> MethodAuth<()> {
        MethodAuth {
            kind: self.kind,
            principals: BTreeMap::new(),
            authenticator: self.authenticator.clone(),
            authenticator_realm: self.authenticator_realm.clone(),
            create: self.create.clone(),
            config: self.config.clone(),
            expose_controller: self.expose_controller,
        }
    }

    /// Take back the authenticator fields of [`AnonymousAuth::as_method`].
    pub fn set_method(&mut self, m: MethodAuth<()>) {
        self.kind = m.kind;
        self.authenticator = m.authenticator;
        self.authenticator_realm = m.authenticator_realm;
        self.create = m.create;
        self.config = m.config;
        self.expose_controller = m.expose_controller;
    }
}

fn static_auth_kind() -> AuthKind {
    AuthKind::Static
}
fn static_kind() -> String {
    "static".into()
}
fn anonymous_role() -> String {
    "anonymous".into()
}

/// Static or dynamic: where principals come from.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// Principals listed in the config.
    Static,
    /// Principals decided by an authenticator procedure.
    Dynamic,
    /// Principals decided by a Python function (Crossbar.io's `create`:
    /// `create(config, controller)` returns `authenticate(realm, authid,
    /// details)`), which the router worker runs as a dynamic authenticator
    /// in a realm of its own ([`INTERNAL_REALM_PREFIX`]).
    Function,
}

/// Realms whose names start so are the router's own (the realm of its
/// function authenticators): no config may name one, and only the
/// router's private links may join one.
pub const INTERNAL_REALM_PREFIX: &str = "trellis.internal.";

/// One authentication method (ticket, wampcra, cryptosign). Static methods
/// list principals (`principals`, or `users` as Crossbar.io spells it for
/// WAMP-CRA); dynamic ones name the authenticator procedure and optionally
/// the realm it is registered in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodAuth<P> {
    /// `static` or `dynamic`.
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// Static principals by authid.
    #[serde(default = "BTreeMap::new", alias = "users")]
    pub principals: BTreeMap<String, P>,
    /// The authenticator procedure (dynamic).
    #[serde(default)]
    pub authenticator: Option<String>,
    /// The realm the authenticator is registered in (dynamic); the realm the
    /// client asked for when absent.
    #[serde(rename = "authenticator-realm", default)]
    pub authenticator_realm: Option<String>,
    /// `function`: the Python callable that creates the authenticator
    /// (`package.module.create_authenticator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// `function`: the first argument of `create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// `function`: Crossbar.io passes its controller session to `create`
    /// then; Trellis passes `None` either way (accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_controller: Option<bool>,
}

/// A static ticket principal.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TicketPrincipal {
    /// The ticket (a shared secret).
    pub ticket: String,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// How a WAMP-CRA user's `secret` is stored.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKind {
    /// The plain password; with `salt` the router derives the key itself
    /// (Crossbar.io 26).
    #[default]
    Password,
    /// The already derived key, base64 (`derive_key(password, salt, ...)`),
    /// as the seed's user database stores it: the password never reaches
    /// the router.
    DerivedKey,
}

/// A WAMP-CRA user: a static `wampcra` principal, and a user of the
/// built-in user database (`trellis.auth.UserDatabase`), which answers
/// dynamic WAMP-CRA and ticket logins with these fields.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CraUser {
    /// The password, or the derived key (see `secret-kind`).
    pub secret: String,
    /// The role the user gets.
    pub role: String,
    /// The realm the user may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
    /// The authid the session gets instead of the name it logged in with.
    #[serde(default)]
    pub authid: Option<String>,
    /// Extra data for the client's WELCOME (`authextra`).
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
    /// PBKDF2 salt: the client derives its key with it.
    #[serde(default)]
    pub salt: Option<String>,
    /// PBKDF2 iterations (default 1000 when `salt` is set).
    #[serde(default)]
    pub iterations: Option<u32>,
    /// PBKDF2 key length in bytes (default 32 when `salt` is set).
    #[serde(default)]
    pub keylen: Option<u32>,
    /// What `secret` holds.
    #[serde(rename = "secret-kind", default)]
    pub secret_kind: SecretKind,
}

impl SecretKind {
    /// The config and wire name (`password`, `derived-key`).
    pub fn name(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::DerivedKey => "derived-key",
        }
    }
}

/// A static cryptosign principal.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CryptosignPrincipal {
    /// Ed25519 public keys (hex) that may log in as this principal.
    pub authorized_keys: Vec<String>,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// Crossbar.io's `auth.cookie`: no settings (`{}`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CookieAuth {}

/// Cookie tracking on a WebSocket transport or path, in Crossbar.io's
/// shape, with Trellis's `secure`, `same_site` and `max_cookies`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// The cookie's name (`^[a-z][a-z0-9_]+$`).
    #[serde(default = "cookie_name")]
    pub name: String,
    /// Characters of the random cookie value (12 to 64).
    #[serde(default = "cookie_length")]
    pub length: usize,
    /// Seconds a cookie lives (Crossbar.io's default: a week).
    #[serde(default = "cookie_max_age")]
    pub max_age: u64,
    /// Where cookies are kept.
    #[serde(default)]
    pub store: CookieStoreConfig,
    /// Send the cookie only over HTTPS; by default when the endpoint has
    /// TLS.
    #[serde(default)]
    pub secure: Option<bool>,
    /// The cookie's `SameSite`: `strict`, `lax` (default) or `none`
    /// (which needs `secure`).
    #[serde(default = "cookie_same_site")]
    pub same_site: String,
    /// The most cookies kept; the oldest go first.
    #[serde(default = "cookie_max_cookies")]
    pub max_cookies: usize,
}

/// A cookie store: `memory` (lost on restart) or `file` (logins kept
/// across restarts, in `filename`, relative to the node directory).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CookieStoreConfig {
    /// `memory` or `file`.
    #[serde(rename = "type", default = "cookie_store_memory")]
    pub kind: String,
    /// `file`: the file.
    #[serde(default = "cookie_filename")]
    pub filename: String,
    /// `file`: forget the stored cookies at start.
    #[serde(default)]
    pub purge_on_startup: bool,
    /// Crossbar.io's `database` store's keys: read so that the store type
    /// is what `check` names as unsupported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxsize: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<serde_json::Value>,
}

impl Default for CookieStoreConfig {
    fn default() -> Self {
        CookieStoreConfig {
            kind: cookie_store_memory(),
            filename: cookie_filename(),
            purge_on_startup: false,
            path: None,
            maxsize: None,
            readonly: None,
            sync: None,
        }
    }
}

fn cookie_name() -> String {
    "cbtid".into()
}
fn cookie_length() -> usize {
    24
}
fn cookie_max_age() -> u64 {
    604_800
}
fn cookie_same_site() -> String {
    "lax".into()
}
fn cookie_max_cookies() -> usize {
    100_000
}
fn cookie_store_memory() -> String {
    "memory".into()
}
fn cookie_filename() -> String {
    "cookies.dat".into()
}

/// Crossbar.io's cookie settings, checked as it checks them, and Trellis's.
fn validate_cookie(pre: &str, t: &TransportConfig, c: &CookieConfig, p: Report<'_>) {
    if t.kind != TransportKind::Websocket {
        p(
            pre.to_owned(),
            "cookie tracking is for WebSocket transports and paths (browsers send cookies with the WebSocket upgrade)".into(),
        );
    }
    let name_ok = c.name.len() >= 2
        && c.name.starts_with(|ch: char| ch.is_ascii_lowercase())
        && c.name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
    if !name_ok {
        p(
            format!("{pre}.name"),
            format!(
                "{:?}: a cookie name is lower-case letters, digits and _, starting with a letter (^[a-z][a-z0-9_]+$)",
                c.name
            ),
        );
    }
    if !(12..=64).contains(&c.length) {
        p(
            format!("{pre}.length"),
            "must be between 12 and 64 characters".into(),
        );
    }
    if c.max_age == 0 || c.max_age > 86_400 * 360 * 10 {
        p(
            format!("{pre}.max_age"),
            "must be more than 0 seconds and at most 10 years".into(),
        );
    }
    if c.max_cookies == 0 {
        p(format!("{pre}.max_cookies"), "must be at least 1".into());
    }
    match c.same_site.as_str() {
        "strict" | "lax" => {}
        "none" if c.secure != Some(false) && (c.secure == Some(true) || t.endpoint.tls.is_some()) => {}
        "none" => p(
            format!("{pre}.same_site"),
            "\"none\" needs a Secure cookie (browsers refuse it otherwise): TLS on the endpoint, or \"secure\": true".into(),
        ),
        other => p(
            format!("{pre}.same_site"),
            format!("{other:?}: expected \"strict\", \"lax\" or \"none\""),
        ),
    }
    match c.store.kind.as_str() {
        "memory" | "file" => {}
        "database" => p(
            format!("{pre}.store.type"),
            "Crossbar.io's LMDB cookie database is not supported by Trellis: use \"file\" (logins kept across restarts) or \"memory\"".into(),
        ),
        other => p(
            format!("{pre}.store.type"),
            format!("{other:?}: expected \"memory\" or \"file\""),
        ),
    }
    if c.store.kind == "file" && c.store.filename.trim().is_empty() {
        p(format!("{pre}.store.filename"), "must not be empty".into());
    }
}

/// A static TLS client-certificate principal (Crossbar.io's shape): the
/// authid is its key in `principals`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsPrincipal {
    /// The certificate's SHA-1 fingerprint, hex (colons and case as you
    /// like: `B6:E5:E6:...`).
    #[serde(rename = "certificate-sha1")]
    pub certificate_sha1: String,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// A fingerprint as `AB:CD:...` (upper case, colons), whatever way it was
/// written; `None` when it is not hex.
pub fn normalized_fingerprint(f: &str) -> Option<String> {
    let hex: String = f.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hex).ok()?;
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// A static WAMP-SCRAM principal, in Crossbar.io's shape (what `trellis
/// scram-credential` and autobahn's `derive_scram_credential` print).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScramPrincipal {
    /// `argon2id-13` or `pbkdf2`.
    pub kdf: String,
    /// The KDF's iterations (time cost).
    pub iterations: u32,
    /// Argon2's memory in KiB (argon2id-13 only).
    #[serde(default)]
    pub memory: Option<u32>,
    /// The salt, hex.
    pub salt: String,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`, hex.
    #[serde(rename = "stored-key")]
    pub stored_key: String,
    /// `HMAC(SaltedPassword, "Server Key")`, hex.
    #[serde(rename = "server-key")]
    pub server_key: String,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

impl ScramPrincipal {
    /// The credential, checked: every problem as (key, message).
    pub fn credential(&self) -> Result<proto::scram::Credential, Vec<(&'static str, String)>> {
        scram_credential(
            &self.kdf,
            self.iterations,
            self.memory,
            &self.salt,
            &self.stored_key,
            &self.server_key,
        )
    }
}

/// A SCRAM credential from its config (or authenticator) fields: every
/// problem as (key, message).
pub fn scram_credential(
    kdf: &str,
    iterations: u32,
    memory: Option<u32>,
    salt: &str,
    stored_key: &str,
    server_key: &str,
) -> Result<proto::scram::Credential, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let kdf = proto::scram::Kdf::parse(kdf, iterations, memory)
        .map_err(|e| problems.push(("kdf", e)))
        .ok();
    if kdf.is_some_and(|k| k.memory().is_none()) && memory.is_some() {
        problems.push(("memory", "only argon2id-13 takes \"memory\"".into()));
    }
    let salt = match hex::decode(salt) {
        Ok(s) if s.len() >= 8 => Some(s),
        _ => {
            problems.push((
                "salt",
                "expected at least 8 bytes in hex (16 or more hex characters)".into(),
            ));
            None
        }
    };
    let mut key = |name: &'static str, text: &str| -> Option<[u8; 32]> {
        let k = hex::decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        if k.is_none() {
            problems.push((name, "expected 32 bytes in hex (64 characters)".into()));
        }
        k
    };
    let stored = key("stored-key", stored_key);
    let server = key("server-key", server_key);
    match (kdf, salt, stored, server) {
        (Some(kdf), Some(salt), Some(stored_key), Some(server_key)) if problems.is_empty() => {
            Ok(proto::scram::Credential {
                kdf,
                salt,
                stored_key,
                server_key,
            })
        }
        _ => Err(problems),
    }
}

/// A semantic problem in a router config, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path relative to the router worker (`realms[0].roles[1].name`).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl RouterConfig {
    /// Every transport's and every web WebSocket path's authentication
    /// config, with its key path (`transports[0].paths.ws.auth`).
    pub fn auth_configs_mut(&mut self) -> Vec<(String, &mut AuthConfig)> {
        let mut out = Vec::new();
        for (i, t) in self.transports.iter_mut().enumerate() {
            if let Some(a) = t.auth.as_mut() {
                out.push((format!("transports[{i}].auth"), a));
            }
            for (name, p) in t.paths.iter_mut().flatten() {
                if let Some(a) = p.auth.as_mut() {
                    out.push((format!("transports[{i}].paths.{name}.auth"), a));
                }
            }
        }
        out
    }

    /// The key paths of `"type": "function"` methods: the router worker
    /// turns them into dynamic ones before it binds.
    pub fn function_methods(&self) -> Vec<String> {
        let mut copy = self.clone();
        let mut out = Vec::new();
        for (path, a) in copy.auth_configs_mut() {
            for (name, kind) in a.method_kinds() {
                if kind == AuthKind::Function {
                    out.push(format!("{path}.{name}"));
                }
            }
        }
        out
    }

    /// Check what serde cannot: names, URIs, cross-references. Returns every
    /// problem found, not only the first.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut p = |path: String, message: String| out.push(ConfigProblem { path, message });
        let mut names = BTreeMap::new();
        for (i, realm) in self.realms.iter().enumerate() {
            if let Err(e) = proto::uri::validate(&realm.name, MatchPolicy::Exact, false) {
                p(
                    format!("realms[{i}].name"),
                    format!("not a valid realm URI: {e}"),
                );
            }
            if let Some(first) = names.insert(realm.name.clone(), i) {
                p(
                    format!("realms[{i}].name"),
                    format!(
                        "realm {:?} is already defined at realms[{first}]",
                        realm.name
                    ),
                );
            }
            if realm.options.event_dispatching_chunk_size == Some(0) {
                p(
                    format!("realms[{i}].options.event_dispatching_chunk_size"),
                    "must be a positive integer (as Crossbar.io wants)".into(),
                );
            }
            if let Some(st) = &realm.stats {
                if !st.rated_message_size.is_power_of_two() {
                    p(
                        format!("realms[{i}].stats.rated_message_size"),
                        format!(
                            "{} is not a power of two (as Crossbar.io wants): 256, 512, 1024, ...",
                            st.rated_message_size
                        ),
                    );
                }
                if st.trigger_after_rated_messages == 0 && st.trigger_after_duration == 0 {
                    p(
                        format!("realms[{i}].stats"),
                        "set trigger_after_rated_messages or trigger_after_duration (seconds) above 0: statistics are published after one of them (as Crossbar.io requires)".into(),
                    );
                }
            }
            if let Some(store) = &realm.store {
                for (key, list, what) in [
                    ("event-history", &store.event_history, "events"),
                    ("call-queue", &store.call_queue, "calls"),
                ] {
                    for (h, entry) in list.iter().enumerate() {
                        if let Err(e) = proto::uri::validate(&entry.uri, entry.match_policy, false)
                        {
                            p(
                                format!("realms[{i}].store.{key}[{h}].uri"),
                                format!(
                                    "not a valid URI for match {:?}: {e}",
                                    entry.match_policy.name()
                                ),
                            );
                        }
                        if entry.limit.or(store.limit) == Some(0)
                            || entry.limit.or(store.limit).is_some_and(|l| l > 1_000_000)
                        {
                            p(
                                format!("realms[{i}].store.{key}[{h}].limit"),
                                format!("must be between 1 and 1000000 {what}"),
                            );
                        }
                    }
                }
            }
            let mut roles = BTreeMap::new();
            for (j, role) in realm.roles.iter().enumerate() {
                if role.name.is_empty() {
                    p(
                        format!("realms[{i}].roles[{j}].name"),
                        "a role needs a non-empty name".into(),
                    );
                }
                if let Some(first) = roles.insert(role.name.clone(), j) {
                    p(
                        format!("realms[{i}].roles[{j}].name"),
                        format!(
                            "role {:?} is already defined at realms[{i}].roles[{first}]",
                            role.name
                        ),
                    );
                }
                for (k, perm) in role.permissions.iter().enumerate() {
                    // An empty exact URI matches nothing: a warning, as
                    // Crossbar.io accepts it.
                    let empty_exact =
                        perm.uri.is_empty() && perm.match_policy == MatchPolicy::Exact;
                    if let Err(e) = proto::uri::validate(&perm.uri, perm.match_policy, false)
                        && !empty_exact
                    {
                        p(
                            format!("realms[{i}].roles[{j}].permissions[{k}].uri"),
                            format!(
                                "not a valid URI for match {:?}: {e}",
                                perm.match_policy.name()
                            ),
                        );
                    }
                }
            }
        }
        if self.transports.is_empty() {
            p(
                "transports".into(),
                "a router needs at least one transport".into(),
            );
        }
        for (i, c) in self.components.iter().enumerate() {
            let pre = format!("components[{i}]");
            if c.kind != "class" {
                p(
                    format!("{pre}.type"),
                    format!("must be \"class\", found {:?}", c.kind),
                );
            }
            if !self.realms.iter().any(|r| r.name == c.realm) {
                p(
                    format!("{pre}.realm"),
                    format!("realm {:?} is not defined in this router's realms", c.realm),
                );
            } else if !self.role_exists(Some(&c.realm), &c.role) {
                p(
                    format!("{pre}.role"),
                    format!("role {:?} does not exist in realm {:?}", c.role, c.realm),
                );
            }
        }
        for (i, t) in self.transports.iter().enumerate() {
            let pre = format!("transports[{i}]");
            if t.kind == TransportKind::Flashpolicy {
                // Not opened: nothing of it is used (warnings() says so).
                continue;
            }
            if t.allowed_domain.is_some() || t.allowed_ports.is_some() {
                p(
                    pre.clone(),
                    "allowed_domain and allowed_ports belong to Crossbar.io's flashpolicy transport".into(),
                );
            }
            for (key, set) in [
                ("rawsocket", t.rawsocket.is_some()),
                ("websocket", t.websocket.is_some()),
                ("web", t.web.is_some()),
            ] {
                if set && t.kind != TransportKind::Universal {
                    p(
                        format!("{pre}.{key}"),
                        format!("only universal transports have a \"{key}\" part"),
                    );
                }
            }
            match t.kind {
                TransportKind::Web => self.validate_web(&pre, t, &mut p),
                TransportKind::Universal => self.validate_universal(&pre, t, &mut p),
                TransportKind::WebsocketTestee => {
                    for (key, set) in [
                        ("serializers", t.serializers.is_some()),
                        ("auth", t.auth.is_some()),
                        ("paths", t.paths.is_some()),
                    ] {
                        if set {
                            p(
                                format!("{pre}.{key}"),
                                format!(
                                    "a websocket.testee transport echoes plain WebSocket messages and takes no {key}"
                                ),
                            );
                        }
                    }
                }
                _ => {
                    if t.paths.is_some() {
                        p(
                            format!("{pre}.paths"),
                            "only \"web\" transports have paths: remove the key or use \"type\": \"web\"".into(),
                        );
                    }
                    self.validate_transport(&pre, t, &mut p);
                }
            }
        }
        out
    }
}

impl RouterConfig {
    /// What is valid but likely not what the author meant: permission rules
    /// whose order decides (a wildcard and a prefix rule, or two wildcard
    /// rules, that match some URI in common and allow different things).
    pub fn warnings(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, r) in self.realms.iter().enumerate() {
            if let Some(store) = &r.store {
                accepted_unused(
                    &mut out,
                    &format!("realms[{i}].store"),
                    &[
                        (
                            "buffer-flush",
                            store.buffer_flush.is_some(),
                            "the memory store writes nothing out, so it has nothing to flush",
                        ),
                        (
                            "maxsize",
                            store.maxsize.is_some(),
                            "the memory store is bounded by its limits (limit, event-history and call-queue limits), not by a size in bytes",
                        ),
                    ],
                );
            }
            let o = &r.options;
            accepted_unused(
                &mut out,
                &format!("realms[{i}].options"),
                &[
                    (
                        "enable_meta_api",
                        o.enable_meta_api == Some(false),
                        "Trellis's meta API is always on: authorize (or deny) the wamp. URIs in the realm's roles to restrict it",
                    ),
                    (
                        "bridge_meta_api",
                        o.bridge_meta_api.is_some(),
                        "Trellis has no management realm to forward meta events to; subscribe to them in the realm itself",
                    ),
                    (
                        "event_dispatching_chunk_size",
                        o.event_dispatching_chunk_size.is_some(),
                        "Trellis hands every subscriber its event at once, without chunks",
                    ),
                ],
            );
            accepted_unused(
                &mut out,
                &format!("realms[{i}]"),
                &[(
                    "trace",
                    r.trace.is_some(),
                    "Trellis has no tracing API; run the node with --loglevel trace (or RUST_LOG=router_worker=trace) to log each message a session sends (type, request id and size, never payloads), and see trellis_messages_received_total and trellis_messages_sent_total in the metrics",
                )],
            );
        }
        for (i, t) in self.transports.iter().enumerate() {
            if t.kind == TransportKind::Flashpolicy {
                out.push(ConfigProblem {
                    path: format!("transports[{i}]"),
                    message: "accepted and not opened: Crossbar.io's flashpolicy transport serves Adobe Flash's socket policy (allowed_domain, allowed_ports), and no browser has run Flash since 2021; remove the transport".into(),
                });
                continue;
            }
            if let Some(tls) = &t.endpoint.tls {
                accepted_unused(
                    &mut out,
                    &format!("transports[{i}].endpoint.tls"),
                    &[
                        (
                            "dhparam",
                            tls.dhparam.is_some(),
                            "rustls negotiates ECDHE only",
                        ),
                        (
                            "ciphers",
                            tls.ciphers.is_some(),
                            "rustls offers its own TLS 1.3 and 1.2 suites (AES-GCM, ChaCha20-Poly1305)",
                        ),
                    ],
                );
            }
            match (&t.kind, &t.paths) {
                (TransportKind::Web, Some(paths)) => {
                    for (name, wp) in paths {
                        if matches!(wp.kind, WebPathKind::Websocket | WebPathKind::Longpoll) {
                            self.anonymous_role_warnings(
                                &format!("transports[{i}].paths.{name:?}.auth"),
                                &t.websocket_path(wp),
                                &mut out,
                            );
                        }
                    }
                }
                (TransportKind::Websocket | TransportKind::Rawsocket, _) => {
                    self.anonymous_role_warnings(&format!("transports[{i}].auth"), t, &mut out);
                }
                _ => {}
            }
        }
        for (i, realm) in self.realms.iter().enumerate() {
            for (j, role) in realm.roles.iter().enumerate() {
                let perms = &role.permissions;
                if role.allow_by_default
                    && perms
                        .iter()
                        .any(|p| p.uri.is_empty() && p.match_policy == MatchPolicy::Prefix)
                {
                    out.push(ConfigProblem {
                        path: format!("realms[{i}].roles[{j}].allow-by-default"),
                        message: "has no effect: the role's own rule {\"uri\": \"\", \"match\": \"prefix\"} decides what no other rule matches".into(),
                    });
                }
                for (k, perm) in perms.iter().enumerate() {
                    if perm.uri.is_empty() && perm.match_policy == MatchPolicy::Exact {
                        out.push(ConfigProblem {
                            path: format!("realms[{i}].roles[{j}].permissions[{k}].uri"),
                            message: "an empty URI with match \"exact\" matches no URI, so this rule allows nothing; for every URI write \"match\": \"prefix\"".into(),
                        });
                    }
                }
                for (a, pa) in perms.iter().enumerate() {
                    for (b, pb) in perms.iter().enumerate().skip(a + 1) {
                        if let Some(m) = overlap_warning(pa, pb) {
                            out.push(ConfigProblem {
                                path: format!(
                                    "realms[{i}].roles[{j}].permissions[{a}] and permissions[{b}]"
                                ),
                                message: m,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// Why two rules of one role deserve a look, if they do.
fn overlap_warning(a: &PermissionConfig, b: &PermissionConfig) -> Option<String> {
    use MatchPolicy::{Exact, Prefix, Wildcard};
    let matches_nothing = |p: &PermissionConfig| p.uri.is_empty() && p.match_policy == Exact;
    if (a.allow == b.allow && a.disclose == b.disclose) || matches_nothing(a) || matches_nothing(b)
    {
        return None;
    }
    let (x, y) = (
        (a.uri.as_str(), a.match_policy),
        (b.uri.as_str(), b.match_policy),
    );
    if !proto::uri::patterns_intersect(x, y) {
        return None;
    }
    let name = |p: &PermissionConfig| format!("{} {:?}", p.match_policy, p.uri);
    match (a.match_policy, b.match_policy) {
        (Wildcard, Prefix) | (Prefix, Wildcard) => {
            let (w, p) = if a.match_policy == Wildcard {
                (a, b)
            } else {
                (b, a)
            };
            Some(format!(
                "the rules {} and {} overlap and allow different actions: on every URI both match, the wildcard decides (as in Crossbar.io), not the prefix",
                name(w),
                name(p)
            ))
        }
        (Wildcard, Wildcard)
            if !proto::uri::pattern_within(x, y) && !proto::uri::pattern_within(y, x) =>
        {
            Some(format!(
                "the rules {} and {} overlap and allow different actions: on every URI both match, the one with more (and earlier) concrete components decides",
                name(a),
                name(b)
            ))
        }
        _ => None,
    }
}

/// The variable a secret names instead of holding it: the whole value
/// `${VAR}` or `$VAR`, as Crossbar.io reads secrets kept in the environment.
pub fn env_placeholder(value: &str) -> Option<&str> {
    let name = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'))?;
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// Whether a secret is empty or only whitespace: never a valid secret.
pub fn blank(secret: &str) -> bool {
    secret.trim().is_empty()
}

/// The problem of an empty secret at `path`, if it is one.
fn blank_secret(path: String, secret: &str, p: Report<'_>) {
    if blank(secret) {
        p(
            path,
            "must not be empty or whitespace: an empty secret lets anyone log in by sending an empty one; give it a value or remove the principal".into(),
        );
    }
}

/// "accepted and not used" warnings, under `pre`, for each (key, set,
/// why) whose key is set.
fn accepted_unused(out: &mut Vec<ConfigProblem>, pre: &str, items: &[(&str, bool, &str)]) {
    for (key, set, why) in items {
        if *set {
            out.push(ConfigProblem {
                path: format!("{pre}.{key}"),
                message: format!("accepted and not used: {why}"),
            });
        }
    }
}

/// The password part of a URL's user info (`scheme://user:PASSWORD@host`),
/// if it has one.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, pw)| pw)
}

/// A Redis URL as the Redis client takes it: `redis://` or `rediss://`
/// with a host and an optional database number, or `unix://` /
/// `redis+unix://` with a socket path.
fn check_redis_url(url: &str) -> Result<(), String> {
    let expected = "expected redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... for TLS, or unix:///PATH/TO/SOCKET";
    let u =
        url::Url::parse(url).map_err(|e| format!("invalid Redis URL {url:?} ({e}): {expected}"))?;
    match u.scheme() {
        "redis" | "rediss" | "valkey" | "valkeys" => {
            if u.host_str().is_none_or(str::is_empty) {
                return Err(format!("the Redis URL {url:?} has no host: {expected}"));
            }
            let db = u.path().trim_start_matches('/');
            if !db.is_empty() && db.parse::<i64>().is_err() {
                return Err(format!(
                    "the Redis URL {url:?} names database {db:?}: after the host comes a database number (/0)"
                ));
            }
            Ok(())
        }
        "unix" | "redis+unix" | "valkey+unix" => {
            if u.path().is_empty() || u.path() == "/" {
                return Err(format!(
                    "the Redis URL {url:?} has no socket path: {expected}"
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "the Redis URL {url:?} has the scheme {other:?}: {expected}"
        )),
    }
}

/// Replace `value` by the variable it names, if it names one.
fn resolve_secret(
    value: &mut String,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<ConfigProblem>,
) {
    let Some(name) = env_placeholder(value) else {
        return;
    };
    match env(name) {
        Some(v) if blank(&v) => out.push(ConfigProblem {
            message: format!(
                "names the environment variable {name}, which is set but empty: an empty secret would let anyone log in with an empty one; give {name} a value (check the node's EnvironmentFile or compose file) or remove this principal"
            ),
            path,
        }),
        Some(v) => *value = v,
        None => out.push(ConfigProblem {
            message: format!(
                "names the environment variable {name}, which is not set: set it for the node (e.g. Environment= in its systemd unit) or write the value here"
            ),
            path,
        }),
    }
}

impl AuthConfig {
    /// Secrets given as `${VAR}` / `$VAR`: tickets, WAMP-CRA secrets,
    /// cryptosign keys, SCRAM keys, resolved from `env`.
    fn resolve_env(
        &mut self,
        pre: &str,
        env: &dyn Fn(&str) -> Option<String>,
        out: &mut Vec<ConfigProblem>,
    ) {
        if let Some(m) = &mut self.ticket {
            for (id, p) in &mut m.principals {
                resolve_secret(
                    &mut p.ticket,
                    format!("{pre}.ticket.principals.{id}.ticket"),
                    env,
                    out,
                );
            }
        }
        if let Some(m) = &mut self.wampcra {
            for (id, u) in &mut m.principals {
                resolve_secret(
                    &mut u.secret,
                    format!("{pre}.wampcra.users.{id}.secret"),
                    env,
                    out,
                );
            }
        }
        if let Some(m) = &mut self.scram {
            for (id, pr) in &mut m.principals {
                for (key, value) in [
                    ("stored-key", &mut pr.stored_key),
                    ("server-key", &mut pr.server_key),
                ] {
                    resolve_secret(
                        value,
                        format!("{pre}.scram.principals.{id}.{key}"),
                        env,
                        out,
                    );
                }
            }
        }
        if let Some(t) = &mut self.token
            && let Some(url) = &mut t.store.url
        {
            resolve_secret(url, format!("{pre}.token.store.url"), env, out);
        }
        if let Some(m) = &mut self.cryptosign {
            for (id, p) in &mut m.principals {
                for (k, key) in p.authorized_keys.iter_mut().enumerate() {
                    resolve_secret(
                        key,
                        format!("{pre}.cryptosign.principals.{id}.authorized_keys[{k}]"),
                        env,
                        out,
                    );
                }
            }
        }
    }
}

impl RouterConfig {
    /// Resolve the secrets that name environment variables (`${VAR}` or
    /// `$VAR`) in every transport's and web path's `auth`; every unset
    /// variable is a problem naming the key and the variable.
    pub fn resolve_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, t) in self.transports.iter_mut().enumerate() {
            if let Some(a) = &mut t.auth {
                a.resolve_env(&format!("transports[{i}].auth"), env, &mut out);
            }
            for (name, path) in t.paths.iter_mut().flatten() {
                if let Some(a) = &mut path.auth {
                    a.resolve_env(&format!("transports[{i}].paths.{name}.auth"), env, &mut out);
                }
            }
        }
        out
    }
}

/// An octal file mode (`"0660"`), at most `0o777`.
pub fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777 && !s.is_empty())
}

/// Where validation helpers report a problem: (key path, message).
type Report<'a> = &'a mut dyn FnMut(String, String);

impl RouterConfig {
    /// The checks of one WAMP transport (or a web transport's WebSocket
    /// path), its problems reported under `pre`.
    fn validate_transport(&self, pre: &str, ws: &TransportConfig, p: Report<'_>) {
        if let Some(c) = &ws.cookie {
            validate_cookie(&format!("{pre}.cookie"), ws, c, p);
        }
        if let Some(list) = &ws.serializers {
            if list.is_empty() {
                p(
                    format!("{pre}.serializers"),
                    "an empty list leaves clients no serializer: list some of \"json\", \"msgpack\", \"cbor\" or leave the key out".into(),
                );
            }
            for (j, s) in list.iter().enumerate() {
                if proto::Serializer::from_name(s).is_none() {
                    p(
                        format!("{pre}.serializers[{j}]"),
                        format!(
                            "unknown serializer {s:?}: expected \"json\", \"msgpack\" or \"cbor\""
                        ),
                    );
                }
            }
        }
        let o = &ws.options;
        if o.max_message_size < 1024 {
            p(
                format!("{pre}.options.max_message_size"),
                format!(
                    "{} bytes is too small for WAMP: use at least 1024",
                    o.max_message_size
                ),
            );
        }
        if o.max_frame_size < 1024 {
            p(
                format!("{pre}.options.max_frame_size"),
                format!(
                    "{} bytes is too small for WAMP: use at least 1024",
                    o.max_frame_size
                ),
            );
        }
        for (key, v) in [
            ("open_handshake_timeout", o.open_handshake_timeout),
            ("hello_timeout", o.hello_timeout),
        ] {
            if v == 0 {
                p(
                    format!("{pre}.options.{key}"),
                    "must be a positive number of milliseconds".into(),
                );
            }
        }
        if o.max_queue_messages == 0 || o.max_connections == 0 {
            p(
                format!("{pre}.options"),
                "max_queue_messages and max_connections must be at least 1".into(),
            );
        }
        if !(4..=125).contains(&o.auto_ping_size) {
            p(
                format!("{pre}.options.auto_ping_size"),
                format!(
                    "{} bytes is outside the 4 to 125 a ping's payload may have",
                    o.auto_ping_size
                ),
            );
        }
        if let Some(d) = o.compression.as_ref().and_then(|c| c.deflate.as_ref()) {
            for (key, bits) in [
                ("max_window_bits", d.max_window_bits),
                ("request_max_window_bits", d.request_max_window_bits),
            ] {
                if !(8..=15).contains(&bits) {
                    p(
                        format!("{pre}.options.compression.deflate.{key}"),
                        format!("{bits} is outside the window sizes 8 to 15 (bits)"),
                    );
                }
            }
            if !(1..=9).contains(&d.memory_level) {
                p(
                    format!("{pre}.options.compression.deflate.memory_level"),
                    format!("{} is outside 1 to 9", d.memory_level),
                );
            }
        }
        if let Some(size) = o.write_buffer_size.filter(|&s| s > MAX_WRITE_BUFFER) {
            p(
                format!("{pre}.options.write_buffer_size"),
                format!(
                    "{size} bytes is more than the {MAX_WRITE_BUFFER} allowed (leave it out for the default: {WEBSOCKET_WRITE_BUFFER} on WebSocket, {RAWSOCKET_WRITE_BUFFER} on RawSocket)"
                ),
            );
        }
        let e = &ws.endpoint;
        match e.kind {
            EndpointKind::Tcp => {
                if let Some(t) = &e.tls {
                    if t.ca_certificates.as_ref().is_some_and(Vec::is_empty) {
                        p(
                            format!("{pre}.endpoint.tls.ca_certificates"),
                            "list at least one CA certificate file (PEM) that client certificates are verified against, or leave the key out".into(),
                        );
                    }
                    for (key, v) in [("key", &t.key), ("certificate", &t.certificate)] {
                        if v.is_empty() {
                            p(
                                format!("{pre}.endpoint.tls.{key}"),
                                "missing: a PEM file (relative to the node directory)".into(),
                            );
                        }
                    }
                }
                if e.port.is_none() {
                    p(
                        format!("{pre}.endpoint.port"),
                        "missing: a tcp endpoint needs a \"port\" (0 picks a free one)".into(),
                    );
                }
                for (key, set) in [("path", e.path.is_some()), ("mode", e.mode.is_some())] {
                    if set {
                        p(
                            format!("{pre}.endpoint.{key}"),
                            format!(
                                "only unix endpoints have a {key}: remove it or use \"type\": \"unix\""
                            ),
                        );
                    }
                }
            }
            EndpointKind::Unix => {
                match e.path.as_deref() {
                    None | Some("") => p(
                        format!("{pre}.endpoint.path"),
                        "missing: a unix endpoint needs a socket file \"path\"".into(),
                    ),
                    // sockaddr_un holds 108 bytes including the NUL.
                    Some(path) if path.len() > 107 => p(
                        format!("{pre}.endpoint.path"),
                        format!(
                            "{} bytes is too long for a Unix socket path (at most 107): use a shorter path",
                            path.len()
                        ),
                    ),
                    Some(_) => {}
                }
                if let Some(m) = &e.mode
                    && parse_mode(m).is_none()
                {
                    p(
                        format!("{pre}.endpoint.mode"),
                        format!(
                            "{m:?} is not a file mode: use octal digits such as \"0600\" or \"0660\""
                        ),
                    );
                }
                if e.tls.is_some() {
                    p(
                        format!("{pre}.endpoint.tls"),
                        "TLS is for tcp endpoints: a unix socket is reached on this machine only, through its file mode".into(),
                    );
                }
                for (key, set) in [
                    ("port", e.port.is_some()),
                    ("interface", e.interface.is_some()),
                    ("version", e.version.is_some()),
                    ("shared", e.shared),
                ] {
                    if set {
                        p(
                            format!("{pre}.endpoint.{key}"),
                            "unix endpoints have no port, interface, IP version or sharing: remove the key"
                                .into(),
                        );
                    }
                }
            }
        }
        if let Some(v) = &ws.endpoint.version
            && *v != 4
            && *v != 6
        {
            p(
                format!("{pre}.endpoint.version"),
                format!("IP version must be 4 or 6, found {v}"),
            );
        }
        if let Err(e) = crate::net::Networks::parse(&o.trusted_proxies) {
            p(format!("{pre}.options.trusted_proxies"), e);
        }
        if o.tcp_keepalive != 0 && o.tcp_keepalive < 1000 {
            p(
                format!("{pre}.options.tcp_keepalive"),
                format!(
                    "must be 0 (off) or at least 1000 ms (TCP counts keepalive time in seconds), found {}",
                    o.tcp_keepalive
                ),
            );
        }
        if o.auth_failure_delay > 60_000 {
            p(
                format!("{pre}.options.auth_failure_delay"),
                format!(
                    "must be at most 60000 ms (a correct login waits up to this long), found {}",
                    o.auth_failure_delay
                ),
            );
        }
        for (key, v) in [
            ("authenticate_timeout", o.authenticate_timeout),
            ("authenticator_timeout", o.authenticator_timeout),
            ("auth_failure_window", o.auth_failure_window),
        ] {
            if v == 0 {
                p(
                    format!("{pre}.options.{key}"),
                    "must be a positive number of milliseconds".into(),
                );
            }
        }
        self.validate_auth(pre, ws, p);
    }

    /// A web transport: its paths, and each WebSocket path as a transport.
    /// A universal transport: each part as the transport it stands for,
    /// with errors under the part's own key.
    fn validate_universal(&self, pre: &str, t: &TransportConfig, p: Report<'_>) {
        if t.rawsocket.is_none() && t.websocket.is_none() && t.web.is_none() {
            p(
                pre.to_owned(),
                "a universal transport needs at least one of \"rawsocket\", \"websocket\", \"web\""
                    .into(),
            );
        }
        for (key, set) in [
            ("serializers", t.serializers.is_some()),
            ("auth", t.auth.is_some()),
            ("paths", t.paths.is_some()),
        ] {
            if set {
                p(
                    format!("{pre}.{key}"),
                    format!(
                        "a universal transport's {key} belong to its parts (rawsocket, websocket, web)"
                    ),
                );
            }
        }
        let (web, raw) = t.universal_parts();
        let web_names: Vec<&String> = t.web.iter().flat_map(|w| w.paths.keys()).collect();
        for name in t.websocket.iter().flat_map(|w| w.keys()) {
            if web_names.contains(&name) {
                p(
                    format!("{pre}.websocket.{name}"),
                    format!("{name:?} is also a web path: a path serves one thing"),
                );
            }
        }
        for (name, wp) in t.websocket.iter().flatten() {
            if wp.kind != WebPathKind::Websocket {
                p(
                    format!("{pre}.websocket.{name}.type"),
                    "a universal transport's websocket part holds websocket paths only".into(),
                );
            }
        }
        // Web and WebSocket paths: checked as one web transport, each
        // error under the part the path came from.
        let mut rewrite = |path: String, message: String| {
            let inner = format!("{pre}.paths.");
            let path = match path.strip_prefix(&inner) {
                Some(rest) => {
                    let name = rest.split('.').next().unwrap_or("");
                    let part = if t.websocket.as_ref().is_some_and(|w| w.contains_key(name)) {
                        "websocket"
                    } else {
                        "web.paths"
                    };
                    format!("{pre}.{part}.{rest}")
                }
                None => path,
            };
            p(path, message);
        };
        self.validate_web(pre, &web, &mut rewrite);
        if let Some(raw) = raw {
            let mut under = |path: String, message: String| {
                let path = match path.strip_prefix(pre) {
                    Some(rest) if !rest.starts_with(".endpoint") => {
                        format!("{pre}.rawsocket{rest}")
                    }
                    _ => path,
                };
                p(path, message);
            };
            self.validate_transport(pre, &raw, &mut under);
        }
    }

    fn validate_web(&self, pre: &str, t: &TransportConfig, p: Report<'_>) {
        if t.endpoint.kind != EndpointKind::Tcp {
            p(
                format!("{pre}.endpoint.type"),
                "web transports listen on tcp endpoints".into(),
            );
        }
        for (key, set) in [
            ("serializers", t.serializers.is_some()),
            ("auth", t.auth.is_some()),
        ] {
            if set {
                p(
                    format!("{pre}.{key}"),
                    format!(
                        "a web transport's {key} belong to its websocket paths: move the key into paths.NAME"
                    ),
                );
            }
        }
        if t.paths.as_ref().is_none_or(|m| m.is_empty()) {
            p(
                format!("{pre}.paths"),
                "a web transport needs paths, e.g. {\"/\": {\"type\": \"static\", \"directory\": \"web\"}, \"ws\": {\"type\": \"websocket\"}}".into(),
            );
            return;
        }
        self.validate_web_paths(pre, t, p);
    }

    /// A web transport's paths (or a `path` service's), each under
    /// `{pre}.paths.NAME`.
    fn validate_web_paths(&self, pre: &str, t: &TransportConfig, p: Report<'_>) {
        for (name, path) in t.paths.iter().flatten() {
            let pp = format!("{pre}.paths.{name}");
            let ok_name = name == "/"
                || (!name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && name != "."
                    && name != "..");
            if !ok_name {
                p(
                    pp.clone(),
                    "a path is \"/\" or one URL segment of letters, digits, '-', '_' and '.'"
                        .into(),
                );
            }
            let kind = match path.kind {
                WebPathKind::Static => "static",
                WebPathKind::Websocket => "websocket",
                WebPathKind::Json => "json",
                WebPathKind::Redirect => "redirect",
                WebPathKind::Nodeinfo => "nodeinfo",
                WebPathKind::Caller => "caller",
                WebPathKind::Publisher => "publisher",
                WebPathKind::Webhook => "webhook",
                WebPathKind::Path => "path",
                WebPathKind::Archive => "archive",
                WebPathKind::Longpoll => "longpoll",
            };
            // Keys each kind takes.
            let takes: &[&str] = match path.kind {
                WebPathKind::Static => &["directory", "options"],
                WebPathKind::Websocket | WebPathKind::Longpoll => {
                    &["serializers", "options", "auth"]
                }
                WebPathKind::Json => &["value", "options"],
                WebPathKind::Redirect => &["url"],
                WebPathKind::Nodeinfo => &[],
                WebPathKind::Caller | WebPathKind::Publisher | WebPathKind::Webhook => {
                    &["realm", "role", "options"]
                }
                WebPathKind::Path => &["paths"],
                WebPathKind::Archive => &[
                    "archive",
                    "origin",
                    "object_prefix",
                    "default_object",
                    "download",
                    "cache",
                    "mime_types",
                    "hashes",
                ],
            };
            for (key, set) in [
                ("directory", path.directory.is_some()),
                ("serializers", path.serializers.is_some()),
                ("options", path.options.is_some()),
                ("auth", path.auth.is_some()),
                ("value", path.value.is_some()),
                ("url", path.url.is_some()),
                ("realm", path.realm.is_some()),
                ("role", path.role.is_some()),
                ("paths", path.paths.is_some()),
                ("archive", path.archive.is_some()),
                ("origin", path.origin.is_some()),
                ("object_prefix", path.object_prefix.is_some()),
                ("default_object", path.default_object.is_some()),
                ("download", path.download.is_some()),
                ("cache", path.cache.is_some()),
                ("mime_types", path.mime_types.is_some()),
            ] {
                if set && !takes.contains(&key) {
                    p(format!("{pp}.{key}"), format!("{kind} paths take no {key}"));
                }
            }
            let options_error = |p: &mut dyn FnMut(String, String), (at, msg): (String, String)| {
                let at = if at.is_empty() || at == "." {
                    String::new()
                } else {
                    format!(".{at}")
                };
                p(format!("{pp}.options{at}"), msg);
            };
            match path.kind {
                WebPathKind::Static => {
                    if path.directory.as_deref().is_none_or(str::is_empty) {
                        p(
                            format!("{pp}.directory"),
                            "missing: a static path serves a \"directory\" (relative to the node directory)".into(),
                        );
                    }
                    if let Err(e) = path.options_as::<StaticOptions>() {
                        options_error(p, e);
                    }
                }
                WebPathKind::Websocket => {
                    if let Err(e) = path.options_as::<WebSocketOptions>() {
                        options_error(p, e);
                    }
                    self.validate_transport(&pp, &t.websocket_path(path), p);
                }
                WebPathKind::Longpoll => match path.options_as::<LongPollOptions>() {
                    Err(e) => options_error(p, e),
                    Ok(o) => {
                        if o.queue_limit_messages == 0 {
                            p(
                                format!("{pp}.options.queue_limit_messages"),
                                "must be at least 1: the router's messages wait for the client's poll in a bounded queue".into(),
                            );
                        }
                        let mut session = t.websocket_path(path);
                        session.options = WebSocketOptions::default();
                        self.validate_transport(&pp, &session, p);
                    }
                },
                WebPathKind::Json => {
                    if path.value.is_none() {
                        p(
                            format!("{pp}.value"),
                            "missing: the JSON value to serve".into(),
                        );
                    }
                    if let Err(e) = path.options_as::<JsonOptions>() {
                        options_error(p, e);
                    }
                }
                WebPathKind::Nodeinfo => {}
                WebPathKind::Archive => {
                    if path.archive.as_deref().is_none_or(str::is_empty) {
                        p(
                            format!("{pp}.archive"),
                            "missing: the zip file to serve (relative to the node directory)"
                                .into(),
                        );
                    }
                    if path.download == Some(true) {
                        p(
                            format!("{pp}.download"),
                            "downloading the archive from its origin is not supported by Trellis yet: fetch it into \"archive\" and remove the key".into(),
                        );
                    }
                    for (k, h) in path.hashes.iter().flatten().enumerate() {
                        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                            p(
                                format!("{pp}.hashes[{k}]"),
                                format!(
                                    "{h:?} is not a SHA-256 fingerprint: expected 64 hex characters (sha256sum's output)"
                                ),
                            );
                        }
                    }
                }
                WebPathKind::Path => {
                    // The paths under it, checked as a web transport's.
                    let inner = TransportConfig {
                        paths: path.paths.clone(),
                        ..t.clone()
                    };
                    match &path.paths {
                        None => p(
                            format!("{pp}.paths"),
                            "missing: the paths under this one".into(),
                        ),
                        Some(_) => self.validate_web_paths(&pp, &inner, p),
                    }
                }
                WebPathKind::Caller | WebPathKind::Publisher | WebPathKind::Webhook => {
                    match path.options_as::<BridgeOptions>() {
                        Err(e) => options_error(p, e),
                        Ok(o) => {
                            let webhook = path.kind == WebPathKind::Webhook;
                            if webhook && o.topic.as_deref().is_none_or(str::is_empty) {
                                p(
                                    format!("{pp}.options.topic"),
                                    "missing: the topic a webhook publishes to".into(),
                                );
                            }
                            for (key, set) in [
                                ("topic", o.topic.is_some()),
                                ("github_secret", o.github_secret.is_some()),
                            ] {
                                if set && !webhook {
                                    p(
                                        format!("{pp}.options.{key}"),
                                        format!("only webhook paths take {key}"),
                                    );
                                }
                            }
                            if webhook && o.key.is_some() {
                                p(
                                    format!("{pp}.options.key"),
                                    "a webhook is signed with github_secret, not key/secret".into(),
                                );
                            }
                            for (key, v) in
                                [("secret", &o.secret), ("github_secret", &o.github_secret)]
                            {
                                if let Some(v) = v {
                                    blank_secret(format!("{pp}.options.{key}"), v, p);
                                }
                            }
                            if o.key.is_some() != o.secret.is_some() {
                                p(
                                    format!("{pp}.options.secret"),
                                    "give both key and secret (signed requests) or neither".into(),
                                );
                            }
                            if let Some(list) = &o.require_ip
                                && let Err(e) = crate::net::Networks::parse(list)
                            {
                                p(format!("{pp}.options.require_ip"), e);
                            }
                            if o.replay_protection
                                && (o.key.is_none() || o.timestamp_delta_limit == 0)
                            {
                                p(
                                    format!("{pp}.options.replay_protection"),
                                    "needs signed requests (key and secret) and a timestamp_delta_limit above 0: a request is remembered for that long".into(),
                                );
                            }
                            if o.post_body_limit > MAX_BRIDGE_BODY {
                                p(
                                    format!("{pp}.options.post_body_limit"),
                                    format!("at most {MAX_BRIDGE_BODY} bytes (0 means that much)"),
                                );
                            }
                        }
                    }
                    match (&path.realm, &path.role) {
                        (None, _) => p(
                            format!("{pp}.realm"),
                            "missing: the realm the bridge joins".into(),
                        ),
                        (_, None) => p(
                            format!("{pp}.role"),
                            "missing: the role the bridge joins with (its permissions apply)"
                                .into(),
                        ),
                        (Some(r), Some(role)) => {
                            if !self.realms.iter().any(|x| &x.name == r) {
                                p(
                                    format!("{pp}.realm"),
                                    format!("realm {r:?} is not defined in this router"),
                                );
                            } else if !self.role_exists(Some(r), role) {
                                p(
                                    format!("{pp}.role"),
                                    format!("role {role:?} is not defined in realm {r:?}"),
                                );
                            }
                        }
                    }
                }
                WebPathKind::Redirect => match path.url.as_deref() {
                    None | Some("") => p(
                        format!("{pp}.url"),
                        "missing: where to redirect (\"https://example.com/\" or \"/other/\")"
                            .into(),
                    ),
                    Some(u) if u.contains(['\r', '\n']) => {
                        p(format!("{pp}.url"), "must be one line".into())
                    }
                    Some(_) => {}
                },
            }
        }
    }

    fn role_exists(&self, realm: Option<&str>, role: &str) -> bool {
        role == "trusted"
            || self
                .realms
                .iter()
                .filter(|r| realm.is_none_or(|n| n == r.name))
                .any(|r| r.roles.iter().any(|x| x.name == role))
    }

    fn validate_auth(&self, pre: &str, t: &TransportConfig, p: &mut dyn FnMut(String, String)) {
        let base = format!("{pre}.auth");
        let Some(auth) = &t.auth else {
            return;
        };
        let verifies_clients = t
            .endpoint
            .tls
            .as_ref()
            .and_then(|x| x.ca_certificates.as_ref())
            .is_some_and(|c| !c.is_empty());
        if auth.cookie.is_some() && t.cookie.is_none() {
            p(
                format!("{base}.cookie"),
                "cookie authentication needs cookie tracking on this WebSocket transport or path: add \"cookie\": {\"store\": {\"type\": \"file\"}} (or memory) beside \"auth\"".into(),
            );
        }
        if auth.tls.is_some() && !verifies_clients {
            p(
                format!("{base}.tls"),
                "TLS client-certificate authentication needs the transport's endpoint.tls with ca_certificates (the CAs client certificates are verified against)".into(),
            );
        }
        if let Some(t) = &auth.token {
            if t.max_age == 0 || t.max_age > 86_400 {
                p(
                    format!("{base}.token.max-age"),
                    "must be between 1 and 86400 seconds".into(),
                );
            }
            if t.query_param.is_empty() {
                p(
                    format!("{base}.token.query-param"),
                    "must not be empty".into(),
                );
            }
            if let Some(role) = &t.role
                && !self.role_exists(None, role)
            {
                p(
                    format!("{base}.token.role"),
                    format!("role {role:?} is not defined in any realm"),
                );
            }
            if t.store.kind == TokenStoreKind::Embedded
                && (t.store.url.is_some() || t.store.database.is_some() || t.store.prefix.is_some())
            {
                p(
                    format!("{base}.token.store"),
                    "url, database and prefix belong to \"type\": \"redis\"".into(),
                );
            }
            if let Some(url) = &t.store.url
                && let Err(e) = check_redis_url(url)
            {
                p(format!("{base}.token.store.url"), e);
            }
            if let Some(url) = &t.store.url
                && url_password(url).is_some_and(blank)
            {
                p(
                    format!("{base}.token.store.url"),
                    "the URL's password is empty: give the Redis password (redis://:PASSWORD@host:port), or leave out the user part for a Redis without one".into(),
                );
            }
        }
        if let Some(pc) = &auth.peercred {
            if t.endpoint.kind != EndpointKind::Unix {
                p(
                    format!("{base}.peercred"),
                    "peer credentials exist only on unix endpoints: use \"endpoint\": {\"type\": \"unix\", ...}".into(),
                );
            }
            if pc.kind != "static" {
                p(
                    format!("{base}.peercred.type"),
                    format!(
                        "peer-credential authentication is \"static\", found {:?}",
                        pc.kind
                    ),
                );
            }
            if pc.principals.is_empty() {
                p(
                    format!("{base}.peercred.principals"),
                    "list at least one user (name or uid)".into(),
                );
            }
            for (user, pr) in &pc.principals {
                self.check_principal(
                    &format!("{base}.peercred.principals.{user}"),
                    &pr.role,
                    pr.realm.as_deref(),
                    p,
                );
            }
        }
        if auth.anonymous.is_none()
            && auth.ticket.is_none()
            && auth.wampcra.is_none()
            && auth.cryptosign.is_none()
            && auth.scram.is_none()
            && auth.tls.is_none()
            && auth.cookie.is_none()
            && auth.token.is_none()
            && auth.peercred.is_none()
        {
            p(
                base.clone(),
                "no authentication method is configured: add anonymous, ticket, wampcra, cryptosign, scram, tls or cookie, or leave \"auth\" out".into(),
            );
        }
        if let Some(an) = &auth.anonymous {
            self.validate_method(
                &format!("{base}.anonymous"),
                &an.as_method(),
                p,
                &mut |_, (), _| {},
            );
            if an.kind != AuthKind::Static && an.authid.is_some() {
                p(
                    format!("{base}.anonymous.authid"),
                    "a dynamic anonymous login takes its authid from the authenticator's answer (or a random one): remove authid or use \"type\": \"static\"".into(),
                );
            }
            if let Some(r) = &an.realm
                && !self.realms.iter().any(|x| &x.name == r)
            {
                p(
                    format!("{base}.anonymous.realm"),
                    format!("realm {r:?} is not defined in this router"),
                );
            }
        }
        if let Some(m) = &auth.ticket {
            self.validate_method(&format!("{base}.ticket"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                blank_secret(format!("{path}.ticket"), &pr.ticket, p);
            });
        }
        if let Some(m) = &auth.wampcra {
            self.validate_method(&format!("{base}.wampcra"), m, p, &mut |path, u, p| {
                self.check_principal(path, &u.role, u.realm.as_deref(), p);
                blank_secret(format!("{path}.secret"), &u.secret, p);
                if let Some(salt) = &u.salt {
                    blank_secret(format!("{path}.salt"), salt, p);
                }
                if u.salt.is_none() && (u.iterations.is_some() || u.keylen.is_some()) {
                    p(format!("{path}.salt"), "iterations and keylen need a salt".into());
                }
                if u.salt.is_none() && u.secret_kind == SecretKind::DerivedKey {
                    p(
                        format!("{path}.secret-kind"),
                        "\"derived-key\" needs the salt (and iterations, keylen) the key was derived with".into(),
                    );
                }
                if u.iterations.is_some_and(|n| n == 0 || n > proto::auth::MAX_ITERATIONS) {
                    p(
                        format!("{path}.iterations"),
                        format!("must be between 1 and {}", proto::auth::MAX_ITERATIONS),
                    );
                }
                if u.keylen.is_some_and(|n| n == 0 || n > 1024) {
                    p(format!("{path}.keylen"), "must be between 1 and 1024 bytes".into());
                }
                if u.extra.as_ref().is_some_and(|e| !e.is_object()) {
                    p(
                        format!("{path}.extra"),
                        "must be a JSON object (it becomes WELCOME's authextra)".into(),
                    );
                }
                if u.authid.as_deref() == Some("") {
                    p(format!("{path}.authid"), "must not be empty".into());
                }
            });
        }
        if let Some(m) = &auth.tls {
            self.validate_method(&format!("{base}.tls"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                if normalized_fingerprint(&pr.certificate_sha1).is_none_or(|f| f.len() != 59) {
                    p(
                        format!("{path}.certificate-sha1"),
                        "expected the certificate's SHA-1 fingerprint: 20 bytes in hex, colons allowed (`openssl x509 -noout -fingerprint -sha1 -in client.crt`)".into(),
                    );
                }
            });
        }
        if let Some(m) = &auth.scram {
            self.validate_method(&format!("{base}.scram"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                if let Err(problems) = pr.credential() {
                    for (key, message) in problems {
                        p(format!("{path}.{key}"), message);
                    }
                }
            });
        }
        if let Some(m) = &auth.cryptosign {
            self.validate_method(&format!("{base}.cryptosign"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                if pr.authorized_keys.is_empty() {
                    p(
                        format!("{path}.authorized_keys"),
                        "list at least one public key".into(),
                    );
                }
                for (k, key) in pr.authorized_keys.iter().enumerate() {
                    if proto::auth::parse_pubkey(key).is_err() {
                        p(
                            format!("{path}.authorized_keys[{k}]"),
                            "not an Ed25519 public key: expected 64 hex characters".into(),
                        );
                    }
                }
            });
        }
    }

    /// Anonymous sessions may join any realm, so the role must exist in all.
    /// Realms a transport's anonymous sessions cannot join, because their
    /// role is not defined there: joining is refused at HELLO, as
    /// Crossbar.io does, and `check` warns.
    fn anonymous_role_warnings(
        &self,
        path: &str,
        t: &TransportConfig,
        out: &mut Vec<ConfigProblem>,
    ) {
        let Some(role) = t.anonymous_role() else {
            return;
        };
        if role == "trusted" {
            return;
        }
        let only = t
            .auth
            .as_ref()
            .and_then(|a| a.anonymous.as_ref())
            .and_then(|a| a.realm.as_deref());
        for (r, realm) in self.realms.iter().enumerate() {
            if only.is_none_or(|o| o == realm.name) && !realm.roles.iter().any(|x| x.name == role) {
                out.push(ConfigProblem {
                    path: path.to_owned(),
                    message: format!(
                        "anonymous sessions get role {role:?}, which realm {:?} does not define (realms[{r}].roles): they cannot join that realm; add the role there if they should",
                        realm.name
                    ),
                });
            }
        }
    }

    fn check_principal(
        &self,
        path: &str,
        role: &str,
        realm: Option<&str>,
        p: &mut dyn FnMut(String, String),
    ) {
        if let Some(r) = realm
            && !self.realms.iter().any(|x| x.name == r)
        {
            p(
                format!("{path}.realm"),
                format!("realm {r:?} is not defined in this router"),
            );
        } else if !self.role_exists(realm, role) {
            let scope = realm.map_or("any realm".to_owned(), |r| format!("realm {r:?}"));
            p(
                format!("{path}.role"),
                format!("role {role:?} is not defined in {scope}"),
            );
        }
    }

    fn validate_method<P>(
        &self,
        path: &str,
        m: &MethodAuth<P>,
        p: &mut dyn FnMut(String, String),
        each: &mut dyn FnMut(&str, &P, Report<'_>),
    ) {
        if m.kind != AuthKind::Function
            && (m.create.is_some() || m.config.is_some() || m.expose_controller.is_some())
        {
            p(
                format!("{path}.create"),
                "only \"type\": \"function\" takes create, config and expose_controller".into(),
            );
        }
        match m.kind {
            AuthKind::Function => {
                match m.create.as_deref() {
                    None => p(
                        format!("{path}.create"),
                        "a function method names the Python function that creates its authenticator, e.g. \"authenticator.create_authenticator\"".into(),
                    ),
                    Some(c) if !c.contains('.') || c.starts_with('.') || c.ends_with('.') => p(
                        format!("{path}.create"),
                        format!("{c:?}: a function is named as module.function"),
                    ),
                    Some(_) => {}
                }
                if m.authenticator.is_some() || m.authenticator_realm.is_some() {
                    p(
                        format!("{path}.authenticator"),
                        "a function method has no authenticator procedure: it is the function named by \"create\"".into(),
                    );
                }
                if !m.principals.is_empty() {
                    p(
                        format!("{path}.principals"),
                        "a function method has no static principals: remove them or use \"type\": \"static\"".into(),
                    );
                }
            }
            AuthKind::Static => {
                if m.authenticator.is_some() || m.authenticator_realm.is_some() {
                    p(
                        format!("{path}.authenticator"),
                        "a static method lists principals; use \"type\": \"dynamic\" for an authenticator".into(),
                    );
                }
                for (authid, pr) in &m.principals {
                    each(&format!("{path}.principals.{authid}"), pr, p);
                }
            }
            AuthKind::Dynamic => {
                match &m.authenticator {
                    None => p(
                        format!("{path}.authenticator"),
                        "a dynamic method needs the URI of its authenticator procedure".into(),
                    ),
                    Some(a) => {
                        if let Err(e) = proto::uri::validate(a, MatchPolicy::Exact, false) {
                            p(
                                format!("{path}.authenticator"),
                                format!("not a valid procedure URI: {e}"),
                            );
                        }
                    }
                }
                if let Some(r) = &m.authenticator_realm
                    && !self.realms.iter().any(|x| &x.name == r)
                {
                    p(
                        format!("{path}.authenticator-realm"),
                        format!("realm {r:?} is not defined in this router"),
                    );
                }
                if !m.principals.is_empty() {
                    p(
                        format!("{path}.principals"),
                        "a dynamic method has no static principals: remove them or use \"type\": \"static\"".into(),
                    );
                }
            }
        }
    }
}

impl TransportConfig {
    /// A web transport's WebSocket path as a transport of its own (the
    /// endpoint is the web transport's).
    pub fn websocket_path(&self, path: &WebPath) -> TransportConfig {
        TransportConfig {
            kind: TransportKind::Websocket,
            id: self.id.clone(),
            endpoint: self.endpoint.clone(),
            serializers: path.serializers.clone(),
            options: path.options_as().unwrap_or_default(),
            auth: path.auth.clone(),
            cookie: path.cookie.clone(),
            allowed_domain: None,
            allowed_ports: None,
            debug: false,
            url: None,
            paths: None,
            internal: false,
            rawsocket: None,
            websocket: None,
            web: None,
        }
    }

    /// A web transport's paths with nested `path` services flattened:
    /// (`api/call`, its path), in order; a nested `/` is its parent's key.
    pub fn flat_paths(&self) -> Vec<(String, &WebPath)> {
        fn walk<'a>(
            prefix: &str,
            paths: &'a BTreeMap<String, WebPath>,
            out: &mut Vec<(String, &'a WebPath)>,
        ) {
            for (name, p) in paths {
                let key = match (prefix.is_empty(), name.as_str()) {
                    (true, n) => n.to_owned(),
                    (false, "/") => prefix.to_owned(),
                    (false, n) => format!("{prefix}/{n}"),
                };
                match (&p.kind, &p.paths) {
                    (WebPathKind::Path, Some(inner)) => walk(&key, inner, out),
                    _ => out.push((key, p)),
                }
            }
        }
        let mut out = Vec::new();
        if let Some(paths) = &self.paths {
            walk("", paths, &mut out);
        }
        out
    }

    /// A `universal` transport as the router serves it: a web transport
    /// with its web paths and WebSocket paths, and its RawSocket part as a
    /// transport of its own (the second, when there is one).
    pub fn universal_parts(&self) -> (TransportConfig, Option<TransportConfig>) {
        let mut paths = self.web.clone().unwrap_or_default().paths;
        for (name, p) in self.websocket.iter().flatten() {
            paths.insert(name.clone(), p.clone());
        }
        let web = TransportConfig {
            kind: TransportKind::Web,
            paths: Some(paths),
            rawsocket: None,
            websocket: None,
            web: None,
            ..self.clone()
        };
        let raw = self.rawsocket.as_ref().map(|r| TransportConfig {
            kind: TransportKind::Rawsocket,
            serializers: r.serializers.clone(),
            options: r.options.clone().unwrap_or_default(),
            auth: r.auth.clone(),
            paths: None,
            rawsocket: None,
            websocket: None,
            web: None,
            ..self.clone()
        });
        (web, raw)
    }

    /// The serializers this transport offers, in the router's order.
    pub fn serializer_list(&self) -> Vec<proto::Serializer> {
        match &self.serializers {
            None => proto::Serializer::ALL.to_vec(),
            Some(names) => names
                .iter()
                .filter_map(|n| proto::Serializer::from_name(n))
                .collect(),
        }
    }

    /// The role anonymous sessions on this transport get, when the config
    /// gives it (not when an authenticator decides).
    pub fn anonymous_role(&self) -> Option<&str> {
        match &self.auth {
            None => Some("anonymous"),
            Some(a) => a
                .anonymous
                .as_ref()
                .filter(|x| x.kind == AuthKind::Static)
                .map(|x| x.role.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> RouterConfig {
        serde_json::from_str(json).expect("valid config")
    }

    #[test]
    fn version_1_permissions_and_starred_uris_are_read() {
        let cfg = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                {"uri": "com.example.*", "call": true, "subscribe": true},
                {"uri": "*", "publish": true},
                {"uri": "com.*.status", "register": true},
                {"uri": "com.exact", "call": true},
                {"uri": "com.pre.", "match": "prefix", "allow": {"call": true}}
            ]}]}], "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 1}}]}"#,
        );
        let perms = &cfg.realms[0].roles[0].permissions;
        let got: Vec<(&str, MatchPolicy)> = perms
            .iter()
            .map(|p| (p.uri.as_str(), p.match_policy))
            .collect();
        assert_eq!(
            got,
            [
                ("com.example.", MatchPolicy::Prefix),
                ("", MatchPolicy::Prefix),
                ("com..status", MatchPolicy::Wildcard),
                ("com.exact", MatchPolicy::Exact),
                ("com.pre.", MatchPolicy::Prefix),
            ]
        );
        assert!(perms[0].allow.call && perms[0].allow.subscribe && !perms[0].allow.register);
        assert!(perms[1].allow.publish && !perms[1].allow.call);
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let both: Result<RouterConfig, _> = serde_json::from_str(
            r#"{"realms": [{"name": "r", "roles": [{"name": "a", "permissions": [
                {"uri": "x", "call": true, "allow": {"call": true}}]}]}], "transports": []}"#,
        );
        let e = both.unwrap_err().to_string();
        assert!(e.contains("keep one form"), "{e}");
    }

    #[test]
    fn crossbar_configs_trellis_used_to_refuse() {
        // A web-only router, a WebSocket path with debug, a router
        // component without role, an empty exact URI, a realm without the
        // anonymous role, anonymous auth with a realm.
        let cfg = parse(
            r#"{"realms": [], "transports": [{"type": "web", "endpoint": {"type": "tcp", "port": 1},
                "paths": {"/": {"type": "static", "directory": "web"},
                          "ws": {"type": "websocket", "debug": true}}}]}"#,
        );
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let cfg = parse(
            r#"{"realms": [
                  {"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                      {"uri": "", "match": "exact", "allow": {"call": true}}]}]},
                  {"name": "realm2", "roles": [{"name": "user"}]}],
                "components": [{"type": "class", "classname": "trellis.example.BalloonBackend", "realm": "realm1"}],
                "transports": [
                  {"type": "websocket", "endpoint": {"type": "tcp", "port": 1}},
                  {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 2},
                   "auth": {"anonymous": {"type": "static", "role": "anonymous", "realm": "realm1"}}}]}"#,
        );
        assert_eq!(cfg.components[0].role, "anonymous");
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let warnings = cfg.warnings();
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "transports[0].auth",
                "realms[0].roles[0].permissions[0].uri"
            ],
            "the rawsocket's anonymous sessions only go to realm1: {warnings:?}"
        );
        assert!(
            warnings[0].message.contains("cannot join that realm"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].message.contains("matches no URI"),
            "{warnings:?}"
        );
        // A web transport's WebSocket path is checked the same way.
        let web = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}], "transports": [
                {"type": "web", "endpoint": {"type": "tcp", "port": 3}, "paths": {
                    "ws": {"type": "websocket", "auth": {"anonymous": {"type": "static", "role": "ghost"}}}}}]}"#,
        );
        assert!(web.validate().is_empty(), "{:?}", web.validate());
        let w = web.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "transports[0].paths.\"ws\".auth");
        assert!(w[0].message.contains("\"ghost\""), "{w:?}");
        let bad = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}], "transports": [
                {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 2},
                 "auth": {"anonymous": {"type": "static", "role": "anonymous", "realm": "nowhere"}}}]}"#,
        );
        let problems = bad.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "transports[0].auth.anonymous.realm");
    }

    #[test]
    fn secrets_may_name_environment_variables() {
        assert_eq!(env_placeholder("${MY_TICKET}"), Some("MY_TICKET"));
        assert_eq!(env_placeholder("$MY_TICKET"), Some("MY_TICKET"));
        for literal in ["secret", "$", "${}", "${1X}", "$a-b", "pa$$word", "${X"] {
            assert_eq!(env_placeholder(literal), None, "{literal}");
        }
        let mut cfg = parse(
            r#"{"realms": [], "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 1},
                "auth": {"ticket": {"type": "static", "principals": {
                    "joe": {"ticket": "${JOE_TICKET}", "role": "r"},
                    "ann": {"ticket": "$NOT_SET", "role": "r"},
                    "bob": {"ticket": "plain", "role": "r"}}}}}]}"#,
        );
        let env = |v: &str| (v == "JOE_TICKET").then(|| "from-env".to_owned());
        let problems = cfg.resolve_env(&env);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].path,
            "transports[0].auth.ticket.principals.ann.ticket"
        );
        assert!(
            problems[0].message.contains("NOT_SET, which is not set"),
            "{problems:?}"
        );
        let principals = &cfg.transports[0]
            .auth
            .as_ref()
            .and_then(|a| a.ticket.as_ref())
            .expect("ticket")
            .principals;
        assert_eq!(principals["joe"].ticket, "from-env");
        assert_eq!(principals["bob"].ticket, "plain");
    }

    #[test]
    fn crossbar_realm_options_and_stats_are_read() {
        let cfg = parse(
            r#"{"realms": [{"name": "realm1", "roles": [],
                 "options": {"enable_meta_api": false, "bridge_meta_api": true,
                             "event_dispatching_chunk_size": 100, "uri_check": "loose"},
                 "stats": {"rated_message_size": 512, "trigger_after_rated_messages": 100}},
                {"name": "realm2", "roles": [],
                 "options": {"event_dispatching_chunk_size": 0},
                 "stats": {"rated_message_size": 300}}],
                "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 1}}]}"#,
        );
        let paths: Vec<String> = cfg.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "realms[1].options.event_dispatching_chunk_size",
                "realms[1].stats.rated_message_size",
                "realms[1].stats",
            ],
            "{paths:?}"
        );
        let warned: Vec<String> = cfg.warnings().into_iter().map(|p| p.path).collect();
        for key in [
            "enable_meta_api",
            "bridge_meta_api",
            "event_dispatching_chunk_size",
        ] {
            assert!(
                warned.contains(&format!("realms[0].options.{key}")),
                "{key}: {warned:?}"
            );
        }
    }

    #[test]
    fn empty_secrets_are_refused_with_their_key_and_variable() {
        let mut cfg = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "r", "permissions": []}]}],
                "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 1},
                "auth": {
                  "ticket": {"type": "static", "principals": {
                    "envempty": {"ticket": "${EMPTY_TICKET}", "role": "r"},
                    "envspace": {"ticket": "$SPACE_TICKET", "role": "r"},
                    "literal": {"ticket": "", "role": "r"},
                    "spaces": {"ticket": "  \t", "role": "r"},
                    "good": {"ticket": "t0p", "role": "r"}}},
                  "wampcra": {"type": "static", "users": {
                    "nosecret": {"secret": "", "role": "r"},
                    "nosalt": {"secret": "pw", "salt": " ", "role": "r"},
                    "good": {"secret": "pw", "salt": "s", "role": "r"}}},
                  "token": {"store": {"type": "redis", "url": "redis://:@127.0.0.1:6379"}}}},
               {"type": "web", "endpoint": {"type": "tcp", "port": 2}, "paths": {
                  "call": {"type": "caller", "realm": "realm1", "role": "r",
                           "options": {"key": "k", "secret": ""}},
                  "hook": {"type": "webhook", "realm": "realm1", "role": "r",
                           "options": {"topic": "t", "github_secret": " "}}}}]}"#,
        );
        let env = |v: &str| match v {
            "EMPTY_TICKET" => Some(String::new()),
            "SPACE_TICKET" => Some("   ".to_owned()),
            _ => None,
        };
        let mut problems = cfg.resolve_env(&env);
        problems.extend(cfg.validate());
        let find = |path: &str| {
            problems
                .iter()
                .find(|p| p.path == path)
                .unwrap_or_else(|| panic!("no problem at {path}: {problems:?}"))
        };
        let e = find("transports[0].auth.ticket.principals.envempty.ticket");
        assert!(
            e.message.contains("EMPTY_TICKET, which is set but empty"),
            "{e:?}"
        );
        let e = find("transports[0].auth.ticket.principals.envspace.ticket");
        assert!(e.message.contains("SPACE_TICKET"), "{e:?}");
        for path in [
            "transports[0].auth.ticket.principals.literal.ticket",
            "transports[0].auth.ticket.principals.spaces.ticket",
            "transports[0].auth.wampcra.principals.nosecret.secret",
            "transports[0].auth.wampcra.principals.nosalt.salt",
            "transports[1].paths.call.options.secret",
            "transports[1].paths.hook.options.github_secret",
        ] {
            assert!(find(path).message.contains("must not be empty"), "{path}");
        }
        assert!(
            find("transports[0].auth.token.store.url")
                .message
                .contains("password is empty")
        );
        assert!(
            !problems.iter().any(|p| p.path.contains(".good.")),
            "{problems:?}"
        );
        // Each empty secret is reported once, not again by validate.
        assert_eq!(
            problems
                .iter()
                .filter(|p| p.path.contains("envempty"))
                .count(),
            1,
            "{problems:?}"
        );
        assert_eq!(url_password("redis://:pw@h:1/0"), Some("pw"));
        assert_eq!(url_password("redis://h:1"), None);
        assert_eq!(url_password("redis://user@h"), None);
    }

    #[test]
    fn redis_urls_as_the_redis_client_takes_them() {
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://:pw@h:1/0",
            "rediss://cache.example.com/3",
            "unix:///run/redis.sock",
            "redis+unix:///run/redis.sock",
        ] {
            assert_eq!(check_redis_url(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("127.0.0.1:6379", "invalid Redis URL"),
            ("ftp://h/", "scheme \"ftp\""),
            ("not a url", "invalid Redis URL"),
            ("http://h:1", "scheme \"http\""),
            ("redis://h:1/cache", "database number"),
            ("redis:///0", "no host"),
            ("unix://", "no socket path"),
        ] {
            let e = check_redis_url(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn overlapping_rules_are_warned_about() {
        let cfg = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "r", "permissions": [
                {"uri": "com.", "match": "prefix", "allow": {"call": true}},
                {"uri": "com..private", "match": "wildcard", "allow": {}},
                {"uri": "com.a.", "match": "wildcard", "allow": {"publish": true}},
                {"uri": "org.", "match": "prefix", "allow": {"call": true}},
                {"uri": "org..x", "match": "wildcard", "allow": {"call": true}},
                {"uri": "com.app.ping", "allow": {}}
            ]}]}], "transports": []}"#,
        );
        let w = cfg.warnings();
        let paths: Vec<&str> = w.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "realms[0].roles[0].permissions[0] and permissions[1]",
                "realms[0].roles[0].permissions[0] and permissions[2]",
                "realms[0].roles[0].permissions[1] and permissions[2]",
            ],
            "{w:#?}"
        );
        assert!(
            w[0].message
                .contains("wildcard \"com..private\" and prefix \"com.\"")
                && w[0].message.contains("the wildcard decides"),
            "{}",
            w[0].message
        );
        assert!(
            w[2].message
                .contains("more (and earlier) concrete components")
        );
    }

    #[test]
    fn crossbar_shaped_router_parses() {
        let cfg = parse(
            r#"{
                "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                    {"uri": "", "match": "prefix",
                     "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
                     "disclose": {"caller": false, "publisher": false}, "cache": true}]}]}],
                "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 8080},
                    "serializers": ["json", "msgpack"],
                    "auth": {"anonymous": {"type": "static", "role": "anonymous"}}}]
            }"#,
        );
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        assert_eq!(
            cfg.transports[0].serializer_list(),
            vec![proto::Serializer::Json, proto::Serializer::MsgPack]
        );
    }

    #[test]
    fn problems_are_all_reported_with_paths() {
        let cfg = parse(
            r#"{"realms": [{"name": "realm 1", "roles": [{"name": "x", "permissions": [{"uri": "a..b", "allow": {}}]}]}],
                "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 1, "version": 5}, "serializers": ["xml"]}]}"#,
        );
        let paths: Vec<String> = cfg.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "realms[0].name",
                "realms[0].roles[0].permissions[0].uri",
                "transports[0].serializers[0]",
                "transports[0].endpoint.version"
            ]
        );
    }

    #[test]
    fn endpoint_kinds_and_peer_credentials_are_checked() {
        let cfg = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "backend"}]}],
                "transports": [
                  {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 1, "mode": "0600"},
                   "auth": {"peercred": {"principals": {"1000": {"role": "backend"}}}}},
                  {"type": "rawsocket", "endpoint": {"type": "unix", "path": "r.sock", "mode": "rw", "port": 2},
                   "auth": {"peercred": {"principals": {"root": {"role": "ghost"}}}}},
                  {"type": "rawsocket", "endpoint": {"type": "tcp"}, "auth": {"peercred": {"principals": {}}}}
                ]}"#,
        );
        let problems: Vec<String> = cfg
            .validate()
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let text = problems.join("\n");
        for want in [
            "transports[0].endpoint.mode: only unix endpoints have a mode",
            "transports[0].auth.peercred: peer credentials exist only on unix endpoints",
            "transports[1].endpoint.mode: \"rw\" is not a file mode",
            "transports[1].endpoint.port: unix endpoints have no port",
            "transports[1].auth.peercred.principals.root.role",
            "transports[2].endpoint.port: missing: a tcp endpoint needs a \"port\"",
            "transports[2].auth.peercred.principals: list at least one user",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("1777"), None);
        assert_eq!(parse_mode(""), None);
    }

    #[test]
    fn write_buffer_size_defaults_by_transport_and_is_bounded() {
        let cfg = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}],
                "transports": [
                  {"type": "websocket", "endpoint": {"type": "tcp", "port": 1}},
                  {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 2}},
                  {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 3}, "options": {"write_buffer_size": 0}},
                  {"type": "websocket", "endpoint": {"type": "tcp", "port": 4}, "options": {"write_buffer_size": 16777217}}
                ]}"#,
        );
        let sizes: Vec<usize> = cfg
            .transports
            .iter()
            .map(|t| t.options.write_buffer_for(t.kind))
            .collect();
        assert_eq!(
            sizes,
            [
                WEBSOCKET_WRITE_BUFFER,
                RAWSOCKET_WRITE_BUFFER,
                0,
                MAX_WRITE_BUFFER + 1
            ]
        );
        let problems: Vec<String> = cfg
            .validate()
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("transports[3].options.write_buffer_size: 16777217 bytes is more than the 16777216 allowed (leave it out for the default: 262144 on WebSocket, 65536 on RawSocket)"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            serde_json::from_str::<RouterConfig>(r#"{"realms": [{"name": "r", "rolez": []}]}"#)
                .unwrap_err();
        assert!(err.to_string().contains("rolez"), "{err}");
    }
}
