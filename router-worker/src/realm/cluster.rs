//! The core's side of a cluster (CLUSTER.md): registrations of other
//! members' sessions, calls to callees on other members and calls from
//! callers on other members. Sans-IO like the rest of the core: what
//! crosses members leaves as [`Effect::ToMember`] and
//! [`Effect::Registry`], and comes back as [`Input::RemoteRpc`] and
//! [`Input::RemoteRegistry`].
//!
//! A member is one router worker of one node (`node-worker-epoch`).
//! Remote callees sit in the realm's own dealer, under their (global)
//! session ids, so routing, shared registrations and pattern matching
//! treat them like local ones; a call routed to one is forwarded whole to
//! its member, whose dealer runs it (INVOCATION, timeout, cancel,
//! progressive results) with the caller as a remote session, and whose
//! answers come back addressed to the caller.

use std::sync::Arc;

use bytes::Bytes;
use proto::errors::uri as wamp_uri;
use proto::message::{Call, code};
use proto::options::{InvokePolicy, RegisterOptions};
use proto::uri::MatchPolicy;
use proto::{Dict, Id, Message, Payload, Serializer, Value};
use tracing::{debug, warn};

use super::core::{Core, Effect, error_msg};

/// A registration to put into (or take out of) the cluster's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOp {
    /// Put (`true`) or delete.
    pub put: bool,
    pub session: Id,
    pub registration: Id,
    pub procedure: String,
    pub policy: MatchPolicy,
    pub invoke: InvokePolicy,
}

/// A `single` registration to claim cluster-wide before REGISTERED: the
/// directory's key for it is created only if absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub session: Id,
    pub request: Id,
    /// The directory key (`realm.p.policy.procedure-hex`).
    pub key: String,
}

/// What became of a [`Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// This registration holds the procedure cluster-wide.
    Won,
    /// Another node's registration holds it.
    Taken,
    /// The directory could not be asked (NATS or JetStream away).
    Unavailable,
}

/// A meta API query answered by every member (scatter-gather).
#[derive(Debug, Clone, PartialEq)]
pub struct Gather {
    pub caller: Id,
    pub request: Id,
    pub procedure: String,
    pub payload: Payload,
    /// This member's own answer.
    pub local: Result<Payload, (String, String)>,
}

/// The meta procedures whose answers span the cluster. (The
/// registration queries need no gathering: every node's dealer knows
/// every callee of the cluster, under the same registration ids.)
pub const GATHERED: [&str; 12] = [
    "wamp.session.count",
    "wamp.session.list",
    "wamp.session.get",
    "wamp.session.kill",
    "wamp.session.kill_by_authid",
    "wamp.session.kill_by_authrole",
    "wamp.subscription.list",
    "wamp.subscription.lookup",
    "wamp.subscription.match",
    "wamp.subscription.get",
    "wamp.subscription.list_subscribers",
    "wamp.subscription.count_subscribers",
];

/// A local answer with this error means "not on this node": the other
/// members may have it. Any other error (a bad argument, a refused
/// query) is the answer.
fn not_here(uri: &str) -> bool {
    uri == wamp_uri::NO_SUCH_SESSION || uri == wamp_uri::NO_SUCH_SUBSCRIPTION
}

/// A registration of another member, from the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// Put (`true`) or delete.
    pub put: bool,
    pub member: Arc<str>,
    pub session: Id,
    /// The registration's id on its own member.
    pub registration: Id,
    pub procedure: String,
    pub policy: MatchPolicy,
    pub invoke: InvokePolicy,
    /// The directory's revision of the entry: the cluster's order of
    /// registration (for `first` and `last`).
    pub revision: u64,
}

/// A call of a local caller running on another member.
#[derive(Debug, Clone)]
pub struct RemoteCall {
    pub member: Arc<str>,
    /// The callee it was routed to.
    pub callee: Id,
    /// The envelope sent, kept to route the call again should that
    /// member find its callee gone (none for a progressive call
    /// invocation, whose later parts follow the first).
    pub envelope: Option<Bytes>,
    /// Callees that already said they are unavailable.
    pub tried: Vec<Id>,
}

/// WAMP's error for a callee that cannot take a call now (rerouting).
const UNAVAILABLE: &str = "wamp.error.unavailable";

/// The kinds of member-to-member RPC records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call = 1,
    Cancel = 2,
    Deliver = 3,
}

/// The first byte of every frame: the layout of what follows. A frame of
/// another version (a node of another release) is dropped and logged.
pub const FRAME_VERSION: u8 = 2;

/// A record's flags.
const REROUTE: u8 = 1;
const IDENTITY: u8 = 2;

/// The addressing of one member-to-member RPC record: a fixed binary
/// header read without decoding anything else, before the WAMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head<'a> {
    kind: Kind,
    /// DELIVER of this router's own ERROR saying the callee is gone: the
    /// caller's member routes the call again.
    reroute: bool,
    /// DELIVER: the session addressed; CALL and CANCEL: the caller.
    session: Id,
    /// CALL: the callee the caller's member chose (0 otherwise).
    callee: Id,
    /// CALL and CANCEL: the caller's member ("" for DELIVER).
    from: &'a str,
    /// CALL with disclosure: the caller's authid and authrole.
    identity: Option<(&'a str, &'a str)>,
}

