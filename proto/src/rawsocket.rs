//! WAMP RawSocket: the 4-byte handshake and the length-prefixed framing.
//!
//! Handshake: the client sends `0x7F, (L << 4) | S, 0, 0`, S the serializer
//! (1 JSON, 2 MessagePack, 3 CBOR) and L the largest message it accepts,
//! `2^(9 + L)` bytes. The router answers the same way with its own L, or
//! with `0x7F, E << 4, 0, 0` for an error E. Then every frame is a 4-byte
//! header (low 3 bits of byte 0: 0 message, 1 ping, 2 pong; the other bits
//! reserved; bytes 1..3 the big-endian length) and the payload.
//!
//! [`RawSocketCodec`] checks the length against the limit before it reserves
//! or reads a single byte of the body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::Serializer;

/// The first handshake octet.
pub const MAGIC: u8 = 0x7F;

/// Handshake error codes the router may answer with.
pub mod handshake_error {
    /// The serializer is not supported.
    pub const SERIALIZER_UNSUPPORTED: u8 = 1;
    /// The maximum message length is not acceptable.
    pub const LENGTH_UNACCEPTABLE: u8 = 2;
    /// Reserved bits were used.
    pub const RESERVED_BITS: u8 = 3;
    /// Too many connections.
    pub const CONNECTION_LIMIT: u8 = 4;
}

/// The serializer for a RawSocket serializer id.
pub fn serializer_for(id: u8) -> Option<Serializer> {
    match id {
        1 => Some(Serializer::Json),
        2 => Some(Serializer::MsgPack),
        3 => Some(Serializer::Cbor),
        _ => None,
    }
}

/// The RawSocket serializer id of a serializer.
pub fn serializer_id(s: Serializer) -> u8 {
    match s {
        Serializer::Json => 1,
        Serializer::MsgPack => 2,
        Serializer::Cbor => 3,
    }
}

/// What a client asked for in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    /// RawSocket serializer id (may be unsupported).
    pub serializer: u8,
    /// The largest message the client accepts, in bytes.
    pub max_len: usize,
}

/// Why a handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first octet is not 0x7F: not a RawSocket client at all.
    #[error("not a WAMP RawSocket handshake (first octet {0:#04x}, expected 0x7f)")]
    NotRawSocket(u8),
    /// Octets 3 and 4 must be zero.
    #[error("reserved handshake octets are not zero")]
    ReservedBits,
}

/// Parse a client's 4-byte handshake.
///
/// # Errors
/// [`HandshakeError`] when it is not a RawSocket handshake.
pub fn parse_client_hello(b: [u8; 4]) -> Result<ClientHello, HandshakeError> {
    if b[0] != MAGIC {
        return Err(HandshakeError::NotRawSocket(b[0]));
    }
    if b[2] != 0 || b[3] != 0 {
        return Err(HandshakeError::ReservedBits);
    }
    Ok(ClientHello {
        serializer: b[1] & 0x0F,
        max_len: 1usize << (9 + (b[1] >> 4)),
    })
}

/// The length exponent L for a maximum message size: the smallest L with
/// `2^(9 + L) >= max` (at most 15: 16 MiB, the frame header's limit).
pub fn length_exponent(max: usize) -> u8 {
    let mut l = 0u8;
    while l < 15 && (1usize << (9 + l)) < max {
        l += 1;
    }
    l
}

/// The router's successful handshake reply.
pub fn server_hello(serializer: u8, max_len: usize) -> [u8; 4] {
    [
        MAGIC,
        (length_exponent(max_len) << 4) | (serializer & 0x0F),
        0,
        0,
    ]
}

/// The router's error reply.
pub fn server_error(code: u8) -> [u8; 4] {
    [MAGIC, code << 4, 0, 0]
}

/// One RawSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A WAMP message.
    Message(Bytes),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
}

/// A frame that breaks the rules.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Bits 3..7 of the first header octet must be zero.
    #[error("reserved bits set in a RawSocket frame header ({0:#04x})")]
    ReservedBits(u8),
    /// Frame types above 2 do not exist.
    #[error("unknown RawSocket frame type {0}")]
    UnknownType(u8),
    /// Longer than the negotiated maximum.
    #[error("RawSocket frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection failed.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
}

