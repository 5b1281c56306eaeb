//! The preflight checks that need the workers' libraries: TLS files read
//! as rustls reads them, the cluster's TLS files, Python components
//! imported by their interpreter. The rest of the preflight (archives,
//! watched directories) is [`trellis_config::preflight`].

use std::path::Path;

use trellis_config::node::{ConfigError, ConfigErrors, NodeConfig, WorkerKind};
use trellis_config::preflight::{archive_problems, component_tls_problems, watch_problems};

/// What the node directory and the machine must offer for the config to
/// run, checked by `check` and by `start` before anything starts: archive
/// files, TLS files, the cluster's files, then Python components'
/// interpreters and classes.
///
/// # Errors
/// The first kind of problem found, every instance of it.
pub fn preflight(cfg: &NodeConfig, node_dir: &Path) -> Result<(), ConfigErrors> {
    for found in [
        archive_problems(cfg, node_dir),
        watch_problems(cfg, node_dir),
        tls_problems(cfg, node_dir),
        component_tls_problems(cfg, node_dir),
        cluster_problems(cfg, node_dir),
        python_problems(cfg, node_dir),
    ] {
        if !found.errors.is_empty() {
            return Err(found);
        }
    }
    Ok(())
}

/// TLS certificates and keys that cannot be read, or do not belong
/// together (files are taken from `node_dir`, where a router runs).
pub fn tls_problems(cfg: &NodeConfig, node_dir: &Path) -> ConfigErrors {
    let mut errors = Vec::new();
    for (i, r) in cfg.routers() {
        for (j, t) in r.transports.iter().enumerate() {
            let Some(tls) = &t.endpoint.tls else { continue };
            let at = |f: &String| node_dir.join(f).display().to_string();
            let resolved = trellis_config::router::TlsConfig {
                key: at(&tls.key),
                certificate: at(&tls.certificate),
                chain_certificates: tls.chain_certificates.iter().map(at).collect(),
                ..tls.clone()
            };
            let path = format!("workers[{i}].transports[{j}].endpoint.tls");
            if let Err((path, message)) = router_worker::tls::TlsSettings::new(&resolved, &path) {
                errors.push(ConfigError { path, message });
            }
        }
    }
    ConfigErrors {
        source: cfg.source.clone(),
        errors,
    }
}

/// The cluster's files (taken from `node_dir`, where a router runs): the
/// NATS credentials, the CA certificates, client certificate and key.
pub fn cluster_problems(cfg: &NodeConfig, node_dir: &Path) -> ConfigErrors {
    let mut errors = Vec::new();
    if let Some(c) = cfg.routers().find_map(|(_, r)| r.cluster.clone()) {
        let at = |f: &String| node_dir.join(f).display().to_string();
        if let Some(creds) = &c.nats.credentials
            && !node_dir.join(creds).is_file()
        {
            errors.push(ConfigError {
                path: "cluster.nats.credentials".into(),
                message: format!(
                    "{creds:?} is not a file (relative paths start at the node directory {}): a NATS .creds file",
                    node_dir.display()
                ),
            });
        }
        if let Some(t) = &c.nats.tls {
            let resolved = trellis_config::router::NatsTls {
                ca_certificates: t.ca_certificates.iter().map(at).collect(),
                certificate: t.certificate.as_ref().map(at),
                key: t.key.as_ref().map(at),
                ..(**t).clone()
            };
            if let Err((path, message)) = router_worker::tls::nats_client_config(&resolved) {
                errors.push(ConfigError { path, message });
            }
        }
    }
    ConfigErrors {
        source: cfg.source.clone(),
        errors,
    }
}

/// What stands in the way of Python components: the interpreter,
/// autobahn, Twisted, each module and class (the interpreter is run once
/// per container that has Python components).
pub fn python_problems(cfg: &NodeConfig, node_dir: &Path) -> ConfigErrors {
    let mut errors = Vec::new();
    let dir = if node_dir.is_dir() {
        node_dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default()
    };
    for w in &cfg.workers {
        let found = match &w.kind {
            WorkerKind::Container(c) => container_worker::python::problems(c, &dir),
            WorkerKind::Router(r) => {
                let c = container_worker::python::router_as_container(r);
                container_worker::python::problems(&c, &dir)
            }
            WorkerKind::Guest(_) => Vec::new(),
        };
        {
            for (path, message) in found {
                errors.push(ConfigError {
                    path: format!("workers[{}].{path}", w.index),
                    message,
                });
            }
        }
    }
    ConfigErrors {
        source: cfg.source.clone(),
        errors,
    }
}
