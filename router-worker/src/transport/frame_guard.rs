//! Watches the WebSocket frame headers in the bytes a connection reads, so
//! that a frame declaring more than its message may still take is refused
//! at its header, before anyone reserves room for it.
//!
//! tungstenite checks a frame's declared length only against
//! `max_frame_size` and reserves that much at once; the message limit it
//! applies after whole frames have arrived. A client could so make every
//! connection hold a frame buffer far larger than `max_message_size`
//! (300 connections × 990 KB with a 64 KiB message limit). The guard sits
//! in the read path (`web::Prefixed`), sans-IO: it is fed the
//! bytes in order and says when the running total of a message (its
//! fragments so far plus the frame just announced) passes the limit.

use std::fmt;

/// A frame whose declared length takes its message over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameTooBig {
    /// The frame's declared payload length.
    pub frame: u64,
    /// The message's bytes in earlier fragments.
    pub before: u64,
    /// `max_message_size`.
    pub max: u64,
}

impl fmt::Display for FrameTooBig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.before == 0 {
            write!(
                f,
                "a WebSocket frame of {} bytes exceeds this transport's max_message_size of {} bytes",
                self.frame, self.max
            )
        } else {
            write!(
                f,
                "a WebSocket frame of {} bytes after {} bytes of the same message exceeds this transport's max_message_size of {} bytes",
                self.frame, self.before, self.max
            )
        }
    }
}

impl std::error::Error for FrameTooBig {}

/// A frame header collected from bytes that may arrive a few at a time.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeaderBuf {
    buf: [u8; 14],
    have: u8,
}

impl HeaderBuf {
    pub(super) const EMPTY: HeaderBuf = HeaderBuf {
        buf: [0; 14],
        have: 0,
    };

    /// Take from the front of `bytes` what the header still needs: the
    /// whole header (bytes, length) once it is complete. The length field
    /// decides how long the header is.
    pub(super) fn take(&mut self, bytes: &mut &[u8]) -> Option<([u8; 14], usize)> {
        let at = usize::from(self.have);
        let need = header_len(&self.buf[..at]).unwrap_or(2);
        let n = (need - at).min(bytes.len());
        self.buf[at..at + n].copy_from_slice(&bytes[..n]);
        self.have += n as u8;
        *bytes = &bytes[n..];
        let at = usize::from(self.have);
        (header_len(&self.buf[..at]) == Some(at)).then_some((self.buf, at))
    }
}

/// Where in the frame stream the guard is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a header.
    Header(HeaderBuf),
    /// Inside a payload: bytes left to skip.
    Payload { left: u64 },
}

/// The frame-header watcher of one WebSocket connection.
#[derive(Debug, Clone)]
pub struct FrameGuard {
    /// Bytes still to pass before the first frame (the HTTP request head).
    skip: u64,
    state: State,
    /// Data bytes of the current (fragmented) message so far.
    message: u64,
    max: u64,
    /// The frame found too big: nothing after it is looked at.
    failed: Option<FrameTooBig>,
}

const HEADER: State = State::Header(HeaderBuf::EMPTY);

impl FrameGuard {
    /// A guard for frames that start after `skip` bytes, with messages of
    /// at most `max` bytes.
    pub fn new(skip: usize, max: usize) -> FrameGuard {
        FrameGuard {
            skip: skip as u64,
            state: HEADER,
            message: 0,
            max: max as u64,
            failed: None,
        }
    }

