//! An `mqtt` transport's options (Crossbar.io's shape) and their checks.

use super::*;

/// The serializers a `native` payload mapping may use.
const NATIVE_SERIALIZERS: [&str; 3] = ["json", "cbor", "msgpack"];

/// What to say about a native serializer Trellis does not have.
fn native_serializer_problem(s: &str) -> String {
    if s == "ubjson" {
        "native payloads in ubjson are not supported by Trellis: use \"json\", \"cbor\" or \"msgpack\"".into()
    } else {
        format!("{s:?}: expected \"json\", \"cbor\" or \"msgpack\"")
    }
}

/// What one topic's payloads are, once the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Opaque bytes, carried as WAMP payload passthru (`ppt_scheme`
    /// `mqtt`).
    Passthrough,
    /// A serialized `{"args": [...], "kwargs": {...}}`, with this
    /// serializer (`json`).
    Native(String),
    /// WAMP procedures of `realm` turn payloads into arguments
    /// (`decoder`) and back (`encoder`).
    Dynamic {
        realm: Option<String>,
        encoder: String,
        decoder: String,
    },
}

impl WebSocketOptions {
    /// The mapping for a WAMP topic (`a.b.c`): the longest configured
    /// prefix's, or passthrough (the default; `payload_format` makes it
    /// native).
    pub fn mapping_for(&self, uri: &str) -> Mapping {
        let found = self
            .payload_mapping
            .iter()
            .flatten()
            .filter(|(prefix, _)| uri.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, m)| m);
        match found {
            Some(m) if m.kind == "native" => {
                Mapping::Native(m.serializer.clone().unwrap_or_else(|| "json".into()))
            }
            Some(m) if m.kind == "dynamic" => Mapping::Dynamic {
                realm: m.realm.clone(),
                encoder: m.encoder.clone().unwrap_or_default(),
                decoder: m.decoder.clone().unwrap_or_default(),
            },
            Some(_) => Mapping::Passthrough,
            None => match &self.payload_format {
                Some(f) => Mapping::Native(f.clone()),
                None => Mapping::Passthrough,
            },
        }
    }
}

