//! The container worker's part of the node config, in Crossbar.io's shape.

use serde::Deserialize;

/// A container worker: the components it hosts.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Components, each its own WAMP session to a router.
    #[serde(default)]
    pub components: Vec<ComponentConfig>,
    /// The interpreter for Python components (`options.python`), filled in
    /// by the controller; not a key of the container itself.
    #[serde(default, rename = "_python", skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Directories put on the Python path (`options.pythonpath`), absolute
    /// (resolved against the node directory by the controller).
    #[serde(default, rename = "_pythonpath", skip_serializing_if = "Vec::is_empty")]
    pub pythonpath: Vec<String>,
    /// Crossbar.io's `options.shutdown` mode, filled in by the controller.
    #[serde(default, rename = "_shutdown", skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<String>,
}

impl ContainerConfig {
    /// The components that are Python classes (not Trellis built-ins).
    pub fn python_components(&self) -> impl Iterator<Item = (usize, &ComponentConfig)> {
        self.components
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_python())
    }
}

/// A component in a container, in Crossbar.io's shape.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Must be `class`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Crossbar.io's component id (for its management API); accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A built-in component (see [`crate::component::CLASSNAMES`]), or a
    /// Python class as `package.module.Class`, imported from the
    /// container's `options.pythonpath`. Absent for `function` components.
    #[serde(default)]
    pub classname: String,
    /// `"type": "function"`: Python functions called on the session's
    /// `join`, `leave`, `connect`, `disconnect`, as `package.module.func`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callbacks: Option<std::collections::BTreeMap<String, String>>,
    /// The realm to join.
    pub realm: String,
    /// How to reach the router. Absent: the controller fills in a Unix-
    /// socket RawSocket transport of a router of the node that has the
    /// realm.
    #[serde(default)]
    pub transport: Option<ComponentTransport>,
    /// Credentials; none means anonymous (or peer credentials on a Unix
    /// socket).
    #[serde(default)]
    pub auth: Option<ComponentAuth>,
    /// Free-form data for the component.
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
}

/// A component's connection to a router transport, in Crossbar.io's
/// shape: RawSocket (built-in and Python components) or WebSocket (Python
/// components).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentTransport {
    /// `rawsocket` or `websocket`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Crossbar.io's transport id; accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Crossbar.io's RawSocket `debug` switch; accepted (Trellis's log
    /// level decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// `{"type": "unix", "path": "router1.sock"}` (relative to the node
    /// directory) or `{"type": "tcp", "host": "127.0.0.1", "port": 8081}`.
    pub endpoint: ComponentEndpoint,
    /// RawSocket: `json` (default), `msgpack` or `cbor`.
    #[serde(default)]
    pub serializer: Option<String>,
    /// WebSocket: the serializers to offer.
    #[serde(default)]
    pub serializers: Option<Vec<String>>,
    /// WebSocket: the URL (`ws://127.0.0.1:8080/ws`).
    #[serde(default)]
    pub url: Option<String>,
    /// Crossbar.io's transport options; accepted.
    #[serde(default)]
    pub options: Option<serde_json::Value>,
}

