//! A web transport's `paths`: what each serves, with its options, and
//! their checks.

use super::*;

/// One path of a web transport.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebPath {
    /// `static`, `websocket`, `json` or `redirect`.
    #[serde(rename = "type")]
    pub kind: WebPathKind,
    /// Crossbar.io's web service id (for its management API); accepted.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    /// `static`: Crossbar.io's directory from a Python package
    /// (`package` + `resource`); read only to name it as not supported.
    #[serde(default, skip_serializing)]
    pub package: Option<serde_json::Value>,
    /// See `package`.
    #[serde(default, skip_serializing)]
    pub resource: Option<serde_json::Value>,
    /// `static`: the directory served (relative to the node directory).
    #[serde(default)]
    pub directory: Option<String>,
    /// `websocket`: serializers offered; all when absent.
    #[serde(default)]
    pub serializers: Option<Vec<String>>,
    /// `options` as the config writes them. [`RouterConfig::plan_options`]
    /// reads them by the path's type into [`WebPath::planned`] when the
    /// config is loaded; they are not passed on to the worker.
    #[serde(default, skip_serializing)]
    pub options: Option<serde_json::Value>,
    /// The options read by the path's type: what the router uses. Filled
    /// in when the config is loaded, not a key of the config.
    #[serde(
        default,
        rename = "_options",
        skip_serializing_if = "PathOptions::is_none"
    )]
    pub planned: PathOptions,
    /// `json`: the value served.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// `redirect`: where to send browsers (an absolute URL or a path).
    #[serde(default)]
    pub url: Option<String>,
    /// `archive`: the zip file served (relative to the node directory).
    #[serde(default)]
    pub archive: Option<String>,
    /// `archive`: where the archive is downloaded from (with `download`)
    /// when the file is not there.
    #[serde(default)]
    pub origin: Option<String>,
    /// `archive`: prefix of the objects in the zip (`web/`).
    #[serde(default)]
    pub object_prefix: Option<String>,
    /// `archive`: the object for a directory (`index.html`).
    #[serde(default)]
    pub default_object: Option<String>,
    /// `archive`: fetch a missing archive from `origin` at start, as
    /// Crossbar.io does.
    #[serde(default)]
    pub download: Option<bool>,
    /// `archive`: Crossbar.io's in-memory cache switch; accepted.
    #[serde(default)]
    pub cache: Option<bool>,
    /// `archive`: content types by extension, over the built-in table.
    #[serde(default)]
    pub mime_types: Option<BTreeMap<String, String>>,
    /// `archive`: the SHA-256 fingerprints (hex) the file may have; it is
    /// checked at start and refused when it has none of them.
    #[serde(default)]
    pub hashes: Option<Vec<String>>,
    /// `path`: the paths under this one, as a web transport's.
    #[serde(default)]
    pub paths: Option<BTreeMap<String, WebPath>>,
    /// `caller`, `publisher`: the realm the bridge's session joins.
    #[serde(default)]
    pub realm: Option<String>,
    /// `caller`, `publisher`: the role it joins with (its permissions
    /// decide what HTTP clients may call or publish).
    #[serde(default)]
    pub role: Option<String>,
    /// `websocket`: authentication methods; anonymous when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// `websocket`: cookie tracking (Crossbar.io's `cookie`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieConfig>,
    /// `websocket`: Crossbar.io's debug flag; accepted for compatibility,
    /// log levels are set with `--loglevel`/`RUST_LOG` instead.
    #[serde(default)]
    pub debug: bool,
}

