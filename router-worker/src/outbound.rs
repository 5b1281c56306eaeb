//! Messages on their way to sessions, encoded at most once per serializer.
//!
//! The realm's core wraps each outbound message in an [`OutMsg`] and hands
//! the same `Arc` to every recipient (all subscribers of a subscription get
//! one EVENT). The first session task that writes it with a given serializer
//! encodes it; everyone else reuses those bytes. Encoding thus happens on the
//! session tasks (spread across cores) and once per serializer in use, never
//! once per subscriber.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proto::{Message, Serializer};

/// One encoded form of a message.
#[derive(Clone, Debug)]
pub enum Encoded {
    /// JSON (serde_json writes UTF-8 only), sent as a WebSocket text frame.
    Text(Bytes),
    /// MessagePack or CBOR: sent as a binary frame.
    Binary(Bytes),
}

impl Encoded {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Encoded::Text(t) => t,
            Encoded::Binary(b) => b,
        }
    }

    /// The bytes, shared (no copy).
    pub fn bytes(&self) -> Bytes {
        match self {
            Encoded::Text(b) | Encoded::Binary(b) => b.clone(),
        }
    }
}

/// A message plus its lazily filled per-serializer encodings.
#[derive(Debug)]
pub struct OutMsg {
    /// The message itself.
    pub msg: Message,
    /// One slot per [`Serializer::index`]; `None` inside means encoding
    /// failed (logged once).
    cache: [OnceLock<Option<Encoded>>; 3],
}

impl OutMsg {
    /// Wrap a message for delivery.
    pub fn new(msg: Message) -> Arc<OutMsg> {
        Arc::new(OutMsg {
            msg,
            cache: Default::default(),
        })
    }

    /// The message encoded for `s`, encoding it on first use.
    pub fn encoded(&self, s: Serializer) -> Option<&Encoded> {
        self.cache[s.index()]
            .get_or_init(|| match s.encode_to_vec(&self.msg) {
                Ok(v) if s.is_binary() => Some(Encoded::Binary(Bytes::from(v))),
                Ok(v) => Some(Encoded::Text(Bytes::from(v))),
                Err(e) => {
                    tracing::error!(cause = %e, message = self.msg.name(), "cannot encode outbound message");
                    None
                }
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::message::Published;

    #[test]
    fn encodes_once_per_serializer() {
        let m = OutMsg::new(Message::Published(Published {
            request: 1,
            publication: 2,
        }));
        let a = m.encoded(Serializer::Json).map(|e| e.as_bytes().as_ptr());
        let b = m.encoded(Serializer::Json).map(|e| e.as_bytes().as_ptr());
        assert_eq!(a, b, "second use reuses the same buffer");
        assert!(matches!(
            m.encoded(Serializer::Json),
            Some(Encoded::Text(_))
        ));
        assert!(matches!(
            m.encoded(Serializer::Cbor),
            Some(Encoded::Binary(_))
        ));
        assert_eq!(
            m.encoded(Serializer::Json).map(|e| e.as_bytes().to_vec()),
            Some(b"[17,1,2]".to_vec())
        );
    }
}
