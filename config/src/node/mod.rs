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
pub mod paths;
mod proxy;
mod source;

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

/// The config of a Crossbar.io node directory: `DIR/config.json`, else
/// `DIR/config.yaml` (`None` if it has neither).
pub fn in_node_dir(dir: &Path) -> Option<PathBuf> {
    ["config.json", "config.yaml", "config.yml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// JSON with whole-line `//` comments made plain JSON: each comment line
/// becomes empty, so error positions stay right. (A JSON string cannot
/// span lines, so no string is touched.)
pub fn strip_line_comments(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Find the config file the way users expect: `--config`, then
/// `$TRELLIS_CONFIG`, `./.trellis/node.json`, Crossbar.io's
/// `./.crossbar/config.json` or `config.yaml`,
/// `$XDG_CONFIG_HOME/trellis/node.json` (or `~/.config/…`),
/// `/etc/trellis/node.json`. `None` means: use the embedded default.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("TRELLIS_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates = vec![PathBuf::from(".trellis/node.json")];
    candidates.extend(in_node_dir(Path::new(".crossbar")));
    match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => candidates.push(PathBuf::from(x).join("trellis/node.json")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                candidates.push(PathBuf::from(home).join(".config/trellis/node.json"));
            }
        }
    }
    candidates.push(PathBuf::from("/etc/trellis/node.json"));
    candidates.into_iter().find(|p| p.is_file())
}

/// The config to read and the node directory to run in.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The config file (`None`: the embedded default).
    pub config: Option<PathBuf>,
    /// The node directory, absolute (symlinks kept, as Crossbar.io keeps
    /// them in `--cbdir`).
    pub node_dir: PathBuf,
}

/// Where a Crossbar.io project keeps its node directory.
pub const CROSSBAR_DIR: &str = ".crossbar";

