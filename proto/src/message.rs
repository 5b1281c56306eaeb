//! Every WAMP v2 message as a typed Rust value.
//!
//! Encoding walks a message's fields in wire order ([`Message::fields`]); the
//! codecs in [`crate::codec`] turn those fields into bytes. Decoding goes the
//! other way through [`Message::from_list`], which checks every field's type
//! and says precisely which one is wrong.
//!
//! Payloads follow the WAMP omission rule: `args` is written only when it or
//! `kwargs` is non-empty, `kwargs` only when non-empty (`[]` stands in for
//! args when only kwargs exist). Empty and absent payloads are therefore the
//! same value here.

use crate::errors::DecodeError;
use crate::value::{Dict, Value};

/// A WAMP id (session, request, publication, subscription, registration).
pub type Id = u64;

/// The largest id WAMP allows: 2^53, so ids survive JavaScript numbers.
pub const MAX_ID: Id = 1 << 53;

/// Positional and keyword arguments of a call, result, event or error.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Payload {
    /// Positional arguments (`args`).
    pub args: Vec<Value>,
    /// Keyword arguments (`kwargs`).
    pub kwargs: Dict,
    /// Payload passthru mode: one opaque binary element stands where
    /// `args` would (`[PUBLISH, Request, Options, Topic, Payload|binary]`);
    /// `args` and `kwargs` are then empty. Forwarded untouched.
    pub passthru: Option<Vec<u8>>,
    /// `args` and `kwargs` still in the bytes they arrived in, for a router
    /// that only forwards them ([`crate::Serializer::decode_forwarding`]);
    /// `args` and `kwargs` are then empty. Whoever reads the arguments
    /// decodes them first ([`Payload::decode_raw`], [`Payload::decoded`]).
    pub raw: Option<RawArgs>,
}

/// `args` (and `kwargs`, when sent) as they arrived, in their serializer:
/// already checked to decode, so that a peer of the same serializer gets
/// the bytes as they are and a peer of another one gets them converted.
#[derive(Clone, Debug, PartialEq)]
pub struct RawArgs {
    serializer: crate::Serializer,
    /// `args`, then `kwargs` (if sent).
    bytes: Box<[u8]>,
    /// Where `kwargs` starts.
    split: u32,
}

impl RawArgs {
    /// `args` and `kwargs` (`kwargs` empty when absent), each one encoded
    /// value in `serializer`, already checked by the decoder.
    pub(crate) fn new(
        serializer: crate::Serializer,
        args: &[u8],
        kwargs: &[u8],
    ) -> Option<RawArgs> {
        let split = u32::try_from(args.len()).ok()?;
        let mut bytes = Vec::with_capacity(args.len() + kwargs.len());
        bytes.extend_from_slice(args);
        bytes.extend_from_slice(kwargs);
        Some(RawArgs {
            serializer,
            bytes: bytes.into_boxed_slice(),
            split,
        })
    }

    /// The serializer the bytes are in.
    pub fn serializer(&self) -> crate::Serializer {
        self.serializer
    }

    /// `args`, encoded.
    pub fn args(&self) -> &[u8] {
        &self.bytes[..self.split as usize]
    }

    /// `kwargs`, encoded, if the sender sent them.
    pub fn kwargs(&self) -> Option<&[u8]> {
        let k = &self.bytes[self.split as usize..];
        (!k.is_empty()).then_some(k)
    }

    /// `args` and `kwargs` as values.
    ///
    /// # Errors
    /// When they do not decode as a list and a dict (the decoder that made
    /// them checked this, so only values no serializer can hold, such as
    /// a JSON number beyond 64-bit floats, get here).
    pub fn decode(&self) -> Result<(Vec<Value>, Dict), DecodeError> {
        Ok((self.decode_args()?, self.decode_kwargs()?))
    }

