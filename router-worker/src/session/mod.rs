//! One task per connection: the WAMP session state machine over a transport.
//!
//! Shaped like mini-redis's `Handler::run`: the opening handshake under a
//! deadline (HELLO, authentication, WELCOME), then a `select!` over the
//! transport, the session's bounded outbound queue, the realm's kill switch
//! and router shutdown. A protocol violation ends this session with ABORT
//! `wamp.error.protocol_violation` and a reason; nothing else notices.

mod counters;
pub mod stats;
pub mod transport;

use counters::Traffic;
pub use counters::*;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use proto::errors::uri as wamp_uri;
use proto::message::{Abort, Goodbye, Hello, Welcome, code};
use proto::{Dict, Id, Message, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, field, info, info_span, warn};

use crate::auth::{self, AuthSettings, Outcome, Principal, Refusal};
use crate::outbound::{Next, OutMsg, OutboxReceiver, outbox};
use crate::park::{KeptSpan, PARK_AFTER, PARK_FIRST, Parked, ParkedIo, SessionFuture, Sleeper};
use crate::realm::{
    ClientFeatures, RealmCommand, RealmHandle, Sent, SessionInfo, SessionLink, TransportInfo,
};
use crate::realms::Realms;

use self::transport::{CloseKind, Queued, Transport, TransportError};

/// Messages written per flush when the outbound queue has a backlog.
const WRITE_BATCH: usize = 256;
/// How long a closing message (ABORT, GOODBYE) may take to write.
const CLOSING_WRITE: Duration = Duration::from_secs(2);
/// How long the router waits for the client's GOODBYE on shutdown.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// Per-transport session behaviour.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Authentication methods, timeouts and the failure limiter.
    pub auth: Arc<AuthSettings>,
    /// Deadline for HELLO after the connection opens.
    pub hello_timeout: Duration,
    /// Capacity of the session's outbound queue.
    pub max_queue: usize,
    /// Calls the session may have in flight.
    pub max_calls: usize,
    /// Ping a silent peer after the first, close it after the second
    /// duration without an answer; `None`: never.
    pub keepalive: Option<(Duration, Duration)>,
    /// How long one write may stay blocked before the peer counts as gone.
    pub write_timeout: Duration,
    /// The transport's counters (metrics).
    pub counters: Arc<TransportCounters>,
    /// The router's `options.compat`: the reason of the GOODBYE reply.
    pub compat: trellis_config::router::Compat,
}

/// The features Trellis announces in WELCOME: exactly those that work and
/// are tested end to end.
pub fn router_roles() -> Dict {
    let broker = proto::dict! {
        "publisher_exclusion" => true,
        "publisher_identification" => true,
        "subscriber_blackwhite_listing" => true,
        "pattern_based_subscription" => true,
        "event_retention" => true,
        "event_history" => true,
        "subscription_meta_api" => true,
        "session_meta_api" => true,
        "payload_passthru_mode" => true,
    };
    let dealer = proto::dict! {
        "caller_identification" => true,
        "progressive_call_results" => true,
        "pattern_based_registration" => true,
        "shared_registration" => true,
        "call_canceling" => true,
        "call_timeout" => true,
        "progressive_call_invocations" => true,
        "registration_meta_api" => true,
        "session_meta_api" => true,
        "testament_meta_api" => true,
        "payload_passthru_mode" => true,
    };
    proto::dict! {
        "broker" => proto::dict! { "features" => broker },
        "dealer" => proto::dict! { "features" => dealer },
    }
}

// The closing paths are boxed: they run once per session, and inline they
// would make every connection's task as large as their biggest state.
type Boxed<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The rest of an established session's step that could not be done at
/// once (boxed, so that it takes room only while it runs): `false` once
/// the session is closed.
type Rest<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

fn abort<'a, T: Transport>(
    t: &'a mut T,
    reason: &'a str,
    message: &'a str,
    kind: CloseKind,
) -> Boxed<'a> {
    Box::pin(abort_inner(t, reason, message, kind))
}

fn end_on_transport_error<'a, T: Transport>(
    t: &'a mut T,
    span: &'a Span,
    e: TransportError,
) -> Boxed<'a> {
    Box::pin(end_on_transport_error_inner(t, span, e))
}

fn goodbye_and_close<'a, T: Transport>(
    t: &'a mut T,
    reason: &'a str,
    message: &'a str,
) -> Boxed<'a> {
    Box::pin(goodbye_and_close_inner(t, reason, message))
}

fn goodbye_on_shutdown<T: Transport>(t: &mut T) -> Boxed<'_> {
    Box::pin(goodbye_on_shutdown_inner(t))
}

fn close<'a, T: Transport>(t: &'a mut T, kind: CloseKind, reason: &'a str) -> Boxed<'a> {
    Box::pin(t.close(kind, reason))
}

/// ABORT `wamp.close.system_shutdown`: the realm stopped under the session.
fn realm_stopped<T: Transport>(t: &mut T) -> Boxed<'_> {
    abort(
        t,
        wamp_uri::SYSTEM_SHUTDOWN,
        "the realm stopped",
        CloseKind::GoingAway,
    )
}

/// Log a protocol violation at warn level, then ABORT with
/// `wamp.error.protocol_violation` and close.
fn violation<'a, T: Transport>(t: &'a mut T, span: &Span, message: &'a str) -> Boxed<'a> {
    warn!(parent: span, reason = wamp_uri::PROTOCOL_VIOLATION, "{message}");
    abort(
        t,
        wamp_uri::PROTOCOL_VIOLATION,
        message,
        CloseKind::ProtocolError,
    )
}

/// Send ABORT (best effort, bounded in time) and close the transport.
async fn abort_inner<T: Transport>(t: &mut T, reason: &str, message: &str, kind: CloseKind) {
    let m = OutMsg::new(Message::Abort(Abort {
        details: proto::dict! { "message" => message },
        reason: reason.to_owned(),
    }));
    send_and_close(t, &m, kind, message).await;
}

/// The last message of a session, written within [`CLOSING_WRITE`], then
/// the close.
async fn send_and_close<T: Transport>(t: &mut T, m: &Arc<OutMsg>, kind: CloseKind, reason: &str) {
    let _ = tokio::time::timeout(CLOSING_WRITE, send_one(t, m)).await;
    t.close(kind, reason).await;
}

/// Write one message now: queue it and flush.
async fn send_one<T: Transport>(t: &mut T, msg: &Arc<OutMsg>) -> Result<(), TransportError> {
    t.feed(msg).await?;
    t.flush().await
}

/// Finish a closing action and end the opening phase without a session.
async fn quit(closing: impl Future<Output = ()>) -> Option<Box<Opened>> {
    closing.await;
    None
}

/// What the transport knows about a new connection.
pub struct Connection {
    /// The peer's address, for the failed-login limit (none for Unix
    /// sockets).
    pub peer_ip: Option<IpAddr>,
    /// Kind, protocol and peer, for the realm and the meta API.
    pub transport: TransportInfo,
    /// HTTP headers and request URI (WebSocket): for authenticators only.
    pub http: Dict,
    /// WebSocket with cookie tracking: the store and this connection's
    /// cookie (never logged, never in the details).
    pub cookie: Option<(Arc<crate::cookies::CookieStore>, String)>,
}

/// What the opening handshake hands to the established phase.
struct Opened {
    /// The realm's `stats` meter (with the session's short details).
    meter: Option<stats::StatsMeter>,
    /// The connection's tracking cookie, logged out by `wamp.close.logout`.
    cookie: Option<(Arc<crate::cookies::CookieStore>, String)>,
    realm: RealmHandle,
    id: Id,
    rx: OutboxReceiver,
    span: Span,
}