/// The config and node directory for `trellis start` and `check`, as
/// Crossbar.io finds them:
/// - `--cbdir DIR --config NAME`: `DIR/NAME` for a relative NAME (as
///   `crossbar start --config config-foo.json` reads it from the node
///   directory), else NAME as given;
/// - `--config PATH` alone: PATH (else `.crossbar/PATH` when only that
///   exists); the node directory is the config's own when it is a
///   `.crossbar` directory, else `.trellis`;
/// - `--cbdir DIR` alone: `DIR/config.json|yaml`, else the usual places;
/// - neither: the usual places ([`locate`]), and a `.crossbar/config.*`
///   found there makes `.crossbar` the node directory.
///
/// `$TRELLIS_NODE_DIR` stands for a missing `--cbdir`.
pub fn locate_node(config: Option<&Path>, node_dir: Option<&Path>) -> Located {
    let env_dir = std::env::var_os("TRELLIS_NODE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let given_dir = node_dir.map(Path::to_owned).or(env_dir);
    // The node directory that goes with a config found or named.
    let dir_of = |cfg: &Path| -> PathBuf {
        match cfg.parent() {
            Some(parent) if parent.file_name().is_some_and(|n| n == CROSSBAR_DIR) => {
                paths::absolute(parent)
            }
            _ => paths::absolute(Path::new(".trellis")),
        }
    };
    match (config, given_dir) {
        (Some(c), Some(d)) => {
            let in_dir = d.join(c);
            let config = if c.is_relative() && (in_dir.is_file() || !c.is_file()) {
                in_dir
            } else {
                c.to_owned()
            };
            Located {
                config: Some(config),
                node_dir: paths::absolute(&d),
            }
        }
        (Some(c), None) => {
            let in_crossbar = Path::new(CROSSBAR_DIR).join(c);
            let config = if c.is_relative() && !c.is_file() && in_crossbar.is_file() {
                in_crossbar
            } else {
                c.to_owned()
            };
            Located {
                node_dir: dir_of(&config),
                config: Some(config),
            }
        }
        (None, Some(d)) => Located {
            config: in_node_dir(&d).or_else(|| locate(None)),
            node_dir: paths::absolute(&d),
        },
        (None, None) => {
            let config = locate(None);
            Located {
                node_dir: config
                    .as_deref()
                    .map_or_else(|| paths::absolute(Path::new(".trellis")), dir_of),
                config,
            }
        }
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
    // A router that failed to parse is still a router: no knock-on "no
    // router" for it.
    let any_router = raw
        .workers
        .iter()
        .any(|w| w.get("type").and_then(|t| t.as_str()) == Some("router"));
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
    let routers: Vec<(usize, RouterConfig)> = workers
        .iter()
        .filter_map(|w| match &w.kind {
            WorkerKind::Router(r) => Some((w.index, r.clone())),
            _ => None,
        })
        .collect();
    if !workers.is_empty() && routers.is_empty() && !any_router {
        errors.push(ConfigError {
            path: "workers".into(),
            message: "the node has no router: add a worker of type \"router\"".into(),
        });
    }
    check_port_clashes(&routers, &mut errors);
    default_transports(&mut workers, &routers, &mut errors);
    check_components(&workers, &routers, &mut errors);
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

/// Keys Crossbar.io accepts that Trellis does not implement yet, per place.
/// They get their own message instead of "unknown field".
const CROSSBAR_ONLY: &[(&str, &[&str])] = &[
    ("controller", &["manhole", "fabric", "enable_docker"]),
    (
        "controller.options",
        &["title", "enable_parallel_worker_start"],
    ),
    ("router", &["connections", "manhole", "rlinks", "storage"]),
    ("container", &["connections", "manhole"]),
    (
        "options",
        &["stdin", "stdout", "stderr", "disabled", "benchmark"],
    ),
];

/// Remove Crossbar.io-only keys from `obj`, reporting each.
fn take_unsupported(
    place: &str,
    prefix: &str,
    obj: &mut serde_json::Map<String, serde_json::Value>,
    errors: &mut Vec<ConfigError>,
) {
    let Some((_, keys)) = CROSSBAR_ONLY.iter().find(|(p, _)| *p == place) else {
        return;
    };
    for key in *keys {
        if obj.remove(*key).is_some() {
            let message = match (place, *key) {
                ("router", "rlinks" | "connections") => format!(
                    "Crossbar.io's router-to-router links (\"{key}\") are not supported by Trellis: to share realms between nodes, give the node a \"cluster\" block (routers share their realms over NATS; see the README's Clustering section) and remove the key"
                ),
                _ => format!(
                    "Crossbar.io's \"{key}\" is not supported by Trellis yet: remove the key"
                ),
            };
            errors.push(ConfigError {
                path: format!("{prefix}.{key}"),
                message,
            });
        }
    }
}

fn decode_controller(c: serde_json::Value, errors: &mut Vec<ConfigError>) -> ControllerOptions {
    let mut c = match c {
        serde_json::Value::Object(m) => m,
        other => {
            errors.push(ConfigError {
                path: "controller".into(),
                message: format!("must be an object, found {}", json_type(&other)),
            });
            return ControllerOptions::default();
        }
    };
    take_unsupported("controller", "controller", &mut c, errors);
    let raw: RawController = match serde_path_to_error::deserialize(serde_json::Value::Object(c)) {
        Ok(r) => r,
        Err(e) => {
            errors.push(ConfigError {
                path: join_path("controller", e.path()),
                message: e.into_inner().to_string(),
            });
            return ControllerOptions::default();
        }
    };
    let _ = raw.id;
    let admin = raw.admin.map(|a| check_admin(a, errors));
    let mut out = decode_controller_options(raw.options, errors);
    out.admin = admin;
    out
}

/// The admin listener's config: a TCP endpoint, a token from the
/// environment when given as `${VAR}`.
fn check_admin(mut a: AdminConfig, errors: &mut Vec<ConfigError>) -> AdminConfig {
    if a.endpoint.kind != "tcp" {
        errors.push(ConfigError {
            path: "controller.admin.endpoint.type".into(),
            message: format!(
                "the admin listener listens on \"tcp\" only, found {:?}",
                a.endpoint.kind
            ),
        });
    }
    if a.endpoint.interface.parse::<std::net::IpAddr>().is_err() {
        errors.push(ConfigError {
            path: "controller.admin.endpoint.interface".into(),
            message: format!(
                "{:?} is not an IP address (e.g. \"127.0.0.1\"; the admin listener is best kept off public addresses)",
                a.endpoint.interface
            ),
        });
    }
    if a.max_connections == 0 || a.max_connections > 10_000 {
        errors.push(ConfigError {
            path: "controller.admin.max_connections".into(),
            message: format!(
                "{} is out of range: give between 1 and 10000 (default {DEFAULT_ADMIN_CONNECTIONS})",
                a.max_connections
            ),
        });
    }
    if !(a.request_head_timeout.is_finite() && (0.1..=600.0).contains(&a.request_head_timeout)) {
        errors.push(ConfigError {
            path: "controller.admin.request_head_timeout".into(),
            message: format!(
                "{} is out of range: give seconds between 0.1 and 600 (default 10)",
                a.request_head_timeout
            ),
        });
    }
    if let Some(token) = &a.token {
        if let Some(var) = crate::router::env_placeholder(token) {
            match std::env::var(var) {
                Ok(v) if !crate::router::blank(&v) => a.token = Some(v),
                _ => errors.push(ConfigError {
                    path: "controller.admin.token".into(),
                    message: format!("the environment variable {var} is not set (or empty)"),
                }),
            }
        } else if crate::router::blank(token) {
            errors.push(ConfigError {
                path: "controller.admin.token".into(),
                message: "must not be empty: remove it to serve without a token".into(),
            });
        }
    }
    a
}

fn decode_controller_options(
    opts: Option<serde_json::Value>,
    errors: &mut Vec<ConfigError>,
) -> ControllerOptions {
    let Some(opts) = opts else {
        return ControllerOptions::default();
    };
    let mut opts = match opts {
        serde_json::Value::Object(m) => m,
        other => {
            errors.push(ConfigError {
                path: "controller.options".into(),
                message: format!("must be an object, found {}", json_type(&other)),
            });
            return ControllerOptions::default();
        }
    };
    take_unsupported(
        "controller.options",
        "controller.options",
        &mut opts,
        errors,
    );
    match serde_path_to_error::deserialize::<_, ControllerOptions>(serde_json::Value::Object(opts))
    {
        Ok(o) => {
            if o.worker_ping_timeout < o.worker_ping_interval {
                errors.push(ConfigError {
                    path: "controller.options.worker_ping_timeout".into(),
                    message: format!(
                        "must be at least worker_ping_interval ({} s), found {}",
                        o.worker_ping_interval, o.worker_ping_timeout
                    ),
                });
            }
            for (key, v) in [
                ("shutdown_timeout", o.shutdown_timeout),
                ("startup_timeout", o.startup_timeout),
                ("worker_ping_interval", o.worker_ping_interval),
                ("worker_ping_timeout", o.worker_ping_timeout),
            ] {
                if !(v > 0.0 && v <= 3600.0) {
                    errors.push(ConfigError {
                        path: format!("controller.options.{key}"),
                        message: format!("must be a number of seconds in (0, 3600], found {v}"),
                    });
                }
            }
            if !(0.0..=600.0).contains(&o.drain_grace) {
                errors.push(ConfigError {
                    path: "controller.options.drain_grace".into(),
                    message: format!(
                        "must be a number of seconds in [0, 600], found {}",
                        o.drain_grace
                    ),
                });
            }
            if o.log_max_size < 4096 {
                errors.push(ConfigError {
                    path: "controller.options.log_max_size".into(),
                    message: format!("must be at least 4096 bytes, found {}", o.log_max_size),
                });
            }
            o
        }
        Err(e) => {
            errors.push(ConfigError {
                path: join_path("controller.options", e.path()),
                message: e.into_inner().to_string(),
            });
            ControllerOptions::default()
        }
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Decode one worker, reporting its problems; `None` if it is unusable.
fn decode_worker(
    i: usize,
    w: serde_json::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<WorkerSpec> {
    let prefix = format!("workers[{i}]");
    let serde_json::Value::Object(mut obj) = w else {
        errors.push(ConfigError {
            path: prefix,
            message: "a worker must be an object with a \"type\"".into(),
        });
        return None;
    };
    let kind = obj.remove("type");
    let kind = match kind.as_ref().and_then(|t| t.as_str()) {
        Some(k @ ("router" | "container" | "guest")) => k.to_owned(),
        Some(other) => {
            errors.push(ConfigError {
                path: format!("{prefix}.type"),
                message: format!(
                    "unknown worker type {other:?}: expected \"router\", \"container\" or \"guest\""
                ),
            });
            return None;
        }
        None => {
            errors.push(ConfigError {
                path: format!("{prefix}.type"),
                message: "missing: every worker needs a \"type\" (\"router\", \"container\" or \"guest\")".into(),
            });
            return None;
        }
    };
    take_unsupported(&kind, &prefix, &mut obj, errors);
    let options = match obj.remove("options") {
        None => WorkerOptions::default(),
        Some(serde_json::Value::Object(mut o)) => {
            let p = format!("{prefix}.options");
            take_unsupported("options", &p, &mut o, errors);
            restart_string(&mut o, &format!("{p}.restart"), errors);
            match collect::deserialize_all::<WorkerOptions>(
                serde_json::Value::Object(o),
                &p,
                errors,
            ) {
                Some(o) => {
                    validate_options(&p, &kind, &o, errors);
                    o
                }
                None => WorkerOptions::default(),
            }
        }
        Some(other) => {
            errors.push(ConfigError {
                path: format!("{prefix}.options"),
                message: format!("must be an object, found {}", json_type(&other)),
            });
            WorkerOptions::default()
        }
    };
    let id = match obj.get("id") {
        None => format!("worker-{:03}", i + 1),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => {
            errors.push(ConfigError {
                path: format!("{prefix}.id"),
                message: format!("must be a string, found {}", json_type(other)),
            });
            return None;
        }
    };
    let kind = match kind.as_str() {
        "router" => {
            match collect::deserialize_all::<RouterConfig>(
                serde_json::Value::Object(obj),
                &prefix,
                errors,
            ) {
                Some(mut r) => {
                    // The worker's id (also the default one): names the
                    // private sockets of its Python components.
                    r.id = Some(id.clone());
                    r.python = options.python.clone();
                    r.pythonpath = options.pythonpath.clone();
                    r.compat = options.compat.unwrap_or_default();
                    // Secrets kept in the environment (`${VAR}`), as
                    // Crossbar.io reads them.
                    let env = |v: &str| std::env::var(v).ok();
                    for p in r.resolve_env(&env).into_iter().chain(r.validate()) {
                        errors.push(ConfigError {
                            path: format!("{prefix}.{}", p.path),
                            message: p.message,
                        });
                    }
                    for (j, realm) in r.realms.iter().enumerate() {
                        if realm.name.starts_with(crate::router::INTERNAL_REALM_PREFIX) {
                            errors.push(ConfigError {
                                path: format!("{prefix}.realms[{j}].name"),
                                message: format!(
                                    "realm names starting with {:?} are the router's own: choose another name",
                                    crate::router::INTERNAL_REALM_PREFIX
                                ),
                            });
                        }
                    }
                    for (j, c) in r.components.iter().enumerate() {
                        if let Err(e) = crate::component::check_router_component(c) {
                            errors.push(ConfigError {
                                path: format!("{prefix}.components[{j}].{}", e.0),
                                message: e.1,
                            });
                        }
                    }
                    WorkerKind::Router(r)
                }
                None => return None,
            }
        }
        "container" => {
            obj.remove("id");
            match collect::deserialize_all::<ContainerConfig>(
                serde_json::Value::Object(obj),
                &prefix,
                errors,
            ) {
                Some(mut c) => {
                    c.python = options.python.clone();
                    c.pythonpath = options.pythonpath.clone();
                    c.shutdown = options.shutdown.clone();
                    for (j, comp) in c.components.iter().enumerate() {
                        for (path, message) in comp.problems(&format!("{prefix}.components[{j}]")) {
                            errors.push(ConfigError { path, message });
                        }
                    }
                    WorkerKind::Container(c)
                }
                None => return None,
            }
        }
        _ => {
            obj.remove("id");
            match collect::deserialize_all::<GuestConfig>(
                serde_json::Value::Object(obj),
                &prefix,
                errors,
            ) {
                Some(g) => {
                    if g.executable.is_empty() {
                        errors.push(ConfigError {
                            path: format!("{prefix}.executable"),
                            message: "must name a program (a path or a name in PATH)".into(),
                        });
                    }
                    WorkerKind::Guest(g)
                }
                None => return None,
            }
        }
    };
    Some(WorkerSpec {
        index: i,
        id,
        kind,
        options,
    })
}

/// A log level (`info`) or filter (`info,router_worker=debug`), as
/// `--loglevel`, `RUST_LOG` and a worker's `options.loglevel` take it.
///
/// # Errors
/// What is wrong with it and what to write instead.
pub fn log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let bare = !spec.contains(['=', ',', '[']);
    if bare && !LEVELS.contains(&spec.trim().to_ascii_lowercase().as_str()) {
        return Err(format!(
            "invalid log level {spec:?}: use error, warn, info, debug, trace or a filter such as info,router_worker=debug"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(spec).map_err(|e| {
        format!("invalid log level or filter {spec:?}: {e} (use error, warn, info, debug or trace)")
    })
}

fn validate_options(p: &str, kind: &str, o: &WorkerOptions, errors: &mut Vec<ConfigError>) {
    if let Some(level) = &o.loglevel
        && let Err(e) = log_filter(level)
    {
        errors.push(ConfigError {
            path: format!("{p}.loglevel"),
            message: e,
        });
    }
    let r = &o.restart;
    for (key, v) in [
        ("window", r.window),
        ("backoff_initial", r.backoff_initial),
        ("backoff_max", r.backoff_max),
    ] {
        if !(v > 0.0 && v <= 86_400.0) {
            errors.push(ConfigError {
                path: format!("{p}.restart.{key}"),
                message: format!("must be a number of seconds in (0, 86400], found {v}"),
            });
        }
    }
    if r.backoff_initial > r.backoff_max {
        errors.push(ConfigError {
            path: format!("{p}.restart.backoff_initial"),
            message: format!(
                "{} s is more than backoff_max ({} s)",
                r.backoff_initial, r.backoff_max
            ),
        });
    }
    if kind != "router" && o.compat.is_some() {
        errors.push(ConfigError {
            path: format!("{p}.compat"),
            message: format!("only router workers take \"compat\"; a {kind} worker routes nothing"),
        });
    }
    if let Some(w) = &o.watch {
        if kind != "guest" {
            errors.push(ConfigError {
                path: format!("{p}.watch"),
                message: format!("only guest workers take \"watch\"; a {kind} worker is not restarted on file changes"),
            });
        }
        if w.action != "restart" {
            errors.push(ConfigError {
                path: format!("{p}.watch.action"),
                message: format!(
                    "{:?} is not an action: the one action is \"restart\"",
                    w.action
                ),
            });
        }
        if w.directories.is_empty() {
            errors.push(ConfigError {
                path: format!("{p}.watch.directories"),
                message: "list at least one directory to watch".into(),
            });
        }
    }
    if kind != "guest" && o.workdir.is_some() {
        errors.push(ConfigError {
            path: format!("{p}.workdir"),
            message: format!(
                "only guest workers take \"workdir\"; {kind} workers run in the node directory"
            ),
        });
    }
    if let Some(mode) = &o.shutdown {
        if kind != "container" {
            errors.push(ConfigError {
                path: format!("{p}.shutdown"),
                message: "only container workers take \"shutdown\" (as in Crossbar.io)".into(),
            });
        } else if !SHUTDOWN_MODES.contains(&mode.as_str()) {
            errors.push(ConfigError {
                path: format!("{p}.shutdown"),
                message: format!(
                    "unknown shutdown mode {mode:?}: expected one of {}",
                    SHUTDOWN_MODES.join(", ")
                ),
            });
        } else if matches!(
            (o.restart.policy, mode.as_str()),
            (
                RestartPolicy::Always,
                "shutdown-on-any-component-stopped"
                    | "shutdown-on-any-component-failed"
                    | "shutdown-on-last-component-stopped"
            ) | (RestartPolicy::OnFailure, "shutdown-on-any-component-failed")
        ) {
            errors.push(ConfigError {
                path: format!("{p}.shutdown"),
                message: format!(
                    "{mode:?} does not go with restart policy {:?}: the container would be restarted each time it shuts down (as Crossbar.io refuses)",
                    o.restart.policy
                ),
            });
        }
    }
    if kind == "guest" {
        for (key, set) in [
            ("python", o.python.is_some()),
            ("pythonpath", !o.pythonpath.is_empty()),
        ] {
            if set {
                errors.push(ConfigError {
                    path: format!("{p}.{key}"),
                    message: format!(
                        "only router and container workers run Python components and take \"{key}\""
                    ),
                });
            }
        }
    }
    if kind == "guest" {
        for (key, set) in [
            ("title", o.title.is_some()),
            ("cpu_affinity", o.cpu_affinity.is_some()),
        ] {
            if set {
                errors.push(ConfigError {
                    path: format!("{p}.{key}"),
                    message: format!(
                        "only router and container workers take \"{key}\" (as in Crossbar.io); a guest program names and places itself"
                    ),
                });
            }
        }
    }
    if let Some(t) = &o.title
        && (t.is_empty() || t.len() > 15 || t.contains('\0'))
    {
        errors.push(ConfigError {
            path: format!("{p}.title"),
            message: format!(
                "{t:?}: a process name is 1 to 15 bytes (Linux keeps no more), without NUL"
            ),
        });
    }
    if let Some(cpus) = &o.cpu_affinity {
        let max = nix::sched::CpuSet::count();
        if cpus.is_empty() {
            errors.push(ConfigError {
                path: format!("{p}.cpu_affinity"),
                message: "list at least one CPU (0 is the first)".into(),
            });
        }
        for (k, c) in cpus.iter().enumerate() {
            if *c >= max {
                errors.push(ConfigError {
                    path: format!("{p}.cpu_affinity[{k}]"),
                    message: format!("CPU {c} is beyond what Linux can address ({max})"),
                });
            }
        }
    }
}

/// Crossbar.io worker options Trellis accepts and ignores, with why.
fn ignored_options(p: &str, o: &WorkerOptions, out: &mut Vec<ConfigError>) {
    for (key, set, why) in [
        (
            "expose_controller",
            o.expose_controller.is_some(),
            "workers never reach the controller's management API; use `trellis status` and the control socket",
        ),
        (
            "expose_shared",
            o.expose_shared.is_some(),
            "Trellis workers share no Python objects",
        ),
        (
            "reactor",
            o.reactor.is_some(),
            "Trellis workers are not Twisted processes",
        ),
    ] {
        if set {
            out.push(ConfigError {
                path: format!("{p}.{key}"),
                message: format!("accepted and ignored: {why}"),
            });
        }
    }
}

/// Worker ids name log files and management URIs: unique, and made of
/// letters, digits, `-` and `_`.
fn check_ids(workers: &[WorkerSpec], errors: &mut Vec<ConfigError>) {
    for (n, w) in workers.iter().enumerate() {
        let path = format!("workers[{}].id", w.index);
        let ok = !w.id.is_empty()
            && w.id.len() <= 64
            && w.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            errors.push(ConfigError {
                path,
                message: format!(
                    "invalid worker id {:?}: use 1 to 64 letters, digits, '-' or '_' (it names the log file)",
                    w.id
                ),
            });
        } else if w.id == "controller" {
            errors.push(ConfigError {
                path,
                message: "\"controller\" is reserved for the controller itself: choose another id"
                    .into(),
            });
        } else if let Some(first) = workers[..n].iter().find(|o| o.id == w.id) {
            errors.push(ConfigError {
                path,
                message: format!("id {:?} is already used by workers[{}]", w.id, first.index),
            });
        }
    }
}

/// A container component with no `transport` reaches the first router of
/// the node that has its realm and listens on a Unix-socket RawSocket
/// transport (JSON for Python components, which may lack msgpack;
/// MessagePack for the built-ins when the transport offers it).
fn default_transports(
    workers: &mut [WorkerSpec],
    routers: &[(usize, RouterConfig)],
    errors: &mut Vec<ConfigError>,
) {
    use crate::router::TransportKind;
    for w in workers {
        let WorkerKind::Container(c) = &mut w.kind else {
            continue;
        };
        for (j, comp) in c.components.iter_mut().enumerate() {
            if comp.transport.is_some() {
                continue;
            }
            let socket = routers
                .iter()
                .filter(|(_, r)| r.realms.iter().any(|realm| realm.name == comp.realm))
                .flat_map(|(_, r)| &r.transports)
                .find(|t| t.kind == TransportKind::Rawsocket && t.endpoint.path.is_some());
            let Some(t) = socket else {
                errors.push(ConfigError {
                    path: format!("workers[{}].components[{j}].transport", w.index),
                    message: format!(
                        "missing, and no router with realm {:?} listens on a Unix socket: add a \"transport\" here, or a transport {{\"type\": \"rawsocket\", \"endpoint\": {{\"type\": \"unix\", \"path\": \"router.sock\"}}}} to that router",
                        comp.realm
                    ),
                });
                continue;
            };
            let offers = |name: &str| {
                t.serializers
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|s| s == name))
            };
            let serializer = if !comp.is_python() && offers("msgpack") {
                "msgpack"
            } else if offers("json") {
                "json"
            } else {
                t.serializers
                    .as_ref()
                    .and_then(|l| l.first())
                    .map_or("json", String::as_str)
            };
            comp.transport = Some(ComponentTransport {
                kind: "rawsocket".into(),
                endpoint: ComponentEndpoint {
                    kind: "unix".into(),
                    path: t.endpoint.path.clone(),
                    host: None,
                    port: None,
                    version: None,
                    timeout: None,
                },
                serializer: Some(serializer.into()),
                serializers: None,
                url: None,
                options: None,
            });
        }
    }
}

/// A component's realm and Unix socket must be a router's.
fn check_components(
    workers: &[WorkerSpec],
    routers: &[(usize, RouterConfig)],
    errors: &mut Vec<ConfigError>,
) {
    for w in workers {
        let WorkerKind::Container(c) = &w.kind else {
            continue;
        };
        for (j, comp) in c.components.iter().enumerate() {
            let pre = format!("workers[{}].components[{j}]", w.index);
            if !routers
                .iter()
                .any(|(_, r)| r.realms.iter().any(|realm| realm.name == comp.realm))
            {
                errors.push(ConfigError {
                    path: format!("{pre}.realm"),
                    message: format!("no router of this node has realm {:?}", comp.realm),
                });
            }
            let Some(transport) = &comp.transport else {
                continue;
            };
            let e = &transport.endpoint;
            if e.kind == "unix"
                && let Some(path) = &e.path
                && !routers.iter().any(|(_, r)| {
                    r.transports.iter().any(|t| {
                        t.kind == crate::router::TransportKind::Rawsocket
                            && t.endpoint.path.as_deref() == Some(path.as_str())
                    })
                })
            {
                errors.push(ConfigError {
                    path: format!("{pre}.transport.endpoint.path"),
                    message: format!(
                        "no router of this node has a rawsocket transport on the unix socket {path:?}"
                    ),
                });
            }
        }
    }
}

/// Two transports on the same TCP port or socket file fail at start; say
/// so now. Transports of one type that all say `endpoint.shared` share
/// their port.
fn check_port_clashes(routers: &[(usize, RouterConfig)], errors: &mut Vec<ConfigError>) {
    let mut seen: Vec<(u16, String, Option<crate::router::TransportKind>)> = Vec::new();
    let mut files: Vec<(&str, String)> = Vec::new();
    for (wi, r) in routers {
        for (ti, t) in r.transports.iter().enumerate() {
            if let Some(file) = t.endpoint.path.as_deref() {
                let path = format!("workers[{wi}].transports[{ti}].endpoint.path");
                if let Some((_, first)) = files.iter().find(|(f, _)| *f == file) {
                    errors.push(ConfigError {
                        path: path.clone(),
                        message: format!("socket file {file:?} is already used by {first}"),
                    });
                }
                files.push((file, path));
            }
            let Some(port) = &t.endpoint.port else {
                continue;
            };
            let path = format!("workers[{wi}].transports[{ti}].endpoint.port");
            if *port != 0 {
                let shared = t.endpoint.shared.then_some(t.kind);
                if let Some((_, first, other)) = seen.iter().find(|(p, _, _)| p == port) {
                    let message = match (shared, other) {
                        (Some(a), Some(b)) if a == *b => None,
                        (Some(_), Some(_)) => Some(format!(
                            "port {port} is shared with {first}, a transport of another type: a shared port serves one transport type"
                        )),
                        _ => Some(format!(
                            "port {port} is already used by {first} (several routers may share a port when each transport says \"shared\": true)"
                        )),
                    };
                    if let Some(message) = message {
                        errors.push(ConfigError {
                            path: path.clone(),
                            message,
                        });
                    }
                }
                seen.push((*port, path, shared));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(json: &str) -> Result<NodeConfig, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.json");
        std::fs::write(&p, json).unwrap();
        load(Some(&p))
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

    #[test]
    fn missing_file_and_bad_json_are_clear() {
        let e = load(Some(Path::new("/nonexistent/node.json"))).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = load_str("{ not json").unwrap_err();
        assert_eq!(e.errors.len(), 1);
    }
}