    /// `args` as values.
    ///
    /// # Errors
    /// As [`RawArgs::decode`].
    pub fn decode_args(&self) -> Result<Vec<Value>, DecodeError> {
        match self.serializer.decode_value(self.args())? {
            Value::List(l) => Ok(l),
            other => Err(DecodeError::Shape(format!(
                "Arguments must be a list, found {}",
                other.type_name()
            ))),
        }
    }

    /// `kwargs` as values (empty when absent).
    ///
    /// # Errors
    /// As [`RawArgs::decode`].
    pub fn decode_kwargs(&self) -> Result<Dict, DecodeError> {
        match self
            .kwargs()
            .map(|k| self.serializer.decode_value(k))
            .transpose()?
        {
            None => Ok(Dict::new()),
            Some(Value::Dict(d)) => Ok(d),
            Some(other) => Err(DecodeError::Shape(format!(
                "ArgumentsKw must be a dict, found {}",
                other.type_name()
            ))),
        }
    }
}

impl Payload {
    /// A payload of positional arguments only.
    pub fn args(args: Vec<Value>) -> Self {
        Payload {
            args,
            ..Payload::default()
        }
    }

    /// True when there is nothing to put on the wire.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
            && self.kwargs.is_empty()
            && self.passthru.is_none()
            && self.raw.is_none()
    }

    /// Decode a raw payload ([`Payload::raw`]) into `args` and `kwargs`, in
    /// place; nothing to do for any other.
    ///
    /// # Errors
    /// As [`RawArgs::decode`]; the payload is then left as it was.
    pub fn decode_raw(&mut self) -> Result<(), DecodeError> {
        if let Some(raw) = &self.raw {
            let (args, kwargs) = raw.decode()?;
            self.args = args;
            self.kwargs = kwargs;
            self.raw = None;
        }
        Ok(())
    }

    /// The payload with `args` and `kwargs` as values: itself, or a decoded
    /// copy of a raw one.
    ///
    /// # Errors
    /// As [`RawArgs::decode`].
    pub fn decoded(&self) -> Result<std::borrow::Cow<'_, Payload>, DecodeError> {
        match &self.raw {
            None => Ok(std::borrow::Cow::Borrowed(self)),
            Some(raw) => {
                let (args, kwargs) = raw.decode()?;
                Ok(std::borrow::Cow::Owned(Payload {
                    args,
                    kwargs,
                    passthru: None,
                    raw: None,
                }))
            }
        }
    }
}

macro_rules! messages {
    ($( $code:literal $name:ident $variant:ident ),+ $(,)?) => {
        /// WAMP message type codes.
        pub mod code {
            $( #[allow(missing_docs)] pub const $name: u64 = $code; )+
        }

        /// The name of a message type code, for logs and errors.
        pub fn type_name(code: u64) -> &'static str {
            match code {
                $( $code => stringify!($name), )+
                _ => "UNKNOWN",
            }
        }

        impl Message {
            /// This message's type code.
            pub fn code(&self) -> u64 {
                match self {
                    $( Message::$variant(_) => $code, )+
                }
            }
        }
    };
}

messages! {
    1 HELLO Hello,
    2 WELCOME Welcome,
    3 ABORT Abort,
    4 CHALLENGE Challenge,
    5 AUTHENTICATE Authenticate,
    6 GOODBYE Goodbye,
    8 ERROR Error,
    16 PUBLISH Publish,
    17 PUBLISHED Published,
    32 SUBSCRIBE Subscribe,
    33 SUBSCRIBED Subscribed,
    34 UNSUBSCRIBE Unsubscribe,
    35 UNSUBSCRIBED Unsubscribed,
    36 EVENT Event,
    48 CALL Call,
    49 CANCEL Cancel,
    50 RESULT Result,
    64 REGISTER Register,
    65 REGISTERED Registered,
    66 UNREGISTER Unregister,
    67 UNREGISTERED Unregistered,
    68 INVOCATION Invocation,
    69 INTERRUPT Interrupt,
    70 YIELD Yield,
}

