//! Well-known WAMP error and close URIs, and the codec error types.

/// `wamp.error.*` and `wamp.close.*` URIs used by Trellis.
pub mod uri {
    #![allow(missing_docs)]
    pub const INVALID_URI: &str = "wamp.error.invalid_uri";
    pub const NO_SUCH_PROCEDURE: &str = "wamp.error.no_such_procedure";
    pub const PROCEDURE_ALREADY_EXISTS: &str = "wamp.error.procedure_already_exists";
    pub const NO_SUCH_REGISTRATION: &str = "wamp.error.no_such_registration";
    pub const NO_SUCH_SUBSCRIPTION: &str = "wamp.error.no_such_subscription";
    pub const NO_SUCH_SESSION: &str = "wamp.error.no_such_session";
    pub const INVALID_ARGUMENT: &str = "wamp.error.invalid_argument";
    pub const SYSTEM_SHUTDOWN: &str = "wamp.close.system_shutdown";
    pub const CLOSE_REALM: &str = "wamp.close.close_realm";
    pub const GOODBYE_AND_OUT: &str = "wamp.close.goodbye_and_out";
    pub const CLOSE_NORMAL: &str = "wamp.close.normal";
    pub const CLOSE_KILLED: &str = "wamp.close.killed";
    pub const NO_AUTH_METHOD: &str = "wamp.error.no_auth_method";
    pub const NOT_AUTHORIZED: &str = "wamp.error.not_authorized";
    pub const AUTHORIZATION_FAILED: &str = "wamp.error.authorization_failed";
    pub const AUTHENTICATION_FAILED: &str = "wamp.error.authentication_failed";
    pub const NO_SUCH_REALM: &str = "wamp.error.no_such_realm";
    pub const NO_SUCH_ROLE: &str = "wamp.error.no_such_role";
    pub const NO_SUCH_PRINCIPAL: &str = "wamp.error.no_such_principal";
    pub const CANCELED: &str = "wamp.error.canceled";
    pub const TIMEOUT: &str = "wamp.error.timeout";
    pub const OPTION_NOT_ALLOWED: &str = "wamp.error.option_not_allowed";
    pub const OPTION_DISALLOWED_DISCLOSE_ME: &str = "wamp.error.option_disallowed.disclose_me";
    pub const NO_ELIGIBLE_CALLEE: &str = "wamp.error.no_eligible_callee";
    pub const NO_AVAILABLE_CALLEE: &str = "wamp.error.no_available_callee";
    pub const PROTOCOL_VIOLATION: &str = "wamp.error.protocol_violation";
    pub const PAYLOAD_SIZE_EXCEEDED: &str = "wamp.error.payload_size_exceeded";
    pub const FEATURE_NOT_SUPPORTED: &str = "wamp.error.feature_not_supported";
    pub const NETWORK_FAILURE: &str = "wamp.error.network_failure";
    /// Crossbar.io's: every callee runs as many invocations as its
    /// registration's `concurrency` allows.
    pub const MAX_CONCURRENCY_REACHED: &str = "crossbar.error.max_concurrency_reached";
}

/// Bytes that could not be turned into a [`crate::Message`].
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    /// The bytes are not valid for the serializer (bad JSON, truncated
    /// MessagePack, ...).
    #[error("invalid {serializer}: {detail}")]
    Syntax {
        /// `JSON`, `MessagePack` or `CBOR`.
        serializer: &'static str,
        /// What the parser reported.
        detail: String,
    },
    /// Well-formed data, but not a WAMP message of a known shape.
    #[error("{0}")]
    Shape(String),
    /// The message type code is not a WAMP message type.
    #[error("unknown WAMP message type {0}")]
    UnknownType(u64),
}

impl DecodeError {
    /// The URI to tell the peer: always a protocol violation.
    pub fn wamp_uri(&self) -> &'static str {
        uri::PROTOCOL_VIOLATION
    }
}

/// A message that could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode message as {serializer}: {detail}")]
pub struct EncodeError {
    /// `JSON`, `MessagePack` or `CBOR`.
    pub serializer: &'static str,
    /// What the encoder reported.
    pub detail: String,
}