/// The option keys only an `mqtt` transport takes, and whether `o` sets
/// each.
pub(super) fn mqtt_keys(o: &WebSocketOptions) -> [(&'static str, bool); 7] {
    let d = WebSocketOptions::default();
    [
        ("realm", o.realm.is_some()),
        ("role", o.role.is_some()),
        ("payload_mapping", o.payload_mapping.is_some()),
        ("payload_format", o.payload_format.is_some()),
        (
            "session_expiry_max",
            o.session_expiry_max != d.session_expiry_max,
        ),
        (
            "offline_queue_messages",
            o.offline_queue_messages != d.offline_queue_messages,
        ),
        (
            "offline_queue_bytes",
            o.offline_queue_bytes != d.offline_queue_bytes,
        ),
    ]
}

impl RouterConfig {
    /// The checks of an `mqtt` transport, under `pre`.
    pub(super) fn validate_mqtt(&self, pre: &str, t: &TransportConfig, p: Report<'_>) {
        let o = &t.options;
        if t.serializers.is_some() {
            p(
                format!("{pre}.serializers"),
                "MQTT clients speak MQTT, not a WAMP serializer: remove the key (options.payload_mapping says how payloads map)".into(),
            );
        }
        if !matches!(t.endpoint.kind, EndpointKind::Tcp | EndpointKind::Unix) {
            p(
                format!("{pre}.endpoint.type"),
                "an mqtt transport listens on a \"tcp\" (with \"tls\" for MQTT over TLS) or a \"unix\" endpoint".into(),
            );
        }
        match &o.realm {
            None => p(
                format!("{pre}.options.realm"),
                "missing: the realm MQTT clients join (\"options\": {\"realm\": \"realm1\", \"role\": \"anonymous\"})".into(),
            ),
            Some(r) if !self.realms.iter().any(|x| &x.name == r) => p(
                format!("{pre}.options.realm"),
                format!("realm {r:?} is not defined in this router's \"realms\""),
            ),
            Some(_) => {}
        }
        if t.auth.is_none()
            && let (Some(realm), role) = (&o.realm, o.role.as_deref().unwrap_or("anonymous"))
            && self.realms.iter().any(|x| &x.name == realm)
            && !self.role_exists(Some(realm), role)
        {
            p(
                format!("{pre}.options.role"),
                format!("role {role:?} is not defined in realm {realm:?}: MQTT clients get it"),
            );
        }
        for (prefix, m) in o.payload_mapping.iter().flatten() {
            let at = format!("{pre}.options.payload_mapping.{prefix:?}");
            if prefix.contains(['/', '#', '+']) {
                p(
                    at.clone(),
                    "a mapping's key is a WAMP topic prefix (a.b), not an MQTT filter (a/b, #, +)"
                        .into(),
                );
            }
            match m.kind.as_str() {
                "passthrough" | "native" => {
                    for (key, set) in [
                        ("realm", m.realm.is_some()),
                        ("encoder", m.encoder.is_some()),
                        ("decoder", m.decoder.is_some()),
                    ] {
                        if set {
                            p(
                                format!("{at}.{key}"),
                                format!("only dynamic mappings take {key}"),
                            );
                        }
                    }
                }
                "dynamic" => {
                    for (key, v) in [("encoder", &m.encoder), ("decoder", &m.decoder)] {
                        if v.as_deref().is_none_or(|v| {
                            proto::uri::validate(v, proto::uri::MatchPolicy::Exact, false).is_err()
                        }) {
                            p(
                                format!("{at}.{key}"),
                                format!(
                                    "a dynamic mapping names its {key}: the URI of a WAMP procedure"
                                ),
                            );
                        }
                    }
                    if let Some(r) = &m.realm
                        && !self.realms.iter().any(|x| &x.name == r)
                    {
                        p(
                            format!("{at}.realm"),
                            format!(
                                "realm {r:?} (where the encoder and decoder are registered) is not defined in this router's \"realms\""
                            ),
                        );
                    }
                }
                other => p(
                    format!("{at}.type"),
                    format!("{other:?}: expected \"passthrough\", \"native\" or \"dynamic\""),
                ),
            }
            if let Some(s) = &m.serializer {
                if m.kind != "native" {
                    p(
                        format!("{at}.serializer"),
                        "only native mappings take a serializer".into(),
                    );
                } else if !NATIVE_SERIALIZERS.contains(&s.as_str()) {
                    p(format!("{at}.serializer"), native_serializer_problem(s));
                }
            }
        }
        if let Some(f) = &o.payload_format
            && !NATIVE_SERIALIZERS.contains(&f.as_str())
        {
            p(
                format!("{pre}.options.payload_format"),
                native_serializer_problem(f),
            );
        }
        self.validate_transport(pre, t, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(transport: serde_json::Value) -> RouterConfig {
        serde_json::from_value(serde_json::json!({
            "realms": [{"name": "realm1", "roles": [{"name": "device", "permissions": []}]}],
            "transports": [transport]
        }))
        .expect("a router config")
    }

    #[test]
    fn crossbars_mqtt_transport_is_read_and_checked() {
        let ok = router(serde_json::json!({
            "type": "mqtt", "endpoint": {"type": "tcp", "port": 1883},
            "options": {"realm": "realm1", "role": "device",
                        "payload_mapping": {"": {"type": "passthrough"},
                                            "sensors.json": {"type": "native", "serializer": "json"}}}
        }));
        assert_eq!(ok.validate(), vec![]);
        let t = &ok.transports[0];
        assert_eq!(t.anonymous_role(), Some("device"));
        assert_eq!(
            t.options.mapping_for("sensors.json.t1"),
            Mapping::Native("json".into())
        );
        assert_eq!(t.options.mapping_for("sensors.raw"), Mapping::Passthrough);
        let bad = router(serde_json::json!({
            "type": "mqtt", "endpoint": {"type": "tcp", "port": 1883},
            "serializers": ["json"],
            "options": {"realm": "realm2", "payload_format": "xml",
                        "payload_mapping": {"a/b": {"type": "dynamic", "decoder": "d d", "realm": "codec"},
                                            "c": {"type": "native", "encoder": "e"},
                                            "d": {"type": "dynamic", "encoder": "com.e", "decoder": "com.d"}}}
        }));
        let at: Vec<String> = bad.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            at,
            [
                "transports[0].serializers",
                "transports[0].options.realm",
                "transports[0].options.payload_mapping.\"a/b\"",
                "transports[0].options.payload_mapping.\"a/b\".encoder",
                "transports[0].options.payload_mapping.\"a/b\".decoder",
                "transports[0].options.payload_mapping.\"a/b\".realm",
                "transports[0].options.payload_mapping.\"c\".encoder",
                "transports[0].options.payload_format",
            ]
        );
        assert_eq!(
            bad.transports[0].options.mapping_for("d.x"),
            Mapping::Dynamic {
                realm: None,
                encoder: "com.e".into(),
                decoder: "com.d".into()
            }
        );
        let role = router(serde_json::json!({
            "type": "mqtt", "endpoint": {"type": "tcp", "port": 1883},
            "options": {"realm": "realm1"}
        }));
        let problems = role.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("\"anonymous\" is not defined"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_universal_transports_mqtt_part_is_checked_as_an_mqtt_transport() {
        let u = router(serde_json::json!({
            "type": "universal", "endpoint": {"type": "tcp", "port": 8080},
            "mqtt": {"options": {"role": "device"}},
            "websocket": {"ws": {"type": "websocket"}}
        }));
        let at: Vec<String> = u.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(at, ["transports[0].mqtt.options.realm"]);
        let part = u.transports[0].universal_mqtt().expect("an mqtt part");
        assert_eq!(part.kind, TransportKind::Mqtt);
        assert_eq!(part.endpoint, u.transports[0].endpoint);
        let ws = router(serde_json::json!({
            "type": "websocket", "endpoint": {"type": "tcp", "port": 8080},
            "mqtt": {"options": {"realm": "realm1"}}
        }));
        assert!(
            ws.validate()
                .iter()
                .any(|p| p.path == "transports[0].mqtt" && p.message.contains("only universal")),
            "{:?}",
            ws.validate()
        );
    }

    #[test]
    fn a_web_paths_mqtt_service_is_checked_as_an_mqtt_transport() {
        let mut w = router(serde_json::json!({
            "type": "web", "endpoint": {"type": "tcp", "port": 8080},
            "paths": {"mqtt": {"type": "mqtt", "options": {"role": "device"}},
                      "bad": {"type": "mqtt", "serializers": ["json"],
                              "options": {"realm": "realm1", "role": "device"}}}
        }));
        assert_eq!(w.plan_options(), vec![]);
        let at: Vec<String> = w.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            at,
            [
                "transports[0].paths.bad.serializers",
                "transports[0].paths.mqtt.options.realm"
            ]
        );
        let paths = w.transports[0].paths.as_ref().expect("paths");
        let m = w.transports[0].mqtt_path(&paths["mqtt"]);
        assert_eq!(m.kind, TransportKind::Mqtt);
        assert_eq!(m.anonymous_role(), Some("device"));
    }

    #[test]
    fn mqtt_options_belong_to_mqtt_transports() {
        let ws = router(serde_json::json!({
            "type": "websocket", "endpoint": {"type": "tcp", "port": 8080},
            "options": {"realm": "realm1"}
        }));
        let problems = ws.validate();
        assert!(
            problems
                .iter()
                .any(|p| p.path == "transports[0].options.realm"
                    && p.message.contains("only mqtt transports")),
            "{problems:?}"
        );
    }
}
