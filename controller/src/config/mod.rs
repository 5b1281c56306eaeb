//! Loading and validating `node.json` (Crossbar.io's version-2 shape).
//!
//! figment reads the file and merges `TRELLIS__…` environment overrides
//! (`TRELLIS__CONTROLLER__ID=x`; figment cannot index into arrays, so
//! overrides suit scalar and dict keys only). Each worker is then decoded on
//! its own with serde_path_to_error, so an error names the exact key path
//! (`workers[0].transports[1].endpoint.port`), and the router's semantic
//! checks run for every worker: the user gets every problem at once.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Json};
use router_worker::config::RouterConfig;
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
    /// Router workers, in config order, with their index in `workers`.
    pub routers: Vec<(usize, RouterConfig)>,
}

/// The top level of node.json before workers are decoded one by one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    version: Option<serde_json::Value>,
    #[serde(default)]
    controller: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    workers: Vec<serde_json::Value>,
}

/// `default.workers.0.port` (figment) → `workers[0].port`.
fn format_figment_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// serde_path_to_error's `transports[1].endpoint.port` under a prefix.
fn join_path(prefix: &str, inner: &serde_path_to_error::Path) -> String {
    let inner = inner.to_string();
    if inner == "." || inner.is_empty() {
        prefix.to_owned()
    } else if inner.starts_with('[') {
        format!("{prefix}{inner}")
    } else {
        format!("{prefix}.{inner}")
    }
}

/// Find the config file the way users expect: `--config`, then
/// `$TRELLIS_CONFIG`, `./.trellis/node.json`, `$XDG_CONFIG_HOME/trellis/node.json`
/// (or `~/.config/…`), `/etc/trellis/node.json`. `None` means: use the
/// embedded default.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("TRELLIS_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates = vec![PathBuf::from(".trellis/node.json")];
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

/// Load and validate a config file, or the embedded default when `path` is
/// `None`.
///
/// # Errors
/// [`ConfigErrors`] with every problem found, each with its key path.
pub fn load(path: Option<&Path>) -> Result<NodeConfig, ConfigErrors> {
    let (source, figment) = match path {
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
            (source, Figment::from(Json::file(p)))
        }
        None => (
            Source::Embedded,
            Figment::from(Json::string(DEFAULT_CONFIG)),
        ),
    };
    let figment = figment.merge(Env::prefixed("TRELLIS__").split("__"));
    let fail = |errors| ConfigErrors {
        source: source.clone(),
        errors,
    };
    let raw: RawNode = figment.extract().map_err(|e| {
        fail(
            e.into_iter()
                .map(|e| ConfigError {
                    path: format_figment_path(&e.path),
                    message: e.kind.to_string(),
                })
                .collect(),
        )
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
    if let Some(c) = &raw.controller
        && let Some(key) = c.keys().next()
    {
        errors.push(ConfigError {
            path: format!("controller.{key}"),
            message: "controller settings are not supported by Trellis yet: remove the key".into(),
        });
    }
    if raw.workers.is_empty() {
        errors.push(ConfigError {
            path: "workers".into(),
            message: "the node has no workers: add a worker of type \"router\"".into(),
        });
    }
    let mut routers = Vec::new();
    for (i, w) in raw.workers.into_iter().enumerate() {
        let prefix = format!("workers[{i}]");
        let Some(obj) = w.as_object() else {
            errors.push(ConfigError {
                path: prefix,
                message: "a worker must be an object with a \"type\"".into(),
            });
            continue;
        };
        let kind = obj.get("type").and_then(|t| t.as_str()).map(str::to_owned);
        match kind.as_deref() {
            Some("router") => {
                let mut obj = obj.clone();
                obj.remove("type");
                let de = serde_json::Value::Object(obj);
                match serde_path_to_error::deserialize::<_, RouterConfig>(de) {
                    Ok(r) => {
                        for p in r.validate() {
                            errors.push(ConfigError {
                                path: format!("{prefix}.{}", p.path),
                                message: p.message,
                            });
                        }
                        routers.push((i, r));
                    }
                    Err(e) => errors.push(ConfigError {
                        path: join_path(&prefix, e.path()),
                        message: e.into_inner().to_string(),
                    }),
                }
            }
            Some(k @ ("container" | "guest")) => errors.push(ConfigError {
                path: format!("{prefix}.type"),
                message: format!(
                    "{k} workers are not supported by this Trellis version yet; only \"router\" workers run"
                ),
            }),
            Some(other) => errors.push(ConfigError {
                path: format!("{prefix}.type"),
                message: format!("unknown worker type {other:?}: expected \"router\", \"container\" or \"guest\""),
            }),
            None => errors.push(ConfigError {
                path: format!("{prefix}.type"),
                message: "missing: every worker needs a \"type\" (\"router\", \"container\" or \"guest\")".into(),
            }),
        }
    }
    check_port_clashes(&routers, &mut errors);
    if errors.is_empty() {
        Ok(NodeConfig { source, routers })
    } else {
        Err(fail(errors))
    }
}

/// Two transports on the same TCP port fail at start; say so now.
fn check_port_clashes(routers: &[(usize, RouterConfig)], errors: &mut Vec<ConfigError>) {
    let mut seen: Vec<(u16, String)> = Vec::new();
    for (wi, r) in routers {
        for (ti, t) in r.transports.iter().enumerate() {
            let Some(port) = &t.endpoint.port else {
                continue;
            };
            let path = format!("workers[{wi}].transports[{ti}].endpoint.port");
            if *port != 0 {
                if let Some((_, first)) = seen.iter().find(|(p, _)| p == port) {
                    errors.push(ConfigError {
                        path: path.clone(),
                        message: format!("port {port} is already used by {first}"),
                    });
                }
                seen.push((*port, path));
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
    fn embedded_default_is_valid() {
        let cfg = load(None).unwrap();
        assert_eq!(cfg.routers.len(), 1);
        assert_eq!(cfg.routers[0].1.realms[0].name, "realm1");
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
                {"type": "container"},
                {"type": "bogus"}
            ]}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "version",
                "workers[1].transports[0].auth",
                "workers[2].type",
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
    fn missing_file_and_bad_json_are_clear() {
        let e = load(Some(Path::new("/nonexistent/node.json"))).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = load_str("{ not json").unwrap_err();
        assert_eq!(e.errors.len(), 1);
    }
}
