//! Python components: one interpreter per container, started with the
//! launcher Trellis carries in its binary (`launcher.py`), watched by the
//! worker. The interpreter is `options.python`, else the active
//! virtualenv's, else `python3` on PATH; `options.pythonpath` (relative to
//! the node directory, the worker's working directory) comes first on its
//! Python path. Its output is the worker's, so it lands in the worker's
//! log. When it ends (a class that cannot be loaded, a lost connection, a
//! crash) the worker ends with it, and the controller restarts the
//! container as its `restart` policy says; nothing else on the node
//! notices.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use trellis_config::container::{
    ComponentConfig, ComponentEndpoint, ComponentTransport, ContainerConfig,
};

/// The launcher, as shipped inside the binary.
pub const LAUNCHER: &str = include_str!("launcher.py");

/// What the launcher reports of each Python component's state.
const STATE_LINE: &str = "trellis launcher: component-state ";

/// Each Python component's last reported state (`running`, `failed`,
/// `stopped`), by its name: one launcher per worker process.
static STATES: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The Python components' states, as their launcher last reported them.
pub fn component_states() -> Vec<(String, String)> {
    STATES
        .lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Take a launcher line: a state report updates the table (true), any
/// other line is for the log (false).
fn observe(line: &str) -> bool {
    let Some(json) = line.strip_prefix(STATE_LINE) else {
        return false;
    };
    #[derive(serde::Deserialize)]
    struct Report {
        name: String,
        state: String,
    }
    if let (Ok(r), Ok(mut m)) = (serde_json::from_str::<Report>(json), STATES.lock()) {
        m.insert(r.name, r.state);
    }
    true
}

/// Copy the launcher's output to the worker's, keeping its state reports.
async fn forward_output(stdout: tokio::process::ChildStdout) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !observe(&line) {
            println!("{line}");
        }
    }
}

/// The interpreter to use.
pub fn interpreter(c: &ContainerConfig) -> String {
    c.python
        .clone()
        .or_else(|| {
            std::env::var("VIRTUAL_ENV")
                .ok()
                .map(|v| format!("{v}/bin/python"))
        })
        .unwrap_or_else(|| "python3".into())
}

/// What the launcher reads on stdin.
fn spec(c: &ContainerConfig) -> serde_json::Value {
    let node_dir = std::env::current_dir().unwrap_or_default();
    let components: Vec<serde_json::Value> = c
        .python_components()
        .filter_map(|(j, comp)| {
            let t = comp.transport.as_ref()?;
            let serializers = match t.kind.as_str() {
                "websocket" => t.serializers.clone().unwrap_or_default(),
                _ => t.serializer.iter().cloned().collect(),
            };
            Some(serde_json::json!({
                "type": comp.kind,
                "name": comp.python_name(),
                "key": format!("components[{j}]"),
                "callbacks": comp.callbacks,
                "classname": comp.classname,
                "realm": comp.realm,
                "extra": comp.extra,
                "kind": t.kind,
                "url": t.url(&node_dir),
                // TLS to the router: the endpoint's host names the
                // certificate unless `hostname` does.
                "tls": t.endpoint.tls.as_ref().map(|tls| serde_json::json!({
                    "hostname": tls.hostname.clone()
                        .unwrap_or_else(|| t.endpoint.host.clone().unwrap_or_else(|| "127.0.0.1".into())),
                    "certificate": tls.certificate,
                    "key": tls.key,
                    "ca_certificates": tls.ca_certificates,
                })),
                "serializers": serializers,
                "functions": (comp.kind == "authenticators").then(|| {
                    comp.callbacks.iter().flatten().map(|(path, create)| {
                        let e = comp.extra.as_ref().map(|x| &x[path]);
                        serde_json::json!({"path": path, "create": create,
                                           "uri": e.map(|e| &e["uri"]), "config": e.map(|e| &e["config"])})
                    }).collect::<Vec<_>>()
                }),
            }))
        })
        .collect();
    serde_json::json!({ "components": components, "shutdown": c.shutdown })
}