impl ComponentTransport {
    /// What is wrong with this transport of a (Python if `python`)
    /// component under `pre`.
    fn problems(&self, pre: &str, python: bool, err: &mut impl FnMut(String, String)) {
        match (self.kind.as_str(), python) {
            ("rawsocket", _) | ("websocket", true) => {}
            ("websocket", false) => err(
                format!("{pre}.transport.type"),
                "the built-in components connect over \"rawsocket\"".into(),
            ),
            (other, _) => err(
                format!("{pre}.transport.type"),
                format!("components connect over \"rawsocket\" or \"websocket\", found {other:?}"),
            ),
        }
        if let Some(s) = &self.serializer
            && proto::Serializer::from_name(s).is_none()
        {
            err(
                format!("{pre}.transport.serializer"),
                format!("unknown serializer {s:?}: expected \"json\", \"msgpack\" or \"cbor\""),
            );
        }
        let e = &self.endpoint;
        if let Some(tls) = &e.tls {
            let at = format!("{pre}.transport.endpoint.tls");
            if !python {
                err(
                    at.clone(),
                    "the built-in components connect to a router of the node, without TLS: remove it"
                        .into(),
                );
            } else if e.kind != "tcp" {
                err(at.clone(), "only tcp endpoints take tls".into());
            }
            if tls.certificate.is_some() != tls.key.is_some() {
                err(
                    at,
                    "give \"certificate\" and \"key\" together: the component's certificate and its key".into(),
                );
            }
            if let Some(url) = &self.url
                && url.starts_with("ws://")
            {
                err(
                    format!("{pre}.transport.url"),
                    format!(
                        "{url:?} is plain WebSocket, and the endpoint has tls: write it wss://"
                    ),
                );
            }
        }
        match e.kind.as_str() {
            "unix" if e.path.as_deref().is_some_and(|p| !p.is_empty()) => {}
            "unix" => err(
                format!("{pre}.transport.endpoint.path"),
                "missing: the router's socket file".into(),
            ),
            "tcp" if e.port.is_some() => {}
            "tcp" => err(
                format!("{pre}.transport.endpoint.port"),
                "missing: the router's RawSocket port".into(),
            ),
            other => err(
                format!("{pre}.transport.endpoint.type"),
                format!("expected \"unix\" or \"tcp\", found {other:?}"),
            ),
        }
    }

    /// The URL a Python component connects to: `ws://…`, `rs://host:port`,
    /// or `unix:PATH` with the transport type (the launcher's terms).
    pub fn url(&self, node_dir: &std::path::Path) -> String {
        let e = &self.endpoint;
        let ws = self.kind == "websocket";
        match e.kind.as_str() {
            // A relative path stays relative (the launcher runs in the node
            // directory): a Unix socket's path may not pass 107 bytes, and
            // a long node directory must not push it over.
            "unix" => {
                let path = std::path::Path::new(e.path.as_deref().unwrap_or_default());
                if path.is_relative() {
                    format!("unix:{}", path.display())
                } else {
                    format!("unix:{}", node_dir.join(path).display())
                }
            }
            _ => {
                let host = e.host.as_deref().unwrap_or("127.0.0.1");
                let port = e.port.unwrap_or(0);
                let tls = e.tls.is_some();
                match (&self.url, ws) {
                    (Some(u), true) => u.clone(),
                    (None, true) if tls => format!("wss://{host}:{port}/ws"),
                    (None, true) => format!("ws://{host}:{port}/ws"),
                    (_, false) if tls => format!("rss://{host}:{port}"),
                    (_, false) => format!("rs://{host}:{port}"),
                }
            }
        }
    }
}

/// Where a component connects.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEndpoint {
    /// `unix` or `tcp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `unix`: the socket file.
    #[serde(default)]
    pub path: Option<String>,
    /// `tcp`: the host (default 127.0.0.1).
    #[serde(default)]
    pub host: Option<String>,
    /// `tcp`: the port.
    #[serde(default)]
    pub port: Option<u16>,
    /// `tcp`: IP version; accepted.
    #[serde(default)]
    pub version: Option<u8>,
    /// Seconds to connect; accepted.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// `tcp`: TLS to the router (Python components), as Crossbar.io's
    /// connecting endpoints take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ComponentTls>,
}

/// A connecting endpoint's `tls`, in Crossbar.io's shape: files relative
/// to the node directory.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentTls {
    /// The name the router's certificate must have; the endpoint's host
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The component's own certificate (PEM), for routers that ask for
    /// one; with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The key of `certificate` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The CAs (PEM) the router's certificate is checked against; the
    /// system's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<Vec<String>>,
}

impl ComponentTls {
    /// Every file it names, with its key under `tls`.
    pub fn files_mut(&mut self) -> Vec<(String, &mut String)> {
        let mut out = Vec::new();
        if let Some(c) = &mut self.certificate {
            out.push(("certificate".to_owned(), c));
        }
        if let Some(k) = &mut self.key {
            out.push(("key".to_owned(), k));
        }
        for (i, c) in self.ca_certificates.iter_mut().flatten().enumerate() {
            out.push((format!("ca_certificates[{i}]"), c));
        }
        out
    }
}

