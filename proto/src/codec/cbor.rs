//! CBOR (`wamp.2.cbor`): binary values as byte strings; tags are ignored.

use super::wire::{OwnedValue, WireMessage};
use crate::errors::{DecodeError, EncodeError};
use crate::message::Message;
use crate::value::Value;

pub(super) fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut rest: &[u8] = bytes;
    let OwnedValue::<false>(v) =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, super::MAX_DEPTH + 1).map_err(
            |e| DecodeError::Syntax {
                serializer: "CBOR",
                detail: e.to_string(),
            },
        )?;
    if !rest.is_empty() {
        return Err(DecodeError::Syntax {
            serializer: "CBOR",
            detail: format!("{} trailing byte(s) after the message", rest.len()),
        });
    }
    super::check_depth(&v, "CBOR")?;
    Ok(v)
}

pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    ciborium::into_writer(&WireMessage::<false>(msg), out).map_err(|e| EncodeError {
        serializer: "CBOR",
        detail: e.to_string(),
    })
}
