//! # container-worker: the component host
//!
//! A container worker is a process of its own (`trellis worker container`,
//! started and supervised by the controller) that runs components, each as
//! its own WAMP session to a router, kept joined across router restarts by
//! [`client::component::run`]. A crash here never takes a router down.
//!
//! - [`config`]: the container's part of the node config (Crossbar.io's
//!   component shape) and its checks.
//! - [`components`]: the built-in components (also usable as router
//!   components).
//! - [`start`]: start every component of a container: the built-ins as
//!   Rust tasks, Python classes in one interpreter the worker starts and
//!   watches ([`python`]).

pub mod components;
pub mod python;

use client::ClientConfig;
use client::component::{Endpoint, Event};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use trellis_config::container::ContainerConfig;

/// Start each component of a container; they keep themselves joined.
///
/// # Errors
/// A component names an unknown class, or its ticket's environment
/// variable is not set.
pub fn start(c: &ContainerConfig, shutdown: &CancellationToken) -> Result<(), String> {
    if let Some(j) = c.components.iter().position(|c| c.transport.is_none()) {
        return Err(format!(
            "components[{j}].transport: missing (the controller fills it in from the node's routers)"
        ));
    }
    if c.python_components().next().is_some() {
        python::start(c, shutdown)?;
    }
    for (j, comp) in c
        .components
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.is_python())
    {
        let Some(component) = components::build(&comp.classname) else {
            return Err(format!(
                "components[{j}]: unknown classname {:?}",
                comp.classname
            ));
        };
        let Some(transport) = &comp.transport else {
            continue;
        };
        let e = &transport.endpoint;
        let endpoint = match e.kind.as_str() {
            "unix" => Endpoint::Unix(e.path.clone().unwrap_or_default().into()),
            _ => Endpoint::Tcp(format!(
                "{}:{}",
                e.host.as_deref().unwrap_or("127.0.0.1"),
                e.port.unwrap_or(0)
            )),
        };
        let mut cfg = ClientConfig::new(&comp.realm);
        cfg.serializer = transport
            .serializer
            .as_deref()
            .and_then(proto::Serializer::from_name)
            .unwrap_or(proto::Serializer::Json);
        if let Some(a) = &comp.auth {
            cfg.authid = a.authid.clone();
            cfg.ticket = match (&a.ticket, &a.ticket_env) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                    format!(
                        "components[{j}].auth.ticket_env: the environment variable {var} is not set"
                    )
                })?),
                (None, None) => None,
            };
        }
        let name = format!("{}#{j}", comp.classname);
        let at = endpoint.to_string();
        let span =
            tracing::info_span!("component", name = %name, realm = %comp.realm, router = %at);
        tokio::spawn(tracing::Instrument::instrument(
            client::component::run(
                component,
                endpoint,
                cfg,
                shutdown.child_token(),
                |ev| match ev {
                    Event::Joined(id) => info!(session = id, "component joined"),
                    Event::Retrying(why, after) => {
                        warn!(
                            after_ms = after.as_millis() as u64,
                            "cannot join: {why}; retrying"
                        )
                    }
                    Event::SetupFailed(why) => warn!("component setup failed: {why}; retrying"),
                    Event::Left(why) => {
                        warn!(reason = %why, "component session ended; reconnecting")
                    }
                },
            ),
            span,
        ));
    }
    Ok(())
}
