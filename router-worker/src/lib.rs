//! # router-worker: the Trellis WAMP router
//!
//! # Layout
//! - [`config`]: the router's part of `node.json` (realms, roles,
//!   transports) and its semantic validation.
//! - [`transport`]: listeners and framing; [`transport::websocket`] speaks
//!   WAMP over WebSocket.
//! - [`session`]: one task per connection, the WAMP session state machine.
//! - [`realm`]: per realm, a sans-IO core (sessions, broker, dealer, the
//!   routing rules) and the tokio actor that feeds it and carries out its
//!   effects.
//! - [`broker`], [`dealer`]: sans-IO Pub/Sub and RPC state, unit-tested.
//! - [`authz`]: static role permissions; [`authz::dynamic`]: authorizer
//!   procedures (parking, cache).
//! - [`outbound`]: outbound messages encoded once per serializer.
//!
//! [`Router::bind`] opens every listener (so port clashes fail before
//! anything runs), [`Router::serve`] runs until the shutdown token fires,
//! and [`run`] does both.

pub mod auth;
pub mod authz;
pub mod broker;
pub mod config;
pub mod dealer;
pub mod local;
pub mod meta;
pub mod outbound;
pub mod realm;
pub mod session;
pub mod time;
pub mod tokens;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Endpoint, EndpointKind, RouterConfig};
use crate::realm::RealmHandle;
use crate::transport::{Listener, ListenerSettings};

/// The realms of a router by name, shared by every session task.
pub type Realms = Arc<RealmTable>;

/// The router's realms; changed in place by [`RealmTable::apply`] on a
/// config reload.
#[derive(Default, Debug)]
pub struct RealmTable {
    // A std RwLock: read for one map lookup at HELLO, written on a reload;
    // never held across an await.
    map: std::sync::RwLock<HashMap<String, RealmHandle>>,
    /// Given to realms added by a reload.
    tokens: std::sync::RwLock<Option<realm::TokenMint>>,
}

impl RealmTable {
    /// The realm named `name`.
    pub fn get(&self, name: &str) -> Option<RealmHandle> {
        self.map.read().ok()?.get(name).cloned()
    }

    /// Every realm, sorted by name.
    pub fn all(&self) -> Vec<RealmHandle> {
        let mut v: Vec<RealmHandle> = self
            .map
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn insert(&self, cfg: &config::RealmConfig) {
        let tokens = self.tokens.read().ok().and_then(|t| t.clone());
        if let Ok(mut m) = self.map.write() {
            m.insert(cfg.name.clone(), RealmHandle::spawn(cfg, tokens));
        }
    }

    /// Bring the realms in line with `new` without touching sessions of
    /// realms that stay: roles, permissions and URI checking change in
    /// place, new realms start, removed realms close their sessions
    /// (GOODBYE `wamp.close.close_realm`). A realm whose `store` changed
    /// cannot change in place.
    ///
    /// # Errors
    /// A realm's store changed: nothing was changed.
    pub async fn apply(
        &self,
        old: &[config::RealmConfig],
        new: &[config::RealmConfig],
    ) -> Result<Vec<String>, String> {
        for n in new {
            if let Some(o) = old.iter().find(|o| o.name == n.name)
                && o.store != n.store
            {
                return Err(format!(
                    "realm {:?}: its store (event history) changed, which needs a restart of the router",
                    n.name
                ));
            }
        }
        let mut changes = Vec::new();
        for n in new {
            match (old.iter().find(|o| o.name == n.name), self.get(&n.name)) {
                (Some(o), Some(handle)) => {
                    if o != n {
                        handle.reconfigure(n).await;
                        changes.push(format!("realm {:?} reconfigured", n.name));
                    }
                }
                _ => {
                    self.insert(n);
                    changes.push(format!("realm {:?} added", n.name));
                }
            }
        }
        for o in old {
            if !new.iter().any(|n| n.name == o.name) {
                let removed = self.map.write().ok().and_then(|mut m| m.remove(&o.name));
                if let Some(handle) = removed {
                    handle.close().await;
                    changes.push(format!("realm {:?} removed", o.name));
                }
            }
        }
        Ok(changes)
    }
}

/// How long sessions get to say GOODBYE on shutdown before tasks are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The config has problems; each names its key path.
    #[error("invalid router configuration:\n{}", .0.iter().map(|p| format!("  {}: {}", p.path, p.message)).collect::<Vec<_>>().join("\n"))]
    Config(Vec<config::ConfigProblem>),
    /// A listener could not be opened.
    #[error("cannot listen on {endpoint} for transports[{index}]: {cause}")]
    Bind {
        /// Index in `transports`.
        index: usize,
        /// The address tried.
        endpoint: String,
        /// The OS error (address in use, permission denied, ...).
        cause: std::io::Error,
    },
}

