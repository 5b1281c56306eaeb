//! Serializers: bytes ⇄ [`Message`] for JSON, MessagePack and CBOR.
//!
//! [`Serializer`] is a small `Copy` enum rather than a trait object: sessions
//! store it, the router indexes per-serializer encode caches with
//! [`Serializer::index`], and dispatch is a `match`. Each format's specifics
//! live in its own module (`json`, `msgpack`, `cbor`); the shared serde bridge
//! is in `wire`.
//!
//! Decoding checks nesting depth ([`MAX_DEPTH`]) and rejects trailing bytes,
//! and never panics on any input (property-tested below).

mod cbor;
mod forward;
mod json;
mod msgpack;
mod wire;

use crate::errors::{DecodeError, EncodeError};
use crate::message::Message;
use crate::value::Value;

/// Deepest nesting of lists and dicts a decoder accepts: far beyond what any
/// real payload uses, far below what could exhaust a worker thread's stack.
pub const MAX_DEPTH: usize = 100;

/// One of the three WAMP serializers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Serializer {
    /// `wamp.2.json`
    Json,
    /// `wamp.2.msgpack`
    MsgPack,
    /// `wamp.2.cbor`
    Cbor,
}

impl Serializer {
    /// All serializers, in the router's order of preference.
    pub const ALL: [Serializer; 3] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

    /// A dense index (0..3) for per-serializer caches.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in config files (`json`, `msgpack`, `cbor`).
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::MsgPack => "msgpack",
            Serializer::Cbor => "cbor",
        }
    }

    /// Look a serializer up by its config name.
    pub fn from_name(name: &str) -> Option<Serializer> {
        Serializer::ALL.into_iter().find(|s| s.name() == name)
    }

    /// True for serializers whose WebSocket messages are binary frames.
    pub fn is_binary(self) -> bool {
        !matches!(self, Serializer::Json)
    }

    /// Decode one message.
    ///
    /// # Errors
    /// [`DecodeError`] saying what is wrong with the bytes or the message shape.
    pub fn decode(self, bytes: &[u8]) -> Result<Message, DecodeError> {
        let value = match self {
            Serializer::Json => json::decode(bytes, true)?,
            Serializer::MsgPack => msgpack::decode(bytes, true)?,
            Serializer::Cbor => cbor::decode(bytes, true)?,
        };
        match value {
            Value::List(list) => Message::from_list(list),
            other => Err(DecodeError::Shape(format!(
                "a WAMP message must be a list, found {}",
                other.type_name()
            ))),
        }
    }

    /// Decode one value that is not a message (an MQTT `native` payload),
    /// within the same limits as messages.
    ///
    /// # Errors
    /// [`DecodeError`] saying what is wrong with the bytes.
    pub fn decode_value(self, bytes: &[u8]) -> Result<Value, DecodeError> {
        match self {
            Serializer::Json => json::decode(bytes, false),
            Serializer::MsgPack => msgpack::decode(bytes, false),
            Serializer::Cbor => cbor::decode(bytes, false),
        }
    }

    /// Encode one value that is not a message, appending to `out` (binary
    /// values in JSON as WAMP's `\u0000`-prefixed base64).
    ///
    /// # Errors
    /// [`EncodeError`] if the format cannot represent the value.
    pub fn encode_value(self, v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Serializer::Json => json::encode_value(v, out),
            Serializer::MsgPack => msgpack::encode_value(v, out),
            Serializer::Cbor => cbor::encode_value(v, out),
        }
    }

    /// Encode one message, appending to `out`.
    ///
    /// # Errors
    /// [`EncodeError`] if the format cannot represent a value (never for
    /// values that came from a decoder).
    pub fn encode(self, msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Serializer::Json => json::encode(msg, out),
            Serializer::MsgPack => msgpack::encode(msg, out),
            Serializer::Cbor => cbor::encode(msg, out),
        }
    }

    /// Encode one message into a fresh buffer.
    ///
    /// # Errors
    /// As [`Serializer::encode`].
    pub fn encode_to_vec(self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.encode(msg, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;

/// Reject values nested deeper than [`MAX_DEPTH`]. The decoders' own limits
/// already bound the recursion here.
fn check_depth(v: &Value, serializer: &'static str) -> Result<(), DecodeError> {
    fn depth(v: &Value) -> usize {
        match v {
            Value::List(l) => 1 + l.iter().map(depth).max().unwrap_or(0),
            Value::Dict(d) => 1 + d.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let d = depth(v);
    if d > MAX_DEPTH {
        return Err(DecodeError::Syntax {
            serializer,
            detail: format!("nesting depth {d} exceeds the limit of {MAX_DEPTH}"),
        });
    }
    Ok(())
}
