//! The WebSocket codec (RFC 6455, server side, with RFC 7692
//! permessage-deflate), sans-IO in the style of rustls and quinn: bytes
//! in, events out; messages in, frames out. It does no I/O and keeps no
//! clock; `websocket.rs` moves the bytes.
//!
//! Reading, [`Decoder::decode`] takes whole frames from the front of the
//! connection's buffer. A frame's header is parsed once and checked before
//! its payload is waited for: a frame that would take its message past
//! `max_message_size` (its fragments so far plus its declared length) or
//! past `max_frame_size` is refused at its header, so nobody reserves room
//! for it. Payloads are unmasked in place; an unfragmented, uncompressed
//! message is handed on as a slice of the read buffer (no copy). Compressed
//! messages are inflated within `max_message_size`, text is checked to be
//! UTF-8 fragment by fragment (a bad byte fails the message at once).
//!
//! Writing, [`Encoder::message`] compresses (when agreed), fragments
//! (`auto_fragment_size`) and frames a message into [`OutFrame`]s: a
//! header and a shared body, which the writer hands to the socket with one
//! vectored write for many frames.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::deflate::{Agreed, Deflater, Inflate, InflateError};

/// Continuation, text, binary, close, ping and pong opcodes.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// The longest frame header: 2 bytes, 8 of length, 4 of mask.
pub const MAX_HEADER: usize = 14;

/// Messages shorter than this go out uncompressed (the extension allows
/// it per message): deflate would make them larger, for CPU spent.
pub const MIN_COMPRESSED: usize = 64;

/// What the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole data message (fragments joined, inflated, text checked).
    Message { text: bool, data: Bytes },
    /// A ping: answer with a pong carrying `0`.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame: its status code (none if it carried none) and reason.
    Close { code: Option<u16>, reason: String },
}

/// Why the codec stopped reading a connection, with the close code owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The peer broke RFC 6455 (close 1002).
    Protocol(String),
    /// A message or frame over the limits (close 1009).
    TooBig(String),
    /// Text that is not UTF-8 (close 1007).
    InvalidPayload(String),
}

impl CodecError {
    /// The WebSocket close code for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            CodecError::Protocol(_) => 1002,
            CodecError::TooBig(_) => 1009,
            CodecError::InvalidPayload(_) => 1007,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Protocol(s) | CodecError::TooBig(s) | CodecError::InvalidPayload(s) => {
                f.write_str(s)
            }
        }
    }
}

impl std::error::Error for CodecError {}

impl From<InflateError> for CodecError {
    fn from(e: InflateError) -> CodecError {
        match e {
            InflateError::TooBig { .. } => CodecError::TooBig(e.to_string()),
            InflateError::Corrupt(_) => CodecError::Protocol(e.to_string()),
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv1: bool,
    /// RSV2 or RSV3.
    rsv23: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Bytes of the header itself.
    head_len: usize,
}

impl Header {
    /// The header at the front of `buf`, if all of it is there.
    fn parse(buf: &[u8]) -> Option<Header> {
        let (&b0, &b1) = (buf.first()?, buf.get(1)?);
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let masked = b1 & 0x80 != 0;
        let head_len = 2 + ext + if masked { 4 } else { 0 };
        if buf.len() < head_len {
            return None;
        }
        let len = match ext {
            2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            8 => u64::from_be_bytes([
                buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
            ]),
            _ => u64::from(b1 & 0x7F),
        };
        let mask = masked.then(|| {
            let m = &buf[head_len - 4..head_len];
            [m[0], m[1], m[2], m[3]]
        });
        Some(Header {
            fin: b0 & FIN != 0,
            rsv1: b0 & RSV1 != 0,
            rsv23: b0 & 0x30 != 0,
            opcode: b0 & 0x0F,
            mask,
            len,
            head_len,
        })
    }
}

/// A message whose first fragments have arrived.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    /// Its data so far (inflated, for a compressed one).
    data: Vec<u8>,
    /// Payload bytes of its frames so far, as sent.
    wire: u64,
    /// How much of `data` is known to be UTF-8 (text only).
    valid: usize,
}

/// The reading half of one connection's codec.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    max_frame: usize,
    /// permessage-deflate's inflater, when agreed.
    inflate: Option<Box<Inflate>>,
    /// A message in fragments or compressed (boxed, as `failed`: an idle
    /// connection keeps neither).
    partial: Option<Box<Partial>>,
    /// The error that stopped it: returned again on every later call.
    failed: Option<Box<CodecError>>,
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes in frames of
    /// at most `max_frame` (the smaller of the two counts).
    pub fn new(max_message: usize, max_frame: usize, deflate: Option<&Agreed>) -> Decoder {
        Decoder {
            max_message,
            max_frame: max_frame.min(max_message),
            inflate: deflate.map(|a| Box::new(Inflate::new(a))),
            partial: None,
            failed: None,
        }
    }