/// A router with its listeners bound, ready to serve.
pub struct Router {
    realms: Realms,
    listeners: Vec<(Listener, Arc<ListenerSettings>)>,
}

impl Router {
    /// Validate the config, start the realms and bind every transport.
    ///
    /// # Errors
    /// [`RouterError::Config`] listing every config problem, or
    /// [`RouterError::Bind`] naming the transport and address that failed.
    pub async fn bind(cfg: &RouterConfig) -> Result<Router, RouterError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(RouterError::Config(problems));
        }
        // One token store per distinct store config, shared by transports.
        let mut stores: Vec<(config::TokenStoreConfig, Arc<tokens::TokenStore>)> = Vec::new();
        let mut mint: Option<realm::TokenMint> = None;
        // Web transports' WebSocket paths are transports of their own here.
        let mut wamp_transports: Vec<(usize, config::TransportConfig)> = Vec::new();
        for (index, t) in cfg.transports.iter().enumerate() {
            match (&t.kind, &t.paths) {
                (config::TransportKind::Web, Some(paths)) => {
                    for p in paths.values() {
                        if p.kind == config::WebPathKind::Websocket {
                            wamp_transports.push((index, t.websocket_path(p)));
                        }
                    }
                }
                _ => wamp_transports.push((index, t.clone())),
            }
        }
        for (index, t) in &wamp_transports {
            let index = *index;
            let Some(tc) = t.auth.as_ref().and_then(|a| a.token.as_ref()) else {
                continue;
            };
            let store = match stores.iter().find(|(c, _)| *c == tc.store) {
                Some((_, s)) => s.clone(),
                None => {
                    let s = Arc::new(tokens::TokenStore::from_config(&tc.store).map_err(|e| {
                        RouterError::Config(vec![config::ConfigProblem {
                            path: format!("transports[{index}].auth.token.store"),
                            message: e,
                        }])
                    })?);
                    stores.push((tc.store.clone(), s.clone()));
                    s
                }
            };
            if mint.is_none() {
                mint = Some(realm::TokenMint {
                    store,
                    max_age: Duration::from_secs(tc.max_age),
                });
            }
        }
        let store_for = |t: &config::TransportConfig| {
            let tc = t.auth.as_ref().and_then(|a| a.token.as_ref())?;
            stores
                .iter()
                .find(|(c, _)| *c == tc.store)
                .map(|(_, s)| s.clone())
        };
        let mut listeners = Vec::new();
        for (index, t) in cfg.transports.iter().enumerate() {
            let listener = bind_endpoint(&t.endpoint)
                .await
                .map_err(|(endpoint, cause)| RouterError::Bind {
                    index,
                    endpoint,
                    cause,
                })?;
            let mut settings = ListenerSettings::from_config(index, t, store_for(t));
            if t.kind == config::TransportKind::Web {
                settings.web = Some(Arc::new(web_settings(index, t, &store_for)?));
            }
            listeners.push((listener, Arc::new(settings)));
        }
        let realms: HashMap<String, RealmHandle> = cfg
            .realms
            .iter()
            .map(|r| (r.name.clone(), RealmHandle::spawn(r, mint.clone())))
            .collect();
        Ok(Router {
            realms: Arc::new(RealmTable {
                map: std::sync::RwLock::new(realms),
                tokens: std::sync::RwLock::new(mint),
            }),
            listeners,
        })
    }

    /// The bound TCP address of each TCP transport, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| match l {
                Listener::Tcp(l) => l.local_addr().ok(),
                Listener::Unix(..) => None,
            })
            .collect()
    }

    /// Where each transport listens (`127.0.0.1:8080`, `unix:/path`), in
    /// config order.
    pub fn endpoints(&self) -> Vec<String> {
        self.listeners.iter().map(|(l, _)| l.describe()).collect()
    }

    /// Each transport's type (`websocket`, `rawsocket`), in config order.
    pub fn transport_kinds(&self) -> Vec<&'static str> {
        self.listeners
            .iter()
            .map(|(_, s)| match s.kind {
                config::TransportKind::Websocket => "websocket",
                config::TransportKind::Rawsocket => "rawsocket",
                config::TransportKind::Web => "web",
                config::TransportKind::WebsocketTestee => "websocket.testee",
            })
            .collect()
    }

    /// The realms, for management (session counts).
    pub fn realms(&self) -> &Realms {
        &self.realms
    }

    /// Serve until `shutdown` is cancelled, then say GOODBYE to every
    /// session and wait (bounded) for them to finish.
    pub async fn serve(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        for (listener, settings) in self.listeners {
            let kind = match settings.kind {
                config::TransportKind::Websocket => "WebSocket",
                config::TransportKind::Rawsocket => "RawSocket",
                config::TransportKind::Web => "HTTP (web: static files and WebSocket paths)",
                config::TransportKind::WebsocketTestee => {
                    "plain WebSocket echo (websocket.testee, for conformance tests; not WAMP)"
                }
            };
            info!(transport = %settings.name, addr = %listener.describe(), "listening for WAMP over {kind}");
            tracker.spawn(transport::serve(
                listener,
                settings,
                self.realms.clone(),
                shutdown.child_token(),
                tracker.clone(),
            ));
        }
        shutdown.cancelled().await;
        info!("shutting down: closing sessions");
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = tracker.len(),
                "sessions did not finish within {} s; dropping them",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    }
}

