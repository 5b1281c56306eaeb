//! `transports`: endpoints, TLS, WebSocket and RawSocket options, and the
//! transport checks.

use super::*;

/// A listening transport. One flat struct with a `type` field rather than
/// an internally tagged enum: serde buffers tagged enums, which would lose
/// the key path of errors inside them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// The transport type.
    #[serde(rename = "type")]
    pub kind: TransportKind,
    /// An id for logs.
    #[serde(default)]
    pub id: Option<String>,
    /// Where to listen.
    pub endpoint: Endpoint,
    /// Serializers offered (`json`, `msgpack`, `cbor`); all when absent.
    #[serde(default)]
    pub serializers: Option<Vec<String>>,
    /// Limits and timeouts.
    #[serde(default)]
    pub options: WebSocketOptions,
    /// Authentication methods; anonymous with role `anonymous` when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// WebSocket: cookie tracking (Crossbar.io's `cookie`), for the
    /// `cookie` auth method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieConfig>,
    /// `flashpolicy`: Crossbar.io's keys, accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domain: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ports: Option<serde_json::Value>,
    /// Crossbar.io's per-transport debug flag; accepted for compatibility,
    /// log levels are set with `--loglevel`/`RUST_LOG` instead.
    #[serde(default)]
    pub debug: bool,
    /// Crossbar.io's cap on concurrent connections, at the transport's top
    /// level; the same as `options.max_connections`, which it sets.
    #[serde(default, skip_serializing)]
    pub max_connections: Option<usize>,
    /// Crossbar.io's advertised URL; informational.
    #[serde(default)]
    pub url: Option<String>,
    /// `web` transports: what each URL path serves (`"/"`, `"ws"`, ...).
    #[serde(default)]
    pub paths: Option<BTreeMap<String, WebPath>>,
    /// A private link of the router worker (to its Python components),
    /// which may join the router's internal realms; set by the router
    /// itself, not a config key.
    #[serde(skip)]
    pub internal: bool,
    /// `universal`: WAMP over RawSocket on the same port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rawsocket: Option<UniversalRawsocket>,
    /// `universal`: WebSocket paths by name (`{"ws": {"type":
    /// "websocket", ...}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<BTreeMap<String, WebPath>>,
    /// `universal`: the web part (`{"paths": {...}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<UniversalWeb>,
    /// `universal`: MQTT on the same port (`{"options": {"realm": ...}}`),
    /// for connections that start with an MQTT CONNECT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<UniversalMqtt>,
}

/// A `universal` transport's MQTT part.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct UniversalMqtt {
    /// As an `mqtt` transport's `options` (`realm`, `role`,
    /// `payload_mapping`, limits).
    #[serde(default)]
    pub options: WebSocketOptions,
    /// As an `mqtt` transport's `auth`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// A `universal` transport's RawSocket part.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct UniversalRawsocket {
    #[serde(default)]
    pub serializers: Option<Vec<String>>,
    #[serde(default)]
    pub options: Option<WebSocketOptions>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub debug: bool,
}

/// A `universal` transport's web part.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct UniversalWeb {
    #[serde(default)]
    pub paths: BTreeMap<String, WebPath>,
}

impl TransportConfig {
    /// A RawSocket transport on a Unix socket whose anonymous sessions get
    /// `anonymous` (the controller's control socket, the private links of
    /// Python router components).
    pub fn unix_anonymous(
        id: &str,
        path: String,
        mode: Option<String>,
        anonymous: AnonymousAuth,
    ) -> TransportConfig {
        TransportConfig {
            kind: TransportKind::Rawsocket,
            id: Some(id.to_owned()),
            max_connections: None,
            endpoint: Endpoint {
                kind: EndpointKind::Unix,
                port: None,
                path: Some(path),
                mode,
                interface: None,
                version: None,
                backlog: None,
                shared: false,
                tls: None,
            },
            serializers: Some(vec!["json".into()]),
            options: WebSocketOptions::default(),
            auth: Some(AuthConfig {
                anonymous: Some(anonymous),
                ticket: None,
                wampcra: None,
                cryptosign: None,
                scram: None,
                tls: None,
                cookie: None,
                token: None,
                peercred: None,
            }),
            cookie: None,
            allowed_domain: None,
            allowed_ports: None,
            debug: false,
            url: None,
            paths: None,
            internal: false,
            rawsocket: None,
            websocket: None,
            web: None,
            mqtt: None,
        }
    }
}

