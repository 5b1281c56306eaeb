//! Loading and validating `node.json` (Crossbar.io's version-2 shape).
//!
//! [`source`] reads the file (JSON with `//` comments, or YAML) and merges
//! `TRELLIS__…` environment overrides (`TRELLIS__CONTROLLER__ID=x`,
//! `TRELLIS__WORKERS__0__TRANSPORTS__0__ENDPOINT__PORT=9000`). Each worker is then decoded on
//! its own with serde_path_to_error, so an error names the exact key path
//! (`workers[0].transports[1].endpoint.port`), and the router's semantic
//! checks run for every worker: the user gets every problem at once.

use std::fmt;
use std::path::{Path, PathBuf};

mod collect;
mod controller;
mod locate;
pub mod paths;
mod proxy;
mod source;
mod worker;

use controller::decode_controller;
pub use locate::*;
pub use worker::log_filter;
use worker::{
    check_components, check_ids, check_port_clashes, decode_worker, default_transports,
    ignored_options, json_type,
};

use crate::router::RouterConfig;
use serde::Deserialize;

/// The embedded default: one router, realm `realm1`, anonymous, WebSocket
/// on 127.0.0.1:8080.
pub const DEFAULT_CONFIG: &str = include_str!("default.json");

/// Where a config came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// The embedded default.
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("<embedded default config>"),
        }
    }
}

/// One problem in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `workers[0].transports[1].endpoint.port`, or empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Every problem found in one config source.
#[derive(Debug)]
pub struct ConfigErrors {
    /// The file (or the embedded default).
    pub source: Source,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl std::error::Error for ConfigErrors {}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{}: {n} problem{}:",
            self.source,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            if e.path.is_empty() {
                writeln!(f, "  {}", e.message)?;
            } else {
                writeln!(f, "  {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where it was read from.
    pub source: Source,
    /// Node-wide settings (`controller.options`).
    pub controller: ControllerOptions,
    /// Every worker, in config order.
    pub workers: Vec<WorkerSpec>,
    /// `cluster`: the router workers share realms over NATS.
    pub cluster: Option<crate::router::ClusterConfig>,
    /// What reading the config changed and `check` should say (proxy
    /// workers served by the routers).
    pub notes: Vec<ConfigError>,
}

impl NodeConfig {
    /// What is valid but deserves a look (`trellis check` prints these,
    /// `trellis start` logs them), with key paths from the file's root.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut out: Vec<ConfigError> = self.notes.clone();
        out.extend(self.routers().flat_map(|(i, r)| {
            r.warnings().into_iter().map(move |p| ConfigError {
                path: format!("workers[{i}].{}", p.path),
                message: p.message,
            })
        }));
        for w in &self.workers {
            ignored_options(
                &format!("workers[{}].options", w.index),
                &w.options,
                &mut out,
            );
        }
        out
    }

    /// The router workers with their index in `workers`.
    pub fn routers(&self) -> impl Iterator<Item = (usize, &RouterConfig)> {
        self.workers.iter().filter_map(|w| match &w.kind {
            WorkerKind::Router(r) => Some((w.index, r)),
            _ => None,
        })
    }
}

/// One worker of the node, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// Its index in `workers`, for messages.
    pub index: usize,
    /// Its id: log file name, `trellis status`, management URIs.
    pub id: String,
    /// What it runs.
    pub kind: WorkerKind,
    /// Log level and restart policy.
    pub options: WorkerOptions,
}

/// What a worker runs.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerKind {
    /// A router worker process.
    Router(RouterConfig),
    /// A container worker process hosting components.
    Container(ContainerConfig),
    /// Any executable.
    Guest(GuestConfig),
}

impl WorkerKind {
    /// `router`, `container` or `guest`.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerKind::Router(_) => "router",
            WorkerKind::Container(_) => "container",
            WorkerKind::Guest(_) => "guest",
        }
    }
}

pub use crate::container::{
    ComponentAuth, ComponentConfig, ComponentEndpoint, ComponentTransport, ContainerConfig,
};

/// A guest worker: an executable the node starts and supervises.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// The program (a path, or a name looked up in `PATH`).
    pub executable: String,
    /// Its arguments.
    #[serde(default)]
    pub arguments: Vec<String>,
}

