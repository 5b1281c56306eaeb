//! The container worker's part of the node config, in Crossbar.io's shape.

use serde::Deserialize;

/// A container worker: the components it hosts.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Components, each its own WAMP session to a router.
    #[serde(default)]
    pub components: Vec<ComponentConfig>,
}

/// A component in a container, in Crossbar.io's shape.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Must be `class`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A built-in component (see [`crate::components::CLASSNAMES`]).
    pub classname: String,
    /// The realm to join.
    pub realm: String,
    /// How to reach the router.
    pub transport: ComponentTransport,
    /// Credentials; none means anonymous (or peer credentials on a Unix
    /// socket).
    #[serde(default)]
    pub auth: Option<ComponentAuth>,
    /// Free-form data for the component.
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
}

/// A component's connection: RawSocket to a router transport.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentTransport {
    /// Must be `rawsocket`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `{"type": "unix", "path": "router1.sock"}` (relative to the node
    /// directory) or `{"type": "tcp", "host": "127.0.0.1", "port": 8081}`.
    pub endpoint: ComponentEndpoint,
    /// `json` (default), `msgpack` or `cbor`.
    #[serde(default)]
    pub serializer: Option<String>,
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
    /// What is wrong with this component's config, as (key path under
    /// `pre`, message) pairs; empty when it is fine.
    pub fn problems(&self, pre: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push((path, message));
        if self.kind != "class" {
            err(
                format!("{pre}.type"),
                format!("must be \"class\", found {:?}", self.kind),
            );
        }
        if !crate::components::CLASSNAMES.contains(&self.classname.as_str()) {
            err(
                format!("{pre}.classname"),
                format!(
                    "unknown component {:?}: Trellis hosts the built-in components {}",
                    self.classname,
                    crate::components::CLASSNAMES.join(", ")
                ),
            );
        }
        if self.transport.kind != "rawsocket" {
            err(
                format!("{pre}.transport.type"),
                format!(
                    "components connect over \"rawsocket\", found {:?}",
                    self.transport.kind
                ),
            );
        }
        if let Some(s) = &self.transport.serializer
            && proto::Serializer::from_name(s).is_none()
        {
            err(
                format!("{pre}.transport.serializer"),
                format!("unknown serializer {s:?}: expected \"json\", \"msgpack\" or \"cbor\""),
            );
        }
        let e = &self.transport.endpoint;
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
