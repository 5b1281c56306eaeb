//! Components: application code that lives in a WAMP session and keeps
//! living across router restarts.
//!
//! A [`Component`] says what to do each time its session joins
//! (register procedures, subscribe) and hears when it leaves. [`run`]
//! connects, joins, calls [`Component::on_join`], waits until the session
//! ends, and starts over with a growing delay (100 ms doubling to 5 s,
//! reset after each successful join), so registrations and subscriptions
//! come back by themselves after the router returns.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{CallError, Client, ClientConfig, ConnectError};

/// A boxed future, as component methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Application code in a WAMP session.
pub trait Component: Send + Sync + 'static {
    /// The session joined (again): register, subscribe, publish.
    ///
    /// # Errors
    /// A registration or subscription failed; the session is closed and
    /// the component retried like after a lost connection.
    fn on_join<'a>(&'a self, session: &'a Client) -> BoxFuture<'a, Result<(), CallError>>;

    /// The session ended (`reason`: a GOODBYE/ABORT URI or a network error).
    fn on_leave(&self, _reason: &str) {}
}

/// Where the router is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix-socket RawSocket transport.
    Unix(PathBuf),
    /// A TCP RawSocket transport, `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Connect and join.
    ///
    /// # Errors
    /// As [`Client::connect_unix`] / [`Client::connect_tcp`].
    pub async fn join(&self, cfg: &ClientConfig) -> Result<Client, ConnectError> {
        match self {
            Endpoint::Unix(p) => Client::connect_unix(p, cfg).await,
            Endpoint::Tcp(a) => Client::connect_tcp(a, cfg).await,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// What [`run`] reports, for the host's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Joined with this session id, and `on_join` succeeded.
    Joined(proto::Id),
    /// Could not connect or join; retrying after the delay.
    Retrying(String, Duration),
    /// `on_join` failed; the session was closed and will be retried.
    SetupFailed(String),
    /// The session ended.
    Left(String),
}

/// The first retry delay; doubled up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest retry delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Keep `component` joined at `endpoint` until `shutdown`, then leave.
pub async fn run(
    component: Arc<dyn Component>,
    endpoint: Endpoint,
    cfg: ClientConfig,
    shutdown: CancellationToken,
    report: impl Fn(Event) + Send,
) {
    let mut delay = FIRST_DELAY;
    loop {
        let joined = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = endpoint.join(&cfg) => r,
        };
        match joined {
            Err(e) => {
                report(Event::Retrying(e.to_string(), delay));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_DELAY);
            }
            Ok(session) => {
                if let Err(e) = component.on_join(&session).await {
                    report(Event::SetupFailed(e.to_string()));
                    session.leave().await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_DELAY);
                    continue;
                }
                delay = FIRST_DELAY;
                report(Event::Joined(session.session_id()));
                let reason = tokio::select! {
                    _ = shutdown.cancelled() => {
                        session.leave().await;
                        component.on_leave("wamp.close.system_shutdown");
                        return;
                    }
                    r = session.closed() => r,
                };
                component.on_leave(&reason);
                report(Event::Left(reason));
            }
        }
    }
}