/// What a web path serves.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebPathKind {
    /// Files from a directory.
    Static,
    /// WAMP over WebSocket.
    Websocket,
    /// A fixed JSON value.
    Json,
    /// A redirect (302) to `url`.
    Redirect,
    /// A page about the node: version, workers, realms, sessions.
    Nodeinfo,
    /// The HTTP bridge: POST JSON to call a procedure.
    Caller,
    /// The HTTP bridge: POST JSON to publish an event.
    Publisher,
    /// The HTTP bridge: any POST published as an event (`headers`, `body`).
    Webhook,
    /// Paths under this one (`{"type": "path", "paths": {...}}`).
    Path,
    /// Files from a zip archive.
    Archive,
    /// WAMP over HTTP long-poll.
    Longpoll,
    /// MQTT over WebSocket (subprotocol `mqtt`), with an `mqtt`
    /// transport's `options` and `auth`.
    Mqtt,
}

/// A `caller` or `publisher` path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeOptions {
    /// With `secret`: requests must be signed with this key.
    pub key: Option<String>,
    /// The signing secret.
    pub secret: Option<String>,
    /// Largest request body in bytes (0: the limit of 16 MiB); larger
    /// requests get 413 before their body is read.
    pub post_body_limit: u64,
    /// Seconds a signed request's timestamp may be off (0: not checked).
    pub timestamp_delta_limit: u64,
    /// Refuse requests not made over TLS.
    pub require_tls: bool,
    /// Accept requests only from these addresses or networks (CIDR).
    pub require_ip: Option<crate::net::Networks>,
    /// `caller`: milliseconds a call may take (the CALL's `timeout`).
    pub timeout: u64,
    /// Crossbar.io's debug flag: accepted.
    pub debug: bool,
    /// `webhook`: the topic each request is published to.
    pub topic: Option<String>,
    /// `webhook`: the body of the 202 answer.
    pub success_response: String,
    /// `webhook`: the body of the 500 answer.
    pub error_response: String,
    /// `webhook`: GitHub's webhook secret; requests must carry a valid
    /// `X-Hub-Signature-256`.
    pub github_secret: Option<String>,
    /// With `key` and `secret`: a signed request is taken once; the same
    /// signature again within `timestamp_delta_limit` is refused (401).
    /// Trellis's own option (Crossbar.io has none).
    pub replay_protection: bool,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            key: None,
            secret: None,
            post_body_limit: 0,
            timestamp_delta_limit: 300,
            require_tls: false,
            require_ip: None,
            timeout: 30_000,
            debug: false,
            topic: None,
            success_response: "OK".into(),
            error_response: "NOT OK".into(),
            github_secret: None,
            replay_protection: false,
        }
    }
}

/// A `longpoll` path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LongPollOptions {
    /// Seconds a `receive` waits for a message before answering 204
    /// (0: until one comes).
    pub request_timeout: u64,
    /// Seconds without any request after which a transport is closed
    /// (0: never).
    pub session_timeout: u64,
    /// Bytes of the router's messages waiting for a poll; a client over it
    /// is closed (0: no limit besides the messages).
    pub queue_limit_bytes: usize,
    /// Messages waiting for a poll; a client over it is closed.
    pub queue_limit_messages: usize,
    /// Crossbar.io's debug flag: accepted.
    pub debug: bool,
    /// Crossbar.io's fixed transport id for debugging: accepted and not
    /// used (ids are always random).
    pub debug_transport_id: Option<String>,
}

impl Default for LongPollOptions {
    fn default() -> Self {
        LongPollOptions {
            request_timeout: 10,
            session_timeout: 30,
            queue_limit_bytes: 131_072,
            queue_limit_messages: 100,
            debug: false,
            debug_transport_id: None,
        }
    }
}

/// The largest HTTP bridge request body (and `post_body_limit` 0).
pub const MAX_BRIDGE_BODY: u64 = 16 << 20;

/// A `json` path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JsonOptions {
    /// Indented JSON.
    pub prettify: bool,
    /// `Access-Control-Allow-Origin: *` (and credentials).
    pub allow_cross_origin: bool,
    /// `Cache-Control: no-store, ...`.
    pub discourage_caching: bool,
}