/// Run one WAMP session over `t` until it ends.
///
/// The opening handshake is a boxed future of its own: an idle connection
/// holds only the established phase's state, not the (larger) state of
/// HELLO, authentication and WELCOME. What the handshake needs (`conn`)
/// and hands over ([`Opened`]) travels in boxes, so that it takes no room
/// in the future for the session's whole life.
///
/// `settings` and `realms` are borrowed or owned (an owned pair makes a
/// future that stands alone, for a caller to box without another layer).
// An `async fn` would keep its arguments twice in the future.
#[allow(clippy::manual_async_fn)]
pub fn run<'a, T, S, R>(
    mut t: T,
    settings: S,
    realms: R,
    conn: Connection,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'a
where
    T: Transport,
    S: std::borrow::Borrow<SessionSettings> + Send + Sync + 'a,
    R: std::borrow::Borrow<Realms> + Send + Sync + 'a,
{
    let conn = Box::new(conn);
    async move {
        let settings: &SessionSettings = settings.borrow();
        let realms: &Realms = realms.borrow();
        let span = session_span();
        let Some(opened) = Box::pin(open(&mut t, settings, realms, conn, &shutdown, span)).await
        else {
            return;
        };
        let (j, mut traffic, on_join) = start(opened, &settings.counters);
        if on_join {
            publish_stats(&j.realm, &mut traffic, false).await;
        }
        let keep = Keep::new(settings);
        established(&mut t, &j, &shutdown, settings, &mut traffic, keep, ()).await;
        leave(&j, &mut traffic).await;
    }
}

/// A session's span, child of its connection's (peer, transport): it adds
/// the WAMP identity once it is known.
fn session_span() -> Span {
    info_span!(
        "session",
        session = field::Empty,
        realm = field::Empty,
        authid = field::Empty
    )
}

/// The end of a session: its last `stats`, and it leaves the realm.
async fn leave(j: &Joined, traffic: &mut Traffic) {
    if traffic.meter.as_ref().is_some_and(|m| m.on_leave()) {
        publish_stats(&j.realm, traffic, true).await;
    }
    let _ = j.realm.send(RealmCommand::Leave { session: j.id }).await;
    info!(parent: j.span.get(), "session left");
}

/// Run one WAMP session over `t`, as [`run`] does, parking it while it
/// idles ([`crate::park`]) if its transport can: the output is the
/// session parked, or `None` once it has ended.
#[allow(clippy::manual_async_fn)]
pub fn run_parking<T, S>(
    mut t: T,
    settings: S,
    realms: Realms,
    conn: Connection,
    shutdown: CancellationToken,
) -> impl Future<Output = Option<Parked>> + Send + 'static
where
    T: Transport,
    S: std::borrow::Borrow<SessionSettings> + Send + Sync + 'static,
{
    let conn = Box::new(conn);
    // The opening handshake in a box of its own, made here: it owns the
    // transport until the session is joined, and is freed then, so that
    // the session's future holds the box's pointer, not the transport (the
    // joined session's state is in `Live`'s box).
    let opening = Box::pin(async move {
        let span = session_span();
        let opened = Box::pin(open(
            &mut t,
            settings.borrow(),
            &realms,
            conn,
            &shutdown,
            span,
        ))
        .await;
        drop(realms);
        let (j, traffic, on_join) = start(opened?, &settings.borrow().counters);
        let keep = Keep::new(settings.borrow());
        let live = Box::new(Live {
            t,
            j,
            traffic,
            keep,
            settings,
            shutdown,
        });
        Some((live, on_join))
    });
    async move {
        let (mut live, on_join) = opening.await?;
        if on_join {
            publish_stats(&live.j.realm, &mut live.traffic, false).await;
        }
        live.phase().await
    }
}

/// A joined session's whole state, in one box: what runs in the
/// established phase, and what waits in the lot while it is parked.
struct Live<T, S> {
    t: T,
    j: Joined,
    traffic: Traffic,
    keep: Keep,
    settings: S,
    shutdown: CancellationToken,
}

impl<T: Transport, S: std::borrow::Borrow<SessionSettings> + Send + Sync + 'static> Live<T, S> {
    /// The established phase until the session ends (`None`) or parks.
    async fn phase(mut self: Box<Self>) -> Option<Parked> {
        let Live {
            t,
            j,
            traffic,
            keep,
            settings,
            shutdown,
        } = &mut *self;
        let settings: &SessionSettings = (*settings).borrow();
        match established(t, j, shutdown, settings, traffic, *keep, Watch::default()).await {
            Ending::Idle(io, keep) => {
                self.keep = keep;
                Some(Parked { sleeper: self, io })
            }
            Ending::Closed => {
                leave(&self.j, &mut self.traffic).await;
                None
            }
        }
    }
}

impl<T: Transport, S: std::borrow::Borrow<SessionSettings> + Send + Sync + 'static> Sleeper
    for Live<T, S>
{
    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.j.rx.poll_any(cx).is_ready() {
            return std::task::Poll::Ready(());
        }
        self.t.poll_parked(cx)
    }

    fn deadline(&self) -> Option<std::time::Instant> {
        let keepalive = self
            .settings
            .borrow()
            .keepalive
            .map(|_| self.keep.keep_at.into_std());
        let stats = stats_at(&self.traffic).map(tokio::time::Instant::into_std);
        [self.t.deadline(), keepalive, stats]
            .into_iter()
            .flatten()
            .min()
    }

    fn resume(mut self: Box<Self>, io: Box<dyn crate::transport::Io>) -> SessionFuture {
        self.t.unpark(io);
        Box::pin(self.phase())
    }
}

/// What a parked session of transport `T` keeps (its one box), for the
/// size probes.
#[cfg(test)]
pub(crate) fn parked_size<T: Transport, S>() -> usize {
    std::mem::size_of::<Live<T, S>>()
}

/// The established phase's clock, kept while the session is parked.
#[derive(Clone, Copy)]
struct Keep {
    /// The next keepalive check.
    keep_at: tokio::time::Instant,
    /// When a keepalive ping went out, while its answer is awaited.
    pinged: Option<std::time::Instant>,
}

impl Keep {
    fn new(settings: &SessionSettings) -> Keep {
        Keep {
            keep_at: tokio::time::Instant::now() + keepalive_of(settings).0,
            pinged: None,
        }
    }
}

/// How the established phase ended.
enum Ending {
    /// The session is over.
    Closed,
    /// Quiet for a moment: the socket, taken out of the runtime, to
    /// park the session with, and the phase's clock to go on with.
    Idle(ParkedIo, Keep),
}

/// Unpack what the handshake handed over (outside the session's future,
/// so that only the parts take room there): the joined session (with its
/// `span`), its traffic, and whether `stats` are due on joining.
// The box is the point: `opened` travels boxed, and is freed here.
#[allow(clippy::boxed_local)]
fn start(opened: Box<Opened>, counters: &Arc<TransportCounters>) -> (Joined, Traffic, bool) {
    let Opened {
        realm,
        id,
        rx,
        meter,
        cookie,
        span,
    } = *opened;
    let mut traffic = Traffic::new(counters);
    traffic.cookie = cookie.map(Box::new);
    let on_join = meter.as_ref().is_some_and(|m| m.on_join());
    traffic.meter = meter.map(Box::new);
    let j = Joined {
        span: KeptSpan::new(span),
        realm,
        id,
        rx,
    };
    (j, traffic, on_join)
}

/// A joined session's identity and links, in one place: the established
/// phase takes one reference to it rather than one to each.
struct Joined {
    /// The session's span (with its id, realm and authid).
    span: KeptSpan,
    realm: RealmHandle,
    id: Id,
    /// The session's outbox.
    rx: OutboxReceiver,
}

