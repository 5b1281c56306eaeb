//! The `controller` section: its options, the admin listener, shutdown
//! triggers, the restart policy for routers.

use super::*;

pub(super) fn decode_controller(
    c: serde_json::Value,
    errors: &mut Vec<ConfigError>,
) -> ControllerOptions {
    let mut c = match c {
        serde_json::Value::Object(m) => m,
        other => {
            errors.push(ConfigError {
                path: "controller".into(),
                message: format!("must be an object, found {}", json_type(&other)),
            });
            return ControllerOptions::default();
        }
    };
    take_unsupported("controller", "controller", &mut c, errors);
    let raw: RawController = match serde_path_to_error::deserialize(serde_json::Value::Object(c)) {
        Ok(r) => r,
        Err(e) => {
            errors.push(ConfigError {
                path: join_path("controller", e.path()),
                message: e.into_inner().to_string(),
            });
            return ControllerOptions::default();
        }
    };
    let _ = raw.id;
    let admin = raw.admin.map(|a| check_admin(a, errors));
    let mut out = decode_controller_options(raw.options, errors);
    out.admin = admin;
    out
}

/// The admin listener's config: a TCP endpoint, a token from the
/// environment when given as `${VAR}`.
fn check_admin(mut a: AdminConfig, errors: &mut Vec<ConfigError>) -> AdminConfig {
    if a.endpoint.kind != "tcp" {
        errors.push(ConfigError {
            path: "controller.admin.endpoint.type".into(),
            message: format!(
                "the admin listener listens on \"tcp\" only, found {:?}",
                a.endpoint.kind
            ),
        });
    }
    if a.endpoint.interface.parse::<std::net::IpAddr>().is_err() {
        errors.push(ConfigError {
            path: "controller.admin.endpoint.interface".into(),
            message: format!(
                "{:?} is not an IP address (e.g. \"127.0.0.1\"; the admin listener is best kept off public addresses)",
                a.endpoint.interface
            ),
        });
    }
    if a.max_connections == 0 || a.max_connections > 10_000 {
        errors.push(ConfigError {
            path: "controller.admin.max_connections".into(),
            message: format!(
                "{} is out of range: give between 1 and 10000 (default {DEFAULT_ADMIN_CONNECTIONS})",
                a.max_connections
            ),
        });
    }
    if !(a.request_head_timeout.is_finite() && (0.1..=600.0).contains(&a.request_head_timeout)) {
        errors.push(ConfigError {
            path: "controller.admin.request_head_timeout".into(),
            message: format!(
                "{} is out of range: give seconds between 0.1 and 600 (default 10)",
                a.request_head_timeout
            ),
        });
    }
    if let Some(token) = &a.token {
        if let Some(var) = crate::router::env_placeholder(token) {
            match std::env::var(var) {
                Ok(v) if !crate::router::blank(&v) => a.token = Some(v),
                _ => errors.push(ConfigError {
                    path: "controller.admin.token".into(),
                    message: format!("the environment variable {var} is not set (or empty)"),
                }),
            }
        } else if crate::router::blank(token) {
            errors.push(ConfigError {
                path: "controller.admin.token".into(),
                message: "must not be empty: remove it to serve without a token".into(),
            });
        }
    }
    a
}

fn decode_controller_options(
    opts: Option<serde_json::Value>,
    errors: &mut Vec<ConfigError>,
) -> ControllerOptions {
    let Some(opts) = opts else {
        return ControllerOptions::default();
    };
    let mut opts = match opts {
        serde_json::Value::Object(m) => m,
        other => {
            errors.push(ConfigError {
                path: "controller.options".into(),
                message: format!("must be an object, found {}", json_type(&other)),
            });
            return ControllerOptions::default();
        }
    };
    take_unsupported(
        "controller.options",
        "controller.options",
        &mut opts,
        errors,
    );
    match serde_path_to_error::deserialize::<_, ControllerOptions>(serde_json::Value::Object(opts))
    {
        Ok(o) => {
            if o.worker_ping_timeout < o.worker_ping_interval {
                errors.push(ConfigError {
                    path: "controller.options.worker_ping_timeout".into(),
                    message: format!(
                        "must be at least worker_ping_interval ({} s), found {}",
                        o.worker_ping_interval, o.worker_ping_timeout
                    ),
                });
            }
            for (key, v) in [
                ("shutdown_timeout", o.shutdown_timeout),
                ("startup_timeout", o.startup_timeout),
                ("worker_ping_interval", o.worker_ping_interval),
                ("worker_ping_timeout", o.worker_ping_timeout),
            ] {
                if !(v > 0.0 && v <= 3600.0) {
                    errors.push(ConfigError {
                        path: format!("controller.options.{key}"),
                        message: format!("must be a number of seconds in (0, 3600], found {v}"),
                    });
                }
            }
            if !(0.0..=600.0).contains(&o.drain_grace) {
                errors.push(ConfigError {
                    path: "controller.options.drain_grace".into(),
                    message: format!(
                        "must be a number of seconds in [0, 600], found {}",
                        o.drain_grace
                    ),
                });
            }
            if o.log_max_size < 4096 {
                errors.push(ConfigError {
                    path: "controller.options.log_max_size".into(),
                    message: format!("must be at least 4096 bytes, found {}", o.log_max_size),
                });
            }
            o
        }
        Err(e) => {
            errors.push(ConfigError {
                path: join_path("controller.options", e.path()),
                message: e.into_inner().to_string(),
            });
            ControllerOptions::default()
        }
    }
}
