//! Crossbar.io's proxy workers, served by the router workers.
//!
//! Crossbar.io runs proxy workers in front of its routers to spread TLS,
//! WebSocket and serialization over more processes, because one Python
//! router uses one core. A Trellis router worker uses every core. So a
//! proxy worker's transports are served by the router that holds the
//! proxy's realms:
//! - Crossbar.io 20's `routes` name the realms.
//! - The older `websocket-proxy` paths name the router transport they
//!   forward to (`backends`). Such a path becomes a `websocket` path with
//!   that transport's `auth`.
//!
//! Identical transports of several proxies (the same `shared` port, which
//! Crossbar.io spreads over them) are served once. The router transports
//! that only proxies could use (`anonymous-proxy`, `cryptosign-proxy`, ...)
//! lose those methods, and are dropped when nothing else is left. `check`
//! says what became of each proxy.

use serde_json::{Map, Value};

use super::ConfigError;

fn note(path: String, message: String) -> ConfigError {
    ConfigError { path, message }
}

/// The router workers (by index) and their realm names.
fn router_realms(workers: &[Value]) -> Vec<(usize, Vec<String>)> {
    workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.get("type").and_then(Value::as_str) == Some("router"))
        .map(|(i, w)| {
            let realms = w
                .get("realms")
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (i, realms)
        })
        .collect()
}

/// Whether two endpoints are the same place (a Unix path, or a TCP port).
fn same_endpoint(a: &Value, b: &Value) -> bool {
    match (a.get("type"), b.get("type")) {
        (Some(x), Some(y)) if x == y => {
            let key = if x == "unix" { "path" } else { "port" };
            a.get(key).is_some() && a.get(key) == b.get(key)
        }
        _ => false,
    }
}

/// The router transport (worker index, transport) a `websocket-proxy`
/// path's first backend goes to.
fn backend_target<'a>(workers: &'a [Value], path: &Value) -> Option<(usize, &'a Value)> {
    let endpoint = path.get("backends")?.as_array()?.first()?.get("endpoint")?;
    workers.iter().enumerate().find_map(|(i, w)| {
        if w.get("type").and_then(Value::as_str) != Some("router") {
            return None;
        }
        w.get("transports")?
            .as_array()?
            .iter()
            .find(|t| {
                t.get("endpoint")
                    .is_some_and(|e| same_endpoint(e, endpoint))
            })
            .map(|t| (i, t))
    })
}

/// The `websocket-proxy` paths of a transport's path maps, made
/// `websocket` paths with their backend's `auth`; the router they forward
/// to.
fn convert_paths(workers: &[Value], paths: &mut Map<String, Value>) -> Option<usize> {
    let mut target = None;
    for p in paths.values_mut() {
        if p.get("type").and_then(Value::as_str) == Some("path")
            && let Some(Value::Object(inner)) = p.get_mut("paths")
        {
            target = target.or(convert_paths(workers, inner));
            continue;
        }
        if p.get("type").and_then(Value::as_str) != Some("websocket-proxy") {
            continue;
        }
        let found = backend_target(workers, p).map(|(i, t)| (i, t.get("auth").cloned()));
        if let Value::Object(o) = p {
            o.insert("type".into(), "websocket".into());
            o.remove("backends");
            if let Some((i, auth)) = found {
                target = target.or(Some(i));
                if let (false, Some(auth)) = (o.contains_key("auth"), auth) {
                    o.insert("auth".into(), auth);
                }
            }
        }
    }
    target
}

