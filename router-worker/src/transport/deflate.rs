//! permessage-deflate (RFC 7692) for WAMP over WebSocket: the offer a
//! client makes is answered here, compressed messages from the client are
//! inflated in the read path, and the router's messages are compressed
//! before they are framed.
//!
//! tungstenite refuses frames with the RSV1 bit, so the [`Inflater`] sits
//! in front of it (in `web::Prefixed`, after the frame guard): it rewrites
//! each compressed frame as plain frames carrying the inflated bytes
//! (masked with a zero key, which unmasks to the same bytes). Inflating
//! stops as soon as a message passes `max_message_size`: a small
//! compressed frame that would inflate to gigabytes costs the router at
//! most one message's worth of memory, and the client gets close 1009.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame_guard::{HeaderBuf, payload_len};
use crate::config::DeflateConfig;

/// The four bytes every sync-flushed deflate block ends with; RFC 7692
/// strips them from a compressed message, and the reader puts them back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Messages shorter than this go out uncompressed (the extension allows
/// it per message): deflate would make them larger, for CPU spent.
pub const MIN_COMPRESSED: usize = 64;

/// What a connection and its client agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// The `Sec-WebSocket-Extensions` value of the response.
    pub response: String,
    /// The router's compression window, in bits (9 to 15).
    pub server_window_bits: u8,
    /// The router resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message (so may the
    /// router's inflater).
    pub client_no_context_takeover: bool,
}

/// Answer the client's `Sec-WebSocket-Extensions` offers (every such
/// header's value, in order): the first permessage-deflate offer the
/// router can honour, or `None` (the connection then runs uncompressed).
pub fn negotiate(offers: &[&str], cfg: &DeflateConfig) -> Option<Agreed> {
    offers
        .iter()
        .flat_map(|h| h.split(','))
        .find_map(|offer| accept(offer, cfg))
}

/// One offer: `permessage-deflate; param[=value]; ...`.
fn accept(offer: &str, cfg: &DeflateConfig) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = Vec::new();
    let mut server_no_context = cfg.no_context_takeover;
    let mut server_max: Option<u8> = None;
    let mut client_max_offered = false;
    for p in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let name = name.to_ascii_lowercase();
        // A parameter twice makes the offer invalid (RFC 7692, 7).
        if seen.contains(&name) {
            return None;
        }
        seen.push(name.clone());
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => server_no_context = true,
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_max = Some(window_bits(v)?),
            ("client_max_window_bits", None) => client_max_offered = true,
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
                client_max_offered = true;
            }
            _ => return None,
        }
    }
    // zlib's raw deflate needs a window of at least 9 bits.
    let ours = cfg.max_window_bits.clamp(9, 15);
    let server_window_bits = match server_max {
        Some(asked) if asked < 9 => return None,
        Some(asked) => ours.min(asked),
        None => ours,
    };
    let mut response = String::from("permessage-deflate");
    if server_no_context {
        response.push_str("; server_no_context_takeover");
    }
    if cfg.request_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if server_window_bits < 15 || server_max.is_some() {
        response.push_str(&format!("; server_max_window_bits={server_window_bits}"));
    }
    // The inflater always has a full window, so any client window works;
    // asking for a smaller one only saves the client memory.
    if client_max_offered && cfg.request_max_window_bits < 15 {
        let bits = cfg.request_max_window_bits.max(8);
        response.push_str(&format!("; client_max_window_bits={bits}"));
    }
    Some(Agreed {
        response,
        server_window_bits,
        server_no_context_takeover: server_no_context,
        client_no_context_takeover: cfg.request_no_context_takeover,
    })
}

fn window_bits(v: &str) -> Option<u8> {
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// Why the inflater stopped the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// A message inflated past `max_message_size` (close 1009).
    TooBig { max: usize },
    /// The compressed bytes are not valid deflate data (close 1002).
    Corrupt(String),
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::TooBig { max } => write!(
                f,
                "a compressed WebSocket message inflates past this transport's max_message_size of {max} bytes"
            ),
            InflateError::Corrupt(e) => write!(f, "invalid permessage-deflate data: {e}"),
        }
    }
}

impl std::error::Error for InflateError {}

/// Where in the frame stream the inflater is.
enum State {
    /// Collecting a header.
    Header(HeaderBuf),
    /// Passing a payload through unchanged: bytes left.
    Pass { left: u64 },
    /// Inflating a compressed frame's payload.
    Inflate {
        left: u64,
        mask: [u8; 4],
        at: usize,
        fin: bool,
        opcode: u8,
    },
}