    /// How many more bytes `buf` needs before the frame at its front is
    /// whole: at least 1 when called because a decode found none.
    pub fn wanted(&self, buf: &[u8]) -> usize {
        match Header::parse(buf) {
            // The limits were checked when the header was parsed.
            Some(h) => (h.head_len + h.len as usize)
                .saturating_sub(buf.len())
                .max(1),
            None => 1,
        }
    }

    /// The next event from the front of `buf`, taking its bytes; `None`
    /// until a whole frame is there.
    ///
    /// # Errors
    /// The first [`CodecError`], and the same again on every later call.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, CodecError> {
        if let Some(e) = &self.failed {
            return Err((**e).clone());
        }
        let r = self.decode_inner(buf);
        if let Err(e) = &r {
            self.failed = Some(Box::new(e.clone()));
            self.partial = None;
        }
        r
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, CodecError> {
        loop {
            let Some(h) = Header::parse(buf) else {
                return Ok(None);
            };
            self.check(&h)?;
            // `check` bounded the length by the limits, which are usizes.
            let len = h.len as usize;
            if buf.len() < h.head_len + len {
                return Ok(None);
            }
            buf.advance(h.head_len);
            let mut payload = buf.split_to(len);
            if let Some(mask) = h.mask {
                unmask(&mut payload, mask);
            }
            match h.opcode {
                OP_PING => return Ok(Some(Event::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Event::Pong)),
                OP_CLOSE => return close_event(&payload).map(Some),
                OP_TEXT | OP_BINARY if h.fin && !h.rsv1 => {
                    // The common case: a whole message in one frame.
                    let text = h.opcode == OP_TEXT;
                    if text && let Err(e) = std::str::from_utf8(&payload) {
                        return Err(not_utf8(e.valid_up_to()));
                    }
                    return Ok(Some(Event::Message {
                        text,
                        data: payload.freeze(),
                    }));
                }
                OP_TEXT | OP_BINARY => {
                    self.partial = Some(Box::new(Partial {
                        text: h.opcode == OP_TEXT,
                        compressed: h.rsv1,
                        data: Vec::new(),
                        wire: 0,
                        valid: 0,
                    }));
                }
                _ => {}
            }
            if let Some(done) = self.fragment(&payload, h.fin)? {
                return Ok(Some(done));
            }
        }
    }