/// Transport types.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// WAMP over WebSocket.
    Websocket,
    /// WAMP over RawSocket (TCP).
    Rawsocket,
    /// HTTP: static files and WebSocket paths on one port.
    Web,
    /// A plain WebSocket echo endpoint for conformance testing
    /// (Autobahn|TestSuite), as Crossbar.io's `websocket.testee`.
    #[serde(rename = "websocket.testee")]
    WebsocketTestee,
    /// RawSocket, WebSocket and web on one port, told apart by the first
    /// bytes (Crossbar.io's `universal`); served as a web transport whose
    /// connections starting with RawSocket's 0x7F go to its RawSocket part.
    Universal,
    /// Crossbar.io's Adobe Flash socket policy server: accepted and not
    /// opened (no browser has run Flash since 2021), with a warning.
    Flashpolicy,
    /// MQTT 3.1.1 and 5.0 clients, bridged into a realm (Crossbar.io's
    /// `mqtt`).
    Mqtt,
}

/// Where a transport listens.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The endpoint type.
    #[serde(rename = "type")]
    pub kind: EndpointKind,
    /// The TCP port (0 picks a free one); `tcp` endpoints only.
    #[serde(default)]
    pub port: Option<u16>,
    /// The socket file; `unix` endpoints only. A relative path is taken
    /// from the node directory.
    #[serde(default)]
    pub path: Option<String>,
    /// The socket file's mode, octal (`"0660"` lets the group in); `unix`
    /// endpoints only; `"0600"` when absent.
    #[serde(default)]
    pub mode: Option<String>,
    /// The address to bind; all interfaces when absent.
    #[serde(default)]
    pub interface: Option<String>,
    /// IP version (4 or 6) when `interface` is absent.
    #[serde(default)]
    pub version: Option<u8>,
    /// Listen backlog (accepted for compatibility; the OS default is used).
    #[serde(default)]
    pub backlog: Option<u32>,
    /// `tcp` endpoints: let several router workers listen on this port
    /// (SO_REUSEPORT); the kernel spreads connections over them.
    #[serde(default)]
    pub shared: bool,
    /// `tcp` endpoints: TLS (`wss://`, TLS RawSocket, HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// An endpoint's TLS, as Crossbar.io names it. Files are PEM, relative to
/// the node directory.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: String,
    /// The server certificate (it may be followed by its chain).
    pub certificate: String,
    /// Intermediate certificates sent after the server's.
    #[serde(default)]
    pub chain_certificates: Vec<String>,
    /// Crossbar.io: verify client certificates against these; not
    /// supported yet (refused with a message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<Vec<String>>,
    /// Crossbar.io's Diffie-Hellman parameters: accepted and unused
    /// (rustls does ECDHE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhparam: Option<String>,
    /// Crossbar.io's OpenSSL cipher list: accepted and unused (rustls
    /// offers its own safe TLS 1.2 and 1.3 suites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<String>,
}

/// Endpoint types.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// A TCP port.
    Tcp,
    /// A Unix domain socket (a file, mode 0600).
    Unix,
}

/// Largest `options.write_buffer_size`: 16 MiB.
pub const MAX_WRITE_BUFFER: usize = 16 << 20;
/// `options.write_buffer_size` when unset, on WebSocket: its data frames are
/// not copied into a buffer, so this only bounds one vectored write.
pub const WEBSOCKET_WRITE_BUFFER: usize = 256 * 1024;
/// `options.write_buffer_size` when unset, on RawSocket: a buffer of about
/// this size stays with a session that received a burst.
pub const RAWSOCKET_WRITE_BUFFER: usize = 64 * 1024;

