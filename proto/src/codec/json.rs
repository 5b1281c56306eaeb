//! JSON (`wamp.2.json`): binary values as `"\u0000" + base64` strings.
//! serde_json's own recursion limit (128) sits above [`super::MAX_DEPTH`],
//! so the depth check in `check_depth` decides.

use super::Serializer;
use super::wire::{
    OwnedMessage, OwnedValue, WireField, WireMessage, WireValue, encode_spliced, has_raw_in, placed,
};
use crate::errors::{DecodeError, EncodeError};
use crate::message::Message;
use crate::value::Value;

/// A message (`message`: a list, its places named on failure) or any
/// value.
pub(super) fn decode(bytes: &[u8], message: bool) -> Result<Value, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let syntax = |e: serde_json::Error| DecodeError::Syntax {
        serializer: "JSON",
        detail: placed(e.to_string()),
    };
    let v = if message {
        let OwnedMessage::<true>(v) = serde::Deserialize::deserialize(&mut de).map_err(syntax)?;
        v
    } else {
        let OwnedValue::<true>(v) = serde::Deserialize::deserialize(&mut de).map_err(syntax)?;
        v
    };
    de.end().map_err(syntax)?;
    super::check_depth(&v, "JSON")?;
    Ok(v)
}

pub(super) fn encode_value(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    serde_json::to_writer(out, &WireValue::<true>(v)).map_err(|e| EncodeError {
        serializer: "JSON",
        detail: e.to_string(),
    })
}

pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let failed = |e: serde_json::Error| EncodeError {
        serializer: "JSON",
        detail: e.to_string(),
    };
    if has_raw_in(msg, Serializer::Json) {
        return encode_spliced(
            msg,
            Serializer::Json,
            out,
            |out, _| {
                out.push(b'[');
                Ok(())
            },
            |out, f| serde_json::to_writer(out, &WireField::<true>(f)),
            b",",
            b"]",
        )
        .map_err(failed);
    }
    serde_json::to_writer(out, &WireMessage::<true>(msg)).map_err(failed)
}