async fn open<T: Transport>(
    t: &mut T,
    settings: &SessionSettings,
    realms: &Realms,
    conn: Box<Connection>,
    shutdown: &CancellationToken,
    span: Span,
) -> Option<Box<Opened>> {
    let Connection {
        peer_ip,
        transport,
        mut http,
        cookie,
    } = *conn;
    let serializer = t.serializer();

    // Opening handshake: HELLO within the deadline.
    let first = tokio::select! {
        _ = shutdown.cancelled() => return quit(close(t, CloseKind::GoingAway, "router shutting down")).await,
        r = tokio::time::timeout(settings.hello_timeout, t.recv()) => r,
    };
    let bytes = match first {
        Err(_) => {
            let msg = format!(
                "no HELLO within {} ms of connecting",
                settings.hello_timeout.as_millis()
            );
            debug!(parent: &span, "{msg}");
            return quit(abort(t, wamp_uri::TIMEOUT, &msg, CloseKind::ProtocolError)).await;
        }
        Ok(Err(e)) => return quit(end_on_transport_error(t, &span, e)).await,
        Ok(Ok(b)) => b,
    };
    let hello = match serializer.decode(&bytes) {
        Ok(Message::Hello(h)) => h,
        Ok(other) => {
            let msg = format!(
                "expected HELLO as the first message, received {}",
                other.name()
            );
            return quit(violation(t, &span, &msg)).await;
        }
        Err(e) => {
            let msg = format!("cannot decode HELLO: {e}");
            return quit(violation(t, &span, &msg)).await;
        }
    };
    if !hello.realm.is_empty()
        && let Err(e) = proto::uri::validate(&hello.realm, proto::uri::MatchPolicy::Exact, false)
    {
        let msg = format!("HELLO names no valid realm: {e}");
        return quit(abort(
            t,
            wamp_uri::INVALID_URI,
            &msg,
            CloseKind::ProtocolError,
        ))
        .await;
    }
    let features = match hello.details.get("roles") {
        Some(Value::Dict(r)) if !r.is_empty() => ClientFeatures::from_roles(r),
        _ => {
            let msg = "HELLO.Details.roles must be a non-empty dict naming the client's roles (publisher, subscriber, caller, callee)";
            return quit(violation(t, &span, msg)).await;
        }
    };
    let auth = &settings.auth;
    // The authid the client claims: the login limits count per address and
    // authid, so one user's attacker cannot lock out everyone behind a NAT.
    let claimed = match hello.details.get("authid") {
        Some(Value::Str(a)) if !a.is_empty() => Some(a.clone()),
        _ => None,
    };
    if let Some(ip) = peer_ip {
        match auth
            .limiter
            .gate(ip, claimed.as_deref(), std::time::Instant::now())
        {
            auth::Gate::Open => {}
            auth::Gate::Delay(pause) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            auth::Gate::Locked { wait, log } => {
                let msg = format!(
                    "too many failed authentication attempts for this authid from this address: try again in {} s",
                    wait.as_secs().max(1)
                );
                if log {
                    warn!(parent: &span, peer = %ip, authid = claimed.as_deref().unwrap_or(""),
                        "too many failed authentication attempts for this authid from this address: locked out until the failure window has passed (logged once per window)");
                }
                return quit(abort(
                    t,
                    wamp_uri::AUTHENTICATION_FAILED,
                    &msg,
                    CloseKind::Normal,
                ))
                .await;
            }
        }
    }
    let id: Id = rand::random_range(1..=proto::MAX_ID);
    // Authenticators see the transport with its HTTP details; the realm and
    // the meta API only ever get `TransportInfo`.
    let mut details = transport.to_dict();
    details.append(&mut http);
    let ctx = auth::Context {
        realms,
        session: id,
        transport: &details,
        internal: auth.internal,
        latency: Some(&settings.counters.authenticator),
        cookie: cookie.as_ref().and_then(|(store, c)| store.login(c)),
    };
    // Boxed: the handshake's state (authenticator calls, challenges) is
    // needed only now, so it must not size the connection's task.
    let principal = match Box::pin(handshake(t, auth, &hello, &ctx, shutdown)).await {
        Ok(p) => {
            TransportCounters::bump(&settings.counters.auth_ok);
            settings.counters.login(if p.authprovider == "cookie" {
                "cookie"
            } else {
                &p.authmethod
            });
            p
        }
        Err(None) => return None,
        Err(Some(r)) => {
            TransportCounters::bump(&settings.counters.auth_failed);
            auth.record_failure(peer_ip, claimed.as_deref(), &r);
            info!(parent: &span, realm = %hello.realm, reason = %r.reason, "session refused: {}", r.message);
            return quit(abort(t, &r.reason, &r.message, CloseKind::Normal)).await;
        }
    };
    let Some(realm) = realms.get(&principal.realm) else {
        let msg = format!("realm {:?} does not exist on this router", principal.realm);
        return quit(abort(t, wamp_uri::NO_SUCH_REALM, &msg, CloseKind::Normal)).await;
    };
    // A login by credentials: the cookie remembers it, for `cookie` logins.
    if let Some((store, c)) = &cookie
        && principal.authprovider != "cookie"
        && principal.authmethod != "anonymous"
    {
        store.set_login(
            c,
            crate::cookies::CookieLogin {
                authid: principal.authid.clone(),
                authrole: principal.authrole.clone(),
                authmethod: principal.authmethod.clone(),
                authprovider: principal.authprovider.clone(),
                realm: principal.realm.clone(),
            },
        );
    }
    let info = SessionInfo {
        authid: principal.authid.into_boxed_str(),
        authrole: principal.authrole.into_boxed_str(),
        authmethod: principal.authmethod.into_boxed_str(),
        authprovider: principal.authprovider.into_boxed_str(),
        serializer,
        features,
        transport,
        authextra: principal.extra,
        max_calls: settings.max_calls,
    };
    // Neither HELLO nor the HTTP details are needed from here on.
    drop(hello);
    drop(details);

    // Join the realm.
    let (tx, rx) = outbox(settings.max_queue);
    let (reply_tx, reply_rx) = oneshot::channel();
    let joined = realm
        .send(RealmCommand::Join {
            id,
            info: Box::new(info.clone()),
            link: SessionLink::Queue(tx),
            reply: reply_tx,
        })
        .await;
    match (joined, reply_rx.await) {
        (Ok(()), Ok(true)) => {}
        (Ok(()), Ok(false)) => {
            let msg = "session id collision: please reconnect";
            return quit(abort(t, wamp_uri::CLOSE_NORMAL, msg, CloseKind::Normal)).await;
        }
        _ => {
            return quit(abort(
                t,
                wamp_uri::SYSTEM_SHUTDOWN,
                "the realm is shutting down",
                CloseKind::GoingAway,
            ))
            .await;
        }
    }
    span.record("session", id);
    span.record("realm", &*realm.name);
    span.record("authid", info.authid.as_ref());
    let welcome = OutMsg::new(Message::Welcome(Welcome {
        session: id,
        details: proto::dict! {
            "realm" => &*realm.name,
            "authid" => info.authid.as_ref(),
            "authrole" => info.authrole.as_ref(),
            "authmethod" => info.authmethod.as_ref(),
            "authprovider" => info.authprovider.as_ref(),
            "authextra" => info.authextra.clone(),
            "roles" => router_roles(),
        },
    }));
    let sent = send_one(t, &welcome).await;
    if let Err(e) = sent {
        let _ = realm.send(RealmCommand::Leave { session: id }).await;
        return quit(end_on_transport_error(t, &span, e)).await;
    }
    info!(parent: &span, authrole = %info.authrole, serializer = serializer.name(), "session joined");
    // The realm's `stats`: this session's meter, and who it is in the
    // events (Crossbar.io's short session details).
    let meter = realm.session_stats().map(|cfg| {
        let who = proto::dict! {
            "realm" => &*realm.name,
            "session" => id,
            "authid" => info.authid.as_ref(),
            "authrole" => info.authrole.as_ref(),
        };
        stats::StatsMeter::new(who, cfg, serializer.name(), std::time::Instant::now())
    });
    Some(Box::new(Opened {
        realm,
        id,
        rx,
        meter,
        cookie,
        span,
    }))
}