/// A static path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StaticOptions {
    /// List a directory that has no `index.html`.
    pub enable_directory_listing: bool,
    /// Content types by file extension (`".wasm": "application/wasm"`),
    /// over the built-in table.
    pub mime_types: BTreeMap<String, String>,
    /// Seconds browsers may cache files (`Cache-Control: max-age`); absent
    /// or 0: `no-cache`.
    pub cache_timeout: Option<u64>,
    /// The file (relative to the directory) served, 200, for any path that
    /// names nothing: a single-page application's `index.html`.
    pub default_file: Option<String>,
}

/// A web path's `options`, read by the path's type.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PathOptions {
    /// No options were given (or the type takes none): the defaults.
    #[default]
    None,
    /// A `static` path's.
    Static(StaticOptions),
    /// A `websocket` path's.
    Websocket(WebSocketOptions),
    /// A `json` path's.
    Json(JsonOptions),
    /// A `caller`, `publisher` or `webhook` path's.
    Bridge(BridgeOptions),
    /// A `longpoll` path's.
    Longpoll(LongPollOptions),
    /// An `archive` path's.
    Archive(ArchiveOptions),
}

/// An archive path's `options`, as Crossbar.io names them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveOptions {
    /// The object (under `object_prefix`) served, 200, for any path that
    /// names nothing in the archive: a single-page application's
    /// `index.html`.
    pub default_file: Option<String>,
}

impl PathOptions {
    /// True when no options were given.
    pub fn is_none(&self) -> bool {
        *self == PathOptions::None
    }
}

/// Options of type `T` read from `raw`, or every problem as (key path
/// under `options`, message).
fn read_options<T: serde::de::DeserializeOwned>(
    raw: &serde_json::Value,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let at = e.path().to_string();
        let at = if at.is_empty() || at == "." {
            String::new()
        } else {
            format!(".{at}")
        };
        (at, e.into_inner().to_string())
    })
}

impl WebPath {
    /// Read `options` by the path's type into `planned`; a problem names
    /// its key under `{pp}.options`. Types that take no options keep
    /// none (the path checks say so).
    fn plan(&mut self, pp: &str, out: &mut Vec<ConfigProblem>) {
        if let Some(inner) = &mut self.paths {
            for (name, p) in inner.iter_mut() {
                p.plan(&format!("{pp}.paths.{name}"), out);
            }
        }
        let Some(raw) = &self.options else {
            return;
        };
        let read = match self.kind {
            WebPathKind::Static => read_options(raw).map(PathOptions::Static),
            WebPathKind::Websocket | WebPathKind::Mqtt => {
                read_options(raw).map(PathOptions::Websocket)
            }
            WebPathKind::Json => read_options(raw).map(PathOptions::Json),
            WebPathKind::Caller | WebPathKind::Publisher | WebPathKind::Webhook => {
                read_options(raw).map(PathOptions::Bridge)
            }
            WebPathKind::Longpoll => read_options(raw).map(PathOptions::Longpoll),
            WebPathKind::Archive => read_options(raw).map(PathOptions::Archive),
            WebPathKind::Redirect | WebPathKind::Nodeinfo | WebPathKind::Path => {
                Ok(PathOptions::None)
            }
        };
        match read {
            Ok(o) => self.planned = o,
            Err((at, message)) => out.push(ConfigProblem {
                path: format!("{pp}.options{at}"),
                message,
            }),
        }
    }

    /// True when `options` were given and could not be read (the problem
    /// is reported once, by [`RouterConfig::plan_options`]; the checks of
    /// what they say are skipped).
    fn unreadable_options(&self) -> bool {
        self.options.is_some() && self.planned.is_none()
    }

    /// A bridge path's options.
    pub fn bridge_options(&self) -> BridgeOptions {
        match &self.planned {
            PathOptions::Bridge(o) => o.clone(),
            _ => BridgeOptions::default(),
        }
    }

    /// A static path's options.
    pub fn static_options(&self) -> StaticOptions {
        match &self.planned {
            PathOptions::Static(o) => o.clone(),
            _ => StaticOptions::default(),
        }
    }