impl<'a> Head<'a> {
    fn new(kind: Kind, session: Id) -> Self {
        Head {
            kind,
            reroute: false,
            session,
            callee: 0,
            from: "",
            identity: None,
        }
    }
}

/// One record: the head (kind, flags, session and callee as big-endian
/// u64, then `from` and, with [`IDENTITY`], authid and authrole, each
/// a u16 length and UTF-8), then the WAMP message, MessagePack-encoded
/// once (its payload is neither wrapped nor copied again). `None`: a
/// string too long for its length field, or a value MessagePack cannot
/// carry.
fn record(head: &Head<'_>, msg: &Message) -> Option<Bytes> {
    fn put_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
        out.extend_from_slice(&u16::try_from(s.len()).ok()?.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
        Some(())
    }
    let mut out = Vec::with_capacity(160);
    let flags =
        if head.reroute { REROUTE } else { 0 } | if head.identity.is_some() { IDENTITY } else { 0 };
    out.extend_from_slice(&[head.kind as u8, flags]);
    out.extend_from_slice(&head.session.to_be_bytes());
    out.extend_from_slice(&head.callee.to_be_bytes());
    put_str(&mut out, head.from)?;
    if let Some((authid, authrole)) = head.identity {
        put_str(&mut out, authid)?;
        put_str(&mut out, authrole)?;
    }
    Serializer::MsgPack.encode(msg, &mut out).ok()?;
    Some(Bytes::from(out))
}

/// Read a record: its head, and the WAMP message after it (decoded, and
/// its MessagePack bytes).
fn open(bytes: &[u8]) -> Option<(Head<'_>, Message, &[u8])> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    fn u64_of(b: &mut &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(take(b, 8)?.try_into().ok()?))
    }
    fn str_of<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
        let len = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
        std::str::from_utf8(take(b, usize::from(len))?).ok()
    }
    let mut b = bytes;
    let [kind, flags] = *take(&mut b, 2)? else {
        return None;
    };
    let kind = match kind {
        1 => Kind::Call,
        2 => Kind::Cancel,
        3 => Kind::Deliver,
        _ => return None,
    };
    // Session ids are WAMP ids (1 to 2^53); a callee may be 0 (none).
    let session = u64_of(&mut b).filter(|id| (1..=proto::MAX_ID).contains(id))?;
    let callee = u64_of(&mut b).filter(|id| *id <= proto::MAX_ID)?;
    let from = str_of(&mut b)?;
    let identity = if flags & IDENTITY != 0 {
        Some((str_of(&mut b)?, str_of(&mut b)?))
    } else {
        None
    };
    // Arguments stay as the other node encoded them (see
    // `decode_forwarding`): a MessagePack peer here gets those bytes.
    let msg = Serializer::MsgPack.decode_forwarding(b).ok()?;
    let head = Head {
        kind,
        reroute: flags & REROUTE != 0,
        session,
        callee,
        from,
        identity,
    };
    Some((head, msg, b))
}

/// A frame: what one NATS message to a member carries, [`FRAME_VERSION`]
/// and then records, each after its length as a big-endian u32. A realm
/// gathers the records it sends a member while it handles a batch of
/// input, and sends them as one frame.
#[derive(Debug, Default)]
pub struct Frame(Vec<u8>);

impl Frame {
    /// Add a record.
    pub fn push(&mut self, record: &[u8]) {
        if self.0.is_empty() {
            self.0.push(FRAME_VERSION);
        }
        // Records are far smaller than 4 GiB (NATS takes at most 64 MiB).
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(record);
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No record yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The frame to send; this one starts again empty.
    pub fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.0))
    }
}

/// The records of a frame, in order; `Err` for a frame of another
/// version. A record cut short ends the frame.
fn records(frame: &[u8]) -> Result<impl Iterator<Item = &[u8]>, u8> {
    let (&version, mut rest) = frame.split_first().unwrap_or((&FRAME_VERSION, &[]));
    if version != FRAME_VERSION {
        return Err(version);
    }
    Ok(std::iter::from_fn(move || {
        let (len, after) = rest.split_first_chunk::<4>()?;
        let (record, after) = after.split_at_checked(u32::from_be_bytes(*len) as usize)?;
        rest = after;
        Some(record)
    }))
}

/// A meta query for the other members, encoded (a MessagePack CALL).
pub fn meta_request(procedure: &str, payload: &Payload) -> Option<Bytes> {
    let msg = Message::Call(Call {
        request: 1,
        options: Dict::new(),
        procedure: procedure.to_owned(),
        payload: payload.clone(),
    });
    Serializer::MsgPack
        .encode_to_vec(&msg)
        .ok()
        .map(Bytes::from)
}

/// A member's answer to a meta query, encoded (RESULT or ERROR).
pub fn meta_answer(answer: &Result<Payload, (String, String)>) -> Option<Bytes> {
    let msg = match answer {
        Ok(p) => Message::Result(proto::message::CallResult {
            request: 1,
            details: Dict::new(),
            payload: p.clone(),
        }),
        Err((uri, text)) => error_msg(code::CALL, 1, uri, text.clone()),
    };
    Serializer::MsgPack
        .encode_to_vec(&msg)
        .ok()
        .map(Bytes::from)
}