/// Publish this session's statistics (`wamp.session.on_stats`), as the
/// realm's `stats` asks, and start a new cycle.
async fn publish_stats(realm: &RealmHandle, traffic: &mut Traffic, last: bool) {
    traffic.stats_due = false;
    let Some(m) = &mut traffic.meter else {
        return;
    };
    let stats = m.take(
        std::time::Instant::now(),
        std::time::SystemTime::now(),
        last,
    );
    let _ = realm
        .send(RealmCommand::SessionStats {
            args: vec![Value::Dict(m.who.clone()), Value::Dict(stats)],
        })
        .await;
}

/// HELLO → (CHALLENGE → AUTHENTICATE) → principal. `Err(None)` means the
/// connection went away or the router is stopping (nothing to send);
/// `Err(Some(r))` is a refusal to send as ABORT.
async fn handshake<T: Transport>(
    t: &mut T,
    auth: &AuthSettings,
    hello: &Hello,
    ctx: &auth::Context<'_>,
    shutdown: &CancellationToken,
) -> Result<Principal, Option<Refusal>> {
    let outcome = tokio::select! {
        _ = shutdown.cancelled() => return Err(None),
        r = auth.hello(hello, ctx) => r.map_err(Some)?,
    };
    let (challenge, pending) = match outcome {
        Outcome::Welcome(p) => return Ok(p),
        Outcome::Challenge(c, p) => (c, p),
    };
    let msg = OutMsg::new(Message::Challenge(challenge));
    let sent = send_one(t, &msg).await;
    match sent {
        Ok(()) => {}
        // A client that cannot take the CHALLENGE is told why.
        Err(TransportError::PeerLimit(message)) => {
            return Err(Some(Refusal {
                reason: wamp_uri::PAYLOAD_SIZE_EXCEEDED.into(),
                message,
                counts: false,
            }));
        }
        Err(_) => return Err(None),
    }
    let deadline = auth.authenticate_timeout;
    let answer = tokio::select! {
        _ = shutdown.cancelled() => return Err(None),
        r = tokio::time::timeout(deadline, t.recv()) => r,
    };
    let bytes = match answer {
        Err(_) => {
            return Err(Some(Refusal {
                reason: wamp_uri::TIMEOUT.into(),
                message: format!(
                    "no AUTHENTICATE within {} ms of the CHALLENGE",
                    deadline.as_millis()
                ),
                counts: false,
            }));
        }
        Ok(Err(_)) => return Err(None),
        Ok(Ok(b)) => b,
    };
    let authenticate = match t.serializer().decode(&bytes) {
        Ok(Message::Authenticate(a)) => a,
        // The client gives up (it could not answer the challenge): the
        // handshake ends without a reply, as the specification allows.
        Ok(Message::Abort(a)) => {
            tracing::debug!(reason = %a.reason, "the client answered the CHALLENGE with ABORT");
            return Err(None);
        }
        Ok(other) => {
            return Err(Some(Refusal {
                reason: wamp_uri::PROTOCOL_VIOLATION.into(),
                message: format!(
                    "expected AUTHENTICATE after CHALLENGE, received {}",
                    other.name()
                ),
                counts: false,
            }));
        }
        Err(e) => {
            return Err(Some(Refusal {
                reason: wamp_uri::PROTOCOL_VIOLATION.into(),
                message: format!("cannot decode AUTHENTICATE: {e}"),
                counts: false,
            }));
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => Err(None),
        r = auth.authenticate(pending, &authenticate, ctx) => r.map_err(Some),
    }
}

async fn end_on_transport_error_inner<T: Transport>(t: &mut T, span: &Span, e: TransportError) {
    match e {
        TransportError::Closed => {}
        TransportError::Io(cause) => debug!(parent: span, %cause, "connection lost"),
        TransportError::Protocol(msg) => {
            violation(t, span, &msg).await;
        }
        TransportError::InvalidPayload(msg) => {
            warn!(parent: span, reason = wamp_uri::PROTOCOL_VIOLATION, "{msg}");
            abort(
                t,
                wamp_uri::PROTOCOL_VIOLATION,
                &msg,
                CloseKind::InvalidPayload,
            )
            .await;
        }
        TransportError::TooBig(msg) => {
            warn!(parent: span, reason = wamp_uri::PROTOCOL_VIOLATION, "{msg}");
            abort(t, wamp_uri::PROTOCOL_VIOLATION, &msg, CloseKind::TooBig).await;
        }
        TransportError::Slow(msg) => {
            warn!(parent: span, reason = wamp_uri::CLOSE_KILLED, "{msg}");
            abort(t, wamp_uri::CLOSE_KILLED, &msg, CloseKind::Normal).await;
        }
        TransportError::PeerLimit(msg) => {
            warn!(parent: span, reason = wamp_uri::PAYLOAD_SIZE_EXCEEDED, "{msg}");
            abort(t, wamp_uri::PAYLOAD_SIZE_EXCEEDED, &msg, CloseKind::TooBig).await;
        }
    }
}

/// How a write in the established phase ended.
enum Write {
    Done(Result<(), TransportError>),
    Stalled,
    Killed,
    Shutdown,
}

/// What becomes of a message larger than the receiving peer takes.
enum Oversize {
    /// An event: this subscriber does not get it.
    Skip,
    /// A result or error: the peer gets this error instead.
    Replace(Arc<OutMsg>),
    /// An invocation: the realm gets this error from the callee's side, and
    /// the caller gets it.
    ToRealm(Message),
    /// Anything else: the session cannot go on.
    Fail(String),
}

/// A message that is too large for its receiver, turned into what can be
/// sent: nobody's connection is cut for a message someone else sent.
fn oversize(msg: &Message, size: usize, limit: usize) -> Oversize {
    use proto::message::{WampError, code};
    let text = format!(
        "the {} of {size} bytes is larger than the {limit} bytes the receiving session's transport takes (its max_message_size)",
        msg.name()
    );
    let error = |request_type, request, text: String| {
        Message::Error(WampError {
            request_type,
            request,
            details: Dict::new(),
            error: wamp_uri::INVALID_ARGUMENT.into(),
            payload: proto::Payload::args(vec![text.into()]),
        })
    };
    match msg {
        Message::Event(_) => Oversize::Skip,
        Message::Result(r) => Oversize::Replace(OutMsg::new(error(code::CALL, r.request, text))),
        Message::Error(e) => Oversize::Replace(OutMsg::new(error(e.request_type, e.request, text))),
        Message::Invocation(i) => Oversize::ToRealm(error(code::INVOCATION, i.request, text)),
        _ => Oversize::Fail(text),
    }
}

/// How [`write_now`] ended.
enum Quick<L> {
    /// Written (or failed).
    Done(Result<(), TransportError>),
    /// The rest has to wait: what the transport left for later (if
    /// anything), then the flush.
    Wait(Option<L>),
}

/// Write one message and whatever else is queued behind it, then flush,
/// as far as that goes without waiting. Messages too large for the peer
/// are handled by [`oversize`]; errors the realm must hear of (for
/// invocations) are left in `to_realm`.
///
/// Nothing of it lives across an await: a session keeps no write future
/// in its state unless a write has to wait ([`write_rest`], boxed).
fn write_now<T: Transport>(
    t: &mut T,
    first: Arc<OutMsg>,
    rx: &OutboxReceiver,
    traffic: &mut Traffic,
    to_realm: &mut Vec<Message>,
) -> Quick<T::Later> {
    let serializer = t.serializer();
    let limit = t.out_limit();
    let size = |m: &OutMsg| m.encoded(serializer).map_or(0, |e| e.as_bytes().len());
    let mut bytes = 0;
    let mut next = Some(first);
    let mut n = 0;
    let mut later = None;
    while let Some(m) = next.take() {
        let len = size(&m);
        let m = if len > limit {
            traffic.too_large();
            match oversize(&m.msg, len, limit) {
                Oversize::Skip => None,
                Oversize::Replace(e) => Some(e),
                Oversize::ToRealm(e) => {
                    to_realm.push(e);
                    None
                }
                Oversize::Fail(text) => return Quick::Done(Err(TransportError::PeerLimit(text))),
            }
        } else {
            Some(m)
        };
        n += 1;
        if let Some(m) = m {
            let queued = match t.queue(&m) {
                Ok(q) => q,
                Err(e) => return Quick::Done(Err(e)),
            };
            let len = size(&m);
            traffic.metered(len);
            bytes += len;
            match queued {
                Queued::Yes => {}
                // Written out before more is taken.
                Queued::Full => n = WRITE_BATCH,
                Queued::Later(l) => {
                    later = Some(l);
                    n = WRITE_BATCH;
                }
            }
        }
        if n < WRITE_BATCH {
            next = rx.try_recv();
        }
    }
    traffic.sent(bytes);
    if later.is_some() {
        return Quick::Wait(later);
    }
    // Polled once: a flush that has to wait is dropped (it is
    // cancel-safe) and goes on in `write_rest`.
    let flush = std::pin::pin!(t.flush());
    match futures::FutureExt::now_or_never(flush) {
        Some(r) => Quick::Done(r),
        None => Quick::Wait(None),
    }
}

/// What [`write_now`] could not do at once: finish what the transport
/// left for later, and flush.
async fn write_rest<T: Transport>(
    t: &mut T,
    later: Option<T::Later>,
) -> Result<(), TransportError> {
    if let Some(l) = later {
        t.finish(l).await?;
    }
    t.flush().await
}

/// The established phase; returns when the session is over.
///
/// What it keeps across its wait is what every idle session holds for its
/// whole life: the timer, when the next keepalive check is due, an
/// outstanding ping, and references. Everything else is computed in
/// plain functions between waits, and what has to wait longer is boxed.
#[allow(clippy::too_many_arguments)]
// An `async fn` would keep its arguments twice in the future.
#[allow(clippy::manual_async_fn)]
fn established<'a, T: Transport, Q: Quiet + 'a>(
    t: &'a mut T,
    j: &'a Joined,
    shutdown: &'a CancellationToken,
    settings: &'a SessionSettings,
    traffic: &'a mut Traffic,
    mut keep: Keep,
    mut quiet: Q,
) -> impl Future<Output = Ending> + Send + 'a {
    async move {
        // Keepalive: look at the peer's silence every `interval` (or sooner
        // while a ping awaits its answer).
        // One timer for everything timed here (an idle session keeps it):
        // the next keepalive check, the realm's `stats` when they are due,
        // the transport's deadline, a write that has to wait, and (when
        // the session may park) the next look at whether it is quiet.
        let timer = tokio::time::sleep_until(keep.keep_at);
        tokio::pin!(timer);
        quiet.start(t.parks());
        // The router's shutdown comes as a kill from the realm (which
        // closes sessions that join after it too); the token is looked at
        // once here, and by writes that have to wait, not every turn (its
        // lock is shared by every session of the listener).
        if shutdown.is_cancelled() {
            goodbye_on_shutdown(t).await;
            return Ending::Closed;
        }
        loop {
            if traffic.stats_due {
                publish_stats(&j.realm, traffic, false).await;
            }
            let timed = arm(
                timer.as_mut(),
                keep.keep_at,
                stats_at(traffic),
                first_of(t.deadline(), quiet.check_at()),
                settings.keepalive.is_some(),
            );
            tokio::select! {
                // (Without keepalive, `keep_at` is a year away: the timer
                // is armed when statistics or the transport want it.)
                _ = &mut timer, if timed => {
                    let due = tokio::time::Instant::now();
                    if stats_at(traffic).is_some_and(|at| at <= due) {
                        publish_stats(&j.realm, traffic, false).await;
                    }
                    if settings.keepalive.is_some() && keep.keep_at <= due {
                        // Boxed: it runs once per interval, and inline it
                        // would take room in every idle session's state.
                        match Box::pin(keepalive_check(t, j.span.get(), settings, &mut keep.pinged)).await {
                            Some(next) => keep.keep_at = next,
                            None => return Ending::Closed,
                        }
                    }
                    if quiet.looked_quiet(std::time::Instant::now())
                        && let Some(io) = t.park()
                    {
                        return Ending::Idle(io, keep);
                    }
                }
                next = std::future::poll_fn(|cx| j.rx.poll_recv(cx)) => {
                    quiet.touch();
                    let out = match next {
                        Next::Msg(m) => m,
                        // A kill comes before what is still queued.
                        Next::Killed => {
                            killed(t, &j.rx).await;
                            return Ending::Closed;
                        }
                        Next::Closed => {
                            realm_stopped(t).await;
                            return Ending::Closed;
                        }
                    };
                    if let Some(rest) = outbound(t, out, j, timer.as_mut(), shutdown, settings.write_timeout, traffic)
                        && !rest.await
                    {
                        return Ending::Closed;
                    }
                }
                incoming = t.recv() => {
                    quiet.touch();
                    if let Some(rest) = inbound(t, incoming, j, traffic, settings.compat)
                        && !rest.await
                    {
                        return Ending::Closed;
                    }
                }
            }
        }
    }
}