    /// Look at the next bytes of the stream.
    ///
    /// # Errors
    /// [`FrameTooBig`] at the first header that takes a message over the
    /// limit (and again on every later call).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FrameTooBig> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let skipped = self.skip.min(bytes.len() as u64);
        self.skip -= skipped;
        bytes = &bytes[skipped as usize..];
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload { left } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = HEADER;
                    }
                }
                State::Header(h) => {
                    let Some((buf, at)) = h.take(&mut bytes) else {
                        continue;
                    };
                    let (fin, opcode, len) = parse(&buf[..at]);
                    self.state = if len == 0 {
                        HEADER
                    } else {
                        State::Payload { left: len }
                    };
                    // Control frames (8..) carry no message data;
                    // tungstenite bounds them itself (125 bytes).
                    if opcode < 8 {
                        if opcode != 0 {
                            // A new message (a data frame inside a
                            // fragmented one is tungstenite's error to find).
                            self.message = 0;
                        }
                        if len > self.max.saturating_sub(self.message) {
                            let e = FrameTooBig {
                                frame: len,
                                before: self.message,
                                max: self.max,
                            };
                            self.failed = Some(e.clone());
                            return Err(e);
                        }
                        self.message = if fin { 0 } else { self.message + len };
                    }
                }
            }
        }
        Ok(())
    }
}

/// The whole header's length once enough of it is known (2 bytes tell).
pub(super) fn header_len(have: &[u8]) -> Option<usize> {
    if have.len() < 2 {
        return None;
    }
    let ext = match have[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if have[1] & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

/// FIN, opcode and payload length of a complete header.
fn parse(h: &[u8]) -> (bool, u8, u64) {
    (h[0] & 0x80 != 0, h[0] & 0x0F, payload_len(h))
}

/// The payload length a complete header declares.
pub(super) fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with a `len`-byte payload.
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0xAB, len));
        f
    }

    /// Feed `bytes` in pieces of `step`.
    fn feed(g: &mut FrameGuard, bytes: &[u8], step: usize) -> Result<(), FrameTooBig> {
        bytes.chunks(step).try_for_each(|c| g.feed(c))
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_pieces() {
        let mut stream = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        let skip = stream.len();
        stream.extend(frame(true, 1, 100));
        stream.extend(frame(false, 2, 30_000));
        stream.extend(frame(true, 9, 4)); // a ping between fragments
        stream.extend(frame(true, 0, 35_536)); // 65_536 in all
        stream.extend(frame(true, 2, 65_536));
        stream.extend(frame(true, 8, 2));
        for step in [1, 3, 7, 1000, usize::MAX] {
            let mut g = FrameGuard::new(skip, 65_536);
            assert_eq!(
                feed(&mut g, &stream, step.min(stream.len())),
                Ok(()),
                "step {step}"
            );
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_at_its_header() {
        let mut g = FrameGuard::new(0, 65_536);
        // Only the header and two payload bytes have arrived.
        let f = frame(true, 2, 990_000);
        let e = g.feed(&f[..16]).unwrap_err();
        assert_eq!(
            e,
            FrameTooBig {
                frame: 990_000,
                before: 0,
                max: 65_536
            }
        );
        assert!(
            e.to_string().contains("max_message_size of 65536 bytes"),
            "{e}"
        );
        assert!(g.feed(b"more").is_err(), "stays failed");
    }

    #[test]
    fn fragments_count_towards_their_message() {
        let mut g = FrameGuard::new(0, 1000);
        g.feed(&frame(false, 1, 600)).unwrap();
        g.feed(&frame(true, 10, 4)).unwrap();
        let e = g.feed(&frame(true, 0, 401)).unwrap_err();
        assert_eq!((e.frame, e.before), (401, 600));
        assert!(e.to_string().contains("after 600 bytes"), "{e}");
        // A finished message frees its allowance.
        let mut g = FrameGuard::new(0, 1000);
        g.feed(&frame(false, 1, 600)).unwrap();
        g.feed(&frame(true, 0, 400)).unwrap();
        g.feed(&frame(true, 2, 1000)).unwrap();
    }

    #[test]
    fn a_64_bit_length_is_read_whole() {
        let mut g = FrameGuard::new(0, 1 << 20);
        let mut h = vec![0x82, 0x80 | 127];
        h.extend_from_slice(&(1u64 << 40).to_be_bytes());
        h.extend_from_slice(&[0; 4]);
        for b in &h[..h.len() - 1] {
            g.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(g.feed(&h[h.len() - 1..]).is_err());
    }
}
