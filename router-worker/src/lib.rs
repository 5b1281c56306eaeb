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
pub mod backplane;
pub mod broker;
pub mod cookies;
pub mod dealer;
pub mod fast;
pub mod links;
pub mod liveness;
pub mod local;
pub mod meta;
pub mod outbound;
pub mod park;
pub mod realm;
pub mod realms;
pub mod session;
pub mod time;
pub mod tls;
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

use crate::realm::RealmHandle;
pub use crate::realms::{RealmTable, Realms};
use crate::transport::{Listener, ListenerSettings};
use trellis_config::router::{self as config, Endpoint, EndpointKind, RouterConfig};

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
    /// The kinds of the token stores in use (`embedded`, `redis`).
    token_stores: Vec<&'static str>,
    /// Renders `nodeinfo` pages, once set.
    node_info: transport::web::NodeInfoHook,
    /// The cluster's NATS backplane, when the node has a `cluster`.
    cluster: Option<Arc<backplane::Backplane>>,
}

impl Router {
    /// The backplane's figures, when the node is clustered.
    pub fn backplane_stats(&self) -> Option<Arc<backplane::BackplaneStats>> {
        self.cluster.as_ref().map(|b| b.stats.clone())
    }

    /// Validate the config, start the realms and bind every transport.
    ///
    /// # Errors
    /// [`RouterError::Config`] listing every config problem, or
    /// [`RouterError::Bind`] naming the transport and address that failed.
    pub async fn bind(cfg: &RouterConfig) -> Result<Router, RouterError> {
        // The controller sends web paths' options already read by type; a
        // config built in-process (tests, embedding) is read here, once.
        let mut planned = cfg.clone();
        let mut problems = planned.plan_options();
        let cfg = &planned;
        problems.extend(cfg.validate());
        for path in cfg.function_methods() {
            problems.push(config::ConfigProblem {
                path,
                message: "function authenticators are Python: a router worker started by `trellis start` runs them".into(),
            });
        }
        if !problems.is_empty() {
            return Err(RouterError::Config(problems));
        }
        // A universal transport is served as a web transport with a
        // RawSocket part for connections that start with 0x7F.
        let parts: Vec<(config::TransportConfig, Option<config::TransportConfig>)> = cfg
            .transports
            .iter()
            .map(|t| match t.kind {
                config::TransportKind::Universal => t.universal_parts(),
                _ => (t.clone(), None),
            })
            .collect();
        // One token store per distinct store config, shared by transports.
        let mut stores: Vec<(config::TokenStoreConfig, Arc<tokens::TokenStore>)> = Vec::new();
        let mut mint: Option<realm::TokenMint> = None;
        // Web transports' WebSocket paths are transports of their own here.
        let mut wamp_transports: Vec<(usize, config::TransportConfig)> = Vec::new();
        for (index, (t, raw)) in parts.iter().enumerate() {
            if let Some(raw) = raw {
                wamp_transports.push((index, raw.clone()));
            }
            if let Some(m) = cfg.transports.get(index).and_then(|u| u.universal_mqtt()) {
                wamp_transports.push((index, m));
            }
            match (&t.kind, &t.paths) {
                (config::TransportKind::Web, Some(_)) => {
                    for (_, p) in t.flat_paths() {
                        match p.kind {
                            config::WebPathKind::Websocket => {
                                wamp_transports.push((index, t.websocket_path(p)));
                            }
                            config::WebPathKind::Mqtt => {
                                wamp_transports.push((index, t.mqtt_path(p)));
                            }
                            _ => {}
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
        let node_info = transport::web::NodeInfoHook::default();
        let mut cookie_stores = cookies::CookieStores::default();
        let mut listeners = Vec::new();
        for (index, (t, raw)) in parts.iter().enumerate() {
            // Flash is gone: the transport is accepted (check warns) and
            // not opened.
            if t.kind == config::TransportKind::Flashpolicy {
                continue;
            }
            let listener = bind_endpoint(&t.endpoint)
                .await
                .map_err(|(endpoint, cause)| RouterError::Bind {
                    index,
                    endpoint,
                    cause,
                })?;
            let mut settings = ListenerSettings::from_config(index, t, store_for(t), cfg.compat);
            settings.cookies = cookie_stores.for_transport(t).map_err(|message| {
                RouterError::Config(vec![config::ConfigProblem {
                    path: format!("transports[{index}].cookie.store"),
                    message,
                }])
            })?;
            if let Some(tc) = &t.endpoint.tls {
                let tls = tls::TlsSettings::new(tc, &format!("transports[{index}].endpoint.tls"))
                    .map_err(|(path, message)| {
                    RouterError::Config(vec![config::ConfigProblem { path, message }])
                })?;
                settings.tls = Some((tls, tc.clone()));
            }
            if t.kind == config::TransportKind::Web {
                let mut web = web_settings(
                    index,
                    t,
                    &store_for,
                    &node_info,
                    cfg.compat,
                    &mut cookie_stores,
                )?;
                // One transport's figures, whichever path a session took.
                for path in web.websockets.values_mut() {
                    if let Some(p) = Arc::get_mut(path) {
                        p.session.counters = settings.session.counters.clone();
                    }
                }
                settings.web = Some(Arc::new(web));
            }
            if let Some(raw) = raw {
                let mut r = ListenerSettings::from_config(index, raw, store_for(raw), cfg.compat);
                r.name = format!("{}:rawsocket", r.name);
                r.session.counters = settings.session.counters.clone();
                settings.rawsocket = Some(Arc::new(r));
            }
            if let Some(m) = cfg.transports.get(index).and_then(|u| u.universal_mqtt()) {
                let mut ms = ListenerSettings::from_config(index, &m, store_for(&m), cfg.compat);
                ms.name = format!("{}:mqtt", ms.name);
                ms.session.counters = settings.session.counters.clone();
                settings.mqtt = Some(Arc::new(ms));
            }
            listeners.push((listener, Arc::new(settings)));
        }
        let cluster = match &cfg.cluster {
            Some(c) => Some(
                backplane::Backplane::start(c, cfg.id.as_deref().unwrap_or("router"))
                    .await
                    .map_err(|message| {
                        RouterError::Config(vec![config::ConfigProblem {
                            path: "cluster".into(),
                            message,
                        }])
                    })?,
            ),
            None => None,
        };
        let realms: HashMap<String, RealmHandle> = cfg
            .realms
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    RealmTable::start(r, mint.clone(), cluster.as_ref(), cfg.compat),
                )
            })
            .collect();
        if let Some(b) = &cluster {
            b.start_rpc();
        }
        Ok(Router {
            realms: Arc::new(RealmTable::new(realms, mint, cluster.clone(), cfg.compat)),
            cluster,
            listeners,
            token_stores: stores.iter().map(|(_, s)| s.kind()).collect(),
            node_info,
        })
    }

    /// Where to put what renders `nodeinfo` pages (the router worker sets
    /// it once it has joined its controller).
    pub fn node_info_hook(&self) -> transport::web::NodeInfoHook {
        self.node_info.clone()
    }

    /// The TLS endpoints' settings, to reload their certificates later.
    pub fn tls_endpoints(&self) -> Vec<(usize, tls::TlsSettings, config::TlsConfig)> {
        self.listeners
            .iter()
            .enumerate()
            .filter_map(|(i, (_, s))| s.tls.clone().map(|(t, c)| (i, t, c)))
            .collect()
    }

    /// The kinds of the token stores this router uses, if any.
    pub fn token_stores(&self) -> &[&'static str] {
        &self.token_stores
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

    /// Each transport's name (its id, or `transport[i]`) and counters, in
    /// config order (web WebSocket paths count under their transport).
    pub fn transport_counters(&self) -> Vec<(String, Arc<session::TransportCounters>)> {
        self.listeners
            .iter()
            .map(|(_, s)| (s.name.clone(), s.session.counters.clone()))
            .collect()
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
                config::TransportKind::Universal => "universal",
                config::TransportKind::Flashpolicy => "flashpolicy",
                config::TransportKind::Mqtt => "mqtt",
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
        self.serve_gated(shutdown, async {}).await;
    }

    /// As [`Router::serve`], but the public transports accept only once
    /// `components_joined` is done: the private sockets of router
    /// components are served first, so that no client is admitted before
    /// the router's own components (an authenticator) have joined, as
    /// Crossbar.io starts router components before transports. A client
    /// that connects meanwhile waits in the listen backlog.
    pub async fn serve_gated(
        self,
        shutdown: CancellationToken,
        components_joined: impl Future<Output = ()>,
    ) {
        let tracker = TaskTracker::new();
        let (private, public): (Vec<_>, Vec<_>) = self
            .listeners
            .into_iter()
            .partition(|(l, _)| l.describe().contains(PRIVATE_TRANSPORT_MARK));
        let realms = self.realms.clone();
        let spawn = |list: Vec<(Listener, Arc<ListenerSettings>)>| {
            for (listener, settings) in list {
                spawn_listener(&tracker, listener, settings, &realms, &shutdown);
            }
        };
        spawn(private);
        tokio::select! {
            _ = components_joined => {}
            _ = shutdown.cancelled() => {}
        }
        spawn(public);
        shutdown.cancelled().await;
        info!("shutting down: closing sessions");
        for realm in realms.all() {
            // A realm too busy to take it in a second still closes its
            // sessions: the grace period below ends them.
            let _ = tokio::time::timeout(Duration::from_secs(1), realm.shut_down()).await;
        }
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

/// The socket paths of the private transports of router components
/// contain this.
pub const PRIVATE_TRANSPORT_MARK: &str = ".trellis-";

/// Accept on one listener, logging what it serves.
fn spawn_listener(
    tracker: &TaskTracker,
    listener: Listener,
    settings: Arc<ListenerSettings>,
    realms: &Realms,
    shutdown: &CancellationToken,
) {
    let kind = match settings.kind {
        config::TransportKind::Websocket => "WebSocket",
        config::TransportKind::Rawsocket => "RawSocket",
        config::TransportKind::Web if settings.rawsocket.is_some() || settings.mqtt.is_some() => {
            "RawSocket, WebSocket, HTTP and MQTT, by their first bytes (universal)"
        }
        config::TransportKind::Web | config::TransportKind::Universal => {
            "HTTP (web: static files and WebSocket paths)"
        }
        config::TransportKind::WebsocketTestee => {
            "plain WebSocket echo (websocket.testee, for conformance tests; not WAMP)"
        }
        config::TransportKind::Mqtt => {
            "MQTT 3.1.1 and 5.0 (its clients are WAMP sessions of its realm)"
        }
        config::TransportKind::Flashpolicy => return,
    };
    info!(transport = %settings.name, addr = %listener.describe(), "listening for WAMP over {kind}");
    tracker.spawn(transport::serve(
        listener,
        settings,
        realms.clone(),
        shutdown.child_token(),
        tracker.clone(),
    ));
}

/// Resolve a web transport's paths: each WebSocket path gets its own
/// settings, each static directory is made canonical (it must exist).
fn web_settings(
    index: usize,
    t: &config::TransportConfig,
    store_for: &dyn Fn(&config::TransportConfig) -> Option<Arc<tokens::TokenStore>>,
    node_info: &transport::web::NodeInfoHook,
    compat: config::Compat,
    cookie_stores: &mut cookies::CookieStores,
) -> Result<transport::web::WebSettings, RouterError> {
    let mut web = transport::web::WebSettings {
        websockets: HashMap::new(),
        mqtts: HashMap::new(),
        statics: HashMap::new(),
        static_options: HashMap::new(),
        json: HashMap::new(),
        redirects: HashMap::new(),
        nodeinfo: std::collections::HashSet::new(),
        bridges: HashMap::new(),
        archives: HashMap::new(),
        longpolls: HashMap::new(),
        node_info: node_info.clone(),
    };
    for (name, p) in t.flat_paths() {
        let name = &name;
        match p.kind {
            // Flattened: nothing is left of a `path` but its paths.
            config::WebPathKind::Path => {}
            config::WebPathKind::Archive => {
                let archive = transport::archive::Archive::open(
                    p.archive.as_deref().unwrap_or(""),
                    p.origin.as_deref(),
                    p.object_prefix.as_deref(),
                    p.default_object.as_deref(),
                    p.mime_types.clone().unwrap_or_default(),
                )
                .map(|a| a.with_default_file(p.archive_options().default_file))
                .map_err(|message| {
                    RouterError::Config(vec![config::ConfigProblem {
                        path: format!("transports[{index}].paths.{name}.archive"),
                        message,
                    }])
                })?;
                if archive.missing() {
                    warn!(transport = index, path = %name, archive = p.archive.as_deref().unwrap_or(""),
                        "the archive file is not there: every request on this path gets 404, as in Crossbar.io; put the zip file there (or set \"download\": true with an \"origin\")");
                }
                web.archives.insert(name.clone(), archive);
            }
            config::WebPathKind::Longpoll => {
                // The session's settings are a WebSocket path's (auth,
                // serializers) with default limits; the options are the
                // long-poll service's own.
                let mut wt = t.websocket_path(p);
                wt.options = config::WebSocketOptions {
                    auto_ping_interval: Some(0),
                    ..Default::default()
                };
                let mut s = ListenerSettings::from_config(index, &wt, store_for(&wt), compat);
                s.name = format!("{}:{name}", s.name);
                web.longpolls.insert(
                    name.clone(),
                    Arc::new(transport::longpoll::LongPoll::new(s, p.longpoll_options())),
                );
            }
            config::WebPathKind::Mqtt => {
                let mt = t.mqtt_path(p);
                let mut s = ListenerSettings::from_config(index, &mt, store_for(&mt), compat);
                s.name = format!("{}:{name}", s.name);
                web.mqtts.insert(name.clone(), Arc::new(s));
            }
            config::WebPathKind::Websocket => {
                let wt = t.websocket_path(p);
                let mut s = ListenerSettings::from_config(index, &wt, store_for(&wt), compat);
                s.name = format!("{}:{name}", s.name);
                s.cookies = cookie_stores.for_transport(&wt).map_err(|message| {
                    RouterError::Config(vec![config::ConfigProblem {
                        path: format!("transports[{index}].paths.{name}.cookie.store"),
                        message,
                    }])
                })?;
                web.websockets.insert(name.clone(), Arc::new(s));
            }
            config::WebPathKind::Static => {
                let dir = p.directory.clone().unwrap_or_default();
                // A directory that is not there is served as empty (404 for
                // every file), as Crossbar.io serves it, with a warning:
                // projects name shared folders their checkout may lack.
                let root = match std::path::Path::new(&dir).canonicalize() {
                    Ok(root) => root,
                    Err(e) => {
                        warn!(
                            path = %format!("transports[{index}].paths.{name}.directory"),
                            "the static directory {dir:?} cannot be served ({e}): every request there gets 404 until it exists and the router restarts"
                        );
                        std::path::PathBuf::from(&dir)
                    }
                };
                web.statics.insert(name.clone(), root);
                web.static_options.insert(name.clone(), p.static_options());
            }
            config::WebPathKind::Json => {
                let value = p.value.clone().unwrap_or_default();
                web.json.insert(
                    name.clone(),
                    transport::web::JsonPath::new(&value, &p.json_options()),
                );
            }
            config::WebPathKind::Nodeinfo => {
                web.nodeinfo.insert(name.clone());
            }
            config::WebPathKind::Caller
            | config::WebPathKind::Publisher
            | config::WebPathKind::Webhook => {
                let service = match p.kind {
                    config::WebPathKind::Caller => transport::bridge::Service::Caller,
                    config::WebPathKind::Webhook => transport::bridge::Service::Webhook,
                    _ => transport::bridge::Service::Publisher,
                };
                web.bridges.insert(
                    name.clone(),
                    transport::bridge::Bridge::new(
                        service,
                        p.realm.clone().unwrap_or_default(),
                        p.role.clone().unwrap_or_default(),
                        p.bridge_options(),
                        t.endpoint.tls.is_some(),
                        compat,
                    ),
                );
            }
            config::WebPathKind::Redirect => {
                web.redirects
                    .insert(name.clone(), p.url.clone().unwrap_or_default());
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
            let bound = if e.shared {
                bind_shared(&addr).await
            } else {
                TcpListener::bind(&addr).await
            };
            match bound {
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

/// A TCP listener other processes may bind too (`endpoint.shared`): with
/// SO_REUSEPORT the kernel spreads new connections over every listener.
async fn bind_shared(addr: &str) -> std::io::Result<TcpListener> {
    let to = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address"),
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&to.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Bind and serve a router until `shutdown`.
///
/// # Errors
/// As [`Router::bind`].
pub async fn run(cfg: &RouterConfig, shutdown: CancellationToken) -> Result<(), RouterError> {
    Router::bind(cfg).await?.serve(shutdown).await;
    Ok(())
}