/// Limits and timeouts of a WebSocket transport. Times are in milliseconds,
/// as in Crossbar.io.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketOptions {
    /// Largest WAMP message accepted, in bytes (after reassembly of fragments).
    pub max_message_size: usize,
    /// Largest single WebSocket frame accepted, in bytes.
    pub max_frame_size: usize,
    /// Deadline for the whole HTTP upgrade, from TCP accept.
    pub open_handshake_timeout: u64,
    /// Deadline for HELLO after the upgrade.
    pub hello_timeout: u64,
    /// Refuse clients that offer no WAMP subprotocol (Crossbar.io's default).
    pub require_websocket_subprotocol: bool,
    /// Messages queued for one session before it counts as too slow and is
    /// closed.
    pub max_queue_messages: usize,
    /// Concurrent connections on this transport; more are refused at once.
    pub max_connections: usize,
    /// Deadline for AUTHENTICATE after CHALLENGE.
    pub authenticate_timeout: u64,
    /// Deadline for a dynamic authenticator's answer.
    pub authenticator_timeout: u64,
    /// Failed authentications allowed per (peer address, authid) within
    /// `auth_failure_window` before further attempts of that authid from
    /// that address are refused at once; an address over it (with any
    /// authids) has its attempts slowed instead.
    pub max_auth_failures: u32,
    /// The window for `max_auth_failures`, in milliseconds.
    pub auth_failure_window: u64,
    /// The longest pause, in milliseconds, for an attempt from an address
    /// that has failed more than `max_auth_failures` times: 100 ms per
    /// failure over, at most this. A correct login waits no longer.
    pub auth_failure_delay: u64,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For`
    /// or `Forwarded` header names the client: its address then counts for
    /// the login limits and the transport details, not the proxy's.
    pub trusted_proxies: crate::net::Networks,
    /// Calls one session may have in flight; more get an error at once.
    pub max_calls_in_flight: usize,
    /// Milliseconds a write to the peer may stay blocked (the peer stopped
    /// reading) before the router closes the connection.
    pub write_timeout: u64,
    /// Bytes of outgoing messages collected for one session before they are
    /// written to its socket (the session also writes whenever its queue is
    /// empty). Larger means fewer system calls under load. Unset: 256 KiB
    /// on WebSocket, whose frames go out without a copy; 64 KiB on
    /// RawSocket, where a session that received a burst keeps a buffer of
    /// about this size. See [`WebSocketOptions::write_buffer_for`].
    pub write_buffer_size: Option<usize>,
    /// Milliseconds of silence from a peer before the router pings it
    /// (0: never). Unset: 30000 on WebSocket; 0 on RawSocket, as in
    /// Crossbar.io (clients such as swampyer never answer a RawSocket
    /// ping; `tcp_keepalive` finds dead peers there).
    pub auto_ping_interval: Option<u64>,
    /// Milliseconds the router waits for anything (the pong) after its
    /// ping before it closes the connection as dead.
    pub auto_ping_timeout: u64,
    /// TCP keepalive on every TCP connection, in milliseconds: idle time
    /// before the first probe and the time between probes; a peer that
    /// answers none of 4 probes is dead. 0 turns it off.
    pub tcp_keepalive: u64,
    /// Browser origins allowed to open the WebSocket (`*` wildcards, e.g.
    /// `https://*.example.com`); any when absent. Clients that send no
    /// `Origin` (non-browsers) are not affected.
    pub allowed_origins: Option<Vec<String>>,
    /// With `allowed_origins`: also let in browsers that send
    /// `Origin: null` (pages opened from `file://`, sandboxed frames).
    pub allow_null_origin: bool,
    /// A plain HTTP GET on the WebSocket endpoint gets a small status page
    /// (200); `false`: 426 Upgrade Required.
    pub enable_webstatus: bool,
    /// Outgoing messages larger than this many bytes are sent as several
    /// frames of at most this payload (0: one frame per message).
    pub auto_fragment_size: usize,
    /// Payload bytes of the router's pings (4 to 125).
    pub auto_ping_size: usize,
    /// Milliseconds the router waits for the peer's close frame after
    /// sending its own before it drops the connection.
    pub close_handshake_timeout: u64,
    /// On a protocol violation or an oversized message, drop the TCP
    /// connection instead of sending a close frame.
    pub fail_by_drop: bool,
    /// WebSocket compression (`{"deflate": {...}}`: permessage-deflate).
    pub compression: Option<CompressionConfig>,
    /// `mqtt`: the realm MQTT clients join.
    pub realm: Option<String>,
    /// `mqtt`: the role MQTT clients get when the transport has no `auth`
    /// (they are anonymous then).
    pub role: Option<String>,
    /// `mqtt`: how payloads map between MQTT and WAMP, by topic prefix
    /// (Crossbar.io's shape; the longest prefix of a topic decides).
    /// Absent: `passthrough` for every topic.
    pub payload_mapping: Option<BTreeMap<String, PayloadMapping>>,
    /// `mqtt`: Crossbar.io's older key for a `native` mapping of every
    /// topic with this serializer (`json`; `cbor` and `msgpack` are not
    /// supported yet).
    pub payload_format: Option<String>,
    /// `mqtt`: the longest a client's session outlives its connection, in
    /// seconds (MQTT 5's session expiry interval is capped to it; an MQTT
    /// 3.1.1 client without a clean session gets it). 0: no session
    /// outlives its connection.
    pub session_expiry_max: u64,
    /// `mqtt`: QoS 1 messages kept for one client while it is away, or
    /// while it has its maximum unacknowledged; more are dropped and
    /// counted.
    pub offline_queue_messages: usize,
    /// `mqtt`: the payload bytes those messages may hold.
    pub offline_queue_bytes: usize,
}