/// The interpreter running the launcher for `c`'s Python components, its
/// stdin piped for the spec, `options.pythonpath` first on its Python path
/// (then an inherited `PYTHONPATH`). `whose` names the components and
/// `setting` the option to fix in the error.
fn spawn_launcher(
    c: &ContainerConfig,
    stdout: Stdio,
    whose: &str,
    setting: &str,
) -> Result<(String, tokio::process::Child), String> {
    let python = interpreter(c);
    let mut path: Vec<String> = c.pythonpath.clone();
    if let Ok(existing) = std::env::var("PYTHONPATH") {
        path.push(existing);
    }
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg("-u")
        .arg("-c")
        .arg(LAUNCHER)
        .env("PYTHONPATH", path.join(":"))
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    die_with_worker(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the Python interpreter {python:?} for {whose}: {e} (set {setting} to a Python with autobahn installed)"
            )
        })?;
    Ok((python, child))
}

/// The interpreter gets SIGKILL when the worker that started it dies, even
/// by `kill -9`: a worker that comes back starts a fresh interpreter, and
/// the old one must not linger with its sessions and registrations. (The
/// controller also kills a dead worker's process group; this holds when
/// the components' code left that group, or the controller is gone too.)
#[allow(unsafe_code)]
fn die_with_worker(cmd: &mut tokio::process::Command) {
    let worker = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid); it allocates
    // nothing and takes no locks. The death signal is tied to the spawning
    // thread: a runtime worker thread, which lives as long as the worker.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            if nix::unistd::getppid().as_raw().unsigned_abs() != worker {
                return Err(std::io::Error::other("the worker exited during the spawn"));
            }
            Ok(())
        });
    }
}

/// Start the interpreter with the container's Python components.
///
/// # Errors
/// The interpreter cannot be started (named, with what to do).
pub fn start(c: &ContainerConfig, shutdown: &CancellationToken) -> Result<(), String> {
    let (python, mut child) = spawn_launcher(
        c,
        Stdio::piped(),
        "the container's Python components",
        "the container's options.python",
    )?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_output(stdout));
    }
    let input = serde_json::to_vec(&spec(c)).map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take();
    let pid = child.id().unwrap_or(0);
    info!(python = %python, pid, components = c.python_components().count(), "Python components starting");
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
        drop(stdin);
        let status = tokio::select! {
            s = child.wait() => s,
            _ = shutdown.cancelled() => {
                // The worker stops: so do its components (SIGTERM reached
                // the whole process group already).
                let _ = child.wait().await;
                return;
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        let code = status.as_ref().ok().and_then(|s| s.code());
        let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if code == Some(0) {
            info!(
                pid,
                "the Python components have stopped ({how}); the container ends with them (options.shutdown)"
            );
            std::process::exit(0);
        }
        error!(
            pid,
            "the Python components' interpreter ended ({how}); the container ends with it, and its restart policy decides what follows"
        );
        std::process::exit(1);
    });
    Ok(())
}

/// Imports each class in the interpreter, as the launcher will, and says
/// what fails: the interpreter, autobahn, Twisted, the module, the class.
const PROBE: &str = r#"
import importlib, json, sys
out = {"autobahn": None, "classes": {}}
try:
    import autobahn
except Exception as e:
    out["autobahn"] = repr(e)
def import_module(module):
    # As the launcher does: a module that uses txaio at import time gets
    # Twisted chosen first, as in Crossbar.io's workers.
    try:
        return importlib.import_module(module)
    except Exception as e:
        if "select a framework" not in str(e):
            raise
    import txaio
    for n in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        del sys.modules[n]
    try:
        import twisted
        txaio.use_twisted()
    except ImportError:
        txaio.use_asyncio()
    return importlib.import_module(module)
for name in sys.argv[1:]:
    module, _, cls = name.rpartition(".")
    try:
        m = import_module(module)
        out["classes"][name] = None if hasattr(m, cls) else f"module {module!r} has no {cls!r}"
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "twisted":
            out["classes"][name] = "twisted"
        else:
            out["classes"][name] = f"cannot import {module!r}: {e}"
    except Exception as e:
        out["classes"][name] = f"importing {module!r} raised {e!r}"