/// Frames in and out of a RawSocket connection after the handshake.
#[derive(Debug, Clone, Copy)]
pub struct RawSocketCodec {
    /// The largest frame accepted from the peer.
    pub max_incoming: usize,
}

impl Decoder for RawSocketCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let kind = src[0];
        if kind & 0xF8 != 0 {
            return Err(FrameError::ReservedBits(kind));
        }
        let len = (usize::from(src[1]) << 16) | (usize::from(src[2]) << 8) | usize::from(src[3]);
        if len > self.max_incoming {
            return Err(FrameError::TooLong {
                len,
                max: self.max_incoming,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let body = src.split_to(len).freeze();
        match kind & 0x07 {
            0 => Ok(Some(Frame::Message(body))),
            1 => Ok(Some(Frame::Ping(body))),
            2 => Ok(Some(Frame::Pong(body))),
            t => Err(FrameError::UnknownType(t)),
        }
    }
}

impl Encoder<Frame> for RawSocketCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let (kind, body) = match frame {
            Frame::Message(b) => (0u8, b),
            Frame::Ping(b) => (1, b),
            Frame::Pong(b) => (2, b),
        };
        if body.len() > 0xFF_FFFF {
            return Err(FrameError::TooLong {
                len: body.len(),
                max: 0xFF_FFFF,
            });
        }
        dst.reserve(4 + body.len());
        dst.put_u8(kind);
        dst.put_uint(body.len() as u64, 3);
        dst.put_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_round_trip() {
        let h = parse_client_hello([0x7F, 0xF2, 0, 0]).unwrap();
        assert_eq!(
            h,
            ClientHello {
                serializer: 2,
                max_len: 1 << 24
            }
        );
        assert_eq!(parse_client_hello([0x7F, 0x01, 0, 0]).unwrap().max_len, 512);
        assert_eq!(
            parse_client_hello([0x47, 0x45, 0x54, 0x20]),
            Err(HandshakeError::NotRawSocket(0x47))
        );
        assert_eq!(
            parse_client_hello([0x7F, 0x11, 1, 0]),
            Err(HandshakeError::ReservedBits)
        );
        assert_eq!(server_hello(1, 1 << 20), [0x7F, 0xB1, 0, 0]);
        assert_eq!(
            server_error(handshake_error::SERIALIZER_UNSUPPORTED),
            [0x7F, 0x10, 0, 0]
        );
        assert_eq!(length_exponent(1), 0);
        assert_eq!(length_exponent(usize::MAX), 15);
    }

    #[test]
    fn frames_round_trip_and_split() {
        let mut c = RawSocketCodec { max_incoming: 1024 };
        let mut buf = BytesMut::new();
        c.encode(Frame::Message(Bytes::from_static(b"[1]")), &mut buf)
            .unwrap();
        c.encode(Frame::Ping(Bytes::from_static(b"x")), &mut buf)
            .unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 3]);
        // A partial frame waits for more.
        let mut part = BytesMut::from(&buf[..5]);
        assert_eq!(c.decode(&mut part).unwrap(), None);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::Message(Bytes::from_static(b"[1]")))
        );
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::Ping(Bytes::from_static(b"x")))
        );
        assert_eq!(c.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn bad_frames_are_refused_before_reading_the_body() {
        let mut c = RawSocketCodec { max_incoming: 16 };
        let mut buf = BytesMut::from(&[0u8, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(FrameError::TooLong {
                len: 0xFF_FFFF,
                max: 16
            })
        ));
        assert!(
            buf.capacity() < 1024,
            "no memory reserved for a refused frame"
        );
        let mut buf = BytesMut::from(&[0x08u8, 0, 0, 0][..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(FrameError::ReservedBits(8))
        ));
        let mut buf = BytesMut::from(&[0x03u8, 0, 0, 0][..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(FrameError::UnknownType(3))
        ));
    }
}
