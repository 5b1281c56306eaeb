//! # proto: WAMP v2 itself, no router logic
//!
//! Sans-IO: no sockets, tasks or runtime; the async client and component
//! runner are the `client` crate.
//!
//! # Layout
//! - [`value`]: the dynamic [`Value`] carried in payloads, details and options;
//!   binary-safe across all serializers.
//! - [`message`]: every WAMP message as a typed struct inside [`Message`],
//!   with field-by-field shape checking on decode.
//! - [`options`]: the options of client messages as typed structs
//!   (PUBLISH, SUBSCRIBE, REGISTER, CALL, CANCEL), parsed once.
//! - [`codec`]: the [`Serializer`] enum: JSON, MessagePack, CBOR, exactly as
//!   autobahn sends and expects them.
//! - [`rawsocket`]: the RawSocket handshake and frame codec.
//! - [`uri`]: URI validation (loose, strict, prefix and wildcard patterns)
//!   and matching.
//! - [`auth`]: WAMP-CRA and cryptosign crypto (pure functions).
//! - [`errors`]: well-known `wamp.error.*` URIs, [`DecodeError`], [`EncodeError`].

pub mod auth;
pub mod codec;
pub mod errors;
pub mod message;
pub mod options;
pub mod rawsocket;
pub mod scram;
pub mod uri;
pub mod value;

pub use codec::Serializer;
pub use errors::{DecodeError, EncodeError};
pub use message::{Id, MAX_ID, Message, Payload};
pub use value::{Dict, Value};