/// Resolve a web transport's paths: each WebSocket path gets its own
/// settings, each static directory is made canonical (it must exist).
fn web_settings(
    index: usize,
    t: &config::TransportConfig,
    store_for: &dyn Fn(&config::TransportConfig) -> Option<Arc<tokens::TokenStore>>,
) -> Result<transport::web::WebSettings, RouterError> {
    let mut web = transport::web::WebSettings {
        websockets: HashMap::new(),
        statics: HashMap::new(),
    };
    for (name, p) in t.paths.iter().flatten() {
        match p.kind {
            config::WebPathKind::Websocket => {
                let wt = t.websocket_path(p);
                let mut s = ListenerSettings::from_config(index, &wt, store_for(&wt));
                s.name = format!("{}:{name}", s.name);
                web.websockets.insert(name.clone(), Arc::new(s));
            }
            config::WebPathKind::Static => {
                let dir = p.directory.clone().unwrap_or_default();
                let root = std::path::Path::new(&dir).canonicalize().map_err(|e| {
                    RouterError::Config(vec![config::ConfigProblem {
                        path: format!("transports[{index}].paths.{name}.directory"),
                        message: format!(
                            "cannot serve {dir:?} (relative to the node directory {}): {e}",
                            std::env::current_dir()
                                .map(|d| d.display().to_string())
                                .unwrap_or_default()
                        ),
                    }])
                })?;
                web.statics.insert(name.clone(), root);
            }
        }
    }
    Ok(web)
}

/// Open one endpoint's listener; on failure, the address tried and why.
async fn bind_endpoint(e: &Endpoint) -> Result<Listener, (String, std::io::Error)> {
    match e.kind {
        EndpointKind::Tcp => {
            let host = match (&e.interface, e.version) {
                (Some(i), _) => i.clone(),
                (None, Some(6)) => "::".into(),
                (None, _) => "0.0.0.0".into(),
            };
            let port = e.port.unwrap_or(0);
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            match TcpListener::bind(&addr).await {
                Ok(l) => Ok(Listener::Tcp(l)),
                Err(cause) => Err((addr, cause)),
            }
        }
        EndpointKind::Unix => {
            let path = std::path::PathBuf::from(e.path.clone().unwrap_or_default());
            let mode = e
                .mode
                .as_deref()
                .and_then(config::parse_mode)
                .unwrap_or(0o600);
            match transport::bind_unix(&path, mode) {
                Ok((l, f)) => Ok(Listener::Unix(l, f)),
                Err(cause) => Err((format!("unix:{}", path.display()), cause)),
            }
        }
    }
}

/// Bind and serve a router until `shutdown`.
///
/// # Errors
/// As [`Router::bind`].
pub async fn run(cfg: &RouterConfig, shutdown: CancellationToken) -> Result<(), RouterError> {
    Router::bind(cfg).await?.serve(shutdown).await;
    Ok(())
}