/// Read a member's answer.
pub fn read_meta_answer(bytes: &[u8]) -> Option<Result<Payload, (String, String)>> {
    match Serializer::MsgPack.decode(bytes).ok()? {
        Message::Result(r) => Some(Ok(r.payload)),
        Message::Error(e) => Some(Err((
            e.error,
            e.payload
                .args
                .first()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ))),
        _ => None,
    }
}

/// Read a meta query from another member.
pub fn read_meta_request(bytes: &[u8]) -> Option<(String, Payload)> {
    match Serializer::MsgPack.decode(bytes).ok()? {
        Message::Call(c) => Some((c.procedure, c.payload)),
        _ => None,
    }
}

/// One answer from the member's own answer and the others': counts add
/// up, lists join, a session is found (or killed) wherever it is.
pub fn merge(
    procedure: &str,
    local: Result<Payload, (String, String)>,
    remote: Vec<Result<Payload, (String, String)>>,
) -> Result<Payload, (String, String)> {
    let first = |p: &Payload| p.args.first().cloned();
    match procedure {
        "wamp.session.count"
        | "wamp.session.kill_by_authrole"
        | "wamp.subscription.count_subscribers" => {
            let mut n = local.as_ref().ok().and_then(first).and_then(|v| v.as_u64());
            for r in remote.iter().flatten() {
                if let Some(m) = first(r).and_then(|v| v.as_u64()) {
                    n = Some(n.unwrap_or(0) + m);
                }
            }
            match n {
                Some(n) => Ok(Payload::args(vec![Value::from(n)])),
                None => local,
            }
        }
        "wamp.subscription.list" => {
            // {"exact": [...], "prefix": [...], "wildcard": [...]}: each
            // list joined.
            let mut out = Dict::new();
            for r in std::iter::once(&local).chain(remote.iter()).flatten() {
                let Some(Value::Dict(d)) = first(r) else {
                    continue;
                };
                for (policy, l) in d {
                    let Value::List(l) = l else { continue };
                    let Value::List(all) = out
                        .entry(policy.clone())
                        .or_insert_with(|| Value::List(Vec::new()))
                    else {
                        continue;
                    };
                    all.extend(l.iter().cloned());
                }
            }
            if local.is_err() && remote.iter().all(Result::is_err) {
                return local;
            }
            for l in out.values_mut() {
                if let Value::List(l) = l {
                    l.sort_unstable_by_key(|v| v.as_id());
                    l.dedup();
                }
            }
            Ok(Payload::args(vec![Value::Dict(out)]))
        }
        "wamp.subscription.lookup" => {
            // The same id wherever the subscription is; null if nowhere.
            let found = std::iter::once(&local)
                .chain(remote.iter())
                .flatten()
                .find_map(|r| first(r).filter(|v| !matches!(v, Value::Null)));
            match found {
                Some(v) => Ok(Payload::args(vec![v])),
                None => local,
            }
        }
        "wamp.subscription.match" => {
            // A refusal here is the answer.
            let local = local?;
            let mut all: Vec<Id> = Vec::new();
            for r in std::iter::once(&local).chain(remote.iter().flatten()) {
                if let Some(Value::List(l)) = first(r) {
                    all.extend(l.iter().filter_map(Value::as_id));
                }
            }
            all.sort_unstable();
            all.dedup();
            Ok(Payload::args(vec![if all.is_empty() {
                Value::Null
            } else {
                Value::List(all.into_iter().map(Value::from).collect())
            }]))
        }
        "wamp.session.list"
        | "wamp.session.kill_by_authid"
        | "wamp.subscription.list_subscribers" => {
            let mut all: Vec<Id> = Vec::new();
            for r in std::iter::once(&local).chain(remote.iter()).flatten() {
                if let Some(Value::List(l)) = first(r) {
                    all.extend(l.iter().filter_map(Value::as_id));
                }
            }
            if local.is_err() && remote.iter().all(Result::is_err) {
                return local;
            }
            all.sort_unstable();
            all.dedup();
            Ok(Payload::args(vec![Value::List(
                all.into_iter().map(Value::from).collect(),
            )]))
        }
        _ => {
            if local.is_ok() {
                return local;
            }
            remote.into_iter().find(Result::is_ok).unwrap_or(local)
        }
    }
}

impl Core {
    /// In a clustered realm: a meta query whose answer spans the cluster
    /// goes to every member ([`Effect::Gather`]); `false` when it is this
    /// node's alone.
    pub(crate) fn gather(
        &mut self,
        session: Id,
        request: Id,
        procedure: &str,
        payload: Payload,
    ) -> bool {
        if !self.clustered || !GATHERED.contains(&procedure) {
            return false;
        }
        let local = self
            .meta_call(session, procedure, payload.clone())
            .map_err(|(uri, text)| (uri.to_owned(), text));
        if let Err((uri, text)) = &local
            && !not_here(uri)
        {
            // Refused or malformed here: the same everywhere.
            let (uri, text) = (uri.clone(), text.clone());
            self.send(session, error_msg(code::CALL, request, &uri, text));
            return true;
        }
        self.fx.push(Effect::Gather(Box::new(Gather {
            caller: session,
            request,
            procedure: procedure.to_owned(),
            payload,
            local,
        })));
        true
    }