/// How one topic prefix's payloads map between MQTT and WAMP.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PayloadMapping {
    /// `passthrough`: the MQTT payload is an opaque binary (WAMP payload
    /// passthru, `ppt_scheme` `mqtt`); `native`: it is a serialized
    /// `{"args": [...], "kwargs": {...}}`; `dynamic`: WAMP procedures
    /// (`encoder`, `decoder`) transform it.
    #[serde(rename = "type")]
    pub kind: String,
    /// `native`: `json` (the default and, for now, the only one).
    #[serde(default)]
    pub serializer: Option<String>,
    /// `dynamic`: the realm of the encoder and decoder procedures.
    #[serde(default)]
    pub realm: Option<String>,
    /// `dynamic`: the procedure turning a WAMP event into an MQTT payload.
    #[serde(default)]
    pub encoder: Option<String>,
    /// `dynamic`: the procedure turning an MQTT payload into WAMP args and
    /// kwargs.
    #[serde(default)]
    pub decoder: Option<String>,
}

/// `options.compression` of a WebSocket transport.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// permessage-deflate (RFC 7692), negotiated with clients that offer it.
    pub deflate: Option<DeflateConfig>,
}

/// permessage-deflate parameters, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeflateConfig {
    /// Ask clients not to keep their compression context between messages.
    pub request_no_context_takeover: bool,
    /// Ask clients to compress with at most this window (8 to 15 bits).
    pub request_max_window_bits: u8,
    /// Do not keep the router's compression context between messages (less
    /// memory per connection, less compression).
    pub no_context_takeover: bool,
    /// The router compresses with at most this window (8 to 15 bits; 8 is
    /// used as 9, which zlib's raw deflate needs at least).
    pub max_window_bits: u8,
    /// Accepted for Crossbar.io configs (1 to 9); the router uses zlib's
    /// default memory level.
    pub memory_level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            request_no_context_takeover: false,
            request_max_window_bits: 15,
            no_context_takeover: false,
            max_window_bits: 15,
            memory_level: 8,
        }
    }
}

impl WebSocketOptions {
    /// `auto_ping_interval`, or its default for a transport of `kind`.
    pub fn auto_ping_for(&self, kind: TransportKind) -> u64 {
        self.auto_ping_interval.unwrap_or(match kind {
            // MQTT servers do not ping: the client's keep-alive decides.
            TransportKind::Rawsocket | TransportKind::Mqtt => 0,
            _ => 30_000,
        })
    }

    /// `write_buffer_size`, or its default for a transport of `kind`.
    pub fn write_buffer_for(&self, kind: TransportKind) -> usize {
        self.write_buffer_size.unwrap_or(match kind {
            TransportKind::Rawsocket | TransportKind::Mqtt => RAWSOCKET_WRITE_BUFFER,
            _ => WEBSOCKET_WRITE_BUFFER,
        })
    }
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            open_handshake_timeout: 10_000,
            hello_timeout: 10_000,
            require_websocket_subprotocol: true,
            max_queue_messages: 2048,
            max_connections: 50_000,
            authenticate_timeout: 10_000,
            authenticator_timeout: 5_000,
            max_auth_failures: 10,
            auth_failure_window: 60_000,
            auth_failure_delay: 1_000,
            trusted_proxies: crate::net::Networks::default(),
            max_calls_in_flight: 1000,
            write_timeout: 10_000,
            write_buffer_size: None,
            auto_ping_interval: None,
            auto_ping_timeout: 10_000,
            tcp_keepalive: 30_000,
            allowed_origins: None,
            allow_null_origin: true,
            enable_webstatus: true,
            auto_fragment_size: 0,
            auto_ping_size: 12,
            close_handshake_timeout: 1_000,
            fail_by_drop: false,
            compression: None,
            realm: None,
            role: None,
            payload_mapping: None,
            payload_format: None,
            session_expiry_max: 86_400,
            offline_queue_messages: 1000,
            offline_queue_bytes: 1 << 20,
        }
    }
}

impl TransportConfig {
    /// A web transport's WebSocket path as a transport of its own (the
    /// endpoint is the web transport's).
    pub fn websocket_path(&self, path: &WebPath) -> TransportConfig {
        TransportConfig {
            kind: TransportKind::Websocket,
            id: self.id.clone(),
            max_connections: None,
            endpoint: self.endpoint.clone(),
            serializers: path.serializers.clone(),
            options: path.websocket_options(),
            auth: path.auth.clone(),
            cookie: path.cookie.clone(),
            allowed_domain: None,
            allowed_ports: None,
            debug: false,
            url: None,
            paths: None,
            internal: false,
            rawsocket: None,
            websocket: None,
            web: None,
            mqtt: None,
        }
    }

