//! Relative paths in a config, resolved as Crossbar.io resolves them:
//! against the node directory (`--cbdir`) made absolute, and normalized
//! lexically (`os.path.abspath(os.path.join(cbdir, path))`). So `".."` in
//! `.crossbar/config.json` is the project directory whether `--cbdir` is
//! relative, absolute, `.` or a symlink (whose `..` is the directory the
//! link is in, not the one its target is in).
//!
//! The controller resolves every file and directory a worker will open
//! (static directories, archives, TLS files, Python paths, NATS files,
//! guest working directories) before it checks or starts anything, so
//! neither the checks nor the workers depend on the working directory.

use std::path::{Component, Path, PathBuf};

use super::{NodeConfig, WorkerKind};
use crate::router::{TransportConfig, WebPath};

/// `dir` as an absolute path, without resolving symlinks (the current
/// directory joined in front of a relative one).
pub fn absolute(dir: &Path) -> PathBuf {
    let joined = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(dir)
    };
    lexical(&joined)
}

/// `a/./b/../c` as `a/c`, without touching the file system; `..` above
/// the root stays at the root, as in `os.path.abspath`.
pub fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped =
                    matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped && !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `path` (from the config) resolved against the absolute node directory.
pub fn resolve(node_dir: &Path, path: &str) -> String {
    if path.is_empty() {
        return path.to_owned();
    }
    lexical(&node_dir.join(path)).to_string_lossy().into_owned()
}

fn resolve_in_place(node_dir: &Path, path: &mut String) {
    *path = resolve(node_dir, path);
}

fn web_paths(node_dir: &Path, paths: &mut std::collections::BTreeMap<String, WebPath>) {
    for p in paths.values_mut() {
        for v in [&mut p.directory, &mut p.archive].into_iter().flatten() {
            resolve_in_place(node_dir, v);
        }
        if let Some(c) = &mut p.cookie {
            resolve_in_place(node_dir, &mut c.store.filename);
        }
        if let Some(inner) = &mut p.paths {
            web_paths(node_dir, inner);
        }
    }
}

fn transport(node_dir: &Path, t: &mut TransportConfig) {
    if let Some(tls) = &mut t.endpoint.tls {
        resolve_in_place(node_dir, &mut tls.key);
        resolve_in_place(node_dir, &mut tls.certificate);
        for c in &mut tls.chain_certificates {
            resolve_in_place(node_dir, c);
        }
        for c in tls.ca_certificates.iter_mut().flatten() {
            resolve_in_place(node_dir, c);
        }
        if let Some(d) = &mut tls.dhparam {
            resolve_in_place(node_dir, d);
        }
    }
    if let Some(c) = &mut t.cookie {
        resolve_in_place(node_dir, &mut c.store.filename);
    }
    if let Some(paths) = &mut t.paths {
        web_paths(node_dir, paths);
    }
    if let Some(ws) = &mut t.websocket {
        web_paths(node_dir, ws);
    }
    if let Some(web) = &mut t.web {
        web_paths(node_dir, &mut web.paths);
    }
}

impl NodeConfig {
    /// Resolve every relative path against `node_dir` (made absolute
    /// first), in place.
    ///
    /// Python components also find modules in the directory the node was
    /// started from, after `options.pythonpath`: Crossbar.io runs its
    /// workers in the controller's working directory with `python -m`,
    /// which puts that directory on the path, so a project whose modules
    /// sit beside `.crossbar/` works without a `pythonpath`.
    pub fn resolve_paths(&mut self, node_dir: &Path) {
        let start_dir = absolute(Path::new("."));
        self.resolve_paths_from(node_dir, &start_dir);
    }