    /// Is this header allowed here, within the limits?
    fn check(&self, h: &Header) -> Result<(), CodecError> {
        let protocol = |s: String| Err(CodecError::Protocol(s));
        if h.mask.is_none() {
            return protocol(
                "an unmasked WebSocket frame from the client (RFC 6455 requires clients to mask every frame)".into(),
            );
        }
        if h.rsv23 {
            return protocol(
                "a WebSocket frame with RSV2 or RSV3 set (no extension that uses them was agreed)"
                    .into(),
            );
        }
        match h.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !h.fin {
                    return protocol("a fragmented WebSocket control frame".into());
                }
                if h.len > 125 {
                    return protocol(format!(
                        "a WebSocket control frame of {} bytes (at most 125 are allowed)",
                        h.len
                    ));
                }
                if h.rsv1 {
                    return protocol("a WebSocket control frame with RSV1 set".into());
                }
                return Ok(());
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return protocol(
                        "a new WebSocket data frame while a fragmented message is unfinished"
                            .into(),
                    );
                }
                if h.rsv1 && self.inflate.is_none() {
                    return protocol(
                        "a WebSocket frame with RSV1 set, but permessage-deflate was not agreed"
                            .into(),
                    );
                }
            }
            OP_CONTINUATION => {
                if self.partial.is_none() {
                    return protocol(
                        "a WebSocket continuation frame with no message to continue".into(),
                    );
                }
                if h.rsv1 {
                    return protocol("a WebSocket continuation frame with RSV1 set".into());
                }
            }
            op => return protocol(format!("a WebSocket frame with reserved opcode {op:#x}")),
        }
        let before = self.partial.as_ref().map_or(0, |p| p.wire);
        let max = self.max_message as u64;
        if h.len > max.saturating_sub(before) {
            return Err(CodecError::TooBig(if before == 0 {
                format!(
                    "a WebSocket frame of {} bytes exceeds this transport's max_message_size of {max} bytes",
                    h.len
                )
            } else {
                format!(
                    "a WebSocket frame of {} bytes after {before} bytes of the same message exceeds this transport's max_message_size of {max} bytes",
                    h.len
                )
            }));
        }
        if h.len > self.max_frame as u64 {
            return Err(CodecError::TooBig(format!(
                "a WebSocket frame of {} bytes exceeds this transport's max_frame_size of {} bytes",
                h.len, self.max_frame
            )));
        }
        Ok(())
    }

    /// A data frame of the partial message: add it; the message when it
    /// is complete.
    fn fragment(&mut self, payload: &[u8], fin: bool) -> Result<Option<Event>, CodecError> {
        let Some(p) = self.partial.as_mut() else {
            return Ok(None);
        };
        p.wire += payload.len() as u64;
        if p.compressed {
            let inflate = self
                .inflate
                .as_mut()
                .ok_or_else(|| CodecError::Protocol("permessage-deflate was not agreed".into()))?;
            inflate.inflate(payload, &mut p.data, self.max_message)?;
            if fin {
                inflate.finish(&mut p.data, self.max_message)?;
            }
        } else {
            p.data.extend_from_slice(payload);
        }
        if p.text {
            // What is checked stops short of a character cut by the
            // fragment's end; a byte that can never be UTF-8 fails now.
            match std::str::from_utf8(&p.data[p.valid..]) {
                Ok(_) => p.valid = p.data.len(),
                Err(e) if e.error_len().is_none() && !fin => p.valid += e.valid_up_to(),
                Err(e) => return Err(not_utf8(p.valid + e.valid_up_to())),
            }
        }
        if !fin {
            return Ok(None);
        }
        let Some(p) = self.partial.take() else {
            return Ok(None);
        };
        Ok(Some(Event::Message {
            text: p.text,
            data: Bytes::from(p.data),
        }))
    }
}

fn not_utf8(at: usize) -> CodecError {
    CodecError::InvalidPayload(format!(
        "a WebSocket text message that is not valid UTF-8 (at byte {at})"
    ))
}