    /// A web transport's `mqtt` path (MQTT over WebSocket) as an `mqtt`
    /// transport of its own (the endpoint is the web transport's).
    pub fn mqtt_path(&self, path: &WebPath) -> TransportConfig {
        TransportConfig {
            kind: TransportKind::Mqtt,
            serializers: None,
            cookie: None,
            ..self.websocket_path(path)
        }
    }

    /// A web transport's paths with nested `path` services flattened:
    /// (`api/call`, its path), in order; a nested `/` is its parent's key.
    pub fn flat_paths(&self) -> Vec<(String, &WebPath)> {
        fn walk<'a>(
            prefix: &str,
            paths: &'a BTreeMap<String, WebPath>,
            out: &mut Vec<(String, &'a WebPath)>,
        ) {
            for (name, p) in paths {
                let key = match (prefix.is_empty(), name.as_str()) {
                    (true, n) => n.to_owned(),
                    (false, "/") => prefix.to_owned(),
                    (false, n) => format!("{prefix}/{n}"),
                };
                match (&p.kind, &p.paths) {
                    (WebPathKind::Path, Some(inner)) => walk(&key, inner, out),
                    _ => out.push((key, p)),
                }
            }
        }
        let mut out = Vec::new();
        if let Some(paths) = &self.paths {
            walk("", paths, &mut out);
        }
        out
    }

    /// A `universal` transport as the router serves it: a web transport
    /// with its web paths and WebSocket paths, and its RawSocket part as a
    /// transport of its own (the second, when there is one).
    pub fn universal_parts(&self) -> (TransportConfig, Option<TransportConfig>) {
        let mut paths = self.web.clone().unwrap_or_default().paths;
        for (name, p) in self.websocket.iter().flatten() {
            paths.insert(name.clone(), p.clone());
        }
        let web = TransportConfig {
            kind: TransportKind::Web,
            paths: Some(paths),
            rawsocket: None,
            websocket: None,
            web: None,
            mqtt: None,
            ..self.clone()
        };
        let raw = self.rawsocket.as_ref().map(|r| TransportConfig {
            kind: TransportKind::Rawsocket,
            serializers: r.serializers.clone(),
            options: r.options.clone().unwrap_or_default(),
            auth: r.auth.clone(),
            paths: None,
            rawsocket: None,
            websocket: None,
            web: None,
            mqtt: None,
            ..self.clone()
        });
        (web, raw)
    }

    /// A `universal` transport's MQTT part as an `mqtt` transport on the
    /// same endpoint.
    pub fn universal_mqtt(&self) -> Option<TransportConfig> {
        let m = self.mqtt.as_ref()?;
        Some(TransportConfig {
            kind: TransportKind::Mqtt,
            serializers: None,
            options: m.options.clone(),
            auth: m.auth.clone(),
            cookie: None,
            paths: None,
            rawsocket: None,
            websocket: None,
            web: None,
            mqtt: None,
            ..self.clone()
        })
    }

    /// The serializers this transport offers, in the router's order.
    pub fn serializer_list(&self) -> Vec<proto::Serializer> {
        match &self.serializers {
            None => proto::Serializer::ALL.to_vec(),
            Some(names) => names
                .iter()
                .filter_map(|n| proto::Serializer::from_name(n))
                .collect(),
        }
    }

    /// The role anonymous sessions on this transport get, when the config
    /// gives it (not when an authenticator decides).
    pub fn anonymous_role(&self) -> Option<&str> {
        match &self.auth {
            // An MQTT transport's clients get its `options.role`.
            None => Some(self.options.role.as_deref().unwrap_or("anonymous")),
            Some(a) => a
                .anonymous
                .as_ref()
                .filter(|x| x.kind == AuthKind::Static)
                .map(|x| x.role.as_str()),
        }
    }
}