/// Fold the proxy workers of `workers` into their routers; each proxy's
/// place becomes `null` (its index is kept for messages).
pub fn fold(workers: &mut [Value], errors: &mut Vec<ConfigError>, notes: &mut Vec<ConfigError>) {
    let proxies: Vec<usize> = workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.get("type").and_then(Value::as_str) == Some("proxy"))
        .map(|(i, _)| i)
        .collect();
    if proxies.is_empty() {
        return;
    }
    let realms = router_realms(workers);
    let mut received: Vec<usize> = Vec::new();
    for pi in proxies {
        let proxy = std::mem::take(&mut workers[pi]);
        let prefix = format!("workers[{pi}]");
        let Some(mut transports) = proxy.get("transports").and_then(Value::as_array).cloned()
        else {
            errors.push(note(
                format!("{prefix}.transports"),
                "a proxy worker needs transports (Trellis serves them from the router that holds its realms)".into(),
            ));
            continue;
        };
        // The router: by the realms of `routes`, else by the backends of
        // `websocket-proxy` paths.
        let by_route = proxy
            .get("routes")
            .and_then(Value::as_object)
            .map(|routes| {
                let names: Vec<&String> = routes.keys().collect();
                (
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    realms
                        .iter()
                        .find(|(_, rs)| names.iter().any(|n| rs.contains(n)))
                        .map(|(i, _)| *i),
                )
            });
        let mut by_backend = None;
        for t in &mut transports {
            for key in ["paths", "websocket"] {
                if let Some(Value::Object(paths)) = t.get_mut(key) {
                    by_backend = by_backend.or(convert_paths(workers, paths));
                }
            }
            if let Some(Value::Object(paths)) = t.get_mut("web").and_then(|w| w.get_mut("paths")) {
                by_backend = by_backend.or(convert_paths(workers, paths));
            }
        }
        let target = match (by_route, by_backend) {
            (Some((_, Some(ri))), _) | (None, Some(ri)) => ri,
            (Some((names, None)), _) => {
                errors.push(note(
                    format!("{prefix}.routes"),
                    format!(
                        "routes realm(s) {names}, which no router worker of this node defines: Trellis serves a proxy worker's transports from the router that holds its realms"
                    ),
                ));
                continue;
            }
            (None, None) => {
                errors.push(note(
                    prefix,
                    "a proxy worker needs \"routes\" naming its realms, or websocket-proxy paths whose backends are a router's transports: Trellis serves its transports from that router".into(),
                ));
                continue;
            }
        };
        let Some(Value::Array(router_transports)) = workers[target].get_mut("transports") else {
            if let Value::Object(router) = &mut workers[target] {
                router.insert("transports".into(), Value::Array(transports));
            }
            received.push(target);
            continue;
        };
        let mut placed = Vec::new();
        for t in transports {
            let at = match router_transports.iter().position(|x| *x == t) {
                Some(k) => k,
                None => {
                    router_transports.push(t);
                    router_transports.len() - 1
                }
            };
            placed.push(at.to_string());
        }
        received.push(target);
        notes.push(note(
            prefix,
            format!(
                "Crossbar.io's proxy worker: router workers[{target}] serves its transports (as its transports[{}]); a Trellis router uses every CPU core, so no proxy process is needed, and routes and connections are not used",
                placed.join(", ")
            ),
        ));
    }
    // The router transports only proxies could use.
    received.sort_unstable();
    received.dedup();
    for ri in received {
        let Some(Value::Array(ts)) = workers[ri].get_mut("transports") else {
            continue;
        };
        let mut k = 0;
        ts.retain_mut(|t| {
            let here = k;
            k += 1;
            let Some(Value::Object(auth)) = t.get_mut("auth") else {
                return true;
            };
            let proxy_only: Vec<String> = auth
                .keys()
                .filter(|m| m.ends_with("-proxy"))
                .cloned()
                .collect();
            if proxy_only.is_empty() {
                return true;
            }
            for m in &proxy_only {
                auth.remove(m);
            }
            let keep = !auth.is_empty();
            notes.push(note(
                format!("workers[{ri}].transports[{here}].auth"),
                if keep {
                    format!(
                        "{} (for proxy workers) removed: the router serves the proxies' transports itself",
                        proxy_only.join(", ")
                    )
                } else {
                    format!(
                        "this transport only took proxy workers ({}): it is not opened, since the router serves the proxies' transports itself",
                        proxy_only.join(", ")
                    )
                },
            ));
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_move_transports_to_the_router_of_the_realm_once() {
        let front =
            json!({"type": "websocket", "endpoint": {"type": "tcp", "port": 8443, "shared": true}});
        let mut workers = vec![
            json!({"type": "router", "realms": [{"name": "realm1"}], "transports": [
                {"type": "rawsocket", "endpoint": {"type": "unix", "path": "router.sock"},
                 "auth": {"anonymous-proxy": {"type": "static"}}}]}),
            json!({"type": "proxy", "routes": {"realm1": {"anonymous": "conn1"}}, "transports": [front]}),
            json!({"type": "proxy", "routes": {"realm1": {"anonymous": "conn1"}}, "transports": [front]}),
            json!({"type": "proxy", "routes": {"realm9": {}}, "transports": [front]}),
        ];
        let (mut errors, mut notes) = (Vec::new(), Vec::new());
        fold(&mut workers, &mut errors, &mut notes);
        assert_eq!(workers[0]["transports"], json!([front]));
        assert!(workers[1].is_null() && workers[2].is_null());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("realm(s) realm9"), "{errors:?}");
        let text: Vec<String> = notes
            .iter()
            .map(|n| format!("{}: {}", n.path, n.message))
            .collect();
        assert!(text[0].starts_with("workers[1]: Crossbar.io's proxy worker: router workers[0] serves its transports (as its transports[1])"), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("workers[0].transports[0].auth: this transport only took proxy workers (anonymous-proxy)")), "{text:?}");
    }

    #[test]
    fn websocket_proxy_paths_take_their_backends_auth() {
        let auth = json!({"anonymous": {"type": "static", "role": "public"}});
        let mut workers = vec![
            json!({"type": "router", "realms": [{"name": "realm1"}], "transports": [
                {"type": "websocket", "endpoint": {"type": "unix", "path": "routerws.sock"}, "auth": auth}]}),
            json!({"type": "proxy", "transports": [{"type": "web", "endpoint": {"type": "tcp", "port": 8443},
                "paths": {"ws": {"type": "websocket-proxy", "backends": [
                    {"type": "websocket", "endpoint": {"type": "unix", "path": "routerws.sock"}}]}}}]}),
        ];
        let (mut errors, mut notes) = (Vec::new(), Vec::new());
        fold(&mut workers, &mut errors, &mut notes);
        assert!(errors.is_empty(), "{errors:?}");
        let ws = &workers[0]["transports"][1]["paths"]["ws"];
        assert_eq!(ws["type"], "websocket");
        assert_eq!(ws["auth"], auth);
        assert!(ws.get("backends").is_none());
    }
}
