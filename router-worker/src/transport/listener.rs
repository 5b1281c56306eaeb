//! What a listener needs (WebSocket, RawSocket or web), resolved from a
//! transport's config once and shared by its connections.

use std::sync::Arc;
use std::time::Duration;

use proto::Serializer;

use crate::auth::AuthSettings;
use crate::session::SessionSettings;
use trellis_config::router::{TransportConfig, TransportKind};

/// Everything a listener needs (WebSocket or RawSocket), resolved from the
/// config once.
#[derive(Debug)]
pub struct ListenerSettings {
    /// WebSocket or RawSocket.
    pub kind: TransportKind,
    /// For logs: the transport id or its index.
    pub name: String,
    /// Serializers offered.
    pub serializers: Vec<Serializer>,
    /// Per-session behaviour (auth role, timeouts, queue size).
    pub session: SessionSettings,
    /// Largest WebSocket frame a client may send (at most
    /// `max_message_size`).
    pub max_frame_size: usize,
    /// Deadline for the whole HTTP upgrade.
    pub handshake_timeout: Duration,
    /// Refuse clients that offer no subprotocol.
    pub require_subprotocol: bool,
    /// Largest message, for error texts.
    pub max_message_size: usize,
    /// Concurrent connections allowed.
    pub max_connections: usize,
    /// Outgoing bytes collected before a write (`options.write_buffer_size`).
    pub write_buffer_size: usize,
    /// `web` transports: their static and WebSocket paths.
    pub web: Option<Arc<super::web::WebSettings>>,
    /// Browser origins allowed; any when `None`.
    pub allowed_origins: Option<Vec<String>>,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: trellis_config::net::Networks,
    /// TCP keepalive idle time and probe interval (`options.tcp_keepalive`).
    pub tcp_keepalive: Option<Duration>,
    /// A universal transport's RawSocket part: connections whose first
    /// byte is RawSocket's 0x7F go there.
    pub rawsocket: Option<Arc<ListenerSettings>>,
    /// TLS (`endpoint.tls`), with its config for reloads.
    pub tls: Option<(crate::tls::TlsSettings, trellis_config::router::TlsConfig)>,
    /// permessage-deflate, offered to clients that ask for it.
    pub compression: Option<trellis_config::router::DeflateConfig>,
    /// Fragmenting, pings and closing of WebSocket connections.
    pub tuning: super::websocket::WsTuning,
    /// With `allowed_origins`: `Origin: null` is let in too.
    pub allow_null_origin: bool,
    /// A plain GET on a WebSocket endpoint gets a status page (else 426).
    pub enable_webstatus: bool,
    /// WebSocket cookie tracking (`cookie`): the store.
    pub cookies: Option<Arc<crate::cookies::CookieStore>>,
    /// `universal`: the MQTT part, for connections that start with an
    /// MQTT CONNECT.
    pub mqtt: Option<Arc<ListenerSettings>>,
    /// `mqtt`: the realm its clients join.
    pub mqtt_realm: Option<String>,
    /// `mqtt`: its options (payload mappings).
    pub mqtt_options: Arc<trellis_config::router::WebSocketOptions>,
    /// `mqtt`: the connected clients by client id, so that a new
    /// connection with the same id closes the old one.
    pub mqtt_clients: super::mqtt::Clients,
    /// The listener's idle sessions, parked ([`crate::park`]).
    pub lot: crate::park::Lot,
}

impl ListenerSettings {
    /// Resolve a transport's config.
    pub fn from_config(
        index: usize,
        t: &TransportConfig,
        token_store: Option<Arc<crate::tokens::TokenStore>>,
        compat: trellis_config::router::Compat,
    ) -> ListenerSettings {
        let o = &t.options;
        let write_buffer_size = o.write_buffer_for(t.kind);
        ListenerSettings {
            kind: t.kind,
            name: t
                .id
                .clone()
                .unwrap_or_else(|| format!("transport[{index}]")),
            serializers: t.serializer_list(),
            session: SessionSettings {
                auth: Arc::new(AuthSettings::from_config(t, token_store)),
                hello_timeout: Duration::from_millis(o.hello_timeout),
                max_queue: o.max_queue_messages,
                max_calls: o.max_calls_in_flight,
                write_timeout: Duration::from_millis(o.write_timeout),
                keepalive: (o.auto_ping_for(t.kind) > 0).then(|| {
                    (
                        Duration::from_millis(o.auto_ping_for(t.kind)),
                        Duration::from_millis(o.auto_ping_timeout.max(1)),
                    )
                }),
                counters: Arc::default(),
                compat,
            },
            max_frame_size: o.max_frame_size.min(o.max_message_size),
            handshake_timeout: Duration::from_millis(o.open_handshake_timeout),
            require_subprotocol: o.require_websocket_subprotocol,
            max_message_size: o.max_message_size,
            max_connections: o.max_connections,
            write_buffer_size,
            web: None,
            allowed_origins: o.allowed_origins.clone(),
            trusted_proxies: o.trusted_proxies.clone(),
            tcp_keepalive: (o.tcp_keepalive > 0).then(|| Duration::from_millis(o.tcp_keepalive)),
            tls: None,
            rawsocket: None,
            compression: o.compression.as_ref().and_then(|c| c.deflate.clone()),
            tuning: super::websocket::WsTuning {
                auto_fragment_size: u32::try_from(o.auto_fragment_size).unwrap_or(u32::MAX),
                ping_size: u8::try_from(o.auto_ping_size.clamp(4, 125)).unwrap_or(125),
                close_timeout_ms: u32::try_from(o.close_handshake_timeout).unwrap_or(u32::MAX),
                fail_by_drop: o.fail_by_drop,
            },
            allow_null_origin: o.allow_null_origin,
            enable_webstatus: o.enable_webstatus,
            cookies: None,
            mqtt: None,
            mqtt_realm: o.realm.clone(),
            mqtt_options: Arc::new(o.clone()),
            mqtt_clients: super::mqtt::Clients::default(),
            lot: crate::park::Lot::default(),
        }
    }
}

/// A listener's session settings, owned through the listener's `Arc`: a
/// session's future can then stand alone (see [`crate::session::run`]).
pub struct SessionOf(pub Arc<ListenerSettings>);

impl std::borrow::Borrow<SessionSettings> for SessionOf {
    fn borrow(&self) -> &SessionSettings {
        &self.0.session
    }
}
