//! MQTT 3.1.1 and 5.0 on the wire, behind one set of packets: the
//! transport reads [`In`] and writes [`Out`], and this module turns them
//! into each version's packets (rmqtt-codec's), with MQTT 5's reason codes
//! where MQTT 3.1.1 has none, and MQTT 5's inbound topic aliases.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::{v3, v5};
use tokio_util::codec::{Decoder, Encoder};

/// Topic aliases a client may set (MQTT 5's Topic Alias Maximum).
pub const TOPIC_ALIAS_MAX: u16 = 32;

/// The longest topic an alias may stand for: what a connection keeps for
/// its aliases stays small (32 of these at most).
pub const TOPIC_ALIAS_TOPIC_MAX: usize = 1024;

/// A CONNECT, whatever the version.
pub struct Connect {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub keep_alive: u16,
    /// (topic, payload, QoS, retain).
    pub will: Option<(String, Bytes, QoS, bool)>,
    /// Start afresh (MQTT 5's clean start, MQTT 3.1.1's clean session):
    /// `false` resumes the session the client id left, if any.
    pub clean_start: bool,
    /// Seconds the session outlives the connection: MQTT 5's session
    /// expiry interval; for MQTT 3.1.1, 0 with a clean session and
    /// `u32::MAX` (never) without.
    pub session_expiry: u32,
    /// MQTT 5's receive maximum: QoS 1 and 2 publications the client takes
    /// unacknowledged at once (MQTT 3.1.1: no limit said).
    pub receive_max: u16,
}

/// A publication's MQTT 5 properties that cross the bridge (MQTT 3.1.1
/// has none: all empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Props {
    /// User properties, in order (a name may repeat).
    pub user: Vec<(String, String)>,
    /// Message expiry interval, in seconds.
    pub expiry: Option<u32>,
    pub content_type: Option<String>,
    /// Request/response: the correlation data.
    pub correlation: Option<Bytes>,
}

/// What a client sends, once connected.
pub enum In {
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        packet_id: Option<NonZeroU16>,
        /// MQTT 5 request/response: the response topic.
        response: Option<String>,
        props: Props,
    },
    PubRel(NonZeroU16),
    /// PUBACK for a QoS 1 publication the router sent.
    PubAck(NonZeroU16),
    /// PUBREC or PUBCOMP (the router sends at QoS 0 or 1: nothing to do).
    Acked,
    Subscribe(NonZeroU16, Vec<(String, QoS)>),
    Unsubscribe(NonZeroU16, Vec<String>),
    Ping,
    /// DISCONNECT, with MQTT 5's new session expiry interval, if it sets
    /// one.
    Disconnect(Option<u32>),
    /// A packet a client may not send here, and why.
    Illegal(String),
}

/// Why something was refused (MQTT 5 says it with a reason code; MQTT
/// 3.1.1 has fewer ways or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    BadCredentials,
    NotAuthorized,
    Unavailable,
    TopicInvalid,
    PayloadInvalid,
    Quota,
    Unspecified,
}

/// What the router sends a client.
pub enum Out {
    ConnAck {
        refused: Option<Refused>,
        /// A session was resumed.
        session_present: bool,
        /// MQTT 5: the session expiry the server uses, if it is not the
        /// one the client asked for.
        session_expiry: Option<u32>,
    },
    PubAck(NonZeroU16, Option<Refused>),
    PubRec(NonZeroU16, Option<Refused>),
    PubComp(NonZeroU16),
    SubAck(NonZeroU16, Vec<Result<QoS, Refused>>),
    UnsubAck(NonZeroU16, usize),
    PingResp,
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        packet_id: Option<NonZeroU16>,
        /// Sent before, unacknowledged (on a resumed session).
        dup: bool,
        /// MQTT 5's properties (dropped for MQTT 3.1.1).
        props: Props,
    },
    /// MQTT 5 only (3.1.1 just closes): the server ends the connection.
    Disconnect(v5::DisconnectReasonCode),
}

/// The topic aliases an MQTT 5 client set: at most [`TOPIC_ALIAS_MAX`],
/// looked up in a list (a map's table was twice the room in every
/// connection, most of which set none).
#[derive(Debug, Default)]
pub struct Aliases(Vec<(u16, String)>);

impl Aliases {
    /// Set (or replace) alias `a`.
    fn insert(&mut self, a: u16, topic: String) {
        match self.0.iter_mut().find(|(k, _)| *k == a) {
            Some((_, t)) => *t = topic,
            None => self.0.push((a, topic)),
        }
    }