/// `[HELLO, Realm|uri, Details|dict]`
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    pub realm: String,
    pub details: Dict,
}

/// `[WELCOME, Session|id, Details|dict]`
#[derive(Clone, Debug, PartialEq)]
pub struct Welcome {
    pub session: Id,
    pub details: Dict,
}

/// `[ABORT, Details|dict, Reason|uri]`
#[derive(Clone, Debug, PartialEq)]
pub struct Abort {
    pub details: Dict,
    pub reason: String,
}

/// `[CHALLENGE, AuthMethod|string, Extra|dict]`
#[derive(Clone, Debug, PartialEq)]
pub struct Challenge {
    pub authmethod: String,
    pub extra: Dict,
}

/// `[AUTHENTICATE, Signature|string, Extra|dict]`
#[derive(Clone, Debug, PartialEq)]
pub struct Authenticate {
    pub signature: String,
    pub extra: Dict,
}

/// `[GOODBYE, Details|dict, Reason|uri]`
#[derive(Clone, Debug, PartialEq)]
pub struct Goodbye {
    pub details: Dict,
    pub reason: String,
}

/// `[ERROR, REQUEST.Type|int, REQUEST.Request|id, Details|dict, Error|uri, args?, kwargs?]`
#[derive(Clone, Debug, PartialEq)]
pub struct WampError {
    pub request_type: u64,
    pub request: Id,
    pub details: Dict,
    pub error: String,
    pub payload: Payload,
}

/// `[PUBLISH, Request|id, Options|dict, Topic|uri, args?, kwargs?]`
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub request: Id,
    pub options: Dict,
    pub topic: String,
    pub payload: Payload,
}

/// `[PUBLISHED, PUBLISH.Request|id, Publication|id]`
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub request: Id,
    pub publication: Id,
}

/// `[SUBSCRIBE, Request|id, Options|dict, Topic|uri]`
#[derive(Clone, Debug, PartialEq)]
pub struct Subscribe {
    pub request: Id,
    pub options: Dict,
    pub topic: String,
}

/// `[SUBSCRIBED, SUBSCRIBE.Request|id, Subscription|id]`
#[derive(Clone, Debug, PartialEq)]
pub struct Subscribed {
    pub request: Id,
    pub subscription: Id,
}

/// `[UNSUBSCRIBE, Request|id, SUBSCRIBED.Subscription|id]`
#[derive(Clone, Debug, PartialEq)]
pub struct Unsubscribe {
    pub request: Id,
    pub subscription: Id,
}

/// `[UNSUBSCRIBED, UNSUBSCRIBE.Request|id, Details|dict?]` (details only on revocation)
#[derive(Clone, Debug, PartialEq)]
pub struct Unsubscribed {
    pub request: Id,
    pub details: Option<Dict>,
}

/// `[EVENT, Subscription|id, Publication|id, Details|dict, args?, kwargs?]`
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub subscription: Id,
    pub publication: Id,
    pub details: Dict,
    pub payload: Payload,
}

/// `[CALL, Request|id, Options|dict, Procedure|uri, args?, kwargs?]`
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub request: Id,
    pub options: Dict,
    pub procedure: String,
    pub payload: Payload,
}

/// `[CANCEL, CALL.Request|id, Options|dict]`
#[derive(Clone, Debug, PartialEq)]
pub struct Cancel {
    pub request: Id,
    pub options: Dict,
}

/// `[RESULT, CALL.Request|id, Details|dict, args?, kwargs?]`
#[derive(Clone, Debug, PartialEq)]
pub struct CallResult {
    pub request: Id,
    pub details: Dict,
    pub payload: Payload,
}

/// `[REGISTER, Request|id, Options|dict, Procedure|uri]`
#[derive(Clone, Debug, PartialEq)]
pub struct Register {
    pub request: Id,
    pub options: Dict,
    pub procedure: String,
}

/// `[REGISTERED, REGISTER.Request|id, Registration|id]`
#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    pub request: Id,
    pub registration: Id,
}

