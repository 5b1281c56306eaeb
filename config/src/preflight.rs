//! The checks that read the disk: what the node directory must hold for
//! the config to run (archives and their hashes, watched directories) and
//! what deserves a warning (static directories that are not there).
//!
//! The checks that need the workers' own libraries (TLS files read by
//! rustls, Python modules imported by the interpreter) are the
//! controller's: they build what the workers will build, so they cannot
//! drift from it.

use std::path::Path;

use crate::node::{ConfigError, ConfigErrors, NodeConfig, paths};
use crate::router::{TransportConfig, TransportKind, WebPath, WebPathKind};

/// Watched directories that are not there.
pub fn watch_problems(cfg: &NodeConfig, node_dir: &Path) -> ConfigErrors {
    let mut errors = Vec::new();
    for w in &cfg.workers {
        for (k, d) in w
            .options
            .watch
            .iter()
            .flat_map(|w| w.directories.iter().enumerate())
        {
            let full = paths::lexical(&node_dir.join(d));
            if !full.is_dir() {
                errors.push(ConfigError {
                    path: format!("workers[{}].options.watch.directories[{k}]", w.index),
                    message: format!(
                        "{} is not a directory (relative paths start at the node directory {}): create it or fix the path",
                        full.display(),
                        node_dir.display()
                    ),
                });
            }
        }
    }
    ConfigErrors {
        source: cfg.source.clone(),
        errors,
    }
}

/// The files a component's `transport.endpoint.tls` names that are not
/// there.
pub fn component_tls_problems(cfg: &NodeConfig, node_dir: &Path) -> ConfigErrors {
    let mut errors = Vec::new();
    for w in &cfg.workers {
        let crate::node::WorkerKind::Container(c) = &w.kind else {
            continue;
        };
        for (j, comp) in c.components.iter().enumerate() {
            let Some(mut tls) = comp.transport.as_ref().and_then(|t| t.endpoint.tls.clone()) else {
                continue;
            };
            for (key, f) in tls.files_mut() {
                let full = paths::lexical(&node_dir.join(f.as_str()));
                if !full.is_file() {
                    errors.push(ConfigError {
                        path: format!(
                            "workers[{}].components[{j}].transport.endpoint.tls.{key}",
                            w.index
                        ),
                        message: format!(
                            "{} is not a file (relative paths start at the node directory {}): a PEM file",
                            full.display(),
                            node_dir.display()
                        ),
                    });
                }
            }
        }
    }
    ConfigErrors {
        source: cfg.source.clone(),
        errors,
    }
}

/// What the disk says that deserves a look but does not stop the node:
/// static directories and archive files that are not there (served as
/// 404, as Crossbar.io serves them), archives `start` will download.
pub fn preflight_warnings(cfg: &NodeConfig, node_dir: &Path) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for (key, p) in archives(cfg) {
        let Some(a) = &p.archive else { continue };
        let file = node_dir.join(a);
        if file.is_file() {
            continue;
        }
        let message = match &p.origin {
            Some(o) if downloads(p) => {
                let o = shown_url(o);
                let hashes = if p.hashes.as_ref().is_some_and(|h| !h.is_empty()) {
                    ", checks it against \"hashes\""
                } else {
                    ""
                };
                format!(
                    "{} is not there yet: `trellis start` downloads it from {o:?}{hashes} and keeps it there",
                    file.display()
                )
            }
            origin => {
                let how = match origin.as_deref().map(shown_url) {
                    Some(o) => format!(
                        "put the zip file there, or add \"download\": true to have `trellis start` fetch it from its origin {o:?}"
                    ),
                    None => "put the zip file there or fix the path".into(),
                };
                format!(
                    "{} is not a file (an archive is taken from the node directory {}): it is served as empty, every request there gets 404, as in Crossbar.io; {how}",
                    file.display(),
                    node_dir.display()
                )
            }
        };
        out.push(ConfigError {
            path: format!("{key}.archive"),
            message,
        });
    }
    for (i, r) in cfg.routers() {
        for (j, t) in r.transports.iter().enumerate() {
            let (paths, under) = web_paths(t);
            missing_statics(
                paths,
                &format!("workers[{i}].transports[{j}].{under}"),
                node_dir,
                &mut out,
            );
        }
    }
    out
}