impl RouterConfig {
    /// The checks of one WAMP transport (or a web transport's WebSocket
    /// path), its problems reported under `pre`.
    pub(super) fn validate_transport(&self, pre: &str, ws: &TransportConfig, p: Report<'_>) {
        if let Some(c) = &ws.cookie {
            validate_cookie(&format!("{pre}.cookie"), ws, c, p);
        }
        if let Some(list) = &ws.serializers {
            if list.is_empty() {
                p(
                    format!("{pre}.serializers"),
                    "an empty list leaves clients no serializer: list some of \"json\", \"msgpack\", \"cbor\" or leave the key out".into(),
                );
            }
            if !list.is_empty() && list.iter().all(|s| s == super::UBJSON) {
                p(
                    format!("{pre}.serializers"),
                    "Trellis has no UBJSON serializer, and this list has no other: add \"json\", \"msgpack\" or \"cbor\"".into(),
                );
            }
            for (j, s) in list.iter().enumerate() {
                if proto::Serializer::from_name(s).is_none() && s != super::UBJSON {
                    p(
                        format!("{pre}.serializers[{j}]"),
                        format!(
                            "unknown serializer {s:?}: expected \"json\", \"msgpack\" or \"cbor\""
                        ),
                    );
                }
            }
        }
        let o = &ws.options;
        if o.max_message_size < 1024 {
            p(
                format!("{pre}.options.max_message_size"),
                format!(
                    "{} bytes is too small for WAMP: use at least 1024",
                    o.max_message_size
                ),
            );
        }
        if o.max_frame_size < 1024 {
            p(
                format!("{pre}.options.max_frame_size"),
                format!(
                    "{} bytes is too small for WAMP: use at least 1024",
                    o.max_frame_size
                ),
            );
        }
        for (key, v) in [
            ("open_handshake_timeout", o.open_handshake_timeout),
            ("hello_timeout", o.hello_timeout),
        ] {
            if v == 0 {
                p(
                    format!("{pre}.options.{key}"),
                    "must be a positive number of milliseconds".into(),
                );
            }
        }
        if o.max_queue_messages == 0 || o.max_connections == 0 {
            p(
                format!("{pre}.options"),
                "max_queue_messages and max_connections must be at least 1".into(),
            );
        }
        if !(4..=125).contains(&o.auto_ping_size) {
            p(
                format!("{pre}.options.auto_ping_size"),
                format!(
                    "{} bytes is outside the 4 to 125 a ping's payload may have",
                    o.auto_ping_size
                ),
            );
        }
        if let Some(d) = o.compression.as_ref().and_then(|c| c.deflate.as_ref()) {
            for (key, bits) in [
                ("max_window_bits", d.max_window_bits),
                ("request_max_window_bits", d.request_max_window_bits),
            ] {
                if !(8..=15).contains(&bits) {
                    p(
                        format!("{pre}.options.compression.deflate.{key}"),
                        format!("{bits} is outside the window sizes 8 to 15 (bits)"),
                    );
                }
            }
            if !(1..=9).contains(&d.memory_level) {
                p(
                    format!("{pre}.options.compression.deflate.memory_level"),
                    format!("{} is outside 1 to 9", d.memory_level),
                );
            }
        }
        if let Some(size) = o.write_buffer_size.filter(|&s| s > MAX_WRITE_BUFFER) {
            p(
                format!("{pre}.options.write_buffer_size"),
                format!(
                    "{size} bytes is more than the {MAX_WRITE_BUFFER} allowed (leave it out for the default: {WEBSOCKET_WRITE_BUFFER} on WebSocket, {RAWSOCKET_WRITE_BUFFER} on RawSocket)"
                ),
            );
        }
        let e = &ws.endpoint;
        match e.kind {
            EndpointKind::Tcp => {
                if let Some(t) = &e.tls {
                    if t.ca_certificates.as_ref().is_some_and(Vec::is_empty) {
                        p(
                            format!("{pre}.endpoint.tls.ca_certificates"),
                            "list at least one CA certificate file (PEM) that client certificates are verified against, or leave the key out".into(),
                        );
                    }
                    for (key, v) in [("key", &t.key), ("certificate", &t.certificate)] {
                        if v.is_empty() {
                            p(
                                format!("{pre}.endpoint.tls.{key}"),
                                "missing: a PEM file (relative to the node directory)".into(),
                            );
                        }
                    }
                }
                if e.port.is_none() {
                    p(
                        format!("{pre}.endpoint.port"),
                        "missing: a tcp endpoint needs a \"port\" (0 picks a free one)".into(),
                    );
                }
                for (key, set) in [("path", e.path.is_some()), ("mode", e.mode.is_some())] {
                    if set {
                        p(
                            format!("{pre}.endpoint.{key}"),
                            format!(
                                "only unix endpoints have a {key}: remove it or use \"type\": \"unix\""
                            ),
                        );
                    }
                }
            }
            EndpointKind::Unix => {
                match e.path.as_deref() {
                    None | Some("") => p(
                        format!("{pre}.endpoint.path"),
                        "missing: a unix endpoint needs a socket file \"path\"".into(),
                    ),
                    // sockaddr_un holds 108 bytes including the NUL.
                    Some(path) if path.len() > 107 => p(
                        format!("{pre}.endpoint.path"),
                        format!(
                            "{} bytes is too long for a Unix socket path (at most 107): use a shorter path",
                            path.len()
                        ),
                    ),
                    Some(_) => {}
                }
                if let Some(m) = &e.mode
                    && parse_mode(m).is_none()
                {
                    p(
                        format!("{pre}.endpoint.mode"),
                        format!(
                            "{m:?} is not a file mode: use octal digits such as \"0600\" or \"0660\""
                        ),
                    );
                }
                if e.tls.is_some() {
                    p(
                        format!("{pre}.endpoint.tls"),
                        "TLS is for tcp endpoints: a unix socket is reached on this machine only, through its file mode".into(),
                    );
                }
                for (key, set) in [
                    ("port", e.port.is_some()),
                    ("interface", e.interface.is_some()),
                    ("version", e.version.is_some()),
                    ("shared", e.shared),
                ] {
                    if set {
                        p(
                            format!("{pre}.endpoint.{key}"),
                            "unix endpoints have no port, interface, IP version or sharing: remove the key"
                                .into(),
                        );
                    }
                }
            }
        }
        if let Some(v) = &ws.endpoint.version
            && *v != 4
            && *v != 6
        {
            p(
                format!("{pre}.endpoint.version"),
                format!("IP version must be 4 or 6, found {v}"),
            );
        }
        if o.tcp_keepalive != 0 && o.tcp_keepalive < 1000 {
            p(
                format!("{pre}.options.tcp_keepalive"),
                format!(
                    "must be 0 (off) or at least 1000 ms (TCP counts keepalive time in seconds), found {}",
                    o.tcp_keepalive
                ),
            );
        }
        if o.auth_failure_delay > 60_000 {
            p(
                format!("{pre}.options.auth_failure_delay"),
                format!(
                    "must be at most 60000 ms (a correct login waits up to this long), found {}",
                    o.auth_failure_delay
                ),
            );
        }
        for (key, v) in [
            ("authenticate_timeout", o.authenticate_timeout),
            ("authenticator_timeout", o.authenticator_timeout),
            ("auth_failure_window", o.auth_failure_window),
        ] {
            if v == 0 {
                p(
                    format!("{pre}.options.{key}"),
                    "must be a positive number of milliseconds".into(),
                );
            }
        }
        self.validate_auth(pre, ws, p);
    }