    /// The other members answered (or the time ran out).
    pub(crate) fn gathered(&mut self, g: Gather, remote: Vec<Result<Payload, (String, String)>>) {
        match merge(&g.procedure, g.local, remote) {
            Ok(payload) => self.send(
                g.caller,
                Message::Result(proto::message::CallResult {
                    request: g.request,
                    details: Dict::new(),
                    payload,
                }),
            ),
            Err((uri, text)) => self.send(g.caller, error_msg(code::CALL, g.request, &uri, text)),
        }
    }

    /// This member's part of another member's meta query.
    pub(crate) fn meta_local(
        &mut self,
        procedure: &str,
        payload: Payload,
    ) -> Result<Payload, (String, String)> {
        if !GATHERED.contains(&procedure) {
            return Err((wamp_uri::NO_SUCH_PROCEDURE.to_owned(), procedure.to_owned()));
        }
        self.meta_call(super::core::INTERNAL, procedure, payload)
            .map_err(|(uri, text)| (uri.to_owned(), text))
    }

    /// A REGISTER with invoke `single` in a clustered realm: claim the
    /// procedure in the directory first; REGISTERED (or ERROR) follows
    /// [`Core::claim_done`].
    pub(crate) fn claim_single(
        &mut self,
        session: Id,
        r: proto::message::Register,
        policy: MatchPolicy,
    ) {
        let key = format!("p.{}.{}", policy, hex::encode(r.procedure.as_bytes()));
        let claim = Claim {
            session,
            request: r.request,
            key: key.clone(),
        };
        self.claims.insert((session, r.request), (r, key));
        self.fx.push(Effect::Claim(Box::new(claim)));
    }

    /// The directory answered a claim.
    pub(crate) fn claim_done(&mut self, session: Id, request: Id, outcome: Claimed) {
        // Every claim is answered once.
        let Some((r, key)) = self.claims.remove(&(session, request)) else {
            return;
        };
        let fail = |core: &mut Core, uri: &str, text: String| {
            core.send(session, error_msg(code::REGISTER, request, uri, text));
        };
        match outcome {
            Claimed::Won if self.sessions.contains_key(&session) => {
                match self.register_now(session, r) {
                    // Registered: its claim goes when it does.
                    Some(id) => {
                        self.claimed.insert(id, key);
                    }
                    None => self.release(key),
                }
            }
            // The session left meanwhile: let the procedure go.
            Claimed::Won => self.release(key),
            Claimed::Taken => fail(
                self,
                wamp_uri::PROCEDURE_ALREADY_EXISTS,
                format!(
                    "procedure {:?} is already registered (invoke policy single) on another node of the cluster",
                    r.procedure
                ),
            ),
            Claimed::Unavailable => fail(
                self,
                UNAVAILABLE,
                format!(
                    "a single registration of {:?} must be checked across the cluster, and the cluster's directory cannot be reached now: try again",
                    r.procedure
                ),
            ),
        }
    }

    /// Give up a claimed procedure.
    fn release(&mut self, key: String) {
        self.fx.push(Effect::Release(Box::new(key)));
    }

    /// In a clustered realm: tell the directory about a local registration.
    pub(crate) fn registry(&mut self, op: RegistryOp) {
        if self.clustered {
            self.fx.push(Effect::Registry(Box::new(op)));
        }
    }

    /// A registration of another member appeared or went away (or one
    /// of this member's got its place in the directory).
    pub(crate) fn remote_registry(&mut self, e: RegistryEntry) {
        let key = (e.session, e.registration);
        if self.member.as_ref() == Some(&e.member) {
            if !e.put {
                return;
            }
            let lives = self.sessions.contains_key(&e.session)
                && self
                    .dealer
                    .get(e.registration)
                    .is_some_and(|r| r.callees.contains(&e.session));
            if lives {
                self.dealer.rank(e.registration, e.session, e.revision);
            } else {
                // An entry of a registration that ended while the
                // directory could not be told (NATS away): it goes now.
                self.registry(RegistryOp {
                    put: false,
                    session: e.session,
                    registration: e.registration,
                    procedure: String::new(),
                    policy: MatchPolicy::Exact,
                    invoke: InvokePolicy::Single,
                });
            }
            return;
        }
        if e.put {
            if let Some(&local) = self.remote_regs.get(&key) {
                // Put again (after a member took it for dead): its new
                // place.
                self.dealer.rank(local, e.session, e.revision);
                return;
            }
            match self
                .dealer
                .register(e.session, &e.procedure, e.policy, e.invoke)
            {
                Ok(local) => {
                    debug!(member = %e.member, session = e.session, procedure = %e.procedure, "remote callee known");
                    self.dealer.rank(local, e.session, e.revision);
                    self.remote_regs.insert(key, local);
                    *self.remote_callees.entry(e.session).or_insert(0) += 1;
                    self.remote.insert(e.session, e.member);
                }
                Err(err) => warn!(
                    member = %e.member,
                    procedure = %e.procedure,
                    "a registration of another node conflicts with this node's ({err:?}): calls here keep going to this node's callee"
                ),
            }
        } else if let Some(local) = self.remote_regs.remove(&key) {
            self.dealer.unregister(e.session, local);
            if let Some(n) = self.remote_callees.get_mut(&e.session) {
                *n -= 1;
                if *n == 0 {
                    self.remote_callees.remove(&e.session);
                    self.forget_remote(e.session);
                }
            }
        }
    }

    /// Drop what is known of a remote session once nothing refers to it.
    fn forget_remote(&mut self, session: Id) {
        if !self.remote_callees.contains_key(&session) && self.dealer.calls_of(session) == 0 {
            self.remote.remove(&session);
        }
    }