/// How the established phase watches for quiet, to park the session
/// ([`crate::park`]): `()` does not (and takes no room in the session's
/// state), [`Watch`] does.
trait Quiet: Send {
    /// The phase starts, on a connection that `parks` or does not.
    fn start(&mut self, parks: bool);
    /// When the timer is next to look.
    fn check_at(&self) -> Option<std::time::Instant>;
    /// Something was read or written.
    fn touch(&mut self);
    /// The timer fired at `now`: whether it is time to look and nothing
    /// happened since the last look (the next look is set either way).
    fn looked_quiet(&mut self, now: std::time::Instant) -> bool;
}

impl Quiet for () {
    fn start(&mut self, _parks: bool) {}
    fn check_at(&self) -> Option<std::time::Instant> {
        None
    }
    fn touch(&mut self) {}
    fn looked_quiet(&mut self, _now: std::time::Instant) -> bool {
        false
    }
}

/// When the timer next looks whether the session is quiet, and whether
/// anything happened since it last looked (a flag, so that a busy
/// session does not move its timer at every message).
#[derive(Default)]
struct Watch {
    at: Option<std::time::Instant>,
    active: bool,
}

impl Quiet for Watch {
    fn start(&mut self, parks: bool) {
        self.at = parks.then(|| std::time::Instant::now() + PARK_FIRST);
        self.active = false;
    }

    fn check_at(&self) -> Option<std::time::Instant> {
        self.at
    }

    fn touch(&mut self) {
        self.active = true;
    }

    fn looked_quiet(&mut self, now: std::time::Instant) -> bool {
        if self.at.is_none_or(|at| at > now) {
            return false;
        }
        self.at = Some(now + PARK_AFTER);
        !std::mem::take(&mut self.active)
    }
}