    /// A json path's options.
    pub fn json_options(&self) -> JsonOptions {
        match &self.planned {
            PathOptions::Json(o) => o.clone(),
            _ => JsonOptions::default(),
        }
    }

    /// A longpoll path's options.
    pub fn longpoll_options(&self) -> LongPollOptions {
        match &self.planned {
            PathOptions::Longpoll(o) => o.clone(),
            _ => LongPollOptions::default(),
        }
    }

    /// An archive path's options.
    pub fn archive_options(&self) -> ArchiveOptions {
        match &self.planned {
            PathOptions::Archive(o) => o.clone(),
            _ => ArchiveOptions::default(),
        }
    }

    /// A websocket path's options.
    pub fn websocket_options(&self) -> WebSocketOptions {
        match &self.planned {
            PathOptions::Websocket(o) => o.clone(),
            _ => WebSocketOptions::default(),
        }
    }
}

impl RouterConfig {
    /// Read every web path's `options` by its type (a web transport's
    /// `paths`, a universal transport's `web.paths` and `websocket`, and
    /// the paths under `path` services), once, when the config is loaded:
    /// the router then uses them typed and never reads them again. Each
    /// problem names its key (`transports[0].paths.call.options.timeout`).
    /// A path already read (as a worker receives it) is left as it is.
    pub fn plan_options(&mut self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, t) in self.transports.iter_mut().enumerate() {
            match t.max_connections {
                Some(0) => out.push(ConfigProblem {
                    path: format!("transports[{i}].max_connections"),
                    message: "must be at least 1: the most connections the transport takes at once"
                        .into(),
                }),
                Some(n) => t.options.max_connections = n,
                None => {}
            }
            let groups = [
                ("paths", t.paths.as_mut()),
                ("web.paths", t.web.as_mut().map(|w| &mut w.paths)),
                ("websocket", t.websocket.as_mut()),
            ];
            for (under, paths) in groups {
                for (name, p) in paths.into_iter().flatten() {
                    p.plan(&format!("transports[{i}].{under}.{name}"), &mut out);
                }
            }
        }
        out
    }
}