    /// The member a session lives on, if it is remote.
    pub(crate) fn member_of(&self, session: Id) -> Option<Arc<str>> {
        if self.remote.is_empty() {
            return None;
        }
        self.remote.get(&session).cloned()
    }

    /// A message for a remote session: to its member, addressed to it.
    pub(crate) fn send_remote(&mut self, member: Arc<str>, to: Id, msg: Message) {
        self.deliver(member, to, msg, false);
    }

    /// A message for a remote session; `reroute`: an ERROR of this
    /// router's own saying the callee is unavailable, so the caller's
    /// member routes the call to another callee.
    fn deliver(&mut self, member: Arc<str>, to: Id, msg: Message, reroute: bool) {
        let last = match &msg {
            Message::Result(r) => r.details.get("progress") != Some(&Value::Bool(true)),
            Message::Error(_) => true,
            _ => false,
        };
        let head = Head {
            reroute,
            ..Head::new(Kind::Deliver, to)
        };
        if let Some(b) = record(&head, &msg) {
            self.fx.push(Effect::ToMember(Box::new((member, b))));
        }
        if last {
            // A finished call of a remote caller: forget the caller when
            // nothing else refers to it.
            self.forget_remote(to);
        }
    }

    /// A CALL whose callee is on another member: forward it whole, with
    /// the caller's identity for disclosure. `tried`: callees that said
    /// they are unavailable (a call routed again).
    pub(crate) fn forward_call(
        &mut self,
        member: Arc<str>,
        session: Id,
        callee: Id,
        disclose: bool,
        c: Call,
        tried: Vec<Id>,
    ) {
        let identity = if disclose {
            self.sessions
                .get(&session)
                .map(|e| (e.info.authid.as_ref(), e.info.authrole.as_ref()))
        } else {
            None
        };
        let head = Head {
            callee,
            from: self.member.as_deref().unwrap_or(""),
            identity,
            ..Head::new(Kind::Call, session)
        };
        let request = c.request;
        let progressive = proto::options::flag(&c.options, "progress");
        match record(&head, &Message::Call(c)) {
            Some(b) => {
                self.remote_calls.insert(
                    (session, request),
                    RemoteCall {
                        member: member.clone(),
                        callee,
                        envelope: (!progressive).then(|| b.clone()),
                        tried,
                    },
                );
                self.fx.push(Effect::ToMember(Box::new((member, b))));
            }
            None => self.send(
                session,
                error_msg(
                    code::CALL,
                    request,
                    wamp_uri::NO_AVAILABLE_CALLEE,
                    "the call could not be encoded for the callee's node".into(),
                ),
            ),
        }
    }

    /// A CALL continuing (progressive) or a CANCEL of a call that went to
    /// another member: after it.
    pub(crate) fn forward_to_call(&mut self, session: Id, request: Id, msg: Message) -> bool {
        let Some(member) = self
            .remote_calls
            .get(&(session, request))
            .map(|rc| rc.member.clone())
        else {
            return false;
        };
        let kind = if matches!(msg, Message::Cancel(_)) {
            Kind::Cancel
        } else {
            Kind::Call
        };
        let head = Head {
            from: self.member.as_deref().unwrap_or(""),
            ..Head::new(kind, session)
        };
        if let Some(b) = record(&head, &msg) {
            self.fx.push(Effect::ToMember(Box::new((member, b))));
        }
        true
    }

    /// A frame of RPC records from another member.
    pub(crate) fn remote_rpc(&mut self, frame: &Bytes) {
        match records(frame) {
            Ok(records) => {
                for r in records {
                    self.remote_record(frame.slice_ref(r));
                }
            }
            Err(version) => warn!(
                version,
                expected = FRAME_VERSION,
                "an RPC message from another node has another layout (a node of another Trellis release?): dropped; every node of a cluster must run the same release"
            ),
        }
    }

    /// One RPC record from another member.
    fn remote_record(&mut self, record: Bytes) {
        let Some((head, msg, encoded)) = open(&record) else {
            warn!("an RPC message from another node could not be decoded: dropped");
            return;
        };
        match (head.kind, msg) {
            (Kind::Deliver, msg) => {
                let to = head.session;
                let Some(request) = request_of(&msg) else {
                    return;
                };
                // Only answers to calls still waiting here (not ones failed
                // when their callee's node went away).
                if !self.sessions.contains_key(&to)
                    || !self.remote_calls.contains_key(&(to, request))
                {
                    return;
                }
                let last = match &msg {
                    Message::Result(r) => r.details.get("progress") != Some(&Value::Bool(true)),
                    _ => true,
                };
                if last
                    && let Some(rc) = self.remote_calls.remove(&(to, request))
                    && head.reroute
                    && rc.envelope.is_some()
                {
                    return self.reroute_remote(to, rc, msg);
                }
                // The answer as the callee's node encoded it: a MessagePack
                // caller gets these bytes, not a second encoding.
                let bytes = record.slice_ref(encoded);
                self.send_encoded(to, msg, Serializer::MsgPack, bytes);
            }
            (Kind::Call, Message::Call(c)) => self.remote_call(&head, c),
            (Kind::Cancel, Message::Cancel(c)) => self.cancel(head.session, c),
            (kind, msg) => warn!(
                ?kind,
                message = msg.name(),
                "an unknown RPC message from another node: dropped"
            ),
        }
    }