/// `workers[i].options`: settings every worker kind has.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkerOptions {
    /// This worker's log level (`info`, `debug`, or a tracing filter);
    /// the controller's `--loglevel` when absent.
    #[serde(default)]
    pub loglevel: Option<String>,
    /// When the controller restarts the worker: Trellis's object, or
    /// Crossbar.io's container strings `restart-always`,
    /// `restart-on-failed`, `restart-never`.
    #[serde(default)]
    pub restart: RestartConfig,
    /// Containers: when the container ends because of its components,
    /// Crossbar.io's `shutdown` modes (see the README).
    #[serde(default)]
    pub shutdown: Option<String>,
    /// Working directory (guests; relative to the node directory, which is
    /// the default).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Guests: restart the guest when a file under these directories
    /// changes (Crossbar.io's `options.watch`).
    #[serde(default)]
    pub watch: Option<WatchConfig>,
    /// Environment: `inherit` the controller's (default true, or a list of
    /// the variables to keep) and set `vars`.
    #[serde(default)]
    pub env: EnvConfig,
    /// Router and container workers: the process name (`ps -o comm`,
    /// `top`), at most 15 bytes as Linux keeps it.
    #[serde(default)]
    pub title: Option<String>,
    /// Router and container workers: the CPUs the worker may run on.
    #[serde(default)]
    pub cpu_affinity: Option<Vec<usize>>,
    /// Router and container workers (Trellis's own): how many threads the
    /// worker's async runtime runs; the CPUs it may use when absent.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Crossbar.io's; accepted and ignored (see `check`'s warning).
    #[serde(default)]
    pub expose_controller: Option<bool>,
    /// Crossbar.io's; accepted and ignored (see `check`'s warning).
    #[serde(default)]
    pub expose_shared: Option<bool>,
    /// Crossbar.io's Twisted reactor choice; accepted and ignored.
    #[serde(default)]
    pub reactor: Option<serde_json::Value>,
    /// Containers: the Python interpreter for Python components (a path,
    /// e.g. a virtualenv's `bin/python`); the active virtualenv's, else
    /// `python3` on PATH.
    #[serde(default)]
    pub python: Option<String>,
    /// Containers: directories (relative to the node directory) Python
    /// components are imported from.
    #[serde(default)]
    pub pythonpath: Vec<String>,
    /// Routers: where the WAMP specification and Crossbar.io differ on the
    /// wire, whose behaviour to follow (`crossbar`, the default, or `spec`).
    #[serde(default)]
    pub compat: Option<crate::router::Compat>,
}

/// Without a `restart`, the policy that goes with a container's `shutdown`
/// mode, in place: a container that shuts down when its components stop
/// is not restarted when it does so cleanly (Crossbar.io restarts no
/// worker at all); a crash still is, unless it shuts down on a component's
/// failure, which a restart would only repeat.
fn restart_for_shutdown(o: &mut serde_json::Map<String, serde_json::Value>) {
    if o.contains_key("restart") {
        return;
    }
    let policy = match o.get("shutdown").and_then(serde_json::Value::as_str) {
        Some("shutdown-on-last-component-stopped" | "shutdown-on-any-component-stopped") => {
            "on-failure"
        }
        Some("shutdown-on-any-component-failed") => "never",
        _ => return,
    };
    o.insert("restart".into(), serde_json::json!({ "policy": policy }));
}

/// Crossbar.io's container `restart` string as Trellis's restart object
/// (`{"policy": ...}`), in place; an unknown string is a problem at `path`.
fn restart_string(
    o: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    let Some(serde_json::Value::String(name)) = o.get("restart") else {
        return;
    };
    let policy = match name.as_str() {
        "restart-always" => "always",
        "restart-on-failed" => "on-failure",
        "restart-never" => "never",
        other => {
            errors.push(ConfigError {
                path: path.to_owned(),
                message: format!(
                    "unknown restart mode {other:?}: Crossbar.io's are \"restart-always\", \"restart-on-failed\", \"restart-never\" (or give Trellis's {{\"policy\": ...}} object)"
                ),
            });
            o.remove("restart");
            return;
        }
    };
    o.insert("restart".into(), serde_json::json!({ "policy": policy }));
}

/// Crossbar.io's container `shutdown` modes.
pub const SHUTDOWN_MODES: &[&str] = &[
    "shutdown-manual",
    "shutdown-on-last-component-stopped",
    "shutdown-on-any-component-failed",
    "shutdown-on-any-component-stopped",
];

/// A worker's environment, in Crossbar.io's shape.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Start from the controller's environment: all of it (`true`), none
    /// (`false`) or the variables listed.
    #[serde(default)]
    pub inherit: Inherit,
    /// Variables to set.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

/// `env.inherit`: a boolean or a list of variable names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Inherit {
    /// All or nothing.
    All(bool),
    /// These variables only.
    Only(Vec<String>),
}

impl Default for Inherit {
    fn default() -> Self {
        Inherit::All(true)
    }
}

impl EnvConfig {
    /// Apply to a command about to be spawned.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        match &self.inherit {
            Inherit::All(true) => {}
            Inherit::All(false) => {
                cmd.env_clear();
            }
            Inherit::Only(keep) => {
                cmd.env_clear();
                for k in keep {
                    if let Some(v) = std::env::var_os(k) {
                        cmd.env(k, v);
                    }
                }
            }
        }
        cmd.envs(&self.vars);
    }
}

/// When to restart a worker that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit status.
    Always,
    /// Unless it exited with status 0.
    OnFailure,
    /// Never; the worker stays stopped.
    Never,
}