print(json.dumps(out))
"#;

/// What stands in the way of the container's Python components, as (key
/// path under the worker, message) pairs, found by running the interpreter
/// once with `node_dir` as its working directory.
pub fn problems(c: &ContainerConfig, node_dir: &std::path::Path) -> Vec<(String, String)> {
    // (key path, what to import): a class, or each callback function.
    let classes: Vec<(String, &str)> = c
        .python_components()
        .flat_map(|(j, comp)| match (&comp.callbacks, comp.kind.as_str()) {
            (Some(cb), "function") => cb
                .iter()
                .map(|(event, f)| (format!("components[{j}].callbacks.{event}"), f.as_str()))
                .collect::<Vec<_>>(),
            (Some(cb), "authenticators") => cb
                .iter()
                .map(|(path, f)| (format!("{path}.create"), f.as_str()))
                .collect::<Vec<_>>(),
            _ => vec![(
                format!("components[{j}].classname"),
                comp.classname.as_str(),
            )],
        })
        .collect();
    if classes.is_empty() {
        return Vec::new();
    }
    let python = interpreter(c);
    let path: Vec<String> = c
        .pythonpath
        .iter()
        .map(|p| node_dir.join(p).display().to_string())
        .collect();
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(PROBE)
        .args(classes.iter().map(|(_, n)| *n))
        .env("PYTHONPATH", path.join(":"))
        .current_dir(node_dir)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return vec![(
                "options.python".into(),
                format!(
                    "the Python interpreter {python:?} cannot be run ({e}): install Python 3 or name one in options.python"
                ),
            )];
        }
    };
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return vec![(
            "options.python".into(),
            format!(
                "{python:?} did not run the import check ({}): is it a Python 3 interpreter?",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )];
    };
    let pip = format!("{python} -m pip install");
    if let Some(e) = report["autobahn"].as_str() {
        return vec![(
            "options.python".into(),
            format!(
                "autobahn is not importable in {python:?} ({e}): install it with `{pip} 'autobahn[asyncio]'`"
            ),
        )];
    }
    let mut problems = Vec::new();
    for (path, name) in classes {
        match report["classes"][name].as_str() {
            None => {}
            Some("twisted") => problems.push((
                path,
                format!(
                    "{name:?} is a Twisted component and Twisted is not importable in {python:?}: install it with `{pip} twisted`"
                ),
            )),
            Some(why) => problems.push((
                path,
                format!(
                    "{name:?}: {why} (looked in {:?}: options.pythonpath, then the directory the node was started from){}",
                    c.pythonpath,
                    if name.starts_with("crossbar.") {
                        format!(
                            "; it is one of Crossbar.io's own classes, which run as they are with Crossbar.io installed: `{pip} crossbar` (its REST bridge lives in crossbar.bridge.rest since 2017)"
                        )
                    } else {
                        String::new()
                    }
                ),
            )),
        }
    }
    problems
}

/// The realm where a router's function authenticators are registered:
/// only the router's private link to its Python interpreter may join it.
pub const FUNCTIONS_REALM: &str = "trellis.internal.functions";

/// The function authenticators' procedures in [`FUNCTIONS_REALM`].
const FUNCTION_PROCEDURE_PREFIX: &str = "authenticate.function";

/// The role of the session that registers the function authenticators.
const FUNCTION_HOST_ROLE: &str = "trellis.function-host";

/// A `"type": "function"` authentication method of a router: Crossbar.io's
/// `create(config, controller)` that returns `authenticate(realm, authid,
/// details)`, run by the router's Python interpreter and called as the
/// dynamic authenticator `uri` in [`FUNCTIONS_REALM`].
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionAuthenticator {
    /// Its key path (`transports[0].paths.ws.auth.wampcra`).
    pub path: String,
    /// The procedure it is registered as.
    pub uri: String,
    /// `package.module.create_authenticator`.
    pub create: String,
    /// `create`'s first argument.
    pub config: serde_json::Value,
}

/// The router's function authenticators, in config order.
pub fn function_authenticators(
    r: &trellis_config::router::RouterConfig,
) -> Vec<FunctionAuthenticator> {
    take_function_authenticators(&mut r.clone())
}

