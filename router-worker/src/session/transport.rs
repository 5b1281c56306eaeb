//! What the session needs from a transport: the [`Transport`] trait that
//! WebSocket and RawSocket implement, and their errors. It lives with the
//! session so that transports depend on the session and not the reverse.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use proto::Serializer;

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
    /// A message whose data is not what its frame type says (a WebSocket
    /// text frame that is not UTF-8).
    #[error("{0}")]
    InvalidPayload(String),
    /// A message for the peer over what the peer said it accepts.
    #[error("{0}")]
    PeerLimit(String),
    /// The peer does not take what is sent to it (a long-poll client that
    /// stopped polling): it is cut off, and told why.
    #[error("{0}")]
    Slow(String),
    /// The network failed.
    #[error("network error: {0}")]
    Io(String),
}

/// What [`Transport::queue`] did with a message.
#[derive(Debug)]
pub enum Queued<L> {
    /// Queued.
    Yes,
    /// Queued, and the transport's write buffer is full: flush before
    /// queueing more.
    Full,
    /// Partly done: the rest waits for [`Transport::finish`].
    Later(L),
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
    /// The peer sent data its frame type does not allow (WebSocket 1007).
    InvalidPayload,
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

    /// The largest message (as encoded) this peer takes: larger ones are
    /// not sent (the session turns them into an error for whoever caused
    /// them, or skips an event).
    fn out_limit(&self) -> usize {
        usize::MAX
    }

    /// The rest of a message [`Transport::queue`] could not finish without
    /// waiting (an MQTT session resumed, a payload a procedure encodes);
    /// `Infallible` for transports that never wait.
    type Later: Send;

    /// Queue a message for writing, without waiting (call
    /// [`Transport::flush`] after a batch). The session writes this way
    /// and polls the flush once: a write that completes at once keeps no
    /// future in the session's state, which every idle session would
    /// otherwise carry.
    fn queue(&mut self, msg: &Arc<OutMsg>) -> Result<Queued<Self::Later>, TransportError>;

    /// Finish what [`Transport::queue`] left for later.
    fn finish(
        &mut self,
        later: Self::Later,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Queue a message for writing, writing out first when the buffer is
    /// full (call [`Transport::flush`] after a batch).
    fn feed(
        &mut self,
        msg: &Arc<OutMsg>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            match self.queue(msg)? {
                Queued::Yes => Ok(()),
                Queued::Full => self.flush().await,
                Queued::Later(later) => self.finish(later).await,
            }
        }
    }

    /// Write everything queued.
    ///
    /// Cancel-safe: dropped before it completes, it loses nothing, and the
    /// next flush goes on where it stopped.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Close the connection (best effort).
    fn close(&mut self, kind: CloseKind, reason: &str) -> impl Future<Output = ()> + Send;

    /// Send a keepalive ping (WebSocket ping, RawSocket ping frame).
    fn ping(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// When anything (a message, a ping, a pong) last arrived.
    fn last_seen(&self) -> std::time::Instant;

    /// When the transport must look at its connection again though
    /// nothing arrived (MQTT's keep-alive): the session's one timer wakes
    /// then, and the next [`Transport::recv`] ends the connection if it
    /// is due, so that no `recv` keeps a timer of its own.
    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }

    /// Whether this connection can ever park (looked at when the
    /// established phase starts): only then does the session watch for
    /// quiet.
    fn parks(&self) -> bool {
        false
    }

    /// While the session idles: its socket, taken out of the runtime for
    /// the listener's parking lot to watch ([`crate::park`]). `None` when
    /// it cannot park now (TLS, WebSocket, anything half read or not yet
    /// written, a transport that never parks): the session runs on.
    fn park(&mut self) -> Option<crate::park::ParkedIo> {
        None
    }

    /// Back from the lot, on `io`: the socket it parked, back in the
    /// runtime (or a stand-in for one that is gone, which reads as closed).
    fn unpark(&mut self, _io: Box<dyn crate::transport::Io>) {}

    /// While parked: ready when the transport's own business needs the
    /// session (MQTT's take-over); `cx`'s waker registered otherwise.
    fn poll_parked(&self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }
}