/// The earlier of two optional times.
fn first_of(
    a: Option<std::time::Instant>,
    b: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The keepalive interval and the grace for the answer to a ping; without
/// keepalive, a year (the timer then waits for other things only).
fn keepalive_of(settings: &SessionSettings) -> (Duration, Duration) {
    settings
        .keepalive
        .unwrap_or((Duration::from_secs(86_400 * 365), Duration::ZERO))
}

/// When the realm's `stats` are next due for this session, if it has any.
fn stats_at(traffic: &Traffic) -> Option<tokio::time::Instant> {
    traffic
        .meter
        .as_ref()
        .and_then(|m| m.due())
        .map(tokio::time::Instant::from_std)
}

/// Set the session's timer to the first of what is due (the keepalive
/// check, `stats`, the transport's own deadline, which the next `recv`
/// deals with); whether the timer is to be watched at all (without
/// keepalive, only for the other two).
fn arm(
    timer: Pin<&mut tokio::time::Sleep>,
    keep_at: tokio::time::Instant,
    stats_at: Option<tokio::time::Instant>,
    deadline: Option<std::time::Instant>,
    keepalive: bool,
) -> bool {
    let mut wake_at = match stats_at {
        Some(at) if !keepalive || at < keep_at => at,
        _ => keep_at,
    };
    if let Some(at) = deadline.map(tokio::time::Instant::from_std)
        && at < wake_at
    {
        wake_at = at;
    }
    if timer.deadline() != wake_at {
        timer.reset(wake_at);
    }
    keepalive || wake_at < keep_at
}

// The branches of the established phase's loop are functions of their
// own: what one of them keeps across its awaits then takes room only
// while it runs, not in the idle session's state (a coroutine keeps a
// local that lives across two awaits for its whole life).

/// The keepalive check, when due: ping a silent peer, close one that did
/// not answer. The next check's time, or `None` once closed.
async fn keepalive_check<T: Transport>(
    t: &mut T,
    span: &Span,
    settings: &SessionSettings,
    pinged: &mut Option<std::time::Instant>,
) -> Option<tokio::time::Instant> {
    let (interval, grace) = keepalive_of(settings);
    let write_timeout = settings.write_timeout;
    let now = std::time::Instant::now();
    if let Some(at) = *pinged {
        if t.last_seen() >= at {
            *pinged = None;
        } else if now.duration_since(at) >= grace {
            warn!(parent: span, silent_ms = now.duration_since(t.last_seen()).as_millis() as u64,
                "no answer to a keepalive ping within auto_ping_timeout: closing the connection");
            close(t, CloseKind::GoingAway, "keepalive timeout").await;
            return None;
        }
    }
    if pinged.is_some() {
        return Some(tokio::time::Instant::now() + Duration::from_millis(100).min(grace));
    }
    let idle = now.duration_since(t.last_seen());
    if idle < interval {
        return Some(tokio::time::Instant::now() + (interval - idle));
    }
    match Box::pin(tokio::time::timeout(write_timeout, t.ping())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            end_on_transport_error(t, span, e).await;
            return None;
        }
        Err(_) => {
            warn!(parent: span, "closing slow session: the keepalive ping could not be written within write_timeout");
            close(t, CloseKind::GoingAway, "write timeout").await;
            return None;
        }
    }
    *pinged = Some(now);
    Some(tokio::time::Instant::now() + grace)
}

/// Write `out` and what queued behind it, as far as that goes at once:
/// `None` when it is done and the session goes on. Otherwise the rest (a
/// write that has to wait, timed by the session's timer, which the loop
/// sets back after; a failure; errors for the realm), boxed, whose outcome
/// is `false` once the session is closed.
///
/// Synchronous on purpose: the common write (done at once) takes no room
/// in the session's state, which every idle session keeps for its whole
/// life; only a write that has to wait keeps a future, in its own box.
#[allow(clippy::too_many_arguments)]
fn outbound<'a, T: Transport>(
    t: &'a mut T,
    out: Arc<OutMsg>,
    j: &'a Joined,
    timer: Pin<&'a mut tokio::time::Sleep>,
    shutdown: &'a CancellationToken,
    write_timeout: Duration,
    traffic: &mut Traffic,
) -> Option<Rest<'a>> {
    let (rx, realm, id, span) = (&j.rx, &j.realm, j.id, j.span.get());
    let mut to_realm = Vec::new();
    match write_now(t, out, rx, traffic, &mut to_realm) {
        Quick::Done(Ok(())) if to_realm.is_empty() => None,
        Quick::Done(written) => Some(Box::pin(after_write(t, written, to_realm, realm, id, span))),
        Quick::Wait(later) => Some(Box::pin(write_waiting(
            t,
            later,
            Waiting {
                rx,
                timer,
                shutdown,
                write_timeout,
            },
            to_realm,
            realm,
            id,
            span,
        ))),
    }
}

/// What a write that has to wait watches besides the write.
struct Waiting<'a> {
    rx: &'a OutboxReceiver,
    timer: Pin<&'a mut tokio::time::Sleep>,
    shutdown: &'a CancellationToken,
    write_timeout: Duration,
}

/// A write that has to wait: finish it within `write_timeout`, unless
/// the realm kills the session or the router shuts down first. `false`
/// once the session is closed.
async fn write_waiting<T: Transport>(
    t: &mut T,
    later: Option<T::Later>,
    w: Waiting<'_>,
    to_realm: Vec<Message>,
    realm: &RealmHandle,
    id: Id,
    span: &Span,
) -> bool {
    let Waiting {
        rx,
        mut timer,
        shutdown,
        write_timeout,
    } = w;
    timer
        .as_mut()
        .reset(tokio::time::Instant::now() + write_timeout);
    let outcome = {
        let write = write_rest(t, later);
        tokio::pin!(write);
        tokio::select! {
            r = &mut write => Write::Done(r),
            _ = &mut timer => Write::Stalled,
            _ = std::future::poll_fn(|cx| rx.poll_killed(cx)) => Write::Killed,
            _ = shutdown.cancelled() => Write::Shutdown,
        }
    };
    match outcome {
        Write::Done(written) => after_write(t, written, to_realm, realm, id, span).await,
        // Closed at once, before anything is read: a read may make the
        // codec answer a ping, which must not land inside the frame this
        // write left half done.
        Write::Killed if !shutting_down(rx) => {
            killed(t, rx).await;
            false
        }
        Write::Killed | Write::Shutdown => {
            close(t, CloseKind::GoingAway, "router shutting down").await;
            false
        }
        Write::Stalled => {
            warn!(parent: span, timeout_ms = write_timeout.as_millis() as u64,
            "closing slow session: the peer stopped reading (a write stayed blocked past write_timeout)");
            close(t, CloseKind::GoingAway, "write timeout").await;
            false
        }
    }
}

/// The rare ends of a write: the transport failed, or invocations too
/// large for the callee go back to the realm as errors. `false` once the
/// session is closed.
async fn after_write<T: Transport>(
    t: &mut T,
    written: Result<(), TransportError>,
    to_realm: Vec<Message>,
    realm: &RealmHandle,
    id: Id,
    span: &Span,
) -> bool {
    if let Err(e) = written {
        end_on_transport_error(t, span, e).await;
        return false;
    }
    for msg in to_realm {
        // As if the callee had answered with the error: the caller learns
        // why, the callee never saw the call.
        warn!(parent: span, "an invocation too large for this callee's transport: the caller gets wamp.error.invalid_argument");
        if realm
            .send(RealmCommand::Message {
                session: id,
                msg: Box::new(msg),
            })
            .await
            .is_err()
        {
            realm_stopped(t).await;
            return false;
        }
    }
    true
}

