//! MQTT over WebSocket (subprotocol `mqtt`): the WebSocket connection as
//! the byte stream the MQTT transport reads and writes.
//!
//! MQTT's packets travel in binary messages with no alignment promised
//! (a message may hold part of a packet, or several), so reading hands on
//! the messages' bytes in order and writing sends each write as one binary
//! frame. Pings are answered; a close frame ends the stream. Frames go
//! through the router's WebSocket codec ([`super::super::wscodec`]), with
//! its limits checked at each frame's header.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::super::Io;
use super::super::wscodec::{Decoder, Event, OP_BINARY, OP_PONG, OutFrame};

/// FIN and the binary opcode: every frame the router writes is whole.
const BINARY: u8 = 0x80 | OP_BINARY;

/// A WebSocket connection as an MQTT byte stream.
pub struct WsBytes<S> {
    io: S,
    decoder: Decoder,
    /// Frames read and not decoded yet.
    rbuf: BytesMut,
    /// A message's bytes not handed on yet.
    pending: Bytes,
    /// Frames to write (pongs, data, the close), drained before more is
    /// taken: at most one write's worth.
    wbuf: BytesMut,
    /// The peer closed (its close frame answered).
    closed: bool,
}

impl<S: Io> WsBytes<S> {
    /// `early`: bytes the HTTP layer read past the upgrade request.
    pub fn new(io: S, early: Bytes, max_message: usize) -> Self {
        WsBytes {
            io,
            decoder: Decoder::new(max_message, max_message, None),
            rbuf: BytesMut::from(&early[..]),
            pending: Bytes::new(),
            wbuf: BytesMut::new(),
            closed: false,
        }
    }

    fn frame(&mut self, f: &OutFrame) {
        self.wbuf.extend_from_slice(f.head());
        self.wbuf.extend_from_slice(&f.body);
    }

    /// Write out `wbuf`; `Ready(Ok)` once it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.advance(n);
        }
        // Written out: an idle connection holds no write buffer.
        self.wbuf = BytesMut::new();
        Poll::Ready(Ok(()))
    }
}

impl<S: Io> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            match this.decoder.decode(&mut this.rbuf) {
                Ok(Some(Event::Message { text: false, data })) => this.pending = data,
                Ok(Some(Event::Message { text: true, .. })) => {
                    this.frame(&OutFrame::close(
                        Some(1003),
                        "MQTT travels in binary messages",
                    ));
                    let _ = this.poll_drain(cx);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message on MQTT over WebSocket (MQTT travels in binary messages)",
                    )));
                }
                Ok(Some(Event::Ping(p))) => {
                    this.frame(&OutFrame::control(OP_PONG, p));
                    // Best effort now; the next write takes it otherwise.
                    let _ = this.poll_drain(cx);
                }
                Ok(Some(Event::Pong)) => {}
                Ok(Some(Event::Close { code, .. })) => {
                    this.frame(&OutFrame::close(code.or(Some(1000)), ""));
                    let _ = this.poll_drain(cx);
                    this.closed = true;
                }
                Ok(None) => {
                    if this.rbuf.is_empty() {
                        // Release the buffer: a device may idle for days.
                        this.rbuf = BytesMut::new();
                    }
                    let want = this.decoder.wanted(&this.rbuf);
                    this.rbuf.reserve(want.clamp(256, 16 << 10));
                    let n = ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut this.io),
                        cx,
                        &mut this.rbuf
                    ))?;
                    if n == 0 {
                        this.closed = true;
                    }
                }
                Err(e) => {
                    this.frame(&OutFrame::close(Some(e.close_code()), ""));
                    let _ = this.poll_drain(cx);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e.to_string(),
                    )));
                }
            }
        }
    }
}

impl<S: Io> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.frame(&OutFrame::with_first_byte(
            BINARY,
            Bytes::copy_from_slice(data),
        ));
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            this.frame(&OutFrame::close(Some(1000), ""));
            this.closed = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::wscodec::client_frame;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn messages_are_a_byte_stream_and_writes_are_binary_frames() {
        let (server, mut client) = tokio::io::duplex(4096);
        // The first frame came with the upgrade request.
        let early = Bytes::from(client_frame(BINARY, b"\x10\x02"));
        let mut ws = WsBytes::new(server, early, 1024);
        client
            .write_all(&client_frame(0x89, b"hi"))
            .await
            .expect("ping");
        client
            .write_all(&client_frame(BINARY, b"\x00\x04rest"))
            .await
            .expect("data");
        let mut got = vec![0u8; 8];
        ws.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"\x10\x02\x00\x04rest", "one stream across messages");
        ws.write_all(b"\x20\x02\x00\x00").await.expect("write");
        ws.flush().await.expect("flush");
        let mut back = vec![0u8; 4 + 6];
        client.read_exact(&mut back).await.expect("pong and data");
        assert_eq!(&back[..4], b"\x8a\x02hi", "the ping answered");
        assert_eq!(&back[4..], b"\x82\x04\x20\x02\x00\x00", "a binary frame");
        client
            .write_all(&client_frame(0x81, b"text"))
            .await
            .expect("text");
        let e = ws.read_u8().await.expect_err("text refused");
        assert!(e.to_string().contains("binary messages"), "{e}");
    }

    #[tokio::test]
    async fn a_close_frame_ends_the_stream() {
        let (server, mut client) = tokio::io::duplex(4096);
        let mut ws = WsBytes::new(server, Bytes::new(), 1024);
        client
            .write_all(&client_frame(0x88, &1000u16.to_be_bytes()))
            .await
            .expect("close");
        let mut rest = Vec::new();
        assert_eq!(ws.read_to_end(&mut rest).await.expect("eof"), 0);
        let mut answer = [0u8; 4];
        client
            .read_exact(&mut answer)
            .await
            .expect("close answered");
        assert_eq!(answer, [0x88, 0x02, 0x03, 0xE8]);
    }
}