impl RouterConfig {
    /// A web transport's paths (or a `path` service's), each under
    /// `{pre}.paths.NAME`.
    pub(super) fn validate_web_paths(&self, pre: &str, t: &TransportConfig, p: Report<'_>) {
        for (name, path) in t.paths.iter().flatten() {
            let pp = format!("{pre}.paths.{name}");
            let ok_name = name == "/"
                || (!name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && name != "."
                    && name != "..");
            if !ok_name {
                p(
                    pp.clone(),
                    "a path is \"/\" or one URL segment of letters, digits, '-', '_' and '.'"
                        .into(),
                );
            }
            if path.package.is_some() || path.resource.is_some() {
                p(
                    format!("{pp}.package"),
                    "Crossbar.io's static files from a Python package (\"package\" + \"resource\") are not supported by Trellis: give the files' \"directory\" instead (python3 -c 'import importlib.resources as r; print(r.files(\"PACKAGE\") / \"RESOURCE\")' prints it)".into(),
                );
            }
            let kind = match path.kind {
                WebPathKind::Static => "static",
                WebPathKind::Websocket => "websocket",
                WebPathKind::Json => "json",
                WebPathKind::Redirect => "redirect",
                WebPathKind::Nodeinfo => "nodeinfo",
                WebPathKind::Caller => "caller",
                WebPathKind::Publisher => "publisher",
                WebPathKind::Webhook => "webhook",
                WebPathKind::Path => "path",
                WebPathKind::Archive => "archive",
                WebPathKind::Longpoll => "longpoll",
                WebPathKind::Mqtt => "mqtt",
            };
            // Keys each kind takes.
            let takes: &[&str] = match path.kind {
                WebPathKind::Static => &["directory", "options"],
                // A WebSocket path's `url` is Crossbar.io's public URL of
                // it, accepted and not used.
                WebPathKind::Websocket => &["serializers", "options", "auth", "url"],
                WebPathKind::Longpoll => &["serializers", "options", "auth"],
                WebPathKind::Json => &["value", "options"],
                WebPathKind::Mqtt => &["options", "auth"],
                WebPathKind::Redirect => &["url"],
                WebPathKind::Nodeinfo => &[],
                WebPathKind::Caller | WebPathKind::Publisher | WebPathKind::Webhook => {
                    &["realm", "role", "options"]
                }
                WebPathKind::Path => &["paths"],
                WebPathKind::Archive => &[
                    "options",
                    "archive",
                    "origin",
                    "object_prefix",
                    "default_object",
                    "download",
                    "cache",
                    "mime_types",
                    "hashes",
                ],
            };
            for (key, set) in [
                ("directory", path.directory.is_some()),
                ("serializers", path.serializers.is_some()),
                ("options", path.options.is_some()),
                ("auth", path.auth.is_some()),
                ("value", path.value.is_some()),
                ("url", path.url.is_some()),
                ("realm", path.realm.is_some()),
                ("role", path.role.is_some()),
                ("paths", path.paths.is_some()),
                ("archive", path.archive.is_some()),
                ("origin", path.origin.is_some()),
                ("object_prefix", path.object_prefix.is_some()),
                ("default_object", path.default_object.is_some()),
                ("download", path.download.is_some()),
                ("cache", path.cache.is_some()),
                ("mime_types", path.mime_types.is_some()),
            ] {
                if set && !takes.contains(&key) {
                    p(format!("{pp}.{key}"), format!("{kind} paths take no {key}"));
                }
            }
            match path.kind {
                WebPathKind::Static => {
                    if path.directory.as_deref().is_none_or(str::is_empty) {
                        p(
                            format!("{pp}.directory"),
                            "missing: a static path serves a \"directory\" (relative to the node directory)".into(),
                        );
                    }
                }
                WebPathKind::Websocket => {
                    self.validate_transport(&pp, &t.websocket_path(path), p);
                }
                WebPathKind::Mqtt => self.validate_mqtt(&pp, &t.mqtt_path(path), p),
                WebPathKind::Longpoll => match path.unreadable_options() {
                    true => {}
                    false => {
                        if path.longpoll_options().queue_limit_messages == 0 {
                            p(
                                format!("{pp}.options.queue_limit_messages"),
                                "must be at least 1: the router's messages wait for the client's poll in a bounded queue".into(),
                            );
                        }
                        let mut session = t.websocket_path(path);
                        session.options = WebSocketOptions::default();
                        self.validate_transport(&pp, &session, p);
                    }
                },
                WebPathKind::Json => {
                    if path.value.is_none() {
                        p(
                            format!("{pp}.value"),
                            "missing: the JSON value to serve".into(),
                        );
                    }
                }
                WebPathKind::Nodeinfo => {}
                WebPathKind::Archive => {
                    if path.archive.as_deref().is_none_or(str::is_empty) {
                        p(
                            format!("{pp}.archive"),
                            "missing: the zip file to serve (relative to the node directory)"
                                .into(),
                        );
                    }
                    if path.download == Some(true) {
                        match path.origin.as_deref() {
                            None => p(
                                format!("{pp}.download"),
                                "\"download\": true needs an \"origin\": the http:// or https:// URL to fetch the zip file from".into(),
                            ),
                            Some(o) if !(o.starts_with("http://") || o.starts_with("https://")) => p(
                                format!("{pp}.origin"),
                                format!("{o:?} is not an http:// or https:// URL: the archive is downloaded over HTTP"),
                            ),
                            Some(_) => {}
                        }
                    }
                    for (k, h) in path.hashes.iter().flatten().enumerate() {
                        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                            p(
                                format!("{pp}.hashes[{k}]"),
                                format!(
                                    "{h:?} is not a SHA-256 fingerprint: expected 64 hex characters (sha256sum's output)"
                                ),
                            );
                        }
                    }
                }
                WebPathKind::Path => {
                    // The paths under it, checked as a web transport's.
                    let inner = TransportConfig {
                        paths: path.paths.clone(),
                        ..t.clone()
                    };
                    match &path.paths {
                        None => p(
                            format!("{pp}.paths"),
                            "missing: the paths under this one".into(),
                        ),
                        Some(_) => self.validate_web_paths(&pp, &inner, p),
                    }
                }
                WebPathKind::Caller | WebPathKind::Publisher | WebPathKind::Webhook => {
                    match path.unreadable_options() {
                        true => {}
                        false => {
                            let o = path.bridge_options();
                            let webhook = path.kind == WebPathKind::Webhook;
                            if webhook && o.topic.as_deref().is_none_or(str::is_empty) {
                                p(
                                    format!("{pp}.options.topic"),
                                    "missing: the topic a webhook publishes to".into(),
                                );
                            }
                            for (key, set) in [
                                ("topic", o.topic.is_some()),
                                ("github_secret", o.github_secret.is_some()),
                            ] {
                                if set && !webhook {
                                    p(
                                        format!("{pp}.options.{key}"),
                                        format!("only webhook paths take {key}"),
                                    );
                                }
                            }
                            if webhook && o.key.is_some() {
                                p(
                                    format!("{pp}.options.key"),
                                    "a webhook is signed with github_secret, not key/secret".into(),
                                );
                            }
                            for (key, v) in
                                [("secret", &o.secret), ("github_secret", &o.github_secret)]
                            {
                                if let Some(v) = v {
                                    blank_secret(format!("{pp}.options.{key}"), v, p);
                                }
                            }
                            if o.key.is_some() != o.secret.is_some() {
                                p(
                                    format!("{pp}.options.secret"),
                                    "give both key and secret (signed requests) or neither".into(),
                                );
                            }
                            if o.replay_protection
                                && (o.key.is_none() || o.timestamp_delta_limit == 0)
                            {
                                p(
                                    format!("{pp}.options.replay_protection"),
                                    "needs signed requests (key and secret) and a timestamp_delta_limit above 0: a request is remembered for that long".into(),
                                );
                            }
                            if o.post_body_limit > MAX_BRIDGE_BODY {
                                p(
                                    format!("{pp}.options.post_body_limit"),
                                    format!("at most {MAX_BRIDGE_BODY} bytes (0 means that much)"),
                                );
                            }
                        }
                    }
                    match (&path.realm, &path.role) {
                        (None, _) => p(
                            format!("{pp}.realm"),
                            "missing: the realm the bridge joins".into(),
                        ),
                        (_, None) => p(
                            format!("{pp}.role"),
                            "missing: the role the bridge joins with (its permissions apply)"
                                .into(),
                        ),
                        (Some(r), Some(role)) => {
                            if !self.realms.iter().any(|x| &x.name == r) {
                                p(
                                    format!("{pp}.realm"),
                                    format!("realm {r:?} is not defined in this router"),
                                );
                            } else if !self.role_exists(Some(r), role) {
                                p(
                                    format!("{pp}.role"),
                                    format!("role {role:?} is not defined in realm {r:?}"),
                                );
                            }
                        }
                    }
                }
                WebPathKind::Redirect => match path.url.as_deref() {
                    None | Some("") => p(
                        format!("{pp}.url"),
                        "missing: where to redirect (\"https://example.com/\" or \"/other/\")"
                            .into(),
                    ),
                    Some(u) if u.contains(['\r', '\n']) => {
                        p(format!("{pp}.url"), "must be one line".into())
                    }
                    Some(_) => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> RouterConfig {
        serde_json::from_value(json).expect("a router config")
    }

    #[test]
    fn options_are_read_once_by_type_and_reach_the_worker_typed() {
        let mut cfg = config(serde_json::json!({
            "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": []}]}],
            "transports": [
                {"type": "web", "endpoint": {"type": "tcp", "port": 8080}, "paths": {
                    "/": {"type": "static", "directory": "..", "options": {"enable_directory_listing": true}},
                    "info": {"type": "json", "value": 1, "options": {"prettify": true}},
                    "api": {"type": "path", "paths": {
                        "call": {"type": "caller", "realm": "realm1", "role": "anonymous",
                                 "options": {"timeout": 5000}}}}}},
                {"type": "universal", "endpoint": {"type": "tcp", "port": 8081},
                 "websocket": {"ws": {"type": "websocket", "options": {"max_message_size": 4096}}},
                 "web": {"paths": {"lp": {"type": "longpoll", "options": {"request_timeout": 3}}}}}
            ]
        }));
        assert_eq!(cfg.plan_options(), vec![]);
        let plan = serde_json::to_value(&cfg).expect("serializable");
        let text = plan.to_string();
        assert!(
            !text.contains("\"options\":{\"enable_directory_listing\""),
            "{text}"
        );
        // What the worker receives: no options left to read, all typed.
        let worker: RouterConfig = serde_json::from_value(plan).expect("the plan reads back");
        let paths = worker.transports[0].paths.as_ref().expect("paths");
        assert!(paths["/"].options.is_none());
        assert!(paths["/"].static_options().enable_directory_listing);
        assert!(paths["info"].json_options().prettify);
        let api = paths["api"].paths.as_ref().expect("nested paths");
        assert_eq!(api["call"].bridge_options().timeout, 5000);
        let u = &worker.transports[1];
        let ws = &u.websocket.as_ref().expect("websocket")["ws"];
        assert_eq!(ws.websocket_options().max_message_size, 4096);
        assert_eq!(
            u.web.as_ref().expect("web").paths["lp"]
                .longpoll_options()
                .request_timeout,
            3
        );
        // Planning what is already planned changes nothing.
        let mut again = worker.clone();
        assert_eq!(again.plan_options(), vec![]);
        assert_eq!(again, worker);
    }

    #[test]
    fn an_option_that_cannot_be_read_is_a_problem_at_its_key_never_a_default() {
        let mut cfg = config(serde_json::json!({
            "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": []}]}],
            "transports": [
                {"type": "web", "endpoint": {"type": "tcp", "port": 8080}, "paths": {
                    "/": {"type": "static", "directory": ".", "options": {"cache_timeout": "long"}},
                    "api": {"type": "path", "paths": {
                        "hook": {"type": "webhook", "realm": "realm1", "role": "anonymous",
                                 "options": {"topic": "com.example.hook", "retries": 3}}}}}},
                {"type": "universal", "endpoint": {"type": "tcp", "port": 8081},
                 "websocket": {"ws": {"type": "websocket", "options": {"max_message_size": -1}}},
                 "web": {"paths": {"lp": {"type": "longpoll", "options": {"queue_limit_messages": "x"}}}}}
            ]
        }));
        let problems = cfg.plan_options();
        let at: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            at,
            [
                "transports[0].paths./.options.cache_timeout",
                "transports[0].paths.api.paths.hook.options.retries",
                "transports[1].web.paths.lp.options.queue_limit_messages",
                "transports[1].websocket.ws.options.max_message_size",
            ]
        );
        assert!(problems[1].message.contains("retries"), "{problems:?}");
        // The options stay unread, and the checks of what they say are
        // skipped: the webhook's topic is not "missing" because its
        // options could not be read.
        let web = cfg.transports[0].paths.as_ref().expect("paths");
        assert!(web["/"].planned.is_none() && web["/"].options.is_some());
        let problems = cfg.validate();
        assert!(
            !problems.iter().any(|p| p.path.contains("options.topic")),
            "{problems:?}"
        );
    }
}
