//! Transports: how WAMP messages travel between a client and the router.
//!
//! Each transport implements the session's [`Transport`] trait (defined in
//! [`crate::session::transport`]: transports depend on the session, not the
//! reverse): it yields whole WAMP message payloads and writes outbound
//! messages in its serializer; the session task in [`crate::session`] is
//! the same for all of them. [`ListenerSettings`] (in [`listener`]) is what
//! every listener needs, resolved from the config once.
//!
//! - [`serve`]: the accept loop shared by both kinds (connection limit,
//!   one task per connection).
//! - [`websocket`]: WAMP over WebSocket, with subprotocol negotiation and
//!   the batched variants, around the sans-IO codec in [`wscodec`].
//! - [`rawsocket`]: WAMP over RawSocket: the 4-byte handshake, then
//!   length-prefixed frames ([`proto::rawsocket`]).
//!
//! - [`web`]: static files and WebSocket paths on one HTTP port.
//!
//! All run on TCP and on Unix sockets ([`Listener`]).

pub mod archive;
pub mod bridge;
pub mod ceiling;
pub mod deflate;
pub mod forwarded;
pub mod http;
pub mod listener;
pub mod longpoll;
pub mod mqtt;
pub mod rawsocket;
pub mod web;
pub mod websocket;
pub mod wscodec;

use crate::session::TransportCounters;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

pub use self::listener::ListenerSettings;
use crate::Realms;
pub use crate::session::transport::{CloseKind, Transport, TransportError};
use trellis_config::router::TransportKind;

/// Who is on the other end of a connection (`Default`: nobody known, for
/// tests).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The peer's IP address (TCP only); auth failure limits key on it.
    pub ip: Option<IpAddr>,
    /// `tcp4:127.0.0.1:52312` or `unix:pid=4242,uid=1000`, for logs and
    /// the session's transport details.
    pub desc: String,
    /// The connecting process's user and process (Unix sockets: SO_PEERCRED).
    pub cred: Option<(u32, Option<i32>)>,
    /// TLS with `ca_certificates`: the client's verified certificate, as
    /// the transport details' `client_cert`.
    pub client_cert: Option<Arc<proto::Dict>>,
}

impl Peer {
    fn tcp(addr: SocketAddr) -> Peer {
        let family = if addr.is_ipv4() { "tcp4" } else { "tcp6" };
        Peer {
            ip: Some(addr.ip()),
            desc: format!("{family}:{}:{}", addr.ip(), addr.port()),
            cred: None,
            client_cert: None,
        }
    }

    fn unix(stream: &UnixStream) -> Peer {
        match stream.peer_cred() {
            Ok(c) => Peer {
                ip: None,
                desc: match c.pid() {
                    Some(pid) => format!("unix:pid={pid},uid={}", c.uid()),
                    None => format!("unix:uid={}", c.uid()),
                },
                cred: Some((c.uid(), c.pid())),
                client_cert: None,
            },
            Err(_) => Peer {
                ip: None,
                desc: "unix".to_owned(),
                cred: None,
                client_cert: None,
            },
        }
    }
}

/// A bound listener: a TCP port or a Unix socket file.
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix socket listener; the file is removed when this is dropped.
    Unix(UnixListener, SocketFile),
}

impl Listener {
    /// `127.0.0.1:8080` or `unix:/path/to/socket`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp".to_owned(), |a| a.to_string()),
            Listener::Unix(_, f) => format!("unix:{}", f.0.display()),
        }
    }
}

/// A Unix socket file this process created; removed on drop so a clean
/// stop leaves no stale file behind.
#[derive(Debug)]
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bind a Unix socket at `path` with `mode` (0600 by default). A stale
/// file (nobody accepting on it) is replaced; a live one is an error, so
/// two nodes never steal each other's socket.
///
/// # Errors
/// The path is in use by a live listener, or the OS refused.
pub fn bind_unix(path: &Path, mode: u32) -> std::io::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    check_unix_path(path)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; remove it or choose another path",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is listening on this socket (is another node running in this directory?)",
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    let file = SocketFile(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok((listener, file))
}