/// `[UNREGISTER, Request|id, REGISTERED.Registration|id]`
#[derive(Clone, Debug, PartialEq)]
pub struct Unregister {
    pub request: Id,
    pub registration: Id,
}

/// `[UNREGISTERED, UNREGISTER.Request|id, Details|dict?]` (details only on revocation)
#[derive(Clone, Debug, PartialEq)]
pub struct Unregistered {
    pub request: Id,
    pub details: Option<Dict>,
}

/// `[INVOCATION, Request|id, REGISTERED.Registration|id, Details|dict, args?, kwargs?]`
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub request: Id,
    pub registration: Id,
    pub details: Dict,
    pub payload: Payload,
}

/// `[INTERRUPT, INVOCATION.Request|id, Options|dict]`
#[derive(Clone, Debug, PartialEq)]
pub struct Interrupt {
    pub request: Id,
    pub options: Dict,
}

/// `[YIELD, INVOCATION.Request|id, Options|dict, args?, kwargs?]`
#[derive(Clone, Debug, PartialEq)]
pub struct Yield {
    pub request: Id,
    pub options: Dict,
    pub payload: Payload,
}

/// One WAMP message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Abort(Abort),
    Challenge(Challenge),
    Authenticate(Authenticate),
    Goodbye(Goodbye),
    Error(WampError),
    Publish(Publish),
    Published(Published),
    Subscribe(Subscribe),
    Subscribed(Subscribed),
    Unsubscribe(Unsubscribe),
    Unsubscribed(Unsubscribed),
    Event(Event),
    Call(Call),
    Cancel(Cancel),
    Result(CallResult),
    Register(Register),
    Registered(Registered),
    Unregister(Unregister),
    Unregistered(Unregistered),
    Invocation(Invocation),
    Interrupt(Interrupt),
    Yield(Yield),
}