/// A close frame's payload: nothing, or a valid status code and a UTF-8
/// reason.
fn close_event(payload: &[u8]) -> Result<Event, CodecError> {
    match payload {
        [] => Ok(Event::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(CodecError::Protocol(
            "a WebSocket close frame with a 1-byte payload (a status code takes 2)".into(),
        )),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(CodecError::Protocol(format!(
                    "a WebSocket close frame with status code {code}, which may not be sent"
                )));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| {
                CodecError::InvalidPayload(
                    "a WebSocket close frame whose reason is not valid UTF-8".into(),
                )
            })?;
            Ok(Event::Close {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

/// XOR `data` with the 4-byte `mask`, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// A frame the router writes: server frames are not masked, so a frame is
/// a header and a body, which an event's subscribers share; the writer
/// hands both to the socket without copying them.
#[derive(Debug, Clone)]
pub struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    /// The payload.
    pub body: Bytes,
}

impl OutFrame {
    /// A frame whose first byte (FIN, RSV1, opcode) is given.
    pub fn with_first_byte(first: u8, body: Bytes) -> OutFrame {
        let mut head = [0u8; 10];
        head[0] = first;
        let len = body.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        OutFrame {
            head,
            head_len,
            body,
        }
    }

    /// A control frame (its payload at most 125 bytes: longer is cut).
    pub fn control(opcode: u8, mut payload: Bytes) -> OutFrame {
        payload.truncate(125);
        OutFrame::with_first_byte(FIN | opcode, payload)
    }

    /// A close frame with `code` and as much of `reason` as fits (the
    /// payload may hold 123 bytes of it, cut at a character boundary).
    pub fn close(code: Option<u16>, reason: &str) -> OutFrame {
        let Some(code) = code else {
            return OutFrame::control(OP_CLOSE, Bytes::new());
        };
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut p = Vec::with_capacity(2 + end);
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&reason.as_bytes()[..end]);
        OutFrame::control(OP_CLOSE, Bytes::from(p))
    }

    /// The header's bytes.
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    /// Header and body bytes.
    pub fn len(&self) -> usize {
        usize::from(self.head_len) + self.body.len()
    }

    /// A header-only frame with an empty body is still a frame.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The writing half of one connection's codec: compression and
/// fragmentation, per message.
#[derive(Debug)]
pub struct Encoder {
    deflate: Option<Box<Deflater>>,
    /// Largest frame payload (`auto_fragment_size`; 0: one frame a message).
    fragment: usize,
}

impl Encoder {
    pub fn new(deflate: Option<&Agreed>, fragment: usize) -> Encoder {
        Encoder {
            deflate: deflate.map(|a| Box::new(Deflater::new(a))),
            fragment,
        }
    }

    /// Frame one message onto `out`; the bytes added.
    pub fn message(&mut self, text: bool, body: Bytes, out: &mut Vec<OutFrame>) -> usize {
        let opcode = if text { OP_TEXT } else { OP_BINARY };
        // permessage-deflate: RSV1 on the first frame marks a compressed
        // message.
        let (body, rsv1) = match &mut self.deflate {
            Some(d) if body.len() >= MIN_COMPRESSED => match d.compress(&body) {
                Some(c) => (Bytes::from(c), RSV1),
                None => (body, 0),
            },
            _ => (body, 0),
        };
        let piece = self.fragment;
        if piece == 0 || body.len() <= piece {
            let f = OutFrame::with_first_byte(FIN | rsv1 | opcode, body);
            let n = f.len();
            out.push(f);
            return n;
        }
        // The first frame has the opcode (and RSV1), continuations opcode
        // 0, the last one FIN.
        let mut bytes = 0;
        let mut at = 0;
        while at < body.len() {
            let end = (at + piece).min(body.len());
            let fin = if end == body.len() { FIN } else { 0 };
            let first = if at == 0 {
                rsv1 | opcode
            } else {
                OP_CONTINUATION
            };
            let f = OutFrame::with_first_byte(fin | first, body.slice(at..end));
            bytes += f.len();
            out.push(f);
            at = end;
        }
        bytes
    }
}

/// `Sec-WebSocket-Accept` for a request's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim().as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// A masked client frame, for tests.
#[cfg(test)]
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![first];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        f.push(0x80 | 126);
        f.extend_from_slice(&short.to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    let mut p = payload.to_vec();
    unmask(&mut p, mask);
    f.extend_from_slice(&p);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_config::router::DeflateConfig;

    fn agreed() -> Agreed {
        super::super::deflate::negotiate(&["permessage-deflate"], &DeflateConfig::default())
            .unwrap()
    }

    /// Feed `stream` in pieces of `step` bytes; every event, or the error.
    fn run(d: &mut Decoder, stream: &[u8], step: usize) -> Result<Vec<Event>, CodecError> {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for c in stream.chunks(step.max(1)) {
            buf.extend_from_slice(c);
            while let Some(e) = d.decode(&mut buf)? {
                got.push(e);
            }
        }
        assert!(buf.is_empty(), "every byte taken");
        Ok(got)
    }

    fn msg(text: bool, data: &[u8]) -> Event {
        Event::Message {
            text,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn the_rfc_6455_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn unmasking_matches_the_byte_by_byte_rule() {
        let mask = [1, 2, 3, 250];
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "{n} bytes");
        }
    }

    #[test]
    fn frames_come_out_as_events_in_any_pieces() {
        let mut stream = client_frame(FIN | OP_TEXT, b"[1,\"realm1\",{}]");
        stream.extend(client_frame(FIN | OP_PING, b"hi"));
        stream.extend(client_frame(OP_BINARY, &[1, 2]));
        stream.extend(client_frame(FIN | OP_PONG, b""));
        stream.extend(client_frame(OP_CONTINUATION, &[3]));
        stream.extend(client_frame(FIN | OP_CONTINUATION, &vec![4; 70_000]));
        // A character split across fragments is fine.
        let e = "é".as_bytes();
        stream.extend(client_frame(OP_TEXT, &e[..1]));
        stream.extend(client_frame(FIN | OP_CONTINUATION, &e[1..]));
        stream.extend(client_frame(FIN | OP_CLOSE, b"\x03\xe8bye"));
        let mut big = vec![1, 2, 3];
        big.extend(vec![4; 70_000]);
        let want = vec![
            msg(true, b"[1,\"realm1\",{}]"),
            Event::Ping(Bytes::from_static(b"hi")),
            Event::Pong,
            msg(false, &big),
            msg(true, e),
            Event::Close {
                code: Some(1000),
                reason: "bye".into(),
            },
        ];
        for step in [1, 3, 7, 1000, 1 << 20] {
            let mut d = Decoder::new(1 << 20, 1 << 20, None);
            assert_eq!(run(&mut d, &stream, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_at_its_header() {
        // 990 KB declared, only the header sent.
        let mut d = Decoder::new(65536, 1 << 20, None);
        let head = &client_frame(FIN | OP_BINARY, &vec![0; 990_000])[..14];
        let e = run(&mut d, head, 14).unwrap_err();
        assert_eq!(
            e,
            CodecError::TooBig(
                "a WebSocket frame of 990000 bytes exceeds this transport's max_message_size of 65536 bytes".into()
            )
        );
        assert_eq!(e.close_code(), 1009);
        assert!(d.decode(&mut BytesMut::new()).is_err(), "stays failed");
        // Fragments count towards their message.
        let mut d = Decoder::new(65536, 65536, None);
        let mut s = client_frame(OP_BINARY, &vec![0; 40_000]);
        s.extend(&client_frame(FIN | OP_CONTINUATION, &vec![0; 40_000])[..10]);
        let e = run(&mut d, &s, 4096).unwrap_err();
        assert!(
            e.to_string().contains("40000 bytes after 40000 bytes"),
            "{e}"
        );
        // max_frame_size below the message limit.
        let mut d = Decoder::new(65536, 1000, None);
        let e = run(&mut d, &client_frame(FIN | OP_BINARY, &[0; 1001]), 10).unwrap_err();
        assert!(e.to_string().contains("max_frame_size of 1000"), "{e}");
        // Exactly at the limit passes.
        let mut d = Decoder::new(1000, 1000, None);
        assert_eq!(
            run(&mut d, &client_frame(FIN | OP_BINARY, &[9; 1000]), 100).unwrap(),
            vec![msg(false, &[9; 1000])]
        );
    }

    #[test]
    fn protocol_violations_are_named() {
        let cases: Vec<(Vec<u8>, &str, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], "unmasked", 1002),
            (
                client_frame(FIN | 0x20 | OP_TEXT, b"x"),
                "RSV2 or RSV3",
                1002,
            ),
            (client_frame(FIN | RSV1 | OP_TEXT, b"x"), "not agreed", 1002),
            (client_frame(FIN | 0x3, b""), "reserved opcode 0x3", 1002),
            (
                client_frame(OP_PING, b""),
                "fragmented WebSocket control",
                1002,
            ),
            (client_frame(FIN | OP_PING, &[0; 126]), "126 bytes", 1002),
            (
                client_frame(FIN | OP_CONTINUATION, b"x"),
                "no message to continue",
                1002,
            ),
            (
                [
                    client_frame(OP_TEXT, b"a"),
                    client_frame(FIN | OP_TEXT, b"b"),
                ]
                .concat(),
                "fragmented message is unfinished",
                1002,
            ),
            (
                client_frame(FIN | OP_TEXT, &[0xce, 0xba, 0xff]),
                "at byte 2",
                1007,
            ),
            // A byte that never starts UTF-8 fails its fragment at once.
            (client_frame(OP_TEXT, &[b'a', 0xff]), "at byte 1", 1007),
            (client_frame(FIN | OP_CLOSE, &[3]), "1-byte payload", 1002),
            (
                client_frame(FIN | OP_CLOSE, &[3, 237]),
                "status code 1005",
                1002,
            ),
            (
                client_frame(FIN | OP_CLOSE, &[3, 232, 0xff]),
                "not valid UTF-8",
                1007,
            ),
        ];
        for (stream, says, code) in cases {
            let mut d = Decoder::new(1 << 20, 1 << 20, None);
            let e = run(&mut d, &stream, 1).unwrap_err();
            assert!(e.to_string().contains(says), "{e} should say {says}");
            assert_eq!(e.close_code(), code, "{e}");
        }
        // A text fragment that ends inside a character waits for the rest,
        // but the message may not end there.
        let mut d = Decoder::new(1 << 20, 1 << 20, None);
        let e = run(&mut d, &client_frame(FIN | OP_TEXT, &[0xce]), 1).unwrap_err();
        assert_eq!(e.close_code(), 1007);
    }

    #[test]
    fn compressed_messages_come_out_inflated() {
        let text = br#"[16,1,1,{},"com.example.topic",["hello hello hello hello hello"]]"#;
        let a = agreed();
        let mut enc = Encoder::new(Some(&a), 0);
        let mut frames = Vec::new();
        enc.message(true, Bytes::from_static(text), &mut frames);
        enc.message(true, Bytes::from_static(text), &mut frames);
        assert!(
            frames[1].body.len() < frames[0].body.len(),
            "context taken over"
        );
        // The router's frames, as a client would send them (masked), and
        // the second one in two fragments.
        let mut stream = client_frame(frames[0].head()[0], &frames[0].body);
        stream.extend(client_frame(FIN | OP_PING, b"p"));
        let second = &frames[1].body;
        let (x, y) = second.split_at(second.len() / 2);
        stream.extend(client_frame(RSV1 | OP_TEXT, x));
        stream.extend(client_frame(FIN | OP_CONTINUATION, y));
        stream.extend(client_frame(FIN | OP_BINARY, b"plain"));
        for step in [1, 5, 1000] {
            let mut d = Decoder::new(1 << 20, 1 << 20, Some(&a));
            assert_eq!(
                run(&mut d, &stream, step).unwrap(),
                vec![
                    msg(true, text),
                    Event::Ping(Bytes::from_static(b"p")),
                    msg(true, text),
                    msg(false, b"plain")
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_message_limit() {
        use flate2::{Compress, Compression, FlushCompress};
        // 64 MiB of zeros compress to about 65 KB.
        let zeros = vec![0u8; 64 << 20];
        let mut c = Compress::new(Compression::best(), false);
        let mut bomb = Vec::with_capacity(1 << 20);
        c.compress_vec(&zeros, &mut bomb, FlushCompress::Sync)
            .unwrap();
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let mut d = Decoder::new(1 << 20, 1 << 20, Some(&agreed()));
        let e = run(
            &mut d,
            &client_frame(FIN | RSV1 | OP_BINARY, &bomb),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(e.close_code(), 1009);
        assert!(e.to_string().contains("inflates past"), "{e}");
        // Garbage is a protocol error.
        let mut d = Decoder::new(1 << 20, 1 << 20, Some(&agreed()));
        let e = run(
            &mut d,
            &client_frame(FIN | RSV1 | OP_TEXT, &[0xFF; 40]),
            100,
        )
        .unwrap_err();
        assert_eq!(e.close_code(), 1002, "{e}");
        // Exactly at the limit is fine.
        let mut enc = Encoder::new(Some(&agreed()), 0);
        let mut f = Vec::new();
        enc.message(false, Bytes::from(vec![7u8; 4096]), &mut f);
        let mut d = Decoder::new(4096, 4096, Some(&agreed()));
        let got = run(&mut d, &client_frame(f[0].head()[0], &f[0].body), 100).unwrap();
        assert_eq!(got, vec![msg(false, &[7u8; 4096])]);
    }

    #[test]
    fn headers_for_every_length_class_and_fragments() {
        for (len, head) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xFF, 0xFF]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let f = OutFrame::with_first_byte(0x82, Bytes::from(vec![0u8; len]));
            assert_eq!(f.head(), &head[..], "length {len}");
            assert_eq!(f.len(), head.len() + len);
        }
        let mut enc = Encoder::new(None, 4);
        let mut out = Vec::new();
        let n = enc.message(true, Bytes::from_static(b"0123456789"), &mut out);
        let firsts: Vec<u8> = out.iter().map(|f| f.head()[0]).collect();
        assert_eq!(
            firsts,
            vec![OP_TEXT, OP_CONTINUATION, FIN | OP_CONTINUATION]
        );
        assert_eq!(n, 10 + 3 * 2);
        let close = OutFrame::close(Some(1009), &"é".repeat(100));
        assert_eq!(close.body.len(), 2 + 122, "cut at a character boundary");
        assert_eq!(&close.body[..2], &[3, 241]);
    }
}