/// The longest path a Unix socket may have (`sun_path` holds 108 bytes,
/// one of them the terminating NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// A socket path that fits, or an error naming it and the limit.
///
/// # Errors
/// The path is longer than [`MAX_UNIX_PATH`] bytes.
pub fn check_unix_path(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_UNIX_PATH {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the Unix socket path {} is {len} bytes, over the {MAX_UNIX_PATH} bytes Unix sockets allow: use a shorter node directory, or a relative socket path (relative paths start at the node directory)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Accept connections until `shutdown`, one task per connection.
pub async fn serve(
    listener: Listener,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    // RawSocket clients over the limit are told so (the handshake's error
    // 4) by a few short-lived tasks; beyond these the socket is just closed.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let last_refusal_log = AtomicU64::new(0);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = accept(&listener) => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                warn!(transport = %settings.name, cause = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let counters = settings.session.counters.clone();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            TransportCounters::bump(&counters.refused);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if last_refusal_log.swap(now, Ordering::Relaxed) != now {
                warn!(transport = %settings.name, peer = %peer.desc, max = settings.max_connections,
                    "connection refused: the transport's max_connections limit is reached");
            }
            if settings.kind == TransportKind::Rawsocket
                && let Ok(slot) = refusals.clone().try_acquire_owned()
            {
                tracker.spawn(async move {
                    match stream {
                        Stream::Tcp(s) => rawsocket::refuse_over_limit(s).await,
                        Stream::Unix(s) => rawsocket::refuse_over_limit(s).await,
                    }
                    drop(slot);
                });
            }
            continue;
        };
        if let (Stream::Tcp(s), Some(every)) = (&stream, settings.tcp_keepalive) {
            keepalive(s, every);
        }
        let settings = settings.clone();
        let realms = realms.clone();
        // The listener's own token: no connection is stopped alone, and a
        // child token would cost every connection a tree node.
        let shutdown = shutdown.clone();
        let span = info_span!("conn", peer = %peer.desc, transport = %settings.name);
        TransportCounters::bump(&counters.accepted);
        let open = Open::new(counters, permit);
        // Where the session parks while it idles, and its place among the
        // listener's tasks meanwhile.
        let lot = settings.lot.clone();
        let token = tracker.token();
        // The connection's future is boxed (the TLS handshake's, or the
        // transport kind's), so the task holds a pointer and the guard.
        let conn = match stream {
            Stream::Tcp(s) if settings.tls.is_some() => {
                Box::pin(handle_tls(s, peer, settings, realms, shutdown))
            }
            Stream::Tcp(s) => handle(s, peer, settings, realms, shutdown),
            Stream::Unix(s) => handle(s, peer, settings, realms, shutdown),
        };
        tracker.spawn(
            async move {
                if let Some(parked) = conn.await {
                    let span = crate::park::KeptSpan::new(tracing::Span::current());
                    lot.park(parked, crate::park::Rest { open, span, token });
                }
            }
            .instrument(span),
        );
    }
    debug!(transport = %settings.name, "listener stopped");
}

/// An open connection, counted in `open` and holding its slot of the
/// transport's `max_connections` until dropped.
pub struct Open {
    pub(crate) counters: Arc<TransportCounters>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    /// A connection counted in `counters.open`, holding `permit`.
    pub(crate) fn new(
        counters: Arc<TransportCounters>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Open {
        TransportCounters::bump(&counters.open);
        Open {
            counters,
            _permit: permit,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's future, boxed: its output is the session, parked while
/// it idles ([`crate::park`]), or `None` once the connection has ended.
type ConnFuture = Pin<Box<dyn Future<Output = Option<crate::park::Parked>> + Send>>;

/// Probes a peer may leave unanswered before TCP gives up on it.
const KEEPALIVE_PROBES: u32 = 4;

/// Turn TCP keepalive on: a peer that vanished (a cut cable, a dead NAT
/// entry) is found without any WAMP-level ping, which some clients never
/// answer.
fn keepalive(stream: &TcpStream, every: Duration) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(every)
        .with_interval(every)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        debug!(cause = %e, "cannot turn TCP keepalive on");
    }
}

/// RawSocket connections over `max_connections` being told so at once.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), Peer::tcp(addr)))
        }
        Listener::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            let peer = Peer::unix(&s);
            Ok((Stream::Unix(s), peer))
        }
    }
}