fn missing_statics(
    paths: Option<&std::collections::BTreeMap<String, WebPath>>,
    pre: &str,
    node_dir: &Path,
    out: &mut Vec<ConfigError>,
) {
    for (name, p) in paths.into_iter().flatten() {
        if let Some(inner) = &p.paths {
            missing_statics(Some(inner), &format!("{pre}.{name}.paths"), node_dir, out);
        }
        let Some(d) = &p.directory else { continue };
        if p.kind != WebPathKind::Static {
            continue;
        }
        // Lexically: the node directory may not exist before the first
        // start (which creates it), and `..` must not need it to.
        let full = paths::lexical(&node_dir.join(d));
        if full != paths::lexical(node_dir) && !full.is_dir() {
            out.push(ConfigError {
                path: format!("{pre}.{name}.directory"),
                message: format!(
                    "{} is not a directory (relative paths start at the node directory {}): it is served as empty, every request there gets 404, as in Crossbar.io; create it or fix the path",
                    full.display(),
                    node_dir.display()
                ),
            });
        }
    }
}

/// A transport's web paths and the key they are under (a universal
/// transport's under `web.paths`).
fn web_paths(
    t: &TransportConfig,
) -> (
    Option<&std::collections::BTreeMap<String, WebPath>>,
    &'static str,
) {
    match t.kind {
        TransportKind::Universal => (t.web.as_ref().map(|w| &w.paths), "web.paths"),
        _ => (t.paths.as_ref(), "paths"),
    }
}

/// Every `archive` web path of the config's routers, with its key
/// (`workers[0].transports[1].paths.autobahn`), nested `path` services
/// included.
pub fn archives(cfg: &NodeConfig) -> Vec<(String, &WebPath)> {
    fn walk<'a>(
        paths: Option<&'a std::collections::BTreeMap<String, WebPath>>,
        pre: &str,
        out: &mut Vec<(String, &'a WebPath)>,
    ) {
        for (name, p) in paths.into_iter().flatten() {
            let key = format!("{pre}.{name}");
            if p.kind == WebPathKind::Archive {
                out.push((key.clone(), p));
            }
            walk(p.paths.as_ref(), &format!("{key}.paths"), out);
        }
    }
    let mut out = Vec::new();
    for (i, r) in cfg.routers() {
        for (j, t) in r.transports.iter().enumerate() {
            let (paths, under) = web_paths(t);
            walk(
                paths,
                &format!("workers[{i}].transports[{j}].{under}"),
                &mut out,
            );
        }
    }
    out
}

/// A URL as logs and messages may show it: no user, password, query or
/// fragment (a signed download link's token stays out of the log).
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Whether `trellis start` downloads this archive when its file is not
/// there (`"download": true` and an `origin`, as in Crossbar.io).
pub fn downloads(p: &WebPath) -> bool {
    p.download == Some(true) && p.origin.is_some()
}

/// Archive files whose SHA-256 is none of their `hashes`: a config
/// error, before anything starts. (A file that is not there is a warning,
/// [`preflight_warnings`].)
pub fn archive_problems(cfg: &NodeConfig, node_dir: &Path) -> ConfigErrors {
    let mut errors = Vec::new();
    for (key, p) in archives(cfg) {
        let Some(a) = &p.archive else { continue };
        let file = node_dir.join(a);
        if !file.is_file() {
            continue;
        }
        if let Some(hashes) = p.hashes.as_ref().filter(|h| !h.is_empty()) {
            match sha256_file(&file) {
                Ok(h) if hashes.iter().any(|x| x.eq_ignore_ascii_case(&h)) => {}
                Ok(h) => errors.push(ConfigError {
                    path: format!("{key}.hashes"),
                    message: format!(
                        "{} has the SHA-256 fingerprint {h}, which is none of the listed {}: the archive is not the one the config expects",
                        file.display(),
                        hashes.join(", ")
                    ),
                }),
                Err(e) => errors.push(ConfigError {
                    path: format!("{key}.archive"),
                    message: format!("cannot read {} to check its hashes: {e}", file.display()),
                }),
            }
        }
    }
    ConfigErrors {
        source: cfg.source.clone(),
        errors,
    }
}

