//! permessage-deflate (RFC 7692) for WAMP over WebSocket: the offer a
//! client makes is answered here, compressed messages from the client are
//! inflated in the read path, and the router's messages are compressed
//! before they are framed.
//!
//! The codec (`wscodec`) calls the [`Inflate`]r with each compressed
//! frame's payload. Inflating stops as soon as a message passes
//! `max_message_size`: a small compressed frame that would inflate to
//! gigabytes costs the router at most one message's worth of memory, and
//! the client gets close 1009.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use trellis_config::router::DeflateConfig;

/// The four bytes every sync-flushed deflate block ends with; RFC 7692
/// strips them from a compressed message, and the reader puts them back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

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

/// permessage-deflate's inflater for one connection: a message's
/// compressed payload in, its bytes out, never past the message limit.
pub struct Inflate {
    inflate: Decompress,
    reset_each_message: bool,
}

impl fmt::Debug for Inflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflate").finish_non_exhaustive()
    }
}

impl Inflate {
    pub fn new(agreed: &Agreed) -> Inflate {
        Inflate {
            inflate: Decompress::new(false),
            reset_each_message: agreed.client_no_context_takeover,
        }
    }

    /// Inflate `input` (a frame's payload) onto `out`, which may hold at
    /// most `max` bytes: room is reserved as the output grows, never past
    /// the limit, so a bomb costs at most one message's worth of memory.
    ///
    /// # Errors
    /// [`InflateError::TooBig`] past `max`, [`InflateError::Corrupt`] for
    /// data that is not deflate.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), InflateError> {
        while !input.is_empty() {
            let allowed = max.saturating_sub(out.len());
            // One byte more than allowed tells "too big" from "exactly".
            let room = allowed.saturating_add(1).min(64 * 1024);
            // Doubling, but never past the limit (plus the telling byte).
            let len = out.len();
            let want = (len * 2)
                .max(len + room)
                .min(len + allowed.saturating_add(1));
            if out.capacity() - len < room {
                out.reserve_exact(want - len);
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let status = self
                .inflate
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = (self.inflate.total_out() - before_out) as usize;
            input = &input[used..];
            if out.len() > max {
                return Err(InflateError::TooBig { max });
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

    /// The message's last frame is in: the sync-flush tail RFC 7692 strips
    /// (an empty stored block, valid at any block boundary, also after a
    /// stream that ended).
    ///
    /// # Errors
    /// As [`Inflate::inflate`].
    pub fn finish(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), InflateError> {
        self.inflate(&TAIL, out, max)?;
        if self.reset_each_message {
            self.inflate.reset(false);
        }
        Ok(())
    }
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
}