    /// Member `member` is gone (dead, or unreachable with the backplane
    /// down): its callees leave this realm's dealer, calls running there
    /// fail at once, calls of its callers running here are abandoned.
    pub(crate) fn member_down(&mut self, member: &str, why: &str) {
        let gone: Vec<Id> = self
            .remote
            .iter()
            .filter(|(_, m)| &***m == member)
            .map(|(s, _)| *s)
            .collect();
        let regs: Vec<((Id, Id), Id)> = self
            .remote_regs
            .iter()
            .filter(|((s, _), _)| gone.contains(s))
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((session, remote_reg), local) in regs {
            self.remote_regs.remove(&(session, remote_reg));
            self.dealer.unregister(session, local);
        }
        for s in &gone {
            self.remote_callees.remove(s);
            // Calls its callers made here: the callees may stop.
            let removed = self.dealer.remove_session(*s);
            for p in &removed.abandoned_calls {
                self.cancel_timer(p);
                self.interrupt(p, proto::options::CancelMode::KillNoWait);
            }
            self.remote.remove(s);
        }
        self.fail_remote_calls(Some(member), why);
        self.unreachable.retain(|m| &**m != member);
        if !gone.is_empty() {
            warn!(
                member,
                sessions = gone.len(),
                "{why}: its callees are gone from this realm"
            );
        }
    }

    /// The cluster's directory lost an entry of this router's (a member
    /// that thought it dead purged it): put it back if the registration
    /// lives.
    pub(crate) fn registry_lost(&mut self, session: Id, registration: Id) {
        if !self.sessions.contains_key(&session) {
            return;
        }
        let Some(r) = self.dealer.get(registration) else {
            return;
        };
        if !r.callees.contains(&session) {
            return;
        }
        let op = RegistryOp {
            put: true,
            session,
            registration,
            procedure: r.procedure.clone(),
            policy: r.policy,
            invoke: r.invoke,
        };
        self.registry(op);
    }

    /// The backplane went down (calls waiting on other members fail at
    /// once; new ones fail until it is back) or came back.
    pub(crate) fn link(&mut self, up: bool) {
        self.link_up = up;
        if up {
            return;
        }
        self.fail_remote_calls(None, "this node's link to the cluster is down");
    }

    /// A member stopped answering its heartbeats (`yes == false`), or
    /// answers again: while it does not, calls pass over its callees when
    /// another callee can take them.
    pub(crate) fn reachable(&mut self, member: Arc<str>, yes: bool) {
        if yes {
            if self.unreachable.remove(&member) {
                debug!(%member, "a member answers again: calls go to its callees again");
            }
        } else {
            debug!(%member, "a member does not answer: calls pass over its callees");
            self.unreachable.insert(member);
        }
    }

    /// The callee is on a member that cannot be reached now (the link is
    /// down, or the member is silent).
    pub(crate) fn unreachable_callee(&self, callee: Id) -> bool {
        !self.remote.is_empty() && cut_off(&self.remote, &self.unreachable, self.link_up, callee)
    }

    /// Another callee of `registration` by its invoke policy, passing over
    /// `tried` and callees that cannot be reached.
    pub(crate) fn pick_reachable(&mut self, registration: Id, tried: &[Id]) -> Option<Id> {
        let (remote, unreachable, link_up) = (&self.remote, &self.unreachable, self.link_up);
        self.dealer.reroute(registration, &mut self.rng, |c| {
            tried.contains(&c) || cut_off(remote, unreachable, link_up, c)
        })
    }

    /// Run a routed call: here, or forwarded to the callee's member.
    pub(crate) fn run_call(
        &mut self,
        session: Id,
        c: Call,
        registration: Id,
        callee: Id,
        disclose: bool,
        tried: Vec<Id>,
    ) {
        if let Some(member) = self.member_of(callee) {
            return self.forward_call(member, session, callee, disclose, c, tried);
        }
        let disclosed = if disclose {
            self.sessions
                .get(&session)
                .map(|e| (e.info.authid.to_string(), e.info.authrole.to_string()))
        } else {
            None
        };
        self.invoke(session, c, registration, callee, disclosed);
    }

    /// The callee's member found the callee gone (its directory entry had
    /// not reached this member yet): route the call to another callee
    /// (WAMP's call rerouting), or answer `no_available_callee`.
    fn reroute_remote(&mut self, caller: Id, rc: RemoteCall, answer: Message) {
        let call = rc.envelope.as_deref().and_then(open);
        let Some((head, Message::Call(c), _)) = call else {
            return self.send(caller, answer);
        };
        let mut tried = rc.tried;
        tried.push(rc.callee);
        let picked = match self.dealer.lookup(&c.procedure).map(|r| r.id) {
            Some(registration) => self
                .pick_reachable(registration, &tried)
                .map(|callee| (registration, callee)),
            None => None,
        };
        match picked {
            Some((registration, callee)) => {
                debug!(procedure = %c.procedure, "call routed again: its callee was gone");
                let disclose = head.identity.is_some();
                self.run_call(caller, c, registration, callee, disclose, tried);
            }
            None => self.send(
                caller,
                error_msg(
                    code::CALL,
                    c.request,
                    wamp_uri::NO_AVAILABLE_CALLEE,
                    format!(
                        "no callee of {:?} is available now ({} tried): try again",
                        c.procedure,
                        tried.len()
                    ),
                ),
            ),
        }
    }