    /// [`resolve_paths`](Self::resolve_paths), with the start directory given.
    pub fn resolve_paths_from(&mut self, node_dir: &Path, start_dir: &Path) {
        let node_dir = absolute(node_dir);
        let start_dir = start_dir.to_string_lossy().into_owned();
        let with_start = |path: &mut Vec<String>| {
            if !path.contains(&start_dir) {
                path.push(start_dir.clone());
            }
        };
        if let Some(c) = &mut self.cluster {
            nats(&node_dir, &mut c.nats);
        }
        for w in &mut self.workers {
            if let Some(dir) = &mut w.options.workdir {
                resolve_in_place(&node_dir, dir);
            }
            for dir in w.options.watch.iter_mut().flat_map(|w| &mut w.directories) {
                resolve_in_place(&node_dir, dir);
            }
            for p in &mut w.options.pythonpath {
                resolve_in_place(&node_dir, p);
            }
            match &mut w.kind {
                WorkerKind::Router(r) => {
                    for p in &mut r.pythonpath {
                        resolve_in_place(&node_dir, p);
                    }
                    with_start(&mut r.pythonpath);
                    for t in &mut r.transports {
                        transport(&node_dir, t);
                    }
                    if let Some(c) = &mut r.cluster {
                        nats(&node_dir, &mut c.nats);
                    }
                }
                WorkerKind::Container(c) => {
                    for p in &mut c.pythonpath {
                        resolve_in_place(&node_dir, p);
                    }
                    with_start(&mut c.pythonpath);
                    for comp in &mut c.components {
                        let tls = comp
                            .transport
                            .as_mut()
                            .and_then(|t| t.endpoint.tls.as_mut());
                        for (_, f) in tls.map(|t| t.files_mut()).unwrap_or_default() {
                            resolve_in_place(&node_dir, f);
                        }
                    }
                }
                WorkerKind::Guest(_) => {}
            }
        }
    }
}

fn nats(node_dir: &Path, n: &mut crate::router::NatsConfig) {
    if let Some(c) = &mut n.credentials {
        resolve_in_place(node_dir, c);
    }
    if let Some(tls) = &mut n.tls {
        for c in &mut tls.ca_certificates {
            resolve_in_place(node_dir, c);
        }
        for v in [&mut tls.certificate, &mut tls.key].into_iter().flatten() {
            resolve_in_place(node_dir, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_as_os_path_abspath_does() {
        let cases = [
            ("/p/.crossbar", "..", "/p"),
            ("/p/.crossbar", "../web", "/p/web"),
            ("/p/.crossbar", "./web/", "/p/.crossbar/web"),
            ("/p/.crossbar", "/srv/www", "/srv/www"),
            ("/p/.crossbar", "../../..", "/"),
            ("/p/.crossbar", ".", "/p/.crossbar"),
            ("/", "..", "/"),
        ];
        for (dir, path, want) in cases {
            assert_eq!(resolve(Path::new(dir), path), want, "{dir} + {path}");
        }
        assert_eq!(lexical(Path::new(".crossbar/..")), Path::new("."));
        assert_eq!(lexical(Path::new("../a/../b")), Path::new("../b"));
    }

    #[test]
    fn a_relative_node_dir_is_made_absolute_first() {
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(absolute(Path::new(".crossbar")), cwd.join(".crossbar"));
        assert_eq!(absolute(Path::new(".")), lexical(&cwd));
        assert_eq!(
            resolve(&absolute(Path::new("sub/.crossbar")), ".."),
            cwd.join("sub").to_string_lossy()
        );
    }

    #[test]
    fn python_components_also_import_from_the_start_directory_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.json");
        let comp = r#"{"type": "class", "classname": "app.App", "realm": "realm1",
            "transport": {"type": "websocket", "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": 8080},
                          "url": "ws://127.0.0.1:8080/ws"}}"#;
        std::fs::write(
            &cfg,
            format!(
                r#"{{"version": 2, "workers": [
                    {{"type": "router", "realms": [{{"name": "realm1", "roles": []}}],
                      "transports": [{{"type": "websocket", "endpoint": {{"type": "tcp", "port": 8080}}}}]}},
                    {{"type": "container", "components": [{comp}]}},
                    {{"type": "container", "options": {{"pythonpath": [".."]}}, "components": [{comp}]}},
                    {{"type": "container", "options": {{"pythonpath": ["lib"]}}, "components": [{comp}]}}]}}"#
            ),
        )
        .expect("write");
        let mut node = crate::node::load(Some(&cfg)).expect("valid");
        node.resolve_paths_from(Path::new("/p/.crossbar"), Path::new("/p"));
        let paths: Vec<Vec<String>> = node
            .workers
            .iter()
            .filter_map(|w| match &w.kind {
                WorkerKind::Container(c) => Some(c.pythonpath.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            paths,
            [
                vec!["/p".to_string()],
                vec!["/p".to_string()],
                vec!["/p/.crossbar/lib".to_string(), "/p".to_string()],
            ]
        );
    }
}