/// Rewrites a client's frame stream so compressed messages arrive as plain
/// frames. Sans-IO: fed the bytes read, in order; [`Inflater::take`] hands
/// out what goes on to tungstenite.
pub struct Inflater {
    /// Bytes still to pass before the first frame (the HTTP request head).
    skip: usize,
    state: State,
    inflate: Decompress,
    reset_each_message: bool,
    /// Inside a compressed message (its first frame had RSV1).
    compressed: bool,
    /// The current message's data frames have started (a first frame
    /// already went out, so what follows is a continuation).
    started: bool,
    /// Inflated bytes of the current message so far.
    message: usize,
    /// The current frame's inflated payload.
    frame: Vec<u8>,
    max_message: usize,
    max_frame: usize,
    /// Bytes ready for the reader.
    out: Vec<u8>,
    failed: Option<InflateError>,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("compressed", &self.compressed)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

const HEADER: State = State::Header(HeaderBuf::EMPTY);

impl Inflater {
    /// An inflater for frames that start after `skip` bytes, messages of
    /// at most `max_message` bytes, handed on in frames of at most
    /// `max_frame` bytes.
    pub fn new(agreed: &Agreed, skip: usize, max_message: usize, max_frame: usize) -> Inflater {
        Inflater {
            skip,
            state: HEADER,
            inflate: Decompress::new(false),
            reset_each_message: agreed.client_no_context_takeover,
            compressed: false,
            started: false,
            message: 0,
            frame: Vec::new(),
            max_message,
            max_frame: max_frame.max(1),
            out: Vec::new(),
            failed: None,
        }
    }

    /// Bytes ready for the reader (none until a frame's worth is known).
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Move up to `room` ready bytes to `to`.
    pub fn take(&mut self, room: usize, to: &mut impl FnMut(&[u8])) {
        let n = room.min(self.out.len());
        to(&self.out[..n]);
        self.out.drain(..n);
        if self.out.is_empty() && self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
    }