    /// Calls of local callers waiting on another member (`member`, or any
    /// with `None`) fail at once with `wamp.error.canceled`.
    fn fail_remote_calls(&mut self, member: Option<&str>, why: &str) {
        let failed: Vec<(Id, Id)> = self
            .remote_calls
            .iter()
            .filter(|(_, rc)| member.is_none_or(|x| &*rc.member == x))
            .map(|(k, _)| *k)
            .collect();
        for (caller, request) in failed {
            self.remote_calls.remove(&(caller, request));
            self.send(
                caller,
                error_msg(
                    code::CALL,
                    request,
                    wamp_uri::CANCELED,
                    format!("callee disconnected from in-flight request ({why})"),
                ),
            );
        }
    }

    /// A call from a caller on another member to a callee here.
    fn remote_call(&mut self, head: &Head<'_>, c: Call) {
        let (caller, callee) = (head.session, head.callee);
        if head.from.is_empty() {
            return;
        }
        let from: Arc<str> = match self.remote.get(&caller) {
            Some(m) if **m == *head.from => m.clone(),
            _ => head.from.into(),
        };
        self.remote.insert(caller, from.clone());
        if let Some(p) = self.dealer.pending_for_caller(caller, c.request) {
            return self.continue_progressive(caller, p, c);
        }
        // The caller's member chose this callee: it must still be here,
        // registered for the procedure.
        let registration = self
            .dealer
            .lookup(&c.procedure)
            .filter(|r| r.callees.contains(&callee))
            .map(|r| r.id);
        let Some(registration) = registration.filter(|_| self.sessions.contains_key(&callee))
        else {
            // The caller's member had not heard yet: it routes the call
            // to another callee, if there is one.
            let text = format!(
                "the callee of {:?} on this node is gone: call again",
                c.procedure
            );
            return self.deliver(
                from,
                caller,
                error_msg(code::CALL, c.request, UNAVAILABLE, text),
                true,
            );
        };
        let disclosed = head.identity.map(|(a, r)| (a.to_owned(), r.to_owned()));
        self.invoke(caller, c, registration, callee, disclosed);
    }

    /// Directory entries for a local registration (REGISTER accepted).
    pub(crate) fn registered_locally(
        &mut self,
        session: Id,
        registration: Id,
        procedure: &str,
        options: &Dict,
    ) {
        if !self.clustered {
            return;
        }
        let Ok(RegisterOptions { policy, invoke, .. }) = RegisterOptions::parse(options) else {
            return;
        };
        self.registry(RegistryOp {
            put: true,
            session,
            registration,
            procedure: procedure.to_owned(),
            policy,
            invoke,
        });
    }

    /// Directory entries for a local registration that ended.
    pub(crate) fn unregistered_locally(&mut self, session: Id, registration: Id) {
        if let Some(key) = self.claimed.remove(&registration) {
            self.release(key);
        }
        self.registry(RegistryOp {
            put: false,
            session,
            registration,
            procedure: String::new(),
            policy: MatchPolicy::Exact,
            invoke: InvokePolicy::Single,
        });
    }
}

/// A remote callee whose member cannot be reached now: the link is down,
/// or the member is silent.
fn cut_off(
    remote: &crate::fast::HashMap<Id, Arc<str>>,
    unreachable: &crate::fast::HashSet<Arc<str>>,
    link_up: bool,
    callee: Id,
) -> bool {
    remote
        .get(&callee)
        .is_some_and(|m| !link_up || unreachable.contains(m))
}