/// Turn `r`'s function methods into dynamic ones calling their
/// procedures in [`FUNCTIONS_REALM`]; say what they were.
fn take_function_authenticators(
    r: &mut trellis_config::router::RouterConfig,
) -> Vec<FunctionAuthenticator> {
    use trellis_config::router::{AuthKind, MethodAuth};
    fn take<P>(m: Option<&mut MethodAuth<P>>, path: String, out: &mut Vec<FunctionAuthenticator>) {
        let Some(m) = m.filter(|m| m.kind == AuthKind::Function) else {
            return;
        };
        // Not under `trellis.`, which clients may not register: the realm
        // is private already.
        let uri = format!("{FUNCTION_PROCEDURE_PREFIX}{}", out.len());
        out.push(FunctionAuthenticator {
            path,
            uri: uri.clone(),
            create: m.create.take().unwrap_or_default(),
            config: m.config.take().unwrap_or_else(|| serde_json::json!({})),
        });
        m.kind = AuthKind::Dynamic;
        m.authenticator = Some(uri);
        m.authenticator_realm = Some(FUNCTIONS_REALM.into());
        m.expose_controller = None;
    }
    let mut out = Vec::new();
    for (path, a) in r.auth_configs_mut() {
        if let Some(an) = a.anonymous.as_mut() {
            let mut m = an.as_method();
            take(Some(&mut m), format!("{path}.anonymous"), &mut out);
            an.set_method(m);
        }
        take(a.ticket.as_mut(), format!("{path}.ticket"), &mut out);
        take(a.wampcra.as_mut(), format!("{path}.wampcra"), &mut out);
        take(
            a.cryptosign.as_mut(),
            format!("{path}.cryptosign"),
            &mut out,
        );
        take(a.scram.as_mut(), format!("{path}.scram"), &mut out);
        take(a.tls.as_mut(), format!("{path}.tls"), &mut out);
    }
    out
}

/// The realm of the function authenticators: their host may register
/// their procedures, nothing else.
fn functions_realm() -> trellis_config::router::RealmConfig {
    serde_json::from_value(serde_json::json!({
        "name": FUNCTIONS_REALM,
        "roles": [{"name": FUNCTION_HOST_ROLE, "permissions": [
            {"uri": FUNCTION_PROCEDURE_PREFIX, "match": "prefix",
             "allow": {"register": true}}]}]
    }))
    .unwrap_or_else(|_| unreachable!("a fixed shape"))
}

/// The private socket of a router's function authenticators.
pub fn authenticators_socket(worker_id: &str) -> String {
    format!(".trellis-{worker_id}-authenticators.sock")
}

/// The private socket a Python router component joins over, relative to
/// the node directory (the worker's working directory).
pub fn component_socket(worker_id: &str, j: usize) -> String {
    format!(".trellis-{worker_id}-component{j}.sock")
}

/// A router's Python components as a container's, each over its private
/// socket, for [`problems`] and the launcher. Built-in components keep
/// their place (so indices match the config) and are skipped.
pub fn router_as_container(r: &trellis_config::router::RouterConfig) -> ContainerConfig {
    let worker_id = r.id.clone().unwrap_or_default();
    let components = r
        .components
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let classname = if c.is_python() {
                c.classname.clone()
            } else {
                // Keeps the index; `python_components` skips it.
                "trellis.builtin".into()
            };
            serde_json::from_value(serde_json::json!({
                "type": "class", "classname": classname, "realm": c.realm, "extra": c.extra,
                "transport": {"type": "rawsocket", "serializer": "json",
                              "endpoint": {"type": "unix", "path": component_socket(&worker_id, j)}}
            }))
            .unwrap_or_else(|_| unreachable!("a fixed shape"))
        })
        .collect();
    let mut components: Vec<ComponentConfig> = components;
    let functions = function_authenticators(r);
    if !functions.is_empty() {
        components.push(ComponentConfig {
            kind: "authenticators".into(),
            id: None,
            classname: String::new(),
            callbacks: Some(
                functions
                    .iter()
                    .map(|f| (f.path.clone(), f.create.clone()))
                    .collect(),
            ),
            realm: FUNCTIONS_REALM.into(),
            transport: Some(ComponentTransport {
                kind: "rawsocket".into(),
                id: None,
                debug: None,
                endpoint: ComponentEndpoint {
                    kind: "unix".into(),
                    path: Some(authenticators_socket(&worker_id)),
                    host: None,
                    port: None,
                    version: None,
                    timeout: None,
                    tls: None,
                },
                serializer: Some("json".into()),
                serializers: None,
                url: None,
                options: None,
            }),
            auth: None,
            extra: Some(serde_json::Value::Object(
                functions
                    .into_iter()
                    .map(|f| {
                        (
                            f.path,
                            serde_json::json!({"uri": f.uri, "config": f.config}),
                        )
                    })
                    .collect(),
            )),
        });
    }
    ContainerConfig {
        components,
        python: r.python.clone(),
        pythonpath: r.pythonpath.clone(),
        // A router component that ends ends the interpreter.
        shutdown: None,
    }
}