/// `workers[i].options.restart`. Times in seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    /// `always`, `on-failure` or `never`.
    pub policy: RestartPolicy,
    /// Give up after this many restarts within `window` seconds.
    pub max_restarts: u32,
    /// The window for `max_restarts`, in seconds.
    pub window: f64,
    /// The first restart delay, in seconds; doubled for each restart in the
    /// window.
    pub backoff_initial: f64,
    /// The longest restart delay, in seconds.
    pub backoff_max: f64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            policy: RestartPolicy::Always,
            max_restarts: 5,
            window: 60.0,
            backoff_initial: 0.1,
            backoff_max: 10.0,
        }
    }
}

/// `controller.options`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerOptions {
    /// On stop: seconds workers get to exit before they are killed.
    pub shutdown_timeout: f64,
    /// Seconds every worker gets to report ready at start.
    pub startup_timeout: f64,
    /// A worker's log file is rotated when it reaches this many bytes.
    pub log_max_size: u64,
    /// Rotated log files kept per worker (`WORKER.log.1` …).
    pub log_keep: u32,
    /// What the node does when a router worker has failed for good (its
    /// restart limit reached): stop with a non-zero status, so that systemd
    /// (`Restart=on-failure`) acts, or keep the other workers running while
    /// no longer feeding the watchdog.
    pub on_router_failure: RouterFailure,
    /// Seconds between liveness pings to each router and container worker
    /// over its control link.
    pub worker_ping_interval: f64,
    /// Seconds a worker may leave pings unanswered (stopped, deadlocked)
    /// before it is killed and restarted like a crashed one.
    pub worker_ping_timeout: f64,
    /// On SIGTERM with an admin listener: seconds `/readyz` says 503 before
    /// the node stops, so that load balancers notice (0: stop at once).
    pub drain_grace: f64,
    /// Crossbar.io's node shutdown triggers (`controller.options.shutdown`:
    /// one name or a list).
    #[serde(deserialize_with = "one_or_many")]
    pub shutdown: Vec<ShutdownTrigger>,
    /// The admin listener (`controller.admin`), off when absent; not an
    /// option key.
    #[serde(skip)]
    pub admin: Option<AdminConfig>,
}

/// A guest's `options.watch`: Crossbar.io's shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Directories watched, recursively (relative to the node directory).
    pub directories: Vec<String>,
    /// What a change does: `restart` (Crossbar.io's only action).
    #[serde(default = "default_watch_action")]
    pub action: String,
}

fn default_watch_action() -> String {
    "restart".into()
}

/// A trigger name or a list of them, as Crossbar.io takes `shutdown`.
fn one_or_many<'de, D>(d: D) -> Result<Vec<ShutdownTrigger>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let items = match serde_json::Value::deserialize(d)? {
        v @ serde_json::Value::String(_) => vec![v],
        serde_json::Value::Array(a) => a,
        other => {
            return Err(D::Error::custom(format!(
                "expected a shutdown trigger name or a list of them, found {}",
                json_type(&other)
            )));
        }
    };
    items
        .into_iter()
        .map(|v| serde_json::from_value(v).map_err(D::Error::custom))
        .collect()
}

/// When the whole node stops, as Crossbar.io's `controller.options.shutdown`
/// says: a listed trigger stops the node instead of restarting the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownTrigger {
    /// `trellis stop`, SIGTERM: always the case in Trellis.
    ShutdownOnShutdownRequested,
    /// Any worker exits (cleanly or not): the node stops, non-zero if the
    /// worker's exit was a failure.
    ShutdownOnWorkerExit,
    /// A worker exits with a failure (a non-zero status or a signal).
    ShutdownOnWorkerExitWithError,
    /// No worker runs any more (each has exited and is not restarted).
    ShutdownOnLastWorkerExit,
}

/// `controller.admin`: the HTTP listener for `/metrics`, `/livez`,
/// `/readyz` and `/status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where to listen: TCP, 127.0.0.1:9090 by default.
    #[serde(default)]
    pub endpoint: AdminEndpoint,
    /// When set, `/metrics` and `/status` want `Authorization: Bearer
    /// TOKEN` (`${VAR}` reads it from the environment).
    #[serde(default)]
    pub token: Option<String>,
    /// Connections served at once; more are refused at once (answered 503
    /// and closed) and counted in `trellis_admin_connections_refused`.
    #[serde(default = "default_admin_connections")]
    pub max_connections: usize,
    /// Seconds a connection has to send a whole request head, counted
    /// from its opening or from the previous response: a slow or silent
    /// client, or an idle keep-alive connection, is closed after it.
    #[serde(default = "default_admin_head_timeout")]
    pub request_head_timeout: f64,
}

/// Admin connections served at once by default.
pub const DEFAULT_ADMIN_CONNECTIONS: usize = 64;

fn default_admin_connections() -> usize {
    DEFAULT_ADMIN_CONNECTIONS
}

fn default_admin_head_timeout() -> f64 {
    10.0
}