    /// Look at the next bytes of the stream.
    ///
    /// # Errors
    /// The first [`InflateError`], and again on every later call.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InflateError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let skipped = self.skip.min(bytes.len());
        self.out.extend_from_slice(&bytes[..skipped]);
        self.skip -= skipped;
        bytes = &bytes[skipped..];
        while !bytes.is_empty() {
            match &mut self.state {
                State::Pass { left } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    self.out.extend_from_slice(&bytes[..n]);
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = HEADER;
                    }
                }
                State::Inflate {
                    left,
                    mask,
                    at,
                    fin,
                    opcode,
                } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    let mut chunk = bytes[..n].to_vec();
                    for b in &mut chunk {
                        *b ^= mask[*at % 4];
                        *at += 1;
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    let (done, fin, opcode) = (*left == 0, *fin, *opcode);
                    if let Err(e) = self.inflate_chunk(&chunk) {
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                    if done {
                        if let Err(e) = self.end_frame(fin, opcode) {
                            self.failed = Some(e.clone());
                            return Err(e);
                        }
                        self.state = HEADER;
                    }
                }
                State::Header(h) => {
                    let Some((head, at)) = h.take(&mut bytes) else {
                        continue;
                    };
                    self.start_frame(&head[..at]);
                }
            }
        }
        Ok(())
    }

    /// A complete header: pass the frame on, or start inflating it.
    fn start_frame(&mut self, h: &[u8]) {
        let fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        let opcode = h[0] & 0x0F;
        let len = payload_len(h);
        let inflate = match opcode {
            1 | 2 if rsv1 => {
                self.compressed = true;
                self.started = false;
                self.message = 0;
                true
            }
            1 | 2 => {
                self.compressed = false;
                false
            }
            // A continuation of a compressed message (RSV1 set on one is
            // tungstenite's protocol error to find).
            0 if self.compressed && !rsv1 => true,
            _ => false,
        };
        if !inflate {
            self.out.extend_from_slice(h);
            self.state = if len == 0 {
                HEADER
            } else {
                State::Pass { left: len }
            };
            return;
        }
        let masked = h[1] & 0x80 != 0;
        let mask = if masked {
            let m = &h[h.len() - 4..];
            [m[0], m[1], m[2], m[3]]
        } else {
            [0; 4]
        };
        if len == 0 {
            // An empty compressed frame: only a final one adds the tail.
            self.state = HEADER;
            if let Err(e) = self.end_frame(fin, opcode) {
                self.failed = Some(e);
            }
            return;
        }
        self.state = State::Inflate {
            left: len,
            mask,
            at: 0,
            fin,
            opcode,
        };
    }

    /// Inflate `input` onto the current frame, within the message limit.
    fn inflate_chunk(&mut self, mut input: &[u8]) -> Result<(), InflateError> {
        while !input.is_empty() {
            let allowed = self
                .max_message
                .saturating_sub(self.message + self.frame.len());
            // One byte more than allowed tells "too big" from "exactly".
            let room = allowed.saturating_add(1).min(64 * 1024);
            // Doubling, but never past the limit (plus the telling byte).
            let len = self.frame.len();
            let want = (len * 2)
                .max(len + room)
                .min(len + allowed.saturating_add(1));
            if self.frame.capacity() - len < room {
                self.frame.reserve_exact(want - len);
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let status = self
                .inflate
                .decompress_vec(input, &mut self.frame, FlushDecompress::None)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = (self.inflate.total_out() - before_out) as usize;
            input = &input[used..];
            if self.message + self.frame.len() > self.max_message {
                return Err(InflateError::TooBig {
                    max: self.max_message,
                });
            }
            match status {
                Status::StreamEnd => {
                    // A final deflate block: the next message starts a
                    // fresh stream.
                    self.inflate.reset(false);
                }
                Status::BufError if used == 0 && made == 0 => {
                    return Err(InflateError::Corrupt("no progress".into()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The frame's payload is all in: the tail for a final frame, then the
    /// inflated bytes as plain frames.
    fn end_frame(&mut self, fin: bool, opcode: u8) -> Result<(), InflateError> {
        if fin {
            // The stripped sync-flush tail: an empty stored block, valid
            // at any block boundary (also after a stream that ended).
            self.inflate_chunk(&TAIL)?;
        }
        let payload = std::mem::take(&mut self.frame);
        self.message += payload.len();
        let pieces: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(self.max_frame).collect()
        };
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let op = if self.started { 0 } else { opcode };
            self.started = true;
            write_header(&mut self.out, fin && i == last, op, piece.len());
            self.out.extend_from_slice(piece);
        }
        // Keep the buffer for the next frame unless it grew large.
        self.frame = payload;
        self.frame.clear();
        if self.frame.capacity() > 64 * 1024 {
            self.frame = Vec::new();
        }
        if fin {
            self.compressed = false;
            self.started = false;
            self.message = 0;
            if self.reset_each_message {
                self.inflate.reset(false);
            }
        }
        Ok(())
    }
}

/// A client-style frame header (masked with a zero key).
fn write_header(out: &mut Vec<u8>, fin: bool, opcode: u8, len: usize) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
}

/// The router's side: compresses outgoing messages.
pub struct Deflater {
    compress: Compress,
    reset_each_message: bool,
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    pub fn new(agreed: &Agreed) -> Deflater {
        Deflater {
            compress: Compress::new_with_window_bits(
                Compression::default(),
                false,
                agreed.server_window_bits,
            ),
            reset_each_message: agreed.server_no_context_takeover,
        }
    }

    /// One message's compressed payload (without the sync-flush tail), or
    /// `None` if compression failed (the message then goes out plain).
    pub fn compress(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start_in = self.compress.total_in();
        loop {
            let done = (self.compress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            self.compress
                .compress_vec(&input[done..], &mut out, FlushCompress::Sync)
                .ok()?;
            let done = (self.compress.total_in() - start_in) as usize;
            // Finished when all input is in and the flush fit (room left).
            if done == input.len() && out.capacity() - out.len() >= 64 && out.ends_with(&TAIL) {
                break;
            }
        }
        out.truncate(out.len() - TAIL.len());
        if self.reset_each_message {
            self.compress.reset();
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame_guard::header_len;

    fn cfg() -> DeflateConfig {
        DeflateConfig::default()
    }

    #[test]
    fn offers_are_answered_or_declined() {
        let a = negotiate(&["permessage-deflate; client_max_window_bits"], &cfg()).unwrap();
        assert_eq!(a.response, "permessage-deflate");
        assert_eq!(a.server_window_bits, 15);
        // The client asks for a smaller server window and no context.
        let a = negotiate(
            &["permessage-deflate; server_max_window_bits=10; server_no_context_takeover"],
            &cfg(),
        )
        .unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
        );
        assert!(a.server_no_context_takeover);
        // An 8-bit server window cannot be honoured: the next offer wins.
        let a = negotiate(
            &[
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate",
            ],
            &cfg(),
        )
        .unwrap();
        assert_eq!(a.response, "permessage-deflate");
        // Unknown or repeated parameters, other extensions: declined.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=16",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate(&[bad], &cfg()), None, "{bad}");
        }
        // The router's own settings.
        let mine = DeflateConfig {
            request_no_context_takeover: true,
            request_max_window_bits: 10,
            no_context_takeover: true,
            max_window_bits: 12,
            memory_level: 4,
        };
        let a = negotiate(&["permessage-deflate; client_max_window_bits"], &mine).unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=10"
        );
    }

    /// A masked client frame.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn agreed() -> Agreed {
        negotiate(&["permessage-deflate"], &cfg()).unwrap()
    }

    /// Read the plain frames back: (fin, opcode, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !bytes.is_empty() {
            let hl = header_len(bytes).unwrap();
            let len = payload_len(bytes) as usize;
            let mask = if bytes[1] & 0x80 != 0 {
                [bytes[hl - 4], bytes[hl - 3], bytes[hl - 2], bytes[hl - 1]]
            } else {
                [0; 4]
            };
            assert_eq!(bytes[0] & 0x40, 0, "RSV1 cleared");
            let p = bytes[hl..hl + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            v.push((bytes[0] & 0x80 != 0, bytes[0] & 0x0F, p));
            bytes = &bytes[hl + len..];
        }
        v
    }

    fn drain(i: &mut Inflater) -> Vec<u8> {
        let mut got = Vec::new();
        i.take(usize::MAX, &mut |b| got.extend_from_slice(b));
        got
    }

    #[test]
    fn compressed_messages_come_out_plain_in_any_pieces() {
        let text = br#"[16,1,1,{},"com.example.topic",["hello hello hello hello hello"]]"#;
        let mut d = Deflater::new(&agreed());
        let one = d.compress(text).unwrap();
        let two = d.compress(text).unwrap();
        assert!(two.len() < one.len(), "context taken over");
        let mut stream = frame(true, true, 1, &one);
        stream.extend(frame(true, false, 9, b"ping")); // passes through
        // A second message split over two frames.
        let (a, b) = two.split_at(two.len() / 2);
        stream.extend(frame(false, true, 1, a));
        stream.extend(frame(true, false, 0, b));
        stream.extend(frame(true, false, 2, b"plain"));
        for step in [1, 5, 1000] {
            let mut i = Inflater::new(&agreed(), 0, 1 << 20, 1 << 20);
            let mut out = Vec::new();
            for c in stream.chunks(step) {
                i.feed(c).unwrap();
                out.extend(drain(&mut i));
            }
            let f = frames(&out);
            assert_eq!(f[0], (true, 1, text.to_vec()), "step {step}");
            assert_eq!(f[1], (true, 9, b"ping".to_vec()));
            let joined: Vec<u8> = f[2..f.len() - 1].iter().flat_map(|x| x.2.clone()).collect();
            assert_eq!(joined, text.to_vec());
            assert_eq!(f[2].1, 1);
            assert!(f[2..f.len() - 1].iter().skip(1).all(|x| x.1 == 0));
            assert_eq!(f.last().unwrap(), &(true, 2, b"plain".to_vec()));
        }
    }

    #[test]
    fn a_bomb_stops_at_the_message_limit() {
        // 64 MiB of zeros compress to about 65 KB.
        let zeros = vec![0u8; 64 << 20];
        let mut c = Compress::new(Compression::best(), false);
        let mut bomb = Vec::with_capacity(1 << 20);
        c.compress_vec(&zeros, &mut bomb, FlushCompress::Sync)
            .unwrap();
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let mut i = Inflater::new(&agreed(), 0, 1 << 20, 1 << 20);
        let e = i.feed(&frame(true, true, 2, &bomb)).unwrap_err();
        assert_eq!(e, InflateError::TooBig { max: 1 << 20 });
        assert!(i.frame.capacity() < 2 << 20, "{}", i.frame.capacity());
        assert!(i.feed(b"x").is_err(), "stays failed");
        // Exactly at the limit is fine.
        let mut d = Deflater::new(&agreed());
        let exact = d.compress(&vec![7u8; 4096]).unwrap();
        let mut i = Inflater::new(&agreed(), 0, 4096, 1000);
        i.feed(&frame(true, true, 2, &exact)).unwrap();
        let f = frames(&drain(&mut i));
        assert_eq!(f.len(), 5, "split into frames of max_frame");
        assert_eq!(f.iter().map(|x| x.2.len()).sum::<usize>(), 4096);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut i = Inflater::new(&agreed(), 0, 1 << 20, 1 << 20);
        let e = i.feed(&frame(true, true, 1, &[0xFF; 40])).unwrap_err();
        assert!(matches!(e, InflateError::Corrupt(_)), "{e:?}");
    }
}