/// A file's SHA-256, in lower-case hex (as `sha256sum` prints it).
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node directory holding `node.json` with one router serving
    /// `paths`, and the config loaded from it.
    fn node(paths: serde_json::Value) -> (tempfile::TempDir, NodeConfig) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cfg = serde_json::json!({
            "version": 2,
            "workers": [{"type": "router",
                "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": []}]}],
                "transports": [{"type": "web", "endpoint": {"type": "tcp", "port": 8080},
                                "paths": paths}]},
                {"type": "guest", "executable": "/bin/true",
                 "options": {"watch": {"directories": ["src", "web"]}}}]
        });
        let file = dir.path().join("node.json");
        std::fs::write(&file, cfg.to_string()).expect("written");
        let loaded = crate::node::load(Some(&file)).expect("a valid config");
        (dir, loaded)
    }

    #[test]
    fn a_url_is_shown_without_its_credentials_or_query() {
        assert_eq!(
            shown_url("https://joe:pw@example.com:8443/a/b.zip?token=s3cret#x"),
            "https://example.com:8443/a/b.zip"
        );
        assert_eq!(shown_url("not a url"), "(not a URL)");
    }

    #[test]
    fn a_missing_archive_is_a_warning_and_a_wrong_one_an_error() {
        let (dir, cfg) = node(serde_json::json!({
            "/": {"type": "archive", "archive": "site.zip", "origin": "https://example.com/site.zip"},
            "docs": {"type": "archive", "archive": "docs.zip",
                     "hashes": ["0000000000000000000000000000000000000000000000000000000000000000"]}
        }));
        std::fs::write(dir.path().join("docs.zip"), b"not the expected bytes").expect("written");
        let found = archive_problems(&cfg, dir.path()).errors;
        let at: Vec<&str> = found.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(at, ["workers[0].transports[0].paths.docs.hashes"]);
        // sha256("not the expected bytes"), as sha256sum prints it.
        let h = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"not the expected bytes",
        ));
        assert!(found[0].message.contains(&h), "{found:?}");
        let warned = preflight_warnings(&cfg, dir.path());
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].path, "workers[0].transports[0].paths./.archive");
        assert!(
            warned[0].message.contains("served as empty")
                && warned[0].message.contains("add \"download\": true"),
            "{warned:?}"
        );
        std::fs::write(dir.path().join("site.zip"), b"zip").expect("written");
        let mut cfg = cfg;
        if let crate::node::WorkerKind::Router(r) = &mut cfg.workers[0].kind
            && let Some(p) = r.transports[0].paths.as_mut()
            && let Some(docs) = p.get_mut("docs")
        {
            docs.hashes = Some(vec![h.to_uppercase()]);
        }
        assert_eq!(archive_problems(&cfg, dir.path()).errors, vec![]);
    }

    #[test]
    fn a_missing_static_directory_is_a_warning_at_its_key() {
        let (dir, cfg) = node(serde_json::json!({
            "/": {"type": "static", "directory": ".."},
            "shared": {"type": "static", "directory": "../shared-web"},
            "api": {"type": "path", "paths": {"doc": {"type": "static", "directory": "doc"}}}
        }));
        let warned: Vec<String> = preflight_warnings(&cfg, dir.path())
            .into_iter()
            .map(|w| w.path)
            .collect();
        assert_eq!(
            warned,
            [
                "workers[0].transports[0].paths.api.paths.doc.directory",
                "workers[0].transports[0].paths.shared.directory"
            ]
        );
        std::fs::create_dir(dir.path().join("doc")).expect("created");
        assert_eq!(preflight_warnings(&cfg, dir.path()).len(), 1);
    }

    #[test]
    fn watched_directories_must_exist() {
        let (dir, cfg) = node(serde_json::json!({"/": {"type": "static", "directory": "."}}));
        std::fs::create_dir(dir.path().join("src")).expect("created");
        let found = watch_problems(&cfg, dir.path()).errors;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "workers[1].options.watch.directories[1]");
        assert!(found[0].message.contains("is not a directory"), "{found:?}");
    }
}