/// One element of a message on the wire, borrowed from the message.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// An integer: the type code, an id, a request type.
    Int(u64),
    /// A URI or other string.
    Str(&'a str),
    /// Details or options.
    Dict(&'a Dict),
    /// Positional arguments.
    List(&'a [Value]),
    /// A payload passthru binary.
    Bytes(&'a [u8]),
    /// Positional arguments still encoded ([`RawArgs::args`]).
    RawArgs(&'a RawArgs),
    /// Keyword arguments still encoded ([`RawArgs::kwargs`]).
    RawKwargs(&'a RawArgs),
}

/// At most 7 fields (ERROR); a fixed array keeps encoding allocation-free.
pub struct Fields<'a> {
    items: [Field<'a>; 7],
    len: usize,
}

impl<'a> Fields<'a> {
    fn new(code: u64) -> Self {
        Fields {
            items: [Field::Int(code); 7],
            len: 1,
        }
    }
    fn push(mut self, f: Field<'a>) -> Self {
        self.items[self.len] = f;
        self.len += 1;
        self
    }
    fn payload(self, p: &'a Payload) -> Self {
        if let Some(b) = &p.passthru {
            self.push(Field::Bytes(b))
        } else if let Some(raw) = &p.raw {
            let f = self.push(Field::RawArgs(raw));
            if raw.kwargs().is_some() {
                f.push(Field::RawKwargs(raw))
            } else {
                f
            }
        } else if p.is_empty() {
            self
        } else if p.kwargs.is_empty() {
            self.push(Field::List(&p.args))
        } else {
            self.push(Field::List(&p.args)).push(Field::Dict(&p.kwargs))
        }
    }
    /// The fields in wire order.
    pub fn as_slice(&self) -> &[Field<'a>] {
        &self.items[..self.len]
    }
}

impl Message {
    /// The message's fields in wire order, the type code first.
    pub fn fields(&self) -> Fields<'_> {
        use Field::{Dict as D, Int as I, Str as S};
        let f = Fields::new(self.code());
        match self {
            Message::Hello(m) => f.push(S(&m.realm)).push(D(&m.details)),
            Message::Welcome(m) => f.push(I(m.session)).push(D(&m.details)),
            Message::Abort(m) => f.push(D(&m.details)).push(S(&m.reason)),
            Message::Challenge(m) => f.push(S(&m.authmethod)).push(D(&m.extra)),
            Message::Authenticate(m) => f.push(S(&m.signature)).push(D(&m.extra)),
            Message::Goodbye(m) => f.push(D(&m.details)).push(S(&m.reason)),
            Message::Error(m) => f
                .push(I(m.request_type))
                .push(I(m.request))
                .push(D(&m.details))
                .push(S(&m.error))
                .payload(&m.payload),
            Message::Publish(m) => f
                .push(I(m.request))
                .push(D(&m.options))
                .push(S(&m.topic))
                .payload(&m.payload),
            Message::Published(m) => f.push(I(m.request)).push(I(m.publication)),
            Message::Subscribe(m) => f.push(I(m.request)).push(D(&m.options)).push(S(&m.topic)),
            Message::Subscribed(m) => f.push(I(m.request)).push(I(m.subscription)),
            Message::Unsubscribe(m) => f.push(I(m.request)).push(I(m.subscription)),
            Message::Unsubscribed(m) => match &m.details {
                Some(d) => f.push(I(m.request)).push(D(d)),
                None => f.push(I(m.request)),
            },
            Message::Event(m) => f
                .push(I(m.subscription))
                .push(I(m.publication))
                .push(D(&m.details))
                .payload(&m.payload),
            Message::Call(m) => f
                .push(I(m.request))
                .push(D(&m.options))
                .push(S(&m.procedure))
                .payload(&m.payload),
            Message::Cancel(m) => f.push(I(m.request)).push(D(&m.options)),
            Message::Result(m) => f.push(I(m.request)).push(D(&m.details)).payload(&m.payload),
            Message::Register(m) => f
                .push(I(m.request))
                .push(D(&m.options))
                .push(S(&m.procedure)),
            Message::Registered(m) => f.push(I(m.request)).push(I(m.registration)),
            Message::Unregister(m) => f.push(I(m.request)).push(I(m.registration)),
            Message::Unregistered(m) => match &m.details {
                Some(d) => f.push(I(m.request)).push(D(d)),
                None => f.push(I(m.request)),
            },
            Message::Invocation(m) => f
                .push(I(m.request))
                .push(I(m.registration))
                .push(D(&m.details))
                .payload(&m.payload),
            Message::Interrupt(m) => f.push(I(m.request)).push(D(&m.options)),
            Message::Yield(m) => f.push(I(m.request)).push(D(&m.options)).payload(&m.payload),
        }
    }

    /// The payload of a message that carries one.
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Message::Error(m) => Some(&m.payload),
            Message::Publish(m) => Some(&m.payload),
            Message::Event(m) => Some(&m.payload),
            Message::Call(m) => Some(&m.payload),
            Message::Result(m) => Some(&m.payload),
            Message::Invocation(m) => Some(&m.payload),
            Message::Yield(m) => Some(&m.payload),
            _ => None,
        }
    }

    /// The payload of a message that carries one, to change.
    pub fn payload_mut(&mut self) -> Option<&mut Payload> {
        match self {
            Message::Error(m) => Some(&mut m.payload),
            Message::Publish(m) => Some(&mut m.payload),
            Message::Event(m) => Some(&mut m.payload),
            Message::Call(m) => Some(&mut m.payload),
            Message::Result(m) => Some(&mut m.payload),
            Message::Invocation(m) => Some(&mut m.payload),
            Message::Yield(m) => Some(&mut m.payload),
            _ => None,
        }
    }

    /// The request id this message carries, if it carries one.
    pub fn request_id(&self) -> Option<Id> {
        Some(match self {
            Message::Error(m) => m.request,
            Message::Publish(m) => m.request,
            Message::Published(m) => m.request,
            Message::Subscribe(m) => m.request,
            Message::Subscribed(m) => m.request,
            Message::Unsubscribe(m) => m.request,
            Message::Unsubscribed(m) => m.request,
            Message::Call(m) => m.request,
            Message::Cancel(m) => m.request,
            Message::Result(m) => m.request,
            Message::Register(m) => m.request,
            Message::Registered(m) => m.request,
            Message::Unregister(m) => m.request,
            Message::Unregistered(m) => m.request,
            Message::Invocation(m) => m.request,
            Message::Interrupt(m) => m.request,
            Message::Yield(m) => m.request,
            _ => return None,
        })
    }

    /// The message's name (`PUBLISH`, `CALL`, ...), for logs and errors.
    pub fn name(&self) -> &'static str {
        type_name(self.code())
    }

    /// Build a message from its decoded wire list, checking every field.
    ///
    /// # Errors
    /// [`DecodeError::Shape`] naming the message type and the field that is
    /// missing, of the wrong type, or out of range; [`DecodeError::UnknownType`]
    /// for an unknown type code.
    pub fn from_list(list: Vec<Value>) -> Result<Message, DecodeError> {
        let mut r = Reader::new(list)?;
        let msg = match r.code {
            code::HELLO => Message::Hello(Hello {
                // A null realm (the client names none) is the empty string:
                // the router joins it to the realm its authentication
                // assigns, or refuses it saying so.
                realm: r.string_or_null("Realm")?,
                details: r.dict("Details")?,
            }),
            code::WELCOME => Message::Welcome(Welcome {
                session: r.id("Session")?,
                details: r.dict("Details")?,
            }),
            code::ABORT => Message::Abort(Abort {
                details: r.dict("Details")?,
                reason: r.string("Reason")?,
            }),
            code::CHALLENGE => Message::Challenge(Challenge {
                authmethod: r.string("AuthMethod")?,
                extra: r.dict("Extra")?,
            }),
            code::AUTHENTICATE => Message::Authenticate(Authenticate {
                signature: r.string("Signature")?,
                extra: r.dict("Extra")?,
            }),
            code::GOODBYE => Message::Goodbye(Goodbye {
                details: r.dict("Details")?,
                reason: r.string("Reason")?,
            }),
            code::ERROR => Message::Error(WampError {
                request_type: r.int("REQUEST.Type")?,
                request: r.id("Request")?,
                details: r.dict("Details")?,
                error: r.string("Error")?,
                payload: r.payload()?,
            }),
            code::PUBLISH => Message::Publish(Publish {
                request: r.id("Request")?,
                options: r.options()?,
                topic: r.string("Topic")?,
                payload: r.payload()?,
            }),
            code::PUBLISHED => Message::Published(Published {
                request: r.id("Request")?,
                publication: r.id("Publication")?,
            }),
            code::SUBSCRIBE => Message::Subscribe(Subscribe {
                request: r.id("Request")?,
                options: r.options()?,
                topic: r.string("Topic")?,
            }),
            code::SUBSCRIBED => Message::Subscribed(Subscribed {
                request: r.id("Request")?,
                subscription: r.id("Subscription")?,
            }),
            code::UNSUBSCRIBE => Message::Unsubscribe(Unsubscribe {
                request: r.id("Request")?,
                subscription: r.id("Subscription")?,
            }),
            code::UNSUBSCRIBED => Message::Unsubscribed(Unsubscribed {
                request: r.id("Request")?,
                details: r.opt_dict("Details")?,
            }),
            code::EVENT => Message::Event(Event {
                subscription: r.id("Subscription")?,
                publication: r.id("Publication")?,
                details: r.dict("Details")?,
                payload: r.payload()?,
            }),
            code::CALL => Message::Call(Call {
                request: r.id("Request")?,
                options: r.options()?,
                procedure: r.string("Procedure")?,
                payload: r.payload()?,
            }),
            code::CANCEL => Message::Cancel(Cancel {
                request: r.id("Request")?,
                options: r.options()?,
            }),
            code::RESULT => Message::Result(CallResult {
                request: r.id("Request")?,
                details: r.dict("Details")?,
                payload: r.payload()?,
            }),
            code::REGISTER => Message::Register(Register {
                request: r.id("Request")?,
                options: r.options()?,
                procedure: r.string("Procedure")?,
            }),
            code::REGISTERED => Message::Registered(Registered {
                request: r.id("Request")?,
                registration: r.id("Registration")?,
            }),
            code::UNREGISTER => Message::Unregister(Unregister {
                request: r.id("Request")?,
                registration: r.id("Registration")?,
            }),
            code::UNREGISTERED => Message::Unregistered(Unregistered {
                request: r.id("Request")?,
                details: r.opt_dict("Details")?,
            }),
            code::INVOCATION => Message::Invocation(Invocation {
                request: r.id("Request")?,
                registration: r.id("Registration")?,
                details: r.dict("Details")?,
                payload: r.payload()?,
            }),
            code::INTERRUPT => Message::Interrupt(Interrupt {
                request: r.id("Request")?,
                options: r.options()?,
            }),
            code::YIELD => Message::Yield(Yield {
                request: r.id("Request")?,
                options: r.options()?,
                payload: r.payload()?,
            }),
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Walks a decoded message list field by field, naming what it expected.
struct Reader {
    code: u64,
    items: std::vec::IntoIter<Value>,
    /// 1-based position of the next field, for error messages.
    pos: usize,
}

/// The specification's name of element `pos` (1-based, the type code is
/// element 1) of a message of type `code`, for error messages.
pub fn field_name(code: u64, pos: usize) -> &'static str {
    const REQ_OPTS: [&str; 2] = ["Request", "Options"];
    let fields: &[&str] = match code {
        1 => &["Realm", "Details"],
        2 => &["Session", "Details"],
        3 | 6 => &["Details", "Reason"],
        4 => &["AuthMethod", "Extra"],
        5 => &["Signature", "Extra"],
        8 => &[
            "Request.Type",
            "Request",
            "Details",
            "Error",
            "Arguments",
            "ArgumentsKw",
        ],
        16 => &["Request", "Options", "Topic", "Arguments", "ArgumentsKw"],
        17 => &["Request", "Publication"],
        32 => &["Request", "Options", "Topic"],
        33 => &["Request", "Subscription"],
        34 => &["Request", "Subscription"],
        35 | 67 => &["Request", "Details"],
        36 => &[
            "Subscription",
            "Publication",
            "Details",
            "Arguments",
            "ArgumentsKw",
        ],
        48 => &[
            "Request",
            "Options",
            "Procedure",
            "Arguments",
            "ArgumentsKw",
        ],
        49 | 69 => &REQ_OPTS,
        50 => &["Request", "Details", "Arguments", "ArgumentsKw"],
        64 => &["Request", "Options", "Procedure"],
        65 => &["Request", "Registration"],
        66 => &["Request", "Registration"],
        68 => &[
            "Request",
            "Registration",
            "Details",
            "Arguments",
            "ArgumentsKw",
        ],
        70 => &["Request", "Options", "Arguments", "ArgumentsKw"],
        _ => &[],
    };
    pos.checked_sub(2)
        .and_then(|i| fields.get(i))
        .copied()
        .unwrap_or("extra element")
}

impl Reader {
    fn new(list: Vec<Value>) -> Result<Self, DecodeError> {
        let mut items = list.into_iter();
        let code = match items.next() {
            None => return Err(DecodeError::Shape("a WAMP message must be a non-empty list".into())),
            Some(v) => v.as_u64().ok_or_else(|| {
                DecodeError::Shape(format!(
                    "the first element of a WAMP message must be the message type code (an integer), found {}",
                    v.type_name()
                ))
            })?,
        };
        Ok(Reader {
            code,
            items,
            pos: 1,
        })
    }

    fn err(&self, field: &str, expected: &str, found: Option<&Value>) -> DecodeError {
        let found = match found {
            Some(v) => format!("found {}", v.type_name()),
            None => "the message ended".to_owned(),
        };
        DecodeError::Shape(format!(
            "{} element {} ({field}) must be {expected}, {found}",
            type_name(self.code),
            self.pos
        ))
    }

    fn next(&mut self) -> Option<Value> {
        self.pos += 1;
        self.items.next()
    }

    fn int(&mut self, field: &str) -> Result<u64, DecodeError> {
        match self.next() {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| self.err(field, "a non-negative integer", Some(&v))),
            None => Err(self.err(field, "a non-negative integer", None)),
        }
    }

    fn id(&mut self, field: &str) -> Result<Id, DecodeError> {
        match self.next() {
            Some(v) => match v.as_id() {
                Some(id) if (1..=MAX_ID).contains(&id) => Ok(id),
                Some(id) => Err(DecodeError::Shape(format!(
                    "{} element {} ({field}) must be an id between 1 and 2^53, found {id}",
                    type_name(self.code),
                    self.pos
                ))),
                None => Err(self.err(field, "an id (integer)", Some(&v))),
            },
            None => Err(self.err(field, "an id (integer)", None)),
        }
    }

    fn string_or_null(&mut self, field: &str) -> Result<String, DecodeError> {
        match self.next() {
            Some(Value::Str(s)) => Ok(s),
            Some(Value::Null) => Ok(String::new()),
            other => Err(self.err(field, "a string (or null)", other.as_ref())),
        }
    }

    fn string(&mut self, field: &str) -> Result<String, DecodeError> {
        match self.next() {
            Some(Value::Str(s)) => Ok(s),
            other => Err(self.err(field, "a string", other.as_ref())),
        }
    }

    fn dict(&mut self, field: &str) -> Result<Dict, DecodeError> {
        match self.next() {
            Some(Value::Dict(d)) => Ok(d),
            other => Err(self.err(field, "a dict", other.as_ref())),
        }
    }

    /// An Options dict: an option set to null is an option not set (the
    /// specification is silent; clients send both).
    fn options(&mut self) -> Result<Dict, DecodeError> {
        let mut d = self.dict("Options")?;
        if d.values().any(Value::is_null) {
            d.retain(|_, v| !v.is_null());
        }
        Ok(d)
    }

    fn opt_dict(&mut self, field: &str) -> Result<Option<Dict>, DecodeError> {
        match self.next() {
            None => Ok(None),
            Some(Value::Dict(d)) => Ok(Some(d)),
            other => Err(self.err(field, "a dict", other.as_ref())),
        }
    }

    fn payload(&mut self) -> Result<Payload, DecodeError> {
        let args = match self.next() {
            None => return Ok(Payload::default()),
            Some(Value::List(l)) => l,
            Some(Value::Bytes(b)) => {
                // Payload passthru mode: nothing may follow the binary.
                return Ok(Payload {
                    passthru: Some(b),
                    ..Payload::default()
                });
            }
            other => {
                return Err(self.err("Arguments", "a list (or a passthru binary)", other.as_ref()));
            }
        };
        let kwargs = match self.next() {
            None => Dict::new(),
            Some(Value::Dict(d)) => d,
            other => return Err(self.err("ArgumentsKw", "a dict", other.as_ref())),
        };
        Ok(Payload {
            args,
            kwargs,
            passthru: None,
            raw: None,
        })
    }

    fn finish(mut self) -> Result<(), DecodeError> {
        let extra = self.items.len();
        if extra > 0 {
            self.pos += 1;
            return Err(DecodeError::Shape(format!(
                "{} has {extra} unexpected trailing element(s) from position {}",
                type_name(self.code),
                self.pos
            )));
        }
        Ok(())
    }
}
