//! WAMP over RawSocket (TCP or Unix socket): handshake, then length-prefixed frames.
//!
//! The client's 4-byte handshake is read under the transport's
//! `open_handshake_timeout`. A serializer this transport does not offer is
//! answered with error 1, reserved bits with error 3; a peer that is not a
//! RawSocket client at all is closed without a reply. The router announces
//! the largest power of two not above `max_message_size`, and frames are
//! checked against it before their bodies are read. Pings are answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use proto::Serializer;
use proto::rawsocket::{self, Frame, FrameError, HandshakeError, RawSocketCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// First capacity of a connection's read buffer (Framed::new reserves
/// 8 KiB): it grows for large messages, and idle sessions stay small.
const READ_BUFFER: usize = 1024;

use super::ListenerSettings;
use super::{Io, Peer};
use crate::outbound::OutMsg;
use crate::realm::TransportInfo;
use crate::realms::Realms;
use crate::session;
use crate::session::transport::{CloseKind, Queued, Transport, TransportError};

/// The router's length exponent: the largest L with `2^(9+L) <= max`.
fn announced_exponent(max: usize) -> u8 {
    let mut l = 0u8;
    while l < 15 && (1usize << (9 + l + 1)) <= max {
        l += 1;
    }
    l
}

/// Serve one connection as WAMP RawSocket. As for WebSocket: not an
/// `async fn` (its arguments would be stored twice in a future that lives
/// as long as the session), and the handshake is boxed and freed.
#[allow(clippy::manual_async_fn)]
pub fn handle_connection<S: Io>(
    stream: S,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    // The handshake owns the connection's arguments and is freed once the
    // session is open: the connection's future keeps only the session's,
    // which the box yields to be awaited in place.
    #[allow(clippy::async_yields_async)]
    let opening = Box::pin(async move {
        let opened = handshake(stream, peer, &settings, &shutdown).await;
        super::session_of(opened, settings, realms, shutdown)
    });
    // Flattened, as MQTT's: an `async` block would keep the spent box's
    // pointer beside the session for the connection's life.
    futures::FutureExt::map(futures::FutureExt::flatten(opening), |closed| {
        if closed {
            info!("connection closed");
        }
    })
}

/// Answer a client over the transport's `max_connections` with the
/// handshake error "connection limit" (4), then close: read its 4 octets
/// (within a second), reply, and wait briefly for it to close first, so
/// that the reply is not lost to a reset.
pub(super) async fn refuse_over_limit<S: Io>(mut stream: S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut hs = [0u8; 4];
        stream.read_exact(&mut hs).await?;
        let reply = rawsocket::server_error(rawsocket::handshake_error::CONNECTION_LIMIT);
        stream.write_all(&reply).await?;
        stream.shutdown().await?;
        let mut rest = [0u8; 64];
        while stream.read(&mut rest).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// The RawSocket handshake; `None` if it failed (logged) or was refused.
async fn handshake<S: Io>(
    mut stream: S,
    peer: Peer,
    settings: &ListenerSettings,
    shutdown: &CancellationToken,
) -> Option<(RawTransport<S>, session::Connection)> {
    let mut hs = [0u8; 4];
    let read = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = tokio::time::timeout(settings.handshake_timeout, stream.read_exact(&mut hs)) => r,
    };
    match read {
        Err(_) => {
            debug!("RawSocket handshake timed out");
            return None;
        }
        Ok(Err(e)) => {
            debug!(cause = %e, "RawSocket handshake failed");
            return None;
        }
        Ok(Ok(_)) => {}
    }
    let hello = match rawsocket::parse_client_hello(hs) {
        Ok(h) => h,
        Err(HandshakeError::ReservedBits) => {
            debug!("RawSocket handshake with reserved bits set: refused");
            let reply = rawsocket::server_error(rawsocket::handshake_error::RESERVED_BITS);
            let _ = stream.write_all(&reply).await;
            return None;
        }
        Err(e) => {
            debug!(cause = %e, "not a RawSocket client: closed");
            return None;
        }
    };
    let serializer =
        rawsocket::serializer_for(hello.serializer).filter(|s| settings.serializers.contains(s));
    let Some(serializer) = serializer else {
        debug!(
            serializer = hello.serializer,
            "RawSocket serializer not offered here: refused"
        );
        let reply = rawsocket::server_error(rawsocket::handshake_error::SERIALIZER_UNSUPPORTED);
        let _ = stream.write_all(&reply).await;
        return None;
    };
    let l = announced_exponent(settings.max_message_size);
    let reply = [rawsocket::MAGIC, (l << 4) | hello.serializer, 0, 0];
    if stream.write_all(&reply).await.is_err() {
        return None;
    }
    let protocol = match serializer {
        Serializer::Json => "wamp.2.json",
        Serializer::MsgPack => "wamp.2.msgpack",
        Serializer::Cbor => "wamp.2.cbor",
    };
    let info = TransportInfo::new("rawsocket", protocol, peer.desc).with(
        peer.cred,
        None,
        peer.client_cert,
    );
    let mut framed = Framed::with_capacity(
        stream,
        RawSocketCodec {
            max_incoming: 1 << (9 + l),
        },
        READ_BUFFER,
    );
    framed.set_backpressure_boundary(settings.write_buffer_size.max(1));
    let transport = RawTransport {
        last_seen: std::time::Instant::now(),
        framed,
        serializer,
        peer_max: hello.max_len,
    };
    let conn = session::Connection {
        peer_ip: peer.ip,
        transport: info,
        http: proto::Dict::new(),
        cookie: None,
    };
    Some((transport, conn))
}

/// One negotiated RawSocket connection.
pub struct RawTransport<S> {
    framed: Framed<S, RawSocketCodec>,
    /// When a frame last arrived (keepalive).
    last_seen: std::time::Instant,
    serializer: Serializer,
    /// The largest message the peer accepts.
    peer_max: usize,
}

fn map_error(e: FrameError) -> TransportError {
    match e {
        FrameError::TooLong { .. } => TransportError::TooBig(format!("{e} (max_message_size)")),
        FrameError::Io(io) => TransportError::Io(io.to_string()),
        other => TransportError::Protocol(other.to_string()),
    }
}

impl<S: Io> Transport for RawTransport<S> {
    fn out_limit(&self) -> usize {
        self.peer_max
    }

    fn serializer(&self) -> Serializer {
        self.serializer
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.framed
            .send(Frame::Ping(Bytes::new()))
            .await
            .map_err(map_error)
    }

    fn last_seen(&self) -> std::time::Instant {
        self.last_seen
    }

    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        loop {
            let frame = self.framed.next().await;
            self.last_seen = std::time::Instant::now();
            match frame {
                None => return Err(TransportError::Closed),
                Some(Err(e)) => return Err(map_error(e)),
                Some(Ok(Frame::Message(b))) => return Ok(b),
                Some(Ok(Frame::Ping(b))) => {
                    self.framed.send(Frame::Pong(b)).await.map_err(map_error)?
                }
                Some(Ok(Frame::Pong(_))) => {}
            }
        }
    }

    type Later = std::convert::Infallible;

    fn queue(&mut self, msg: &Arc<OutMsg>) -> Result<Queued<Self::Later>, TransportError> {
        let Some(enc) = msg.encoded(self.serializer) else {
            return Ok(Queued::Yes);
        };
        let bytes = enc.bytes();
        if bytes.len() > self.peer_max {
            // Dropping it would leave the client waiting (for a WELCOME, a
            // RESULT) forever: the session ends, saying why.
            return Err(TransportError::PeerLimit(format!(
                "a {} of {} bytes is larger than the {} bytes this RawSocket client accepts (the length it announced in its handshake)",
                msg.msg.name(),
                bytes.len(),
                self.peer_max
            )));
        }
        // Framed into the write buffer; `flush` writes it out.
        futures::Sink::start_send(std::pin::Pin::new(&mut self.framed), Frame::Message(bytes))
            .map_err(map_error)?;
        let full = self.framed.write_buffer().len() >= self.framed.backpressure_boundary();
        Ok(if full { Queued::Full } else { Queued::Yes })
    }

    async fn finish(&mut self, later: Self::Later) -> Result<(), TransportError> {
        match later {}
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.framed.flush().await.map_err(map_error)
    }

    async fn close(&mut self, _kind: CloseKind, _reason: &str) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.framed.flush().await;
            let _ = self.framed.get_mut().shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_length_never_exceeds_the_limit() {
        assert_eq!(announced_exponent(1 << 20), 11);
        assert_eq!(announced_exponent((1 << 20) + 5), 11);
        assert_eq!(announced_exponent(1024), 1);
        assert_eq!(announced_exponent(usize::MAX), 15);
    }
}
#[cfg(test)]
mod size_probe {
    /// The connection's future lives as long as the session: 1552 bytes
    /// before the session was made inside the boxed handshake
    /// (`session_of`), which kept the transport a second time.
    #[test]
    fn a_rawsocket_connections_future_stays_small() {
        let tc: trellis_config::router::TransportConfig =
            serde_json::from_value(serde_json::json!({
                "type": "rawsocket", "endpoint": {"type": "tcp", "port": 1}
            }))
            .expect("a rawsocket transport");
        let settings = super::ListenerSettings::from_config(0, &tc, None, Default::default());
        let fut = super::handle_connection(
            tokio::io::empty(),
            super::Peer::default(),
            std::sync::Arc::new(settings),
            crate::realms::Realms::default(),
            Default::default(),
        );
        let f = std::mem::size_of_val(&fut);
        assert!(
            // The established phase included (no box of its own); about
            // 1740 bytes before `outbound` kept its arguments once, about
            // 1440 before the connection's arguments went into the
            // handshake's box, 1360 before a write that completes at once
            // kept no future (1160 after, 1104 once `inbound` kept its
            // arguments once, 1088 flattened, 1072 once the router's
            // shutdown came through the realms; 768 once the established
            // phase kept no state of a step that did not wait, 744 once
            // `stats`' identity of the session went into its meter, 696
            // once the realm's handle was one pointer and the traffic
            // counts 32 bits).
            f <= 696,
            "the RawSocket connection's future grew to {f} bytes"
        );
    }
}