    /// A web transport: its paths, and each WebSocket path as a transport.
    /// A universal transport: each part as the transport it stands for,
    /// with errors under the part's own key.
    pub(super) fn validate_universal(&self, pre: &str, t: &TransportConfig, p: Report<'_>) {
        if t.rawsocket.is_none() && t.websocket.is_none() && t.web.is_none() && t.mqtt.is_none() {
            p(
                pre.to_owned(),
                "a universal transport needs at least one of \"rawsocket\", \"websocket\", \"web\", \"mqtt\""
                    .into(),
            );
        }
        if let Some(m) = t.universal_mqtt() {
            self.validate_mqtt(&format!("{pre}.mqtt"), &m, p);
        }
        for (key, set) in [
            ("serializers", t.serializers.is_some()),
            ("auth", t.auth.is_some()),
            ("paths", t.paths.is_some()),
        ] {
            if set {
                p(
                    format!("{pre}.{key}"),
                    format!(
                        "a universal transport's {key} belong to its parts (rawsocket, websocket, web, mqtt)"
                    ),
                );
            }
        }
        let (web, raw) = t.universal_parts();
        let web_names: Vec<&String> = t.web.iter().flat_map(|w| w.paths.keys()).collect();
        for name in t.websocket.iter().flat_map(|w| w.keys()) {
            if web_names.contains(&name) {
                p(
                    format!("{pre}.websocket.{name}"),
                    format!("{name:?} is also a web path: a path serves one thing"),
                );
            }
        }
        for (name, wp) in t.websocket.iter().flatten() {
            if wp.kind != WebPathKind::Websocket {
                p(
                    format!("{pre}.websocket.{name}.type"),
                    "a universal transport's websocket part holds websocket paths only".into(),
                );
            }
        }
        // Web and WebSocket paths: checked as one web transport, each
        // error under the part the path came from.
        let mut rewrite = |path: String, message: String| {
            let inner = format!("{pre}.paths.");
            let path = match path.strip_prefix(&inner) {
                Some(rest) => {
                    let name = rest.split('.').next().unwrap_or("");
                    let part = if t.websocket.as_ref().is_some_and(|w| w.contains_key(name)) {
                        "websocket"
                    } else {
                        "web.paths"
                    };
                    format!("{pre}.{part}.{rest}")
                }
                None => path,
            };
            p(path, message);
        };
        self.validate_web(pre, &web, &mut rewrite);
        if let Some(raw) = raw {
            let mut under = |path: String, message: String| {
                let path = match path.strip_prefix(pre) {
                    Some(rest) if !rest.starts_with(".endpoint") => {
                        format!("{pre}.rawsocket{rest}")
                    }
                    _ => path,
                };
                p(path, message);
            };
            self.validate_transport(pre, &raw, &mut under);
        }
    }

