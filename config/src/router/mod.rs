//! The router worker's part of `node.json`, in Crossbar.io's shape.
//!
//! Parsed with `deny_unknown_fields` everywhere, so a misspelt key is an
//! error that names the key, never silently ignored. Cross-reference checks
//! (a transport's auth role exists in every realm, ...) are in
//! [`RouterConfig::validate`]; the controller adds file names and key paths.

use std::collections::BTreeMap;

use proto::uri::MatchPolicy;
use serde::{Deserialize, Serialize};

mod auth;
mod cluster;
mod mqtt;
mod realm;
mod transport;
mod web;

pub use auth::*;
pub use cluster::*;
pub use mqtt::Mapping;
pub use realm::*;
pub use transport::*;
pub use web::*;

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
    /// Crossbar.io's component id (for its management API); accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Crossbar.io's references to the router's database connections
    /// (`"connection:ID"`): read only to name them as not supported.
    #[serde(default, skip_serializing)]
    pub references: Option<serde_json::Value>,
}

impl RouterComponentConfig {
    /// A Python class rather than a built-in (`trellis.` classnames).
    pub fn is_python(&self) -> bool {
        !self.classname.starts_with("trellis.")
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
                ("mqtt", t.mqtt.is_some()),
            ] {
                if set && t.kind != TransportKind::Universal {
                    p(
                        format!("{pre}.{key}"),
                        format!("only universal transports have a \"{key}\" part"),
                    );
                }
            }
            if t.kind != TransportKind::Mqtt {
                for (key, set) in mqtt::mqtt_keys(&t.options) {
                    if set {
                        p(
                            format!("{pre}.options.{key}"),
                            format!("only mqtt transports take {key}"),
                        );
                    }
                }
            }
            match t.kind {
                TransportKind::Mqtt => self.validate_mqtt(&pre, t, &mut p),
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
                if store.kind == realm::StoreKind::Cfxdb {
                    out.push(ConfigProblem {
                        path: format!("realms[{i}].store.type"),
                        message: "Crossbar.io's \"cfxdb\" store keeps the event history on disk, across restarts; Trellis keeps the same history (event-history, call-queue, limits) in memory, lost when the router restarts".into(),
                    });
                }
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
                            "path",
                            store.path.is_some(),
                            "the store is kept in memory, not in a database directory",
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
            ubjson_warnings(i, t, &mut out);
            let cookies = std::iter::once((format!("transports[{i}].cookie"), &t.cookie)).chain(
                t.paths
                    .iter()
                    .flatten()
                    .map(|(name, wp)| (format!("transports[{i}].paths.{name}.cookie"), &wp.cookie)),
            );
            for (at, c) in cookies {
                if c.as_ref().and_then(|c| c.http_strict) == Some(false) {
                    out.push(ConfigProblem {
                        path: format!("{at}.http_strict"),
                        message: "Trellis always marks the tracking cookie HttpOnly (page scripts cannot read it); false is not honoured".into(),
                    });
                }
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

/// Crossbar.io's UBJSON serializer, which Trellis does not have: listed
/// serializers named `ubjson` are accepted and not offered (clients that
/// also speak another serializer use it), with a warning each.
fn ubjson_warnings(i: usize, t: &TransportConfig, out: &mut Vec<ConfigProblem>) {
    let mut lists: Vec<(String, &Vec<String>)> = Vec::new();
    let pre = format!("transports[{i}]");
    if let Some(l) = &t.serializers {
        lists.push((format!("{pre}.serializers"), l));
    }
    if let Some(l) = t.rawsocket.as_ref().and_then(|r| r.serializers.as_ref()) {
        lists.push((format!("{pre}.rawsocket.serializers"), l));
    }
    let paths = [
        ("websocket", t.websocket.as_ref()),
        ("paths", t.paths.as_ref()),
        ("web.paths", t.web.as_ref().map(|w| &w.paths)),
    ];
    for (under, group) in paths {
        for (name, p) in group.into_iter().flatten() {
            if let Some(l) = &p.serializers {
                lists.push((format!("{pre}.{under}.{name}.serializers"), l));
            }
        }
    }
    for (at, list) in lists {
        for (j, s) in list.iter().enumerate() {
            if s == UBJSON {
                out.push(ConfigProblem {
                    path: format!("{at}[{j}]"),
                    message: "accepted and not offered: Trellis has no UBJSON serializer (Crossbar.io's examples list it beside json, msgpack and cbor, which clients then use)".into(),
                });
            }
        }
    }
}

/// Crossbar.io's UBJSON serializer's name.
pub(crate) const UBJSON: &str = "ubjson";

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

/// An octal file mode (`"0660"`), at most `0o777`.
pub fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777 && !s.is_empty())
}

/// Where validation helpers report a problem: (key path, message).
type Report<'a> = &'a mut dyn FnMut(String, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossbars_ubjson_is_accepted_and_not_offered() {
        let cfg = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}],
                "transports": [{"type": "universal", "endpoint": {"type": "tcp", "port": 8080},
                    "rawsocket": {"serializers": ["cbor", "msgpack", "ubjson", "json"]},
                    "websocket": {"ws": {"type": "websocket", "serializers": ["ubjson", "json"]}}}]}"#,
        );
        assert_eq!(cfg.validate(), vec![]);
        let warned: Vec<String> = cfg.warnings().into_iter().map(|w| w.path).collect();
        assert_eq!(
            warned,
            [
                "transports[0].rawsocket.serializers[2]",
                "transports[0].websocket.ws.serializers[0]"
            ]
        );
        let (web, raw) = cfg.transports[0].universal_parts();
        assert_eq!(
            raw.expect("rawsocket").serializer_list(),
            [
                proto::Serializer::Cbor,
                proto::Serializer::MsgPack,
                proto::Serializer::Json
            ]
        );
        let ws = web.websocket_path(&web.paths.as_ref().expect("paths")["ws"]);
        assert_eq!(ws.serializer_list(), [proto::Serializer::Json]);
        let only = parse(
            r#"{"realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}],
                "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 8080},
                    "serializers": ["ubjson"]}]}"#,
        );
        let problems = only.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("no other"), "{problems:?}");
    }

    #[test]
    fn secrets_named_by_environment_variables_and_blank_secrets() {
        assert_eq!(env_placeholder("${TICKET}"), Some("TICKET"));
        assert_eq!(env_placeholder("$ROUTER_SECRET_2"), Some("ROUTER_SECRET_2"));
        assert_eq!(env_placeholder("$2x"), None, "not a variable name");
        assert_eq!(env_placeholder("${A-B}"), None);
        assert_eq!(env_placeholder("pa$$word"), None, "a $ inside is a secret");
        assert!(blank("") && blank(" \t") && !blank(" x "));
    }

    #[test]
    fn file_modes_are_octal_and_at_most_0777() {
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("777"), Some(0o777));
        assert_eq!(parse_mode("1777"), None, "no sticky or setuid bits");
        assert_eq!(parse_mode("0698"), None, "not octal");
        assert_eq!(parse_mode(""), None);
    }

    fn parse(json: &str) -> RouterConfig {
        let mut cfg: RouterConfig = serde_json::from_str(json).expect("valid config");
        let problems = cfg.plan_options();
        assert!(problems.is_empty(), "{problems:?}");
        cfg
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