/// One message from the peer (or the transport's error), handed to the
/// realm at once when its queue has room: `None` then, and the session
/// goes on. Otherwise the rest (a send that waits for room, GOODBYE, a
/// close), boxed, whose outcome is `false` once the session is closed.
///
/// Like [`outbound`], synchronous on purpose: the common message takes no
/// room in the session's state, and its bytes are gone before anything is
/// awaited.
#[allow(clippy::too_many_arguments)]
fn inbound<'a, T: Transport>(
    t: &'a mut T,
    incoming: Result<bytes::Bytes, TransportError>,
    j: &'a Joined,
    traffic: &'a mut Traffic,
    compat: trellis_config::router::Compat,
) -> Option<Rest<'a>> {
    let (realm, id, span) = (&j.realm, j.id, j.span.get());
    let bytes = match incoming {
        Ok(bytes) => bytes,
        Err(e) => return Some(closed(end_on_transport_error(t, span, e))),
    };
    traffic.received(bytes.len());
    match classify(realm, id, t.serializer(), &bytes) {
        Incoming::Forward(Sent::Done) => None,
        Incoming::Forward(Sent::Stopped) => Some(closed(realm_stopped(t))),
        Incoming::Forward(Sent::Waiting(send)) => Some(Box::pin(async move {
            if send.await.is_err() {
                realm_stopped(t).await;
                return false;
            }
            true
        })),
        Incoming::Goodbye(reason) => Some(Box::pin(async move {
            goodbye(t, &reason, realm, id, span, traffic, compat).await;
            false
        })),
        Incoming::Abort(reason) => {
            debug!(parent: span, %reason, "client sent ABORT");
            Some(closed(close(t, CloseKind::Normal, "abort")))
        }
        Incoming::Violation(text) => Some(Box::pin(async move {
            violation(t, span, &text).await;
            false
        })),
    }
}

/// A closing action as the rest of a message's handling: the session is
/// over once it is done.
fn closed(closing: Boxed<'_>) -> Rest<'_> {
    Box::pin(async move {
        closing.await;
        false
    })
}

/// The peer said GOODBYE: leave, answer, close.
#[allow(clippy::too_many_arguments)]
async fn goodbye<T: Transport>(
    t: &mut T,
    reason: &str,
    realm: &RealmHandle,
    id: Id,
    span: &Span,
    traffic: &mut Traffic,
    compat: trellis_config::router::Compat,
) {
    debug!(parent: span, %reason, "client said GOODBYE");
    if reason == "wamp.close.logout"
        && let Some((store, c)) = traffic.cookie.as_deref()
    {
        store.logout(c);
        debug!(parent: span, "logged out: the tracking cookie no longer logs in");
    }
    // The last statistics while the session is there.
    if traffic.meter.as_ref().is_some_and(|m| m.on_leave()) {
        publish_stats(realm, traffic, true).await;
    }
    traffic.meter = None;
    // Leave first: the reply says the session is gone, its registrations
    // and subscriptions with it.
    let (done, left) = tokio::sync::oneshot::channel();
    if realm
        .send(RealmCommand::LeaveAndTell { session: id, done })
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(CLOSING_WRITE, left).await;
    }
    // Crossbar.io answers with autobahn's default reason, whatever the
    // client sent, and clients written for it check for it; the
    // specification says goodbye_and_out.
    let reason = match compat {
        trellis_config::router::Compat::Crossbar => wamp_uri::CLOSE_NORMAL,
        trellis_config::router::Compat::Spec => wamp_uri::GOODBYE_AND_OUT,
    };
    let reply = OutMsg::new(Message::Goodbye(Goodbye {
        details: Dict::new(),
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSING_WRITE, send_one(t, &reply)).await;
    close(t, CloseKind::Normal, "goodbye").await;
}

/// What a message from an established session's peer asks for.
enum Incoming<'a> {
    /// Forwarded to the realm (or waiting for room in its queue).
    Forward(Sent<'a>),
    /// GOODBYE, with the peer's reason.
    Goodbye(String),
    /// ABORT, with the peer's reason.
    Abort(String),
    /// Not a message a client may send now: why.
    Violation(String),
}

/// Decode one message of an established session and hand it to the realm.
///
/// Synchronous on purpose: the decoded message and the command never live
/// across an await, so they take no room in the session's long-lived
/// state; only a send that waits for room in the realm's queue is awaited
/// (boxed, by [`inbound`]'s caller).
fn classify<'a>(
    realm: &'a RealmHandle,
    id: Id,
    serializer: proto::Serializer,
    bytes: &[u8],
) -> Incoming<'a> {
    // Arguments stay as they came: the realm forwards them, and decodes
    // them only where the router itself reads them.
    let msg = match serializer.decode_forwarding(bytes) {
        Ok(m) => m,
        Err(e) => return Incoming::Violation(format!("cannot decode message: {e}")),
    };
    // The type, request id and size only: payloads, tickets and signatures
    // never reach a log.
    tracing::trace!(
        session = id,
        kind = msg.name(),
        request = msg.request_id(),
        size = bytes.len(),
        "received"
    );
    match msg {
        Message::Goodbye(g) => Incoming::Goodbye(g.reason),
        Message::Abort(a) => Incoming::Abort(a.reason),
        m @ (Message::Cancel(_)
        | Message::Publish(_)
        | Message::Subscribe(_)
        | Message::Unsubscribe(_)
        | Message::Call(_)
        | Message::Register(_)
        | Message::Unregister(_)
        | Message::Yield(_)) => Incoming::Forward(realm.forward(RealmCommand::Message {
            session: id,
            msg: Box::new(m),
        })),
        Message::Error(e) if e.request_type == code::INVOCATION => {
            Incoming::Forward(realm.forward(RealmCommand::Message {
                session: id,
                msg: Box::new(Message::Error(e)),
            }))
        }
        Message::Hello(_) => Incoming::Violation(
            "HELLO received on a session that is already established".to_owned(),
        ),
        Message::Error(e) => Incoming::Violation(format!(
            "ERROR for a {} request: clients may send ERROR only in reply to INVOCATION",
            proto::message::type_name(e.request_type)
        )),
        m => Incoming::Violation(format!(
            "{} is not a message a client may send to a router",
            m.name()
        )),
    }
}

/// The router killed the session: ABORT for protocol violations (as the
/// spec says); GOODBYE for other reasons, which clients such as autobahn
/// expect after WELCOME.
fn killed<'a, T: Transport>(t: &'a mut T, rx: &OutboxReceiver) -> Boxed<'a> {
    let (reason, msg) = rx
        .kill_reason()
        .unwrap_or((wamp_uri::CLOSE_KILLED.into(), "closed by the router".into()));
    Box::pin(async move {
        if reason == wamp_uri::SYSTEM_SHUTDOWN {
            goodbye_on_shutdown_inner(t).await;
        } else if reason == wamp_uri::PROTOCOL_VIOLATION {
            abort(t, &reason, &msg, CloseKind::ProtocolError).await;
        } else {
            goodbye_and_close(t, &reason, &msg).await;
        }
    })
}

/// The realm closed the session for the router's shutdown.
fn shutting_down(rx: &OutboxReceiver) -> bool {
    rx.kill_reason()
        .is_some_and(|(reason, _)| reason == wamp_uri::SYSTEM_SHUTDOWN)
}

/// Router-initiated close of an established session: GOODBYE, then close
/// without waiting for the reply (the peer may not be reading at all).
async fn goodbye_and_close_inner<T: Transport>(t: &mut T, reason: &str, message: &str) {
    let bye = OutMsg::new(Message::Goodbye(Goodbye {
        details: proto::dict! { "message" => message },
        reason: reason.to_owned(),
    }));
    send_and_close(t, &bye, CloseKind::Normal, message).await;
}