    fn get(&self, a: &u16) -> Option<&String> {
        self.0.iter().find(|(k, _)| k == a).map(|(_, t)| t)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The wire of one connection. (MQTT 5's is boxed: every client keeps its
/// wire for its whole life, and a 3.1.1 one needs a third of the room.)
pub enum Wire {
    V3(v3::Codec),
    V5(Box<V5Wire>),
}

/// An MQTT 5 connection's wire.
pub struct V5Wire {
    pub codec: v5::Codec,
    /// Topic aliases the client set.
    pub aliases: Aliases,
    pub max_packet: u32,
}

impl Wire {
    /// An MQTT 5 wire taking packets of at most `max` bytes.
    pub fn v5(max: u32) -> Wire {
        Wire::V5(Box::new(V5Wire {
            codec: v5::Codec::new(max, 0),
            aliases: Aliases::default(),
            max_packet: max,
        }))
    }
}

impl Wire {
    /// The version's name, for the session's transport details.
    pub fn protocol(&self) -> &'static str {
        match self {
            Wire::V3(_) => "mqtt.3.1.1",
            Wire::V5(_) => "mqtt.5",
        }
    }

    pub fn is_v5(&self) -> bool {
        matches!(self, Wire::V5(_))
    }

    /// The next CONNECT, if one is whole in `buf`.
    pub fn decode_connect(&mut self, buf: &mut BytesMut) -> Result<Option<Connect>, String> {
        // Both versions' CONNECTs have these fields under the same names.
        macro_rules! connect {
            (@clean $c:ident, v3) => {
                $c.clean_session
            };
            (@clean $c:ident, v5) => {
                $c.clean_start
            };
            (@expiry $c:ident, v3) => {
                if $c.clean_session { 0 } else { u32::MAX }
            };
            (@expiry $c:ident, v5) => {
                $c.session_expiry_interval_secs
            };
            (@receive $c:ident, v3) => {
                u16::MAX
            };
            (@receive $c:ident, v5) => {
                $c.receive_max.map_or(u16::MAX, NonZeroU16::get)
            };
            ($codec:expr, $version:ident) => {
                match $codec.decode(buf).map_err(|e| e.to_string())? {
                    None => Ok(None),
                    Some(($version::Packet::Connect(c), _)) => Ok(Some(Connect {
                        client_id: c.client_id.to_string(),
                        username: c.username.map(|u| u.to_string()),
                        password: c.password,
                        keep_alive: c.keep_alive,
                        will: c
                            .last_will
                            .map(|w| (w.topic.to_string(), w.message, w.qos, w.retain)),
                        clean_start: connect!(@clean c, $version),
                        session_expiry: connect!(@expiry c, $version),
                        receive_max: connect!(@receive c, $version),
                    })),
                    Some((p, _)) => Err(format!(
                        "the first packet must be CONNECT, found type {}",
                        p.packet_type() >> 4
                    )),
                }
            };
        }
        match self {
            Wire::V3(c) => connect!(c, v3),
            Wire::V5(w) => connect!(w.codec, v5),
        }
    }

    /// The next packet, if one is whole in `buf`.
    ///
    /// # Errors
    /// What the codec refused (an oversize packet is
    /// `DecodeError::MaxSizeExceeded`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<In>, DecodeError> {
        match self {
            Wire::V3(c) => Ok(c.decode(buf)?.map(|(p, _)| from_v3(p))),
            Wire::V5(w) => {
                let V5Wire { codec, aliases, .. } = &mut **w;
                Ok(codec.decode(buf)?.map(|(p, _)| from_v5(p, aliases)))
            }
        }
    }

    /// Append `out` to `buf`.
    ///
    /// # Errors
    /// The codec could not encode it.
    pub fn encode(&mut self, out: Out, buf: &mut BytesMut) -> Result<(), String> {
        match self {
            Wire::V3(c) => match to_v3(out) {
                Some(p) => c.encode(p, buf).map_err(|e| e.to_string()),
                None => Ok(()),
            },
            Wire::V5(w) => w
                .codec
                .encode(to_v5(out, w.max_packet), buf)
                .map_err(|e| e.to_string()),
        }
    }
}

fn publish_in(p: Publish, topic: String) -> In {
    let (response, props) = match p.properties {
        None => (None, Props::default()),
        Some(pr) => (
            pr.response_topic.map(|t| t.to_string()),
            Props {
                user: pr
                    .user_properties
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                expiry: pr.message_expiry_interval.map(std::num::NonZeroU32::get),
                content_type: pr.content_type.map(|c| c.to_string()),
                correlation: pr.correlation_data,
            },
        ),
    };
    In::Publish {
        topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        packet_id: p.packet_id,
        response,
        props,
    }
}

fn from_v3(p: v3::Packet) -> In {
    match p {
        v3::Packet::Publish(p) => {
            let topic = p.topic.to_string();
            publish_in(*p, topic)
        }
        v3::Packet::PublishRelease { packet_id } => In::PubRel(packet_id),
        v3::Packet::PublishAck { packet_id } => In::PubAck(packet_id),
        v3::Packet::PublishReceived { .. } | v3::Packet::PublishComplete { .. } => In::Acked,
        v3::Packet::Subscribe {
            packet_id,
            topic_filters,
        } => In::Subscribe(
            packet_id,
            topic_filters
                .into_iter()
                .map(|(f, q)| (f.to_string(), q))
                .collect(),
        ),
        v3::Packet::Unsubscribe {
            packet_id,
            topic_filters,
        } => In::Unsubscribe(
            packet_id,
            topic_filters.into_iter().map(|f| f.to_string()).collect(),
        ),
        v3::Packet::PingRequest => In::Ping,
        v3::Packet::Disconnect => In::Disconnect(None),
        v3::Packet::Connect(_) => In::Illegal("a second CONNECT on one connection".into()),
        other => In::Illegal(format!(
            "MQTT packet type {} comes from a server, not a client",
            other.packet_type() >> 4
        )),
    }
}

fn from_v5(p: v5::Packet, aliases: &mut Aliases) -> In {
    match p {
        v5::Packet::Publish(p) => {
            let alias = p
                .properties
                .as_ref()
                .and_then(|pr| pr.topic_alias)
                .map(NonZeroU16::get);
            let topic = match (p.topic.is_empty(), alias) {
                (false, None) => p.topic.to_string(),
                (false, Some(a)) if a <= TOPIC_ALIAS_MAX => {
                    if p.topic.len() > TOPIC_ALIAS_TOPIC_MAX {
                        return In::Illegal(format!(
                            "topic alias {a} for a topic of {} bytes: this server keeps aliases for topics of up to {TOPIC_ALIAS_TOPIC_MAX} bytes",
                            p.topic.len()
                        ));
                    }
                    aliases.insert(a, p.topic.to_string());
                    p.topic.to_string()
                }
                (true, Some(a)) => match aliases.get(&a) {
                    Some(t) => t.clone(),
                    None => return In::Illegal(format!("topic alias {a} was never set")),
                },
                (_, Some(a)) => {
                    return In::Illegal(format!(
                        "topic alias {a} is over the {TOPIC_ALIAS_MAX} this server takes"
                    ));
                }
                (true, None) => return In::Illegal("a PUBLISH without a topic".into()),
            };
            publish_in(*p, topic)
        }
        v5::Packet::PublishRelease(a) => In::PubRel(a.packet_id),
        v5::Packet::PublishAck(a) => In::PubAck(a.packet_id),
        v5::Packet::PublishReceived(_) | v5::Packet::PublishComplete(_) => In::Acked,
        v5::Packet::Subscribe(s) => In::Subscribe(
            s.packet_id,
            s.topic_filters
                .into_iter()
                .map(|(f, o)| (f.to_string(), o.qos))
                .collect(),
        ),
        v5::Packet::Unsubscribe(u) => In::Unsubscribe(
            u.packet_id,
            u.topic_filters.into_iter().map(|f| f.to_string()).collect(),
        ),
        v5::Packet::PingRequest => In::Ping,
        v5::Packet::Disconnect(d) => In::Disconnect(d.session_expiry_interval_secs),
        v5::Packet::Connect(_) => In::Illegal("a second CONNECT on one connection".into()),
        v5::Packet::Auth(_) => In::Illegal(
            "enhanced authentication (AUTH) is not supported: log in with a user name and password"
                .into(),
        ),
        other => In::Illegal(format!(
            "MQTT packet type {} comes from a server, not a client",
            other.packet_type() >> 4
        )),
    }
}

fn to_v3(out: Out) -> Option<v3::Packet> {
    Some(match out {
        Out::ConnAck {
            refused,
            session_present,
            ..
        } => v3::Packet::ConnectAck(v3::ConnectAck {
            return_code: match refused {
                None => v3::ConnectAckReason::ConnectionAccepted,
                Some(Refused::BadCredentials) => v3::ConnectAckReason::BadUserNameOrPassword,
                Some(Refused::Unavailable) => v3::ConnectAckReason::ServiceUnavailable,
                Some(_) => v3::ConnectAckReason::NotAuthorized,
            },
            session_present: session_present && refused.is_none(),
        }),
        // MQTT 3.1.1 cannot refuse a publication: acknowledged anyway.
        Out::PubAck(packet_id, _) => v3::Packet::PublishAck { packet_id },
        Out::PubRec(packet_id, _) => v3::Packet::PublishReceived { packet_id },
        Out::PubComp(packet_id) => v3::Packet::PublishComplete { packet_id },
        Out::SubAck(packet_id, codes) => v3::Packet::SubscribeAck {
            packet_id,
            status: codes
                .into_iter()
                .map(|c| match c {
                    Ok(q) => v3::SubscribeReturnCode::Success(q),
                    Err(_) => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        Out::UnsubAck(packet_id, _) => v3::Packet::UnsubscribeAck { packet_id },
        Out::PingResp => v3::Packet::PingResponse,
        Out::Publish {
            topic,
            payload,
            qos,
            retain,
            packet_id,
            dup,
            ..
        } => v3::Packet::Publish(Box::new(Publish {
            dup,
            retain,
            qos,
            topic: ByteString::from(topic),
            packet_id,
            payload,
            properties: None,
        })),
        Out::Disconnect(_) => return None,
    })
}

fn pub_reason(r: Option<Refused>) -> v5::PublishAckReason {
    match r {
        None => v5::PublishAckReason::Success,
        Some(Refused::NotAuthorized) => v5::PublishAckReason::NotAuthorized,
        Some(Refused::TopicInvalid) => v5::PublishAckReason::TopicNameInvalid,
        Some(Refused::PayloadInvalid) => v5::PublishAckReason::PayloadFormatInvalid,
        Some(Refused::Quota) => v5::PublishAckReason::QuotaExceeded,
        Some(_) => v5::PublishAckReason::UnspecifiedError,
    }
}

fn to_v5(out: Out, max_packet: u32) -> v5::Packet {
    match out {
        Out::ConnAck {
            refused,
            session_present,
            session_expiry,
        } => v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
            session_present: session_present && refused.is_none(),
            session_expiry_interval_secs: session_expiry,
            reason_code: match refused {
                None => v5::ConnectAckReason::Success,
                Some(Refused::BadCredentials) => v5::ConnectAckReason::BadUserNameOrPassword,
                Some(Refused::Unavailable) => v5::ConnectAckReason::ServerUnavailable,
                Some(Refused::NotAuthorized) => v5::ConnectAckReason::NotAuthorized,
                Some(_) => v5::ConnectAckReason::UnspecifiedError,
            },
            max_packet_size: Some(max_packet),
            topic_alias_max: TOPIC_ALIAS_MAX,
            subscription_identifiers_available: false,
            shared_subscription_available: true,
            ..v5::ConnectAck::default()
        })),
        Out::PubAck(packet_id, r) => v5::Packet::PublishAck(v5::PublishAck {
            packet_id,
            reason_code: pub_reason(r),
            properties: Vec::new(),
            reason_string: None,
        }),
        Out::PubRec(packet_id, r) => v5::Packet::PublishReceived(v5::PublishAck {
            packet_id,
            reason_code: pub_reason(r),
            properties: Vec::new(),
            reason_string: None,
        }),
        Out::PubComp(packet_id) => v5::Packet::PublishComplete(v5::PublishAck2 {
            packet_id,
            reason_code: v5::PublishAck2Reason::Success,
            properties: Vec::new(),
            reason_string: None,
        }),
        Out::SubAck(packet_id, codes) => v5::Packet::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: codes
                .into_iter()
                .map(|c| match c {
                    Ok(QoS::AtMostOnce) => v5::SubscribeAckReason::GrantedQos0,
                    Ok(QoS::AtLeastOnce) => v5::SubscribeAckReason::GrantedQos1,
                    Ok(QoS::ExactlyOnce) => v5::SubscribeAckReason::GrantedQos2,
                    Err(Refused::NotAuthorized) => v5::SubscribeAckReason::NotAuthorized,
                    Err(Refused::TopicInvalid) => v5::SubscribeAckReason::TopicFilterInvalid,
                    Err(Refused::Quota) => v5::SubscribeAckReason::QuotaExceeded,
                    Err(_) => v5::SubscribeAckReason::UnspecifiedError,
                })
                .collect(),
        }),
        Out::UnsubAck(packet_id, n) => v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: vec![v5::UnsubscribeAckReason::Success; n],
        }),
        Out::PingResp => v5::Packet::PingResponse,
        Out::Publish {
            topic,
            payload,
            qos,
            retain,
            packet_id,
            dup,
            props,
        } => v5::Packet::Publish(Box::new(Publish {
            dup,
            retain,
            qos,
            topic: ByteString::from(topic),
            packet_id,
            payload,
            properties: Some(v5::PublishProperties {
                correlation_data: props.correlation,
                message_expiry_interval: props.expiry.and_then(std::num::NonZeroU32::new),
                content_type: props.content_type.map(ByteString::from),
                user_properties: props
                    .user
                    .into_iter()
                    .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
                    .collect(),
                ..v5::PublishProperties::default()
            }),
        })),
        Out::Disconnect(reason_code) => v5::Packet::Disconnect(v5::Disconnect {
            reason_code,
            session_expiry_interval_secs: None,
            server_reference: None,
            reason_string: None,
            user_properties: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v5_publish(topic: &str, alias: Option<u16>) -> v5::Packet {
        v5::Packet::Publish(Box::new(Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            topic: ByteString::from(topic),
            packet_id: None,
            payload: Bytes::from_static(b"x"),
            properties: Some(v5::PublishProperties {
                topic_alias: alias.and_then(NonZeroU16::new),
                ..v5::PublishProperties::default()
            }),
        }))
    }

    fn topic_of(p: In) -> Result<String, String> {
        match p {
            In::Publish { topic, .. } => Ok(topic),
            In::Illegal(why) => Err(why),
            _ => Err("not a publish".into()),
        }
    }

    #[test]
    fn topic_aliases_are_set_used_and_bounded() {
        let mut aliases = Aliases::default();
        assert_eq!(
            topic_of(from_v5(v5_publish("a/b", Some(3)), &mut aliases)),
            Ok("a/b".into())
        );
        assert_eq!(
            topic_of(from_v5(v5_publish("", Some(3)), &mut aliases)),
            Ok("a/b".into())
        );
        let never = topic_of(from_v5(v5_publish("", Some(4)), &mut aliases));
        assert!(never.is_err_and(|e| e.contains("never set")));
        let over = topic_of(from_v5(
            v5_publish("c", Some(TOPIC_ALIAS_MAX + 1)),
            &mut aliases,
        ));
        assert!(over.is_err_and(|e| e.contains("over the 32")));
        let long = "t/".repeat(TOPIC_ALIAS_TOPIC_MAX);
        let big = topic_of(from_v5(v5_publish(&long, Some(5)), &mut aliases));
        assert!(big.is_err_and(|e| e.contains("up to 1024 bytes")));
        assert_eq!(aliases.len(), 1, "only the alias that was set is kept");
        // Set again: the alias names the new topic, still one entry.
        assert_eq!(
            topic_of(from_v5(v5_publish("x/y", Some(3)), &mut aliases)),
            Ok("x/y".into())
        );
        assert_eq!(
            topic_of(from_v5(v5_publish("", Some(3)), &mut aliases)),
            Ok("x/y".into())
        );
        assert_eq!(aliases.len(), 1, "replaced, not added");
        let bare = topic_of(from_v5(v5_publish("", None), &mut aliases));
        assert!(bare.is_err_and(|e| e.contains("without a topic")));
    }

    #[test]
    fn mqtt_3_has_no_refusals_where_mqtt_5_has_reason_codes() {
        let id = NonZeroU16::MIN;
        let mut v3w = Wire::V3(v3::Codec::new(1024));
        let mut v5w = Wire::v5(1024);
        let mut b3 = BytesMut::new();
        let mut b5 = BytesMut::new();
        v3w.encode(Out::PubAck(id, Some(Refused::NotAuthorized)), &mut b3)
            .expect("v3");
        v5w.encode(Out::PubAck(id, Some(Refused::NotAuthorized)), &mut b5)
            .expect("v5");
        assert_eq!(&b3[..], &[0x40, 0x02, 0x00, 0x01], "a plain PUBACK");
        // Packet id, the reason code, and an empty property list.
        assert_eq!(
            &b5[..],
            &[0x40, 0x04, 0x00, 0x01, 0x87, 0x00],
            "not authorized"
        );
        b3.clear();
        v3w.encode(
            Out::Disconnect(v5::DisconnectReasonCode::PacketTooLarge),
            &mut b3,
        )
        .expect("v3");
        assert!(b3.is_empty(), "MQTT 3.1.1 servers do not send DISCONNECT");
    }
}