/// A component's credentials (never in code): an authid and a ticket given
/// inline or, better, named by an environment variable of the node.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentAuth {
    /// The authid to announce.
    #[serde(default)]
    pub authid: Option<String>,
    /// A ticket.
    #[serde(default)]
    pub ticket: Option<String>,
    /// The environment variable holding the ticket.
    #[serde(default)]
    pub ticket_env: Option<String>,
}

impl ComponentConfig {
    /// A Python class or functions rather than a built-in (`trellis.`
    /// classnames).
    pub fn is_python(&self) -> bool {
        self.kind == "function"
            || self.kind == "authenticators"
            || !self.classname.starts_with("trellis.")
    }

    /// How the launcher names it in the log: the classname, or the
    /// functions of a `function` component.
    pub fn python_name(&self) -> String {
        match &self.callbacks {
            Some(_) if self.kind == "authenticators" => "function authenticators".into(),
            Some(cb) if self.kind == "function" => {
                cb.values().cloned().collect::<Vec<_>>().join("+")
            }
            _ => self.classname.clone(),
        }
    }

    /// What is wrong with this component's config, as (key path under
    /// `pre`, message) pairs; empty when it is fine.
    pub fn problems(&self, pre: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push((path, message));
        match self.kind.as_str() {
            "class" if self.callbacks.is_some() => err(
                format!("{pre}.callbacks"),
                "a \"class\" component has no callbacks: use \"type\": \"function\"".into(),
            ),
            "class" if self.classname.is_empty() => err(
                format!("{pre}.classname"),
                "missing: a class component names its class (package.module.Class)".into(),
            ),
            "class" => {}
            "function" => match &self.callbacks {
                None => err(
                    format!("{pre}.callbacks"),
                    "missing: a function component names its functions, e.g. {\"join\": \"app.on_join\"}".into(),
                ),
                Some(cb) => {
                    for (event, func) in cb {
                        if !["join", "leave", "connect", "disconnect"].contains(&event.as_str()) {
                            err(
                                format!("{pre}.callbacks.{event}"),
                                "unknown callback: expected join, leave, connect or disconnect".into(),
                            );
                        }
                        if !func.contains('.') {
                            err(
                                format!("{pre}.callbacks.{event}"),
                                format!("{func:?}: a function is named as module.function"),
                            );
                        }
                    }
                }
            },
            other => err(
                format!("{pre}.type"),
                format!("must be \"class\" or \"function\", found {other:?}"),
            ),
        }
        if self.kind == "class"
            && !self.is_python()
            && !crate::component::CLASSNAMES.contains(&self.classname.as_str())
        {
            err(
                format!("{pre}.classname"),
                format!(
                    "unknown component {:?}: Trellis's built-in components are {} (any other classname is a Python class, package.module.Class)",
                    self.classname,
                    crate::component::CLASSNAMES.join(", ")
                ),
            );
        }
        if self.kind == "class"
            && self.is_python()
            && !self.classname.is_empty()
            && !self.classname.contains('.')
        {
            err(
                format!("{pre}.classname"),
                format!(
                    "{:?}: a Python component is named as module.Class (package.module.Class)",
                    self.classname
                ),
            );
        }
        if self.is_python() && self.auth.is_some() {
            err(
                format!("{pre}.auth"),
                "a Python component authenticates itself (onConnect/onChallenge), as under Crossbar.io: remove \"auth\"".into(),
            );
        }
        if let Some(t) = &self.transport {
            t.problems(pre, self.is_python(), &mut err);
        }
        if let Some(a) = &self.auth
            && a.ticket.is_some()
            && a.ticket_env.is_some()
        {
            err(
                format!("{pre}.auth"),
                "give ticket or ticket_env, not both".into(),
            );
        }
        errors
    }
}