/// `controller.admin.endpoint`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminEndpoint {
    /// Only `tcp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The address to bind; the loopback one by default.
    pub interface: String,
    /// The port (0: any free one, logged).
    pub port: u16,
}

impl Default for AdminEndpoint {
    fn default() -> Self {
        AdminEndpoint {
            kind: "tcp".into(),
            interface: "127.0.0.1".into(),
            port: 9090,
        }
    }
}

/// `controller.options.on_router_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouterFailure {
    /// Stop the node and exit non-zero.
    #[default]
    Stop,
    /// Keep the rest running; stop feeding the watchdog; exit non-zero
    /// when stopped.
    Keep,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            shutdown_timeout: 10.0,
            startup_timeout: 30.0,
            log_max_size: 10 << 20,
            log_keep: 5,
            on_router_failure: RouterFailure::Stop,
            worker_ping_interval: 5.0,
            worker_ping_timeout: 15.0,
            drain_grace: 5.0,
            shutdown: Vec::new(),
            admin: None,
        }
    }
}

/// The `controller` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawController {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    options: Option<serde_json::Value>,
    #[serde(default)]
    admin: Option<AdminConfig>,
}

/// The top level of node.json before workers are decoded one by one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    version: Option<serde_json::Value>,
    #[serde(default)]
    controller: Option<serde_json::Value>,
    #[serde(default)]
    cluster: Option<serde_json::Value>,
    #[serde(default)]
    workers: Vec<serde_json::Value>,
}

/// serde_path_to_error's `transports[1].endpoint.port` under a prefix.
fn join_path(prefix: &str, inner: &serde_path_to_error::Path) -> String {
    let inner = inner.to_string();
    if inner == "." || inner.is_empty() {
        prefix.to_owned()
    } else if inner.starts_with('[') || prefix.is_empty() {
        format!("{prefix}{inner}")
    } else {
        format!("{prefix}.{inner}")
    }
}

/// Load and validate a config file, or the embedded default when `path` is
/// `None`.
///
/// # Errors
/// [`ConfigErrors`] with every problem found, each with its key path.
pub fn load(path: Option<&Path>) -> Result<NodeConfig, ConfigErrors> {
    let (source, text, yaml) = match path {
        Some(p) => {
            let source = Source::File(p.to_owned());
            if !p.is_file() {
                return Err(ConfigErrors {
                    source,
                    errors: vec![ConfigError {
                        path: String::new(),
                        message: "the config file does not exist or is not a regular file".into(),
                    }],
                });
            }
            match std::fs::read_to_string(p) {
                // Crossbar.io's config.yaml: the same shape in YAML.
                Ok(text) => (source, text, source::is_yaml(p)),
                Err(e) => {
                    return Err(ConfigErrors {
                        source,
                        errors: vec![ConfigError {
                            path: String::new(),
                            message: format!("cannot read the config file: {e}"),
                        }],
                    });
                }
            }
        }
        None => (Source::Embedded, DEFAULT_CONFIG.to_owned(), false),
    };
    let fail = |errors| ConfigErrors {
        source: source.clone(),
        errors,
    };
    let mut value = source::parse(&text, yaml).map_err(|message| {
        fail(vec![ConfigError {
            path: String::new(),
            message,
        }])
    })?;
    drop(text);
    let mut env_problems = Vec::new();
    source::apply_env(&mut value, std::env::vars(), &mut env_problems);
    if !env_problems.is_empty() {
        return Err(fail(env_problems));
    }
    let raw: RawNode = serde_path_to_error::deserialize(value).map_err(|e| {
        fail(vec![ConfigError {
            path: join_path("", e.path()),
            message: e.into_inner().to_string(),
        }])
    })?;
    let mut errors = Vec::new();
    match raw.version.as_ref().and_then(|v| v.as_u64()) {
        Some(2) => {}
        _ => errors.push(ConfigError {
            path: "version".into(),
            message: format!(
                "must be 2 (Crossbar.io's config version 2), found {}",
                raw.version.map_or("nothing".to_owned(), |v| v.to_string())
            ),
        }),
    }
    let controller = match raw.controller {
        None => ControllerOptions::default(),
        Some(c) => decode_controller(c, &mut errors),
    };
    if raw.workers.is_empty() {
        errors.push(ConfigError {
            path: "workers".into(),
            message: "the node has no workers: add a worker of type \"router\"".into(),
        });
    }
    let cluster = raw.cluster.and_then(|c| {
        let c =
            collect::deserialize_all::<crate::router::ClusterConfig>(c, "cluster", &mut errors)?;
        for p in c.validate() {
            errors.push(ConfigError {
                path: format!("cluster.{}", p.path),
                message: p.message,
            });
        }
        Some(c)
    });
    let mut notes = Vec::new();
    let mut raw_workers = raw.workers;
    proxy::fold(&mut raw_workers, &mut errors, &mut notes);
    // The routers as written, read or not: one that failed to parse is
    // still a router (no knock-on "no router", no homeless components).
    let routers_in_file = raw_workers
        .iter()
        .filter(|w| w.get("type").and_then(|t| t.as_str()) == Some("router"))
        .count();
    let mut workers = Vec::new();
    for (i, w) in raw_workers.into_iter().enumerate() {
        // A proxy worker, served by a router now.
        if w.is_null() {
            continue;
        }
        if let Some(mut spec) = decode_worker(i, w, &mut errors) {
            if let WorkerKind::Router(r) = &mut spec.kind {
                r.cluster = cluster.clone();
            }
            workers.push(spec);
        }
    }
    check_ids(&workers, &mut errors);
    if let Some(l) = cluster.as_ref().and_then(|c| c.links.as_ref())
        && l.port != 0
        && routers_in_file > 1
    {
        errors.push(ConfigError {
            path: "cluster.links.port".into(),
            message: format!(
                "{}: each router worker listens for member links, and {routers_in_file} cannot share one port: use 0 (a port each, picked by the system)",
                l.port
            ),
        });
    }
    let routers: Vec<(usize, RouterConfig)> = workers
        .iter()
        .filter_map(|w| match &w.kind {
            WorkerKind::Router(r) => Some((w.index, r.clone())),
            _ => None,
        })
        .collect();
    if !workers.is_empty() && routers_in_file == 0 {
        errors.push(ConfigError {
            path: "workers".into(),
            message: "the node has no router: add a worker of type \"router\"".into(),
        });
    }
    check_port_clashes(&routers, &mut errors);
    // A router that could not be read would make every component of its
    // realms look homeless: those lines would only follow from its own.
    if routers.len() == routers_in_file {
        default_transports(&mut workers, &routers, &mut errors);
        check_components(&workers, &routers, &mut errors);
    }
    if errors.is_empty() {
        Ok(NodeConfig {
            source,
            controller,
            workers,
            cluster,
            notes,
        })
    } else {
        Err(fail(errors))
    }
}

