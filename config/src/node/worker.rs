//! Each entry of `workers`: decoded by its type with its key path, its
//! `options` checked, and the checks across workers (ids, ports, the
//! components' transports).

use super::*;

/// The most threads a worker's runtime may run (`options.threads`).
pub const MAX_THREADS: usize = 1024;

pub(super) fn json_type(v: &serde_json::Value) -> &'static str {
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
pub(super) fn decode_worker(
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
            restart_for_shutdown(&mut o);
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
                    for p in r
                        .resolve_env(&env)
                        .into_iter()
                        .chain(r.plan_options())
                        .chain(r.validate())
                    {
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
    if kind == "guest" && o.threads.is_some() {
        errors.push(ConfigError {
            path: format!("{p}.threads"),
            message: "only router and container workers take \"threads\" (their runtime's); a guest program runs its own".into(),
        });
    } else if let Some(n) = o.threads
        && !(1..=MAX_THREADS).contains(&n)
    {
        errors.push(ConfigError {
            path: format!("{p}.threads"),
            message: format!(
                "{n}: a worker runs 1 to {MAX_THREADS} threads (leave it out for one per CPU the worker may use)"
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
pub(super) fn ignored_options(p: &str, o: &WorkerOptions, out: &mut Vec<ConfigError>) {
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
pub(super) fn check_ids(workers: &[WorkerSpec], errors: &mut Vec<ConfigError>) {
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
pub(super) fn default_transports(
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
                id: None,
                debug: None,
                endpoint: ComponentEndpoint {
                    kind: "unix".into(),
                    path: t.endpoint.path.clone(),
                    host: None,
                    port: None,
                    version: None,
                    timeout: None,
                    tls: None,
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
pub(super) fn check_components(
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
pub(super) fn check_port_clashes(routers: &[(usize, RouterConfig)], errors: &mut Vec<ConfigError>) {
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