/// The router with one private Unix socket transport per Python router
/// component (mode 0600, in the node directory): anonymous login with the
/// component's role and authid, its realm only, as Crossbar.io's router
/// components join without transport authentication.
pub fn with_private_transports(
    r: &trellis_config::router::RouterConfig,
) -> trellis_config::router::RouterConfig {
    use trellis_config::router::{AnonymousAuth, TransportConfig};
    let worker_id = r.id.clone().unwrap_or_default();
    let mut out = r.clone();
    if !take_function_authenticators(&mut out).is_empty() {
        out.realms.push(functions_realm());
        let mut t = TransportConfig::unix_anonymous(
            "authenticators",
            authenticators_socket(&worker_id),
            Some("0600".into()),
            AnonymousAuth::fixed(
                FUNCTION_HOST_ROLE,
                Some(FUNCTION_HOST_ROLE.into()),
                Some(FUNCTIONS_REALM.into()),
                true,
            ),
        );
        t.internal = true;
        out.transports.push(t);
    }
    for (j, c) in r
        .components
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_python())
    {
        out.transports.push(TransportConfig::unix_anonymous(
            &format!("component{j}"),
            component_socket(&worker_id, j),
            Some("0600".into()),
            AnonymousAuth::fixed(&c.role, c.authid.clone(), Some(c.realm.clone()), true),
        ));
    }
    out
}