/// A TLS handshake, with the deadline of the upgrade that follows it,
/// then the connection as any other.
async fn handle_tls(
    stream: TcpStream,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> Option<crate::park::Parked> {
    let Some((tls, _)) = &settings.tls else {
        return None;
    };
    let accept = tls.acceptor().accept(stream);
    match tokio::time::timeout(settings.handshake_timeout, accept).await {
        Ok(Ok(s)) => {
            let mut peer = peer;
            peer.client_cert = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| Arc::new(crate::tls::client_cert_details(leaf)));
            return handle(s, peer, settings, realms, shutdown).await;
        }
        // A client certificate refused (none, expired, another CA): the
        // client got the TLS alert; say why here too.
        Ok(Err(e))
            if e.get_ref().is_some_and(|inner| {
                matches!(
                    inner.downcast_ref::<rustls::Error>(),
                    Some(
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                )
            }) =>
        {
            // At most once a second at info (a scanner must not flood the
            // log), the rest at debug.
            static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if LAST.swap(now, Ordering::Relaxed) != now {
                info!(peer = %peer.desc, cause = %e, "TLS client certificate refused (endpoint.tls.ca_certificates; more refusals this second are logged at debug)");
            } else {
                debug!(peer = %peer.desc, cause = %e, "TLS client certificate refused");
            }
        }
        Ok(Err(e)) => debug!(peer = %peer.desc, cause = %e, "TLS handshake failed"),
        Err(_) => debug!(peer = %peer.desc, "TLS handshake timed out"),
    }
    None
}

/// The connection's future for its transport's kind, boxed: made here,
/// synchronously, so that no layer around it keeps the arguments.
fn handle<S: Io>(
    stream: S,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> ConnFuture {
    use futures::FutureExt;
    match settings.kind {
        // Never bound (see `Router::bind`).
        TransportKind::Flashpolicy => Box::pin(std::future::ready(None)),
        // HTTP (hyper) until the upgrade, then the WebSocket codec.
        TransportKind::Websocket | TransportKind::WebsocketTestee => Box::pin(
            http::serve_connection(stream, peer, settings, realms, shutdown).map(|()| None),
        ),
        TransportKind::Mqtt => Box::pin(mqtt::handle_connection(
            stream, peer, settings, realms, shutdown,
        )),
        TransportKind::Rawsocket => Box::pin(
            rawsocket::handle_connection(stream, peer, settings, realms, shutdown).map(|()| None),
        ),
        TransportKind::Web | TransportKind::Universal => {
            if settings.rawsocket.is_none() && settings.mqtt.is_none() {
                Box::pin(
                    http::serve_connection(stream, peer, settings, realms, shutdown).map(|()| None),
                )
            } else {
                Box::pin(sniff(stream, peer, settings, realms, shutdown))
            }
        }
    }
}

/// A universal transport's connection: RawSocket if its first byte is
/// 0x7F (RawSocket's magic), MQTT if it is 0x10 (CONNECT), else HTTP (web
/// paths and WebSocket). The byte is read within the handshake deadline
/// and replayed to whichever serves.
async fn sniff<S: Io>(
    mut stream: S,
    peer: Peer,
    web: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> Option<crate::park::Parked> {
    use tokio::io::AsyncReadExt;
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(web.handshake_timeout, stream.read_exact(&mut first));
    let got = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = read => r,
    };
    if !matches!(got, Ok(Ok(_))) {
        return None;
    }
    let stream = web::Replay::new(first.to_vec(), stream);
    match (first[0], &web.rawsocket, &web.mqtt) {
        (0x7F, Some(raw), _) => {
            rawsocket::handle_connection(stream, peer, raw.clone(), realms, shutdown).await;
            None
        }
        (0x10, _, Some(mqtt)) => {
            mqtt::handle_connection(stream, peer, mqtt.clone(), realms, shutdown).await
        }
        _ => {
            http::serve_connection(stream, peer, web, realms, shutdown).await;
            None
        }
    }
}

/// The session a transport's handshake opened (`None`: it did not), made
/// inside the handshake's box: `Box::pin(async { session_of(handshake.await,
/// ..) }).await.await`, and the connection's future holds the session's
/// alone, not also the transport it was made from (which the compiler
/// keeps beside a session made after an await: a kilobyte per MQTT
/// client), nor the connection's arguments (the session owns its settings
/// and realms). Its output is `true` once a session ran.
pub(super) fn session_of<T: crate::session::transport::Transport>(
    opened: Option<(T, crate::session::Connection)>,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> futures::future::Either<impl Future<Output = bool> + Send + 'static, std::future::Ready<bool>>
{
    use futures::FutureExt;
    let Some((transport, conn)) = opened else {
        return futures::future::Either::Right(std::future::ready(false));
    };
    futures::future::Either::Left(
        crate::session::run(
            transport,
            listener::SessionOf(settings),
            realms,
            conn,
            shutdown,
        )
        .map(|()| true),
    )
}

/// As [`session_of`], for a transport whose idle sessions park
/// ([`crate::park`]): the output is the session parked, or `None` once it
/// has ended (or never began).
pub(super) fn parking_session_of<T: crate::session::transport::Transport>(
    opened: Option<(T, crate::session::Connection)>,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> futures::future::Either<
    impl Future<Output = Option<crate::park::Parked>> + Send + 'static,
    std::future::Ready<Option<crate::park::Parked>>,
> {
    let Some((transport, conn)) = opened else {
        return futures::future::Either::Right(std::future::ready(None));
    };
    futures::future::Either::Left(crate::session::run_parking(
        transport,
        listener::SessionOf(settings),
        realms,
        conn,
        shutdown,
    ))
}

/// A byte stream a transport runs on (TCP or Unix).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// What it is (a TCP or Unix stream can be parked: [`crate::park`]).
    fn as_any(&self) -> &dyn std::any::Any;
    /// Itself, to take it apart as what it is.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}