/// Remove Crossbar.io-only keys from `obj`, reporting each
/// ([`crate::unsupported::KEYS`]).
fn take_unsupported(
    place: &str,
    prefix: &str,
    obj: &mut serde_json::Map<String, serde_json::Value>,
    errors: &mut Vec<ConfigError>,
) {
    for key in crate::unsupported::keys(place) {
        if obj.remove(*key).is_some() {
            errors.push(ConfigError {
                path: format!("{prefix}.{key}"),
                message: crate::unsupported::key(place, key),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_and_filters_as_the_workers_read_them() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,router_worker=debug",
            "router_worker=trace",
        ] {
            assert!(log_filter(ok).is_ok(), "{ok}");
        }
        let e = log_filter("loud").expect_err("a bare word must be a level");
        assert!(e.contains("use error, warn, info, debug, trace"), "{e}");
        assert!(log_filter("info,router_worker=[").is_err());
    }

    fn load_str(json: &str) -> Result<NodeConfig, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.json");
        std::fs::write(&p, json).unwrap();
        load(Some(&p))
    }

    #[test]
    fn worker_threads_are_one_to_the_maximum_and_not_for_guests() {
        let node = |router: &str, guest: &str| {
            format!(
                r#"{{"version": 2, "workers": [
                    {{"type": "router", "options": {{"threads": {router}}},
                      "transports": [{{"type": "websocket", "endpoint": {{"type": "tcp", "port": 1}}}}]}},
                    {{"type": "container", "options": {{"threads": 2}}}},
                    {{"type": "guest", "executable": "true"{guest}}}]}}"#
            )
        };
        let ok = load_str(&node("1", "")).expect("accepted");
        assert_eq!(ok.workers[0].options.threads, Some(1));
        assert_eq!(ok.workers[1].options.threads, Some(2));
        assert_eq!(ok.workers[2].options.threads, None);
        let e = load_str(&node("0", r#", "options": {"threads": 1}"#))
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("workers[0].options.threads: 0: a worker runs 1 to 1024 threads"),
            "{e}"
        );
        assert!(
            e.contains(
                "workers[2].options.threads: only router and container workers take \"threads\""
            ),
            "{e}"
        );
        let e = load_str(&node("1025", ""))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("1025: a worker runs 1 to 1024 threads"), "{e}");
        let e = load_str(&node("\"2\"", ""))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("workers[0].options.threads"), "{e}");
    }

    #[test]
    fn the_store_call_queue_is_read_in_crossbars_shape() {
        let node = |queue: &str| {
            format!(
                r#"{{"version": 2, "workers": [{{"type": "router",
                    "realms": [{{"name": "realm1", "roles": [],
                                "store": {{"type": "memory", "limit": 10, "call-queue": {queue}}}}}],
                    "transports": [{{"type": "websocket", "endpoint": {{"type": "tcp", "port": 1}}}}]}}]}}"#
            )
        };
        let ok = load_str(&node(
            r#"[{"uri": "com.example.compute", "match": "exact", "limit": 100}]"#,
        ))
        .expect("accepted");
        let routers: Vec<_> = ok.routers().collect();
        let store = routers[0].1.realms[0].store.as_ref().expect("store");
        assert_eq!(store.call_queue[0].uri, "com.example.compute");
        assert_eq!(store.call_queue[0].limit, Some(100));
        let e = load_str(&node(r#"{"maxsize": 10}"#))
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains(
                "workers[0].realms[0].store.call-queue: invalid type: map, expected a sequence"
            ),
            "{e}"
        );
    }

    #[test]
    fn shutdown_takes_one_trigger_or_a_list_as_crossbar_does() {
        let node = |shutdown: &str| {
            format!(
                r#"{{"version": 2, "controller": {{"options": {{"shutdown": {shutdown}}}}},
                    "workers": [{{"type": "router", "transports": [{{"type": "websocket", "endpoint": {{"type": "tcp", "port": 1}}}}]}}]}}"#
            )
        };
        let one = load_str(&node(r#""shutdown_on_worker_exit""#)).expect("one");
        assert_eq!(
            one.controller.shutdown,
            vec![ShutdownTrigger::ShutdownOnWorkerExit]
        );
        let many = load_str(&node(
            r#"["shutdown_on_shutdown_requested", "shutdown_on_last_worker_exit"]"#,
        ))
        .expect("list");
        assert_eq!(many.controller.shutdown.len(), 2);
        let bad = load_str(&node("7")).expect_err("a number").to_string();
        assert!(
            bad.contains("controller.options.shutdown: expected a shutdown trigger"),
            "{bad}"
        );
    }

    #[test]
    fn embedded_default_is_valid() {
        let cfg = load(None).unwrap();
        let routers: Vec<_> = cfg.routers().collect();
        assert_eq!(routers.len(), 1);
        assert_eq!(routers[0].1.realms[0].name, "realm1");
        assert_eq!(cfg.workers[0].id, "router1");
    }

    #[test]
    fn a_component_without_transport_gets_the_routers_unix_socket() {
        let cfg = load_str(
            r#"{"version": 2, "workers": [
                {"type": "router", "realms": [{"name": "other", "roles": [{"name": "anonymous"}]}],
                 "transports": [{"type": "rawsocket", "endpoint": {"type": "unix", "path": "other.sock"}}]},
                {"type": "router", "realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}],
                 "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 9000}},
                                {"type": "rawsocket", "endpoint": {"type": "unix", "path": "r1.sock"},
                                 "serializers": ["cbor", "msgpack", "json"]}]},
                {"type": "container", "components": [
                    {"type": "class", "classname": "trellis.balloon.Backend", "realm": "realm1"},
                    {"type": "class", "classname": "app.Adder", "realm": "realm1"}]}
            ]}"#,
        )
        .unwrap();
        let WorkerKind::Container(c) = &cfg.workers[2].kind else {
            panic!("a container");
        };
        let picked: Vec<_> = c
            .components
            .iter()
            .map(|comp| {
                let t = comp.transport.as_ref().expect("filled in");
                (
                    t.endpoint.path.clone().unwrap_or_default(),
                    t.serializer.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            picked,
            [
                ("r1.sock".to_string(), "msgpack".to_string()),
                ("r1.sock".to_string(), "json".to_string())
            ]
        );
    }

    #[test]
    fn type_errors_name_the_key_path() {
        let e = load_str(
            r#"{"version": 2, "workers": [{"type": "router", "realms": [{"name": "r", "roles": [{"name": "anonymous"}]}],
               "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": "x"}}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert_eq!(e.errors[0].path, "workers[0].transports[0].endpoint.port");
        assert!(e.errors[0].message.contains("expected u16"), "{e}");
    }

    #[test]
    fn misspelt_keys_are_errors() {
        let e = load_str(
            r#"{"version": 2, "workers": [{"type": "router", "realms": [{"name": "r", "rolez": []}], "transports": []}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.errors[0].path, "workers[0].realms[0].rolez");
        assert!(e.errors[0].message.contains("unknown field `rolez`"), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let e = load_str(
            r#"{"version": 1, "workers": [
                {"type": "router", "realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}],
                 "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 9000}}]},
                {"type": "router", "realms": [{"name": "realm1"}],
                 "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 9000}}]},
                {"type": "guest", "arguments": ["x"]},
                {"type": "bogus"}
            ]}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "version",
                "workers[2]",
                "workers[3].type",
                "workers[1].transports[0].endpoint.port"
            ],
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("port 9000 is already used by workers[0].transports[0].endpoint.port"),
            "{text}"
        );
    }

    #[test]
    fn worker_kinds_options_and_crossbar_only_keys() {
        let router = r#"{"type": "router", "id": "r", "realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}],
               "transports": [{"type": "rawsocket", "endpoint": {"type": "unix", "path": "r.sock"}}]}"#;
        let ok = load_str(&format!(
            r#"{{"version": 2, "controller": {{"options": {{"shutdown_timeout": 3}}}}, "workers": [{router},
                {{"type": "container", "id": "c", "options": {{"restart": {{"policy": "on-failure"}}}}}},
                {{"type": "guest", "executable": "python3", "arguments": ["x.py"],
                  "options": {{"workdir": "app", "env": {{"inherit": false, "vars": {{"A": "1"}}}}}}}}]}}"#
        ))
        .unwrap();
        assert_eq!(ok.controller.shutdown_timeout, 3.0);
        let ids: Vec<&str> = ok.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["r", "c", "worker-003"]);
        assert_eq!(
            ok.workers[1].options.restart.policy,
            RestartPolicy::OnFailure
        );
        assert_eq!(ok.workers[2].options.env.inherit, Inherit::All(false));

        let e = load_str(&format!(
            r#"{{"version": 2, "controller": {{"manhole": {{}}, "options": {{"title": "x"}}}}, "workers": [{router},
                {{"type": "container", "id": "r", "components": [{{"type": "class", "classname": "nope", "realm": "realm1",
                    "transport": {{"type": "rawsocket", "endpoint": {{"type": "unix", "path": "r.sock"}}}}}}]}},
                {{"type": "guest", "id": "g h", "executable": "", "options": {{"loglevel": "[[", "restart": {{"policy": "sometimes"}}}}}},
                {{"type": "container", "options": {{"workdir": "x", "pythonpath": ["."], "watch": {{"directories": [], "action": "reload"}}}}}},
                {{"type": "router", "id": "r2", "transports": [{{"type": "rawsocket", "endpoint": {{"type": "unix", "path": "r.sock", "port": 1}}}}]}}
            ]}}"#
        ))
        .unwrap_err();
        let text = e.to_string();
        for want in [
            "controller.manhole: Crossbar.io's \"manhole\" is not supported by Trellis yet",
            "controller.options.title: Crossbar.io's \"title\" is not supported",
            "workers[1].components[0].classname: \"nope\": a Python component is named as module.Class",
            "workers[1].id: id \"r\" is already used by workers[0]",
            "workers[3].options.watch: only guest workers take \"watch\"",
            "workers[3].options.watch.action: \"reload\" is not an action",
            "workers[3].options.watch.directories: list at least one directory",
            "workers[2].options.restart.policy: unknown variant `sometimes`",
            "workers[2].id: invalid worker id \"g h\"",
            "workers[3].options.workdir: only guest workers take \"workdir\"",
            "workers[4].transports[0].endpoint.port: unix endpoints have no port",
            "workers[4].transports[0].endpoint.path: socket file \"r.sock\" is already used by workers[0].transports[0].endpoint.path",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    /// Keys Crossbar.io's checker accepts (found by setting each of them
    /// in every section): taken, or named as not supported, never reported
    /// as unknown fields.
    #[test]
    fn crossbars_other_keys_are_taken_or_named() {
        let perm = r#"{"uri": "", "match": "prefix", "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}"#;
        let router = |extra_perm: &str, comp: &str, path: &str| {
            format!(
                r#"{{"type": "router", "realms": [{{"name": "realm1", "id": "io.crossbar.demo",
                  "roles": [{{"name": "anonymous", "id": "r1", "permissions": [{perm}{extra_perm}]}}]}}],
                  "transports": [
                    {{"type": "websocket", "max_connections": 5, "endpoint": {{"type": "tcp", "port": 8080}},
                      "cookie": {{"http_strict": false}}, "auth": {{"cookie": {{}}, "anonymous": {{"type": "static"}}}}}},
                    {{"type": "rawsocket", "max_connections": 0, "endpoint": {{"type": "unix", "path": "r.sock"}}}},
                    {{"type": "web", "endpoint": {{"type": "tcp", "port": 8081}}, "paths": {{
                        "/": {{"type": "static", "id": "root", "directory": ".", "options": {{"default_file": "index.html"}}}},
                        "ws": {{"type": "websocket", "url": "wss://demo.crossbar.io"}}{path}}}}}],
                  "components": [{{"type": "class", "id": "db", "classname": "trellis.auth.UserDatabase", "realm": "realm1",
                                   "extra": {{"procedure": "a.b", "users": {{}}}}{comp}}}]}}"#
            )
        };
        let container = r#"{"type": "container", "components": [{"type": "class", "id": "c1", "classname": "app.App", "realm": "realm1",
            "transport": {"type": "rawsocket", "id": "t1", "debug": true, "endpoint": {"type": "unix", "path": "r.sock"}, "serializer": "json"}}]}"#;
        let e = load_str(&format!(
            r#"{{"version": 2, "controller": {{"connections": [], "keyring": {{}}}}, "workers": [{}, {container}]}}"#,
            router(
                "",
                r#", "references": ["connection:db1"]"#,
                r#", "pkg": {"type": "static", "package": "crossbar", "resource": "web"}"#
            )
        ))
        .unwrap_err();
        let text = e.to_string();
        for want in [
            "controller.connections: Crossbar.io's \"connections\" is not supported by Trellis yet",
            "controller.keyring: Crossbar.io's \"keyring\" is not supported by Trellis yet",
            "workers[0].transports[1].max_connections: must be at least 1",
            "workers[0].transports[2].paths.pkg.package: Crossbar.io's static files from a Python package",
            "workers[0].components[0].references: Crossbar.io's references to router connections",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("unknown field"), "{text}");
        let e = load_str(&format!(
            r#"{{"version": 2, "workers": [{}]}}"#,
            router(
                r#", {"uri": "com.x", "allow": {"call": true}, "validate": {"call": "com.x.args"}}"#,
                "",
                ""
            )
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("permissions[1]: permission \"com.x\": Crossbar.io's payload validation (\"validate\", against a type catalog) is not supported by Trellis yet"),
            "{e}"
        );

        let ok = load_str(&format!(
            r#"{{"version": 2, "workers": [{}, {container}]}}"#,
            router("", "", "").replace(r#""max_connections": 0"#, r#""max_connections": 7"#)
        ))
        .expect("the keys are taken");
        let WorkerKind::Router(r) = &ok.workers[0].kind else {
            panic!("a router")
        };
        assert_eq!(r.transports[0].options.max_connections, 5);
        assert_eq!(r.transports[1].options.max_connections, 7);
        let warned: Vec<String> = ok.warnings().into_iter().map(|w| w.path).collect();
        assert!(
            warned.contains(&"workers[0].transports[0].cookie.http_strict".to_owned()),
            "{warned:?}"
        );
    }

    /// Crossbar.io takes a container's `shutdown` mode without a
    /// `restart` (it restarts no worker); Trellis picks the restart policy
    /// that goes with it instead of refusing the pair its default makes.
    #[test]
    fn a_shutdown_mode_without_restart_gets_a_policy_that_fits() {
        let node = |options: &str| {
            format!(
                r#"{{"version": 2, "workers": [{{"type": "router", "realms": [{{"name": "realm1", "roles": []}}],
                    "transports": [{{"type": "websocket", "endpoint": {{"type": "tcp", "port": 8080}}}}]}},
                  {{"type": "container", "options": {options}, "components": []}}]}}"#
            )
        };
        for (options, want) in [
            (
                r#"{"shutdown": "shutdown-on-last-component-stopped"}"#,
                RestartPolicy::OnFailure,
            ),
            (
                r#"{"shutdown": "shutdown-on-any-component-stopped"}"#,
                RestartPolicy::OnFailure,
            ),
            (
                r#"{"shutdown": "shutdown-on-any-component-failed"}"#,
                RestartPolicy::Never,
            ),
            (r#"{"shutdown": "shutdown-manual"}"#, RestartPolicy::Always),
            (r#"{}"#, RestartPolicy::Always),
        ] {
            let cfg = load_str(&node(options)).unwrap_or_else(|e| panic!("{options}: {e}"));
            assert_eq!(cfg.workers[1].options.restart.policy, want, "{options}");
        }
        let e = load_str(&node(
            r#"{"shutdown": "shutdown-on-last-component-stopped", "restart": "restart-always"}"#,
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("does not go with restart policy Always"),
            "{e}"
        );
    }

    /// crossbar-examples' wampcra config-realmstore.json: Crossbar.io's
    /// database store is kept in memory with a warning; and a router that
    /// cannot be read does not make its realm's components look homeless.
    #[test]
    fn a_cfxdb_store_is_kept_in_memory_and_a_broken_router_has_no_knock_on() {
        let node = |store: &str| {
            format!(
                r#"{{"version": 2, "workers": [{{"type": "router", "realms": [{{"name": "realm1", "roles": [],
                    "store": {store}}}],
                  "transports": [{{"type": "rawsocket", "endpoint": {{"type": "unix", "path": "r.sock"}}}}]}},
                  {{"type": "container", "components": [{{"type": "class", "classname": "app.App", "realm": "realm1",
                    "transport": {{"type": "rawsocket", "endpoint": {{"type": "unix", "path": "r.sock"}}}}}}]}}]}}"#
            )
        };
        let ok = load_str(&node(
            r#"{"type": "cfxdb", "path": ".realm1db", "maxsize": 1073741824, "buffer-flush": 250,
                "event-history": [{"uri": "", "match": "prefix"}]}"#,
        ))
        .expect("taken");
        let warned: Vec<String> = ok.warnings().into_iter().map(|w| w.path).collect();
        for at in ["store.type", "store.path", "store.maxsize"] {
            assert!(warned.iter().any(|w| w.ends_with(at)), "{at} in {warned:?}");
        }
        let e = load_str(&node(r#"{"type": "lmdb"}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.type"), "{e}");
        assert!(!e.contains("no router of this node"), "{e}");
    }

    #[test]
    fn missing_file_and_bad_json_are_clear() {
        let e = load(Some(Path::new("/nonexistent/node.json"))).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = load_str("{ not json").unwrap_err();
        assert_eq!(e.errors.len(), 1);
    }
}
