//! CBOR (`wamp.2.cbor`): binary values as byte strings; RFC 8746 typed
//! arrays (tags 64..=87, what cbor-x sends for a `Uint8Array`) decode as
//! binary, and other tags are read as the value they wrap.

use super::wire::{OwnedMessage, OwnedValue, WireMessage, WireValue, placed};
use crate::errors::{DecodeError, EncodeError};
use crate::message::Message;
use crate::value::Value;

/// A message (`message`: a list, its places named on failure) or any
/// value.
pub(super) fn decode(bytes: &[u8], message: bool) -> Result<Value, DecodeError> {
    let mut rest: &[u8] = bytes;
    let syntax = |e| DecodeError::Syntax {
        serializer: "CBOR",
        detail: placed(readable(e)),
    };
    let v = if message {
        let OwnedMessage::<false>(v) =
            ciborium::de::from_reader_with_recursion_limit(&mut rest, super::MAX_DEPTH + 1)
                .map_err(syntax)?;
        v
    } else {
        let OwnedValue::<false>(v) =
            ciborium::de::from_reader_with_recursion_limit(&mut rest, super::MAX_DEPTH + 1)
                .map_err(syntax)?;
        v
    };
    if !rest.is_empty() {
        return Err(DecodeError::Syntax {
            serializer: "CBOR",
            detail: format!("{} trailing byte(s) after the message", rest.len()),
        });
    }
    super::check_depth(&v, "CBOR")?;
    Ok(v)
}

pub(super) fn encode_value(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    ciborium::into_writer(&WireValue::<false>(v), out).map_err(|e| EncodeError {
        serializer: "CBOR",
        detail: e.to_string(),
    })
}

pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    ciborium::into_writer(&WireMessage::<false>(msg), out).map_err(|e| EncodeError {
        serializer: "CBOR",
        detail: e.to_string(),
    })
}

/// ciborium's errors print as their Debug form; say what they mean.
fn readable(e: ciborium::de::Error<std::io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Semantic(_, text) => text,
        E::Syntax(offset) => format!("malformed CBOR at byte {offset}"),
        E::Io(io) => format!("the message ended early ({io})"),
        E::RecursionLimitExceeded => {
            format!("nesting deeper than the limit of {}", super::MAX_DEPTH)
        }
    }
}