    pub(super) fn validate_web(&self, pre: &str, t: &TransportConfig, p: Report<'_>) {
        if t.endpoint.kind != EndpointKind::Tcp {
            p(
                format!("{pre}.endpoint.type"),
                "web transports listen on tcp endpoints".into(),
            );
        }
        for (key, set) in [
            ("serializers", t.serializers.is_some()),
            ("auth", t.auth.is_some()),
        ] {
            if set {
                p(
                    format!("{pre}.{key}"),
                    format!(
                        "a web transport's {key} belong to its websocket paths: move the key into paths.NAME"
                    ),
                );
            }
        }
        if t.paths.as_ref().is_none_or(|m| m.is_empty()) {
            p(
                format!("{pre}.paths"),
                "a web transport needs paths, e.g. {\"/\": {\"type\": \"static\", \"directory\": \"web\"}, \"ws\": {\"type\": \"websocket\"}}".into(),
            );
            return;
        }
        self.validate_web_paths(pre, t, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(json: serde_json::Value) -> TransportConfig {
        serde_json::from_value(json).expect("a transport")
    }

    #[test]
    fn nested_path_services_flatten_under_their_parent() {
        let t = transport(serde_json::json!({
            "type": "web", "endpoint": {"type": "tcp", "port": 8080},
            "paths": {
                "/": {"type": "static", "directory": "web"},
                "api": {"type": "path", "paths": {
                    "/": {"type": "json", "value": 1},
                    "call": {"type": "caller", "realm": "r", "role": "x"},
                    "v2": {"type": "path", "paths": {"pub": {"type": "publisher", "realm": "r", "role": "x"}}}
                }},
                "ws": {"type": "websocket"}
            }
        }));
        let flat: Vec<(String, WebPathKind)> = t
            .flat_paths()
            .into_iter()
            .map(|(k, p)| (k, p.kind))
            .collect();
        assert_eq!(
            flat,
            [
                ("/".to_owned(), WebPathKind::Static),
                ("api".to_owned(), WebPathKind::Json),
                ("api/call".to_owned(), WebPathKind::Caller),
                ("api/v2/pub".to_owned(), WebPathKind::Publisher),
                ("ws".to_owned(), WebPathKind::Websocket),
            ]
        );
    }

    #[test]
    fn a_universal_transport_is_a_web_part_and_a_rawsocket_part() {
        let t = transport(serde_json::json!({
            "type": "universal", "endpoint": {"type": "tcp", "port": 8080},
            "rawsocket": {"serializers": ["msgpack"], "options": {"max_message_size": 2048}},
            "websocket": {"ws": {"type": "websocket"}},
            "web": {"paths": {"/": {"type": "static", "directory": "."}}}
        }));
        let (web, raw) = t.universal_parts();
        assert_eq!(web.kind, TransportKind::Web);
        let names: Vec<&String> = web.paths.as_ref().expect("paths").keys().collect();
        assert_eq!(names, ["/", "ws"]);
        let raw = raw.expect("a RawSocket part");
        assert_eq!(raw.kind, TransportKind::Rawsocket);
        assert_eq!(raw.serializer_list(), [proto::Serializer::MsgPack]);
        assert_eq!(raw.options.max_message_size, 2048);
        assert_eq!(raw.endpoint, t.endpoint);
        let plain = transport(serde_json::json!({
            "type": "universal", "endpoint": {"type": "tcp", "port": 8080}
        }));
        assert!(plain.universal_parts().1.is_none());
    }

    #[test]
    fn serializers_in_the_routers_order_unknown_names_skipped() {
        let all = transport(
            serde_json::json!({"type": "websocket", "endpoint": {"type": "tcp", "port": 1}}),
        );
        assert_eq!(all.serializer_list(), proto::Serializer::ALL.to_vec());
        let some = transport(serde_json::json!({
            "type": "websocket", "endpoint": {"type": "tcp", "port": 1},
            "serializers": ["cbor", "json"]
        }));
        assert_eq!(
            some.serializer_list(),
            [proto::Serializer::Cbor, proto::Serializer::Json]
        );
    }
}