/// Router shutdown: GOODBYE `wamp.close.system_shutdown`, wait briefly for
/// the client's GOODBYE, close.
async fn goodbye_on_shutdown_inner<T: Transport>(t: &mut T) {
    let bye = OutMsg::new(Message::Goodbye(Goodbye {
        details: proto::dict! { "message" => crate::realm::core::SHUTDOWN_MESSAGE },
        reason: wamp_uri::SYSTEM_SHUTDOWN.into(),
    }));
    let serializer = t.serializer();
    let _ = tokio::time::timeout(GOODBYE_WAIT, async {
        send_one(t, &bye).await?;
        loop {
            let b = t.recv().await?;
            if let Ok(Message::Goodbye(_)) = serializer.decode(&b) {
                return Ok::<(), TransportError>(());
            }
        }
    })
    .await;
    t.close(CloseKind::GoingAway, "router shutting down").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport that writes into a list, as scripted: full after some
    /// messages, a message it finishes later, flushes that wait.
    #[derive(Default)]
    struct Scripted {
        /// Queued, not yet flushed (requests of RESULTs).
        queued: Vec<u64>,
        /// Flushed.
        written: Vec<u64>,
        /// `Queued::Full` once this many wait in `queued`.
        full_at: Option<usize>,
        /// This request is finished later.
        later: Option<u64>,
        /// Flushes that return `Pending` before one completes.
        pending_flushes: usize,
    }

    fn request(m: &OutMsg) -> u64 {
        match &m.msg {
            Message::Result(r) => r.request,
            other => panic!("unexpected {}", other.name()),
        }
    }

    fn result(request: u64) -> Arc<OutMsg> {
        OutMsg::new(Message::Result(proto::message::CallResult {
            request,
            details: Dict::new(),
            payload: proto::Payload::default(),
        }))
    }

    impl Transport for Scripted {
        type Later = u64;

        fn serializer(&self) -> proto::Serializer {
            proto::Serializer::Json
        }

        async fn recv(&mut self) -> Result<bytes::Bytes, TransportError> {
            std::future::pending().await
        }

        fn queue(&mut self, msg: &Arc<OutMsg>) -> Result<Queued<u64>, TransportError> {
            let r = request(msg);
            if self.later == Some(r) {
                return Ok(Queued::Later(r));
            }
            self.queued.push(r);
            Ok(match self.full_at {
                Some(n) if self.queued.len() >= n => Queued::Full,
                _ => Queued::Yes,
            })
        }

        async fn finish(&mut self, later: u64) -> Result<(), TransportError> {
            tokio::task::yield_now().await;
            self.queued.push(later);
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), TransportError> {
            std::future::poll_fn(|cx| {
                if self.pending_flushes > 0 {
                    self.pending_flushes -= 1;
                    cx.waker().wake_by_ref();
                    return std::task::Poll::Pending;
                }
                self.written.append(&mut self.queued);
                std::task::Poll::Ready(Ok(()))
            })
            .await
        }

        async fn close(&mut self, _kind: CloseKind, _reason: &str) {}

        async fn ping(&mut self) -> Result<(), TransportError> {
            Ok(())
        }

        fn last_seen(&self) -> std::time::Instant {
            std::time::Instant::now()
        }
    }

    /// The session's outbox holding results 2..=n (1 is taken).
    fn backlog(n: u64) -> (crate::outbound::OutboxSender, OutboxReceiver) {
        let (tx, rx) = outbox(16);
        for r in 2..=n {
            tx.try_send(result(r)).expect("room");
        }
        (tx, rx)
    }

    /// `write_now` of result 1, with results 2..=n queued behind it.
    fn write_first(
        t: &mut Scripted,
        n: u64,
    ) -> (Quick<u64>, crate::outbound::OutboxSender, OutboxReceiver) {
        let counters = Arc::new(TransportCounters::default());
        let mut traffic = Traffic::new(&counters);
        let (tx, rx) = backlog(n);
        let quick = write_now(t, result(1), &rx, &mut traffic, &mut Vec::new());
        (quick, tx, rx)
    }

    #[test]
    fn a_write_that_need_not_wait_takes_the_backlog_and_flushes_at_once() {
        let mut t = Scripted::default();
        let (quick, _tx, rx) = write_first(&mut t, 3);
        assert!(matches!(quick, Quick::Done(Ok(()))), "written at once");
        assert_eq!(t.written, [1, 2, 3]);
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_full_transport_is_flushed_before_more_is_taken() {
        let mut t = Scripted {
            full_at: Some(2),
            ..Default::default()
        };
        let (quick, _tx, rx) = write_first(&mut t, 3);
        assert!(matches!(quick, Quick::Done(Ok(()))), "written at once");
        assert_eq!(t.written, [1, 2]);
        let left = rx.try_recv().expect("the third stays in the outbox");
        assert_eq!(request(&left), 3);
    }

    #[tokio::test]
    async fn a_flush_that_waits_goes_on_where_it_stopped() {
        let mut t = Scripted {
            pending_flushes: 2,
            ..Default::default()
        };
        let (quick, _tx, _rx) = write_first(&mut t, 2);
        let later = match quick {
            Quick::Wait(later) => later,
            Quick::Done(_) => panic!("the flush had to wait"),
        };
        assert!(later.is_none());
        // The dropped flush lost nothing: what it held is written next.
        assert!(t.written.is_empty());
        write_rest(&mut t, later).await.expect("flushed");
        assert_eq!(t.written, [1, 2]);
    }

    #[tokio::test]
    async fn what_the_transport_finishes_later_is_written_after_it() {
        let mut t = Scripted {
            later: Some(2),
            ..Default::default()
        };
        let (quick, _tx, rx) = write_first(&mut t, 3);
        let later = match quick {
            Quick::Wait(later) => later,
            Quick::Done(_) => panic!("message 2 is finished later"),
        };
        assert_eq!(later, Some(2));
        write_rest(&mut t, later).await.expect("written");
        assert_eq!(t.written, [1, 2]);
        // Nothing was taken past it: order holds.
        assert_eq!(request(&rx.try_recv().expect("3 waits")), 3);
    }

    #[test]
    fn a_session_parks_only_after_a_look_that_found_it_quiet() {
        let mut w = Watch::default();
        w.start(false);
        assert_eq!(
            w.check_at(),
            None,
            "a connection that cannot park never looks"
        );
        let t0 = std::time::Instant::now();
        w.start(true);
        let first = w.check_at().expect("looks");
        assert!(first >= t0 + PARK_FIRST && first <= std::time::Instant::now() + PARK_FIRST);
        assert!(
            !w.looked_quiet(first - Duration::from_millis(1)),
            "not before its time"
        );
        assert_eq!(w.check_at(), Some(first), "an early wake moves nothing");
        // Something happened since the phase started: not quiet; the next
        // look is PARK_AFTER on.
        w.touch();
        assert!(!w.looked_quiet(first));
        assert_eq!(w.check_at(), Some(first + PARK_AFTER));
        // Nothing since that look: quiet at the next.
        assert!(w.looked_quiet(first + PARK_AFTER));
        // A new phase (the session woken) starts afresh.
        w.touch();
        w.start(true);
        let again = w.check_at().expect("looks");
        assert!(
            w.looked_quiet(again),
            "what happened before it parked does not count"
        );
        let mut none = ();
        none.start(true);
        none.touch();
        assert_eq!(none.check_at(), None);
        assert!(!none.looked_quiet(std::time::Instant::now()));
    }

    #[test]
    fn the_shared_histogram_counts_by_bucket() {
        let h = crate::realm::AtomicHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count(), 3);
        assert_eq!(s.buckets[0], 1, "<= 0.5 ms");
        assert_eq!(s.buckets[5], 1, "(10 ms, 25 ms]");
        assert_eq!(s.buckets[12], 1, "+Inf");
        assert!((s.sum - 60.0203).abs() < 1e-9, "{}", s.sum);
    }
}
