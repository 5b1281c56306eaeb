//! Transports: how WAMP messages travel between a client and the router.
//!
//! Each transport yields whole WAMP message payloads ([`Transport::recv`])
//! and writes [`OutMsg`]s in its serializer ([`Transport::feed`]); the
//! session task in [`crate::session`] is the same for all of them.
//!
//! - [`serve`]: the accept loop shared by both kinds (connection limit,
//!   one task per connection).
//! - [`websocket`]: WAMP over WebSocket (tokio-tungstenite), with
//!   subprotocol negotiation and the batched variants.
//! - [`rawsocket`]: WAMP over RawSocket (TCP): the 4-byte handshake, then
//!   length-prefixed frames ([`proto::rawsocket`]).

pub mod rawsocket;
pub mod websocket;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::Serializer;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

pub use self::websocket::ListenerSettings;
use crate::Realms;
use crate::config::TransportKind;
use crate::outbound::OutMsg;

/// Why a transport could not deliver the next message.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// The peer broke the transport's rules (bad frame, text on a binary
    /// serializer, bad batching).
    #[error("{0}")]
    Protocol(String),
    /// A message over the transport's configured maximum.
    #[error("{0}")]
    TooBig(String),
    /// The network failed.
    #[error("network error: {0}")]
    Io(String),
}

/// How to close a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Normal end of a session.
    Normal,
    /// The peer violated the protocol.
    ProtocolError,
    /// The peer sent a message over the limit.
    TooBig,
    /// The router is shutting down.
    GoingAway,
}

/// A connected, negotiated transport carrying one WAMP session.
pub trait Transport: Send + 'static {
    /// The serializer negotiated for this connection.
    fn serializer(&self) -> Serializer;

    /// The next WAMP message payload.
    ///
    /// Cancel-safe: dropping the future loses no data.
    fn recv(&mut self) -> impl Future<Output = Result<Bytes, TransportError>> + Send;

    /// Queue a message for writing (call [`Transport::flush`] after a batch).
    fn feed(
        &mut self,
        msg: &Arc<OutMsg>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Write everything queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Close the connection (best effort).
    fn close(&mut self, kind: CloseKind, reason: &str) -> impl Future<Output = ()> + Send;
}

/// Accept connections until `shutdown`, one task per connection.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let last_refusal_log = AtomicU64::new(0);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    warn!(transport = %settings.name, cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if last_refusal_log.swap(now, Ordering::Relaxed) != now {
                warn!(transport = %settings.name, %peer, max = settings.max_connections,
                    "connection refused: the transport's max_connections limit is reached");
            }
            drop(stream);
            continue;
        };
        let settings = settings.clone();
        let realms = realms.clone();
        let shutdown = shutdown.child_token();
        let span = info_span!("conn", %peer, transport = %settings.name);
        tracker.spawn(
            async move {
                match settings.kind {
                    TransportKind::Websocket => {
                        websocket::handle_connection(stream, peer, settings, realms, shutdown).await
                    }
                    TransportKind::Rawsocket => {
                        rawsocket::handle_connection(stream, peer, settings, realms, shutdown).await
                    }
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
    debug!(transport = %settings.name, "listener stopped");
}
