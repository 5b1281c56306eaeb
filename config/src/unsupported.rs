//! Crossbar.io's keys and values that Trellis does not have, and what
//! `check` says about each, in one place. A key here is named as
//! unsupported, never reported as a typo; where Trellis has an honest
//! equivalent, the message names it.
//!
//! Keys Crossbar.io accepts and Trellis accepts without using them (with a
//! warning that says what Trellis does instead) are checked with the
//! sections they belong to ([`crate::router`]'s warnings).

/// Keys taken out of an object before it is read, per place: the
/// controller, its options, a router, a container, a worker's options.
pub const KEYS: &[(&str, &[&str])] = &[
    (
        "controller",
        &[
            "manhole",
            "fabric",
            "enable_docker",
            "connections",
            "keyring",
        ],
    ),
    (
        "controller.options",
        &["title", "enable_parallel_worker_start"],
    ),
    ("router", &["connections", "manhole", "rlinks", "storage"]),
    ("container", &["connections", "manhole"]),
    (
        "options",
        &["stdin", "stdout", "stderr", "disabled", "benchmark"],
    ),
];

/// Keys serde meets as unknown fields anywhere (endpoints, transport and
/// WebSocket options), with what to say.
const FIELDS: &[(&str, &str)] = &[
    (
        "tls",
        "TLS endpoints are not supported by Trellis yet: remove the key",
    ),
    (
        "inventory",
        "Crossbar.io's realm \"inventory\" (type catalogs for payload validation) is not supported by Trellis yet: remove it, and check payloads in the callee or subscriber",
    ),
    (
        "server_string",
        "Crossbar.io's twisted endpoints (\"server_string\") are not supported by Trellis yet: remove the key",
    ),
];

/// Crossbar.io's WebSocket and endpoint tuning keys Trellis has no
/// counterpart for.
const TUNING_FIELDS: &[&str] = &[
    "external_port",
    "enable_hybi10",
    "enable_rfc6455",
    "validate_utf8",
    "mask_server_frames",
    "require_masked_client_frames",
    "apply_mask",
    "echo_close_codereason",
    "tcp_nodelay",
    "auto_ping_restart_on_any_traffic",
    "enable_flash_policy",
    "flash_policy",
    "show_server_version",
    "portrange",
    "user_timeout",
];

/// Web services that run Python code inside Crossbar.io's web server.
const PYTHON_WEB_SERVICES: &[&str] = &["resource", "wsgi", "wap"];

/// Web services, transports and endpoints not built yet.
const VARIANTS: &[(&str, &str)] = &[
    ("reverseproxy", "web service"),
    ("websocket-reverseproxy", "web service"),
    ("catalog", "web service"),
    ("upload", "web service"),
    ("cgi", "web service"),
    ("schemadoc", "web service"),
    ("fileupload", "web service"),
    ("stream.testee", "transport"),
    ("flashpolicy", "transport"),
    ("twisted", "endpoint"),
    ("onion", "endpoint"),
    ("tor", "endpoint"),
];

/// The keys taken out at `place`.
pub fn keys(place: &str) -> &'static [&'static str] {
    KEYS.iter()
        .find(|(p, _)| *p == place)
        .map_or(&[], |(_, keys)| keys)
}

/// What to say about `key` taken out at `place`.
pub fn key(place: &str, key: &str) -> String {
    match (place, key) {
        ("router", "rlinks" | "connections") => format!(
            "Crossbar.io's router-to-router links (\"{key}\") are not supported by Trellis: to share realms between nodes, give the node a \"cluster\" block (routers share their realms over NATS; see the README's Clustering section) and remove the key"
        ),
        _ => format!("Crossbar.io's \"{key}\" is not supported by Trellis yet: remove the key"),
    }
}

/// What to say about an unknown field, if it is one of Crossbar.io's.
pub fn field(name: &str) -> Option<String> {
    if let Some((_, message)) = FIELDS.iter().find(|(f, _)| *f == name) {
        return Some((*message).to_owned());
    }
    TUNING_FIELDS
        .contains(&name)
        .then(|| format!("Crossbar.io's {name:?} is not supported by Trellis yet: remove the key"))
}

/// What to say about an unknown `type`, if it is one of Crossbar.io's.
pub fn variant(name: &str) -> Option<String> {
    if PYTHON_WEB_SERVICES.contains(&name) {
        return Some(format!(
            "the {name:?} web service is not supported by Trellis: it runs Python code inside the router's web server; run that application as a guest worker (or behind your own reverse proxy) and link to it"
        ));
    }
    let (_, what) = VARIANTS.iter().find(|(v, _)| *v == name)?;
    Some(match *what {
        "web service" => format!("the {name:?} web service is not supported by Trellis yet"),
        "transport" => format!("{name:?} transports are not supported by Trellis yet"),
        _ => format!("{name:?} endpoints are not supported by Trellis yet"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_crossbar_key_has_its_message() {
        assert_eq!(
            keys("router"),
            ["connections", "manhole", "rlinks", "storage"]
        );
        assert!(keys("nowhere").is_empty());
        assert!(key("router", "rlinks").contains("\"cluster\" block"));
        assert!(key("container", "manhole").contains("not supported by Trellis yet"));
        assert!(field("validate_utf8").is_some_and(|m| m.contains("\"validate_utf8\"")));
        assert!(field("tls").is_some_and(|m| m.starts_with("TLS endpoints")));
        assert_eq!(field("prot"), None, "a typo stays a typo");
        assert!(variant("wsgi").is_some_and(|m| m.contains("guest worker")));
        assert!(variant("cgi").is_some_and(|m| m.contains("web service")));
        assert!(variant("onion").is_some_and(|m| m.contains("endpoints")));
        assert!(variant("flashpolicy").is_some_and(|m| m.contains("transports")));
        assert!(variant("websocket-reverseproxy").is_some_and(|m| m.contains("web service")));
        assert!(variant("tor").is_some_and(|m| m.contains("endpoints")));
        assert!(variant("catalog").is_some_and(|m| m.contains("web service")));
        assert!(field("inventory").is_some_and(|m| m.contains("payload validation")));
        assert_eq!(variant("statik"), None);
    }
}