/// The request id a RESULT or ERROR answers.
fn request_of(msg: &Message) -> Option<Id> {
    match msg {
        Message::Result(r) => Some(r.request),
        Message::Error(e) => Some(e.request),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_merge_across_members() {
        let n = |x: u64| Ok(Payload::args(vec![Value::from(x)]));
        assert_eq!(merge("wamp.session.count", n(2), vec![n(3), n(4)]), n(9));
        let l = |v: &[u64]| {
            Ok(Payload::args(vec![Value::List(
                v.iter().map(|&x| Value::from(x)).collect(),
            )]))
        };
        assert_eq!(
            merge("wamp.session.list", l(&[5, 1]), vec![l(&[3]), l(&[1, 9])]),
            l(&[1, 3, 5, 9])
        );
        let missing: Result<Payload, (String, String)> =
            Err(("wamp.error.no_such_session".into(), "no".into()));
        assert_eq!(
            merge(
                "wamp.session.get",
                missing.clone(),
                vec![missing.clone(), n(7)]
            ),
            n(7)
        );
        assert_eq!(
            merge("wamp.session.get", missing.clone(), vec![missing.clone()]),
            missing
        );
        // Subscriptions: the same ids everywhere, joined.
        let d = |e: &[u64], p: &[u64]| {
            let l = |v: &[u64]| Value::List(v.iter().map(|&x| Value::from(x)).collect());
            Ok(Payload::args(vec![Value::Dict(proto::dict! {
                "exact" => l(e), "prefix" => l(p), "wildcard" => l(&[]),
            })]))
        };
        assert_eq!(
            merge(
                "wamp.subscription.list",
                d(&[5, 1], &[]),
                vec![d(&[1, 3], &[8]), missing.clone()]
            ),
            d(&[1, 3, 5], &[8])
        );
        let null = Ok(Payload::args(vec![Value::Null]));
        assert_eq!(
            merge(
                "wamp.subscription.lookup",
                null.clone(),
                vec![null.clone(), n(7)]
            ),
            n(7)
        );
        assert_eq!(
            merge("wamp.subscription.lookup", null.clone(), vec![null.clone()]),
            null
        );
        assert_eq!(
            merge(
                "wamp.subscription.match",
                null.clone(),
                vec![l(&[4, 2]), l(&[2])]
            ),
            l(&[2, 4])
        );
        assert_eq!(
            merge("wamp.subscription.match", null.clone(), vec![null.clone()]),
            null
        );
        let nosub: Result<Payload, (String, String)> =
            Err(("wamp.error.no_such_subscription".into(), "no".into()));
        assert_eq!(
            merge(
                "wamp.subscription.count_subscribers",
                nosub.clone(),
                vec![n(2), n(3)]
            ),
            n(5)
        );
        assert_eq!(
            merge(
                "wamp.subscription.list_subscribers",
                l(&[9]),
                vec![nosub.clone(), l(&[4])]
            ),
            l(&[4, 9])
        );
        assert_eq!(
            merge(
                "wamp.subscription.count_subscribers",
                nosub.clone(),
                vec![nosub.clone()]
            ),
            nosub
        );
        assert!(not_here("wamp.error.no_such_session") && !not_here("wamp.error.not_authorized"));
        let req = meta_request("wamp.session.count", &Payload::default()).unwrap();
        assert_eq!(
            read_meta_request(&req).map(|(p, _)| p).as_deref(),
            Some("wamp.session.count")
        );
        assert_eq!(read_meta_answer(&meta_answer(&n(3)).unwrap()), Some(n(3)));
        assert_eq!(
            read_meta_answer(&meta_answer(&missing).unwrap()),
            Some(missing)
        );
    }

    #[test]
    fn records_round_trip_in_frames() {
        let call = Message::Call(Call {
            request: 7,
            options: proto::dict! { "timeout" => 100u64 },
            procedure: "com.x".into(),
            payload: Payload::args(vec![Value::from(1u64)]),
        });
        let head = Head {
            callee: 9,
            from: "node1-worker-001-5",
            identity: Some(("alice", "user")),
            ..Head::new(Kind::Call, 42)
        };
        let b = record(&head, &call).unwrap();
        let (read, mut msg, encoded) = open(&b).unwrap();
        assert_eq!(read, head);
        // The arguments come as the other node encoded them, for a
        // MessagePack peer here to get as they are.
        let raw = msg
            .payload()
            .and_then(|p| p.raw.as_ref())
            .expect("kept as bytes");
        assert_eq!(raw.serializer(), Serializer::MsgPack);
        msg.payload_mut().unwrap().decode_raw().unwrap();
        assert_eq!(msg, call);
        assert_eq!(
            encoded,
            Serializer::MsgPack.encode_to_vec(&call).unwrap(),
            "the message's own MessagePack bytes, for a MessagePack session to use as they are"
        );
        let answer = error_msg(code::CALL, 7, UNAVAILABLE, "gone".into());
        let deliver = Head {
            reroute: true,
            ..Head::new(Kind::Deliver, 42)
        };
        let d = record(&deliver, &answer).unwrap();
        let (read, mut msg, _) = open(&d).unwrap();
        msg.payload_mut().unwrap().decode_raw().unwrap();
        assert_eq!((read, msg), (deliver, answer));
        // Malformed records are refused, never read past their end.
        assert!(open(b"garbage").is_none());
        assert!(open(&[9, 0]).is_none(), "an unknown kind");
        assert!(open(&b[..b.len() - 1]).is_none(), "a cut message");
        assert!(open(&b[..20]).is_none(), "a cut head");
        let mut zero = b.to_vec();
        zero[2..10].copy_from_slice(&0u64.to_be_bytes());
        assert!(open(&zero).is_none(), "session id 0");
        let mut big = b.to_vec();
        big[10..18].copy_from_slice(&(proto::MAX_ID + 1).to_be_bytes());
        assert!(open(&big).is_none(), "a callee id beyond 2^53");
        let long = "x".repeat(70_000);
        let too_long = Head {
            from: &long,
            ..head
        };
        assert!(record(&too_long, &call).is_none(), "a string over 64 KiB");

        // Frames: records in order, one version byte first.
        let mut f = Frame::default();
        assert!(f.is_empty());
        f.push(&b);
        f.push(&d);
        let bytes = f.take();
        assert!(f.is_empty(), "taken: the frame starts again");
        assert_eq!(bytes[0], FRAME_VERSION);
        let got: Vec<&[u8]> = records(&bytes).unwrap().collect();
        assert_eq!(got, vec![&b[..], &d[..]]);
        // A cut frame yields the whole records before the cut.
        let got: Vec<&[u8]> = records(&bytes[..bytes.len() - 1]).unwrap().collect();
        assert_eq!(got, vec![&b[..]]);
        assert_eq!(records(&[1, 0, 0, 0, 0]).err(), Some(1), "another version");
        assert_eq!(records(&[]).map(Iterator::count).ok(), Some(0));
    }
}