/// Start a router's Python components and wait until every one has
/// joined (its `onJoin` finished), so that an authenticator is there before
/// the first client. Their output goes to the worker's. If the interpreter
/// ends later, so does the router worker, as a crash of a router component
/// would end Crossbar.io's router; its restart policy decides.
///
/// # Errors
/// The interpreter cannot start, ends, or not every component joined in
/// `within`.
pub async fn start_router_components(
    r: &trellis_config::router::RouterConfig,
    within: std::time::Duration,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let c = router_as_container(r);
    let count = c.python_components().count();
    if count == 0 {
        return Ok(());
    }
    let (python, mut child) = spawn_launcher(
        &c,
        Stdio::piped(),
        "the router's Python components",
        "the router's options.python",
    )?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = serde_json::to_vec(&spec(&c)).map_err(|e| e.to_string())?;
        stdin.write_all(&input).await.map_err(|e| e.to_string())?;
        stdin.shutdown().await.map_err(|e| e.to_string())?;
    }
    let stdout = child.stdout.take().ok_or("the interpreter has no stdout")?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let marker = format!("trellis launcher: all {count} components joined");
    let pid = child.id().unwrap_or(0);
    info!(python = %python, pid, components = count, "Python router components starting");
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut ready = Some(ready_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if observe(&line) {
                continue;
            }
            println!("{line}");
            if line.ends_with(&marker)
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
        let status = child.wait().await;
        if shutdown.is_cancelled() {
            return;
        }
        let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        error!(
            pid,
            "the Python router components' interpreter ended ({how}); the router worker ends with it"
        );
        std::process::exit(1);
    });
    match tokio::time::timeout(within, ready_rx).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(
            "the Python router components' interpreter ended before they joined: its log says why"
                .into(),
        ),
        Err(_) => Err(format!(
            "the Python router components did not all join within {} s",
            within.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_reports_update_the_table_and_other_lines_pass() {
        assert!(!observe("Adder joined realm1"));
        assert!(observe(
            r#"trellis launcher: component-state {"name": "app.T", "state": "running"}"#
        ));
        assert!(observe(
            r#"trellis launcher: component-state {"name": "app.T", "state": "failed"}"#
        ));
        assert!(observe("trellis launcher: component-state not json"));
        assert!(
            component_states().contains(&("app.T".into(), "failed".into())),
            "{:?}",
            component_states()
        );
    }

    #[test]
    fn the_spec_names_urls_as_the_launcher_reads_them() {
        let c: ContainerConfig = serde_json::from_value(serde_json::json!({"components": [
            {"type": "class", "classname": "app.App", "realm": "realm1", "extra": {"a": 1},
             "transport": {"type": "websocket", "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": 8000},
                           "url": "ws://127.0.0.1:8000/ws", "serializers": ["json"]}},
            {"type": "class", "classname": "app.Other", "realm": "realm1",
             "transport": {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 8001}, "serializer": "msgpack"}},
            {"type": "class", "classname": "trellis.balloon.Backend", "realm": "realm1",
             "transport": {"type": "rawsocket", "endpoint": {"type": "unix", "path": "r.sock"}}}
        ]}))
        .unwrap();
        let s = spec(&c);
        let comps = s["components"].as_array().unwrap();
        assert_eq!(comps.len(), 2, "built-ins are not the launcher's");
        assert_eq!(comps[0]["url"], "ws://127.0.0.1:8000/ws");
        assert_eq!(comps[0]["extra"]["a"], 1);
        assert_eq!(comps[1]["url"], "rs://127.0.0.1:8001");
        assert_eq!(comps[1]["serializers"][0], "msgpack");
        assert!(LAUNCHER.contains("def run_asyncio"));
    }

    #[test]
    fn function_methods_become_dynamic_ones_in_the_routers_own_realm() {
        use trellis_config::router::{AuthKind, RouterConfig};
        let r: RouterConfig = serde_json::from_value(serde_json::json!({
            "id": "r1",
            "realms": [{"name": "realm1", "roles": [{"name": "user"}]}],
            "transports": [
                {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 1},
                 "auth": {"cryptosign": {"type": "function", "create": "a.create", "config": {"k": 1}}}},
                {"type": "websocket", "endpoint": {"type": "tcp", "port": 2},
                 "auth": {"ticket": {"type": "static", "principals": {}}}}]
        }))
        .unwrap();
        assert_eq!(r.function_methods(), ["transports[0].auth.cryptosign"]);
        let bound = with_private_transports(&r);
        assert!(bound.function_methods().is_empty());
        assert!(bound.validate().is_empty(), "{:?}", bound.validate());
        let m = bound.transports[0]
            .auth
            .as_ref()
            .and_then(|a| a.cryptosign.as_ref())
            .unwrap();
        assert_eq!(m.kind, AuthKind::Dynamic);
        assert_eq!(m.authenticator.as_deref(), Some("authenticate.function0"));
        assert_eq!(m.authenticator_realm.as_deref(), Some(FUNCTIONS_REALM));
        assert!(bound.realms.iter().any(|x| x.name == FUNCTIONS_REALM));
        let private = bound.transports.last().unwrap();
        assert!(private.internal, "only the host's link may join the realm");
        assert_eq!(
            private.endpoint.path.as_deref(),
            Some(".trellis-r1-authenticators.sock")
        );
        // The launcher gets the host with the function and its config.
        let s = spec(&router_as_container(&r));
        let host = &s["components"][0];
        assert_eq!(host["type"], "authenticators");
        assert_eq!(host["realm"], FUNCTIONS_REALM);
        assert_eq!(host["functions"][0]["create"], "a.create");
        assert_eq!(host["functions"][0]["uri"], "authenticate.function0");
        assert_eq!(host["functions"][0]["config"]["k"], 1);
    }
}
