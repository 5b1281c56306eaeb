//! Idle connections parked outside the runtime: no task, no future, no
//! reactor registration while nothing happens.
//!
//! An idle session costs its task (about 250 bytes), its socket's
//! registration with the runtime's reactor (about 250, cache-line
//! aligned) and its future (a kilobyte for an MQTT client), though it
//! waits for nothing but its socket, its outbox and a timer. A session
//! that has been quiet for a moment ([`PARK_FIRST`], [`PARK_AFTER`]) hands
//! its state to its
//! listener's [`Lot`] instead (a [`Parked`]: the session's state as a
//! [`Sleeper`], and its socket taken out of the runtime) and its task ends.
//!
//! The lot watches every parked socket in one epoll set of its own, which
//! the runtime watches as one file descriptor; the sessions' outboxes (and
//! the transport's own signals, such as MQTT's take-over) wake it through
//! a small waker per session; and one timer serves every parked session's
//! next deadline (a keep-alive, statistics). When any of these fires, the
//! socket goes back to the runtime and a new task runs the session again
//! from where it stopped ([`Sleeper::resume`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Instrument, Span, debug, warn};

use crate::transport::{Io, Open};

/// When a session (joined, or woken) first looks whether it is quiet:
/// soon, so that a crowd of devices connecting at once (a router
/// restarted, a network back) does not hold a crowd of running sessions,
/// whose memory would stay the process's after they park.
pub const PARK_FIRST: Duration = Duration::from_millis(20);

/// How often a session that was not quiet looks again: it parks after
/// between this and twice this of quiet (nothing read, nothing written).
/// Waking a parked session costs a few system calls and a task, so a busy
/// one never parks.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// How long a woken session's socket may take to show its readiness
/// (a socket that is neither readable nor writable, a peer that neither
/// sends nor reads, takes this long).
const READINESS_WAIT: Duration = Duration::from_millis(20);

/// A parked session's state: what wakes it, and how it runs again.
pub trait Sleeper: Send {
    /// Ready when something other than the socket needs the session (its
    /// outbox has a message, a kill or the realm's departure; the
    /// transport's own signals); registers `cx`'s waker otherwise.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// When the session must run again though nothing woke it.
    fn deadline(&self) -> Option<Instant>;

    /// The session again, on the socket it parked (back in the runtime):
    /// its future, whose output is the session parked again, or `None`
    /// once it has ended.
    fn resume(self: Box<Self>, io: Box<dyn Io>) -> SessionFuture;
}

/// A session's future: `Some` when it parked.
pub type SessionFuture = Pin<Box<dyn Future<Output = Option<Parked>> + Send>>;

/// A session handed to the lot.
pub struct Parked {
    /// The session's state.
    pub sleeper: Box<dyn Sleeper>,
    /// Its socket, out of the runtime's reactor.
    pub io: ParkedIo,
}

/// A parked socket: a TCP or Unix stream, out of the runtime's reactor
/// (still non-blocking).
#[derive(Debug)]
pub enum ParkedIo {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix socket connection.
    Unix(std::os::unix::net::UnixStream),
}

impl ParkedIo {
    /// Whether `io` is a stream [`ParkedIo::take`] takes: a plain TCP or
    /// Unix stream.
    pub fn can_take(io: &dyn Io) -> bool {
        let any = io.as_any();
        any.is::<tokio::net::TcpStream>() || any.is::<tokio::net::UnixStream>()
    }

    /// Take the stream out of `stream` and out of the runtime, if it is a
    /// plain TCP or Unix stream (not TLS, not WebSocket): `None` leaves it
    /// where it is; `Some(Err)` when the runtime would not let it go (the
    /// stream is gone then).
    pub fn take(stream: &mut Option<Box<dyn Io>>) -> Option<std::io::Result<ParkedIo>> {
        if !ParkedIo::can_take(&**stream.as_ref()?) {
            return None;
        }
        let any = stream.take()?.into_any();
        let any = match any.downcast::<tokio::net::TcpStream>() {
            Ok(tcp) => return Some(tcp.into_std().map(ParkedIo::Tcp)),
            Err(other) => other,
        };
        match any.downcast::<tokio::net::UnixStream>() {
            Ok(unix) => Some(unix.into_std().map(ParkedIo::Unix)),
            // Checked above: one of the two.
            Err(_) => Some(Err(std::io::Error::other("not a TCP or Unix stream"))),
        }
    }

    /// The stream back in the runtime (which must be running here), once
    /// the runtime knows whether it is readable or writable (or after
    /// [`READINESS_WAIT`]): a session's write that must not wait (MQTT's
    /// last words to a client it closes) would otherwise find a socket
    /// whose readiness is not known yet, and write nothing.
    ///
    /// # Errors
    /// The runtime's reactor would not take it.
    pub async fn into_io(self) -> std::io::Result<Box<dyn Io>> {
        let either = tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE;
        Ok(match self {
            ParkedIo::Tcp(s) => {
                let s = tokio::net::TcpStream::from_std(s)?;
                let _ = tokio::time::timeout(READINESS_WAIT, s.ready(either)).await;
                Box::new(s)
            }
            ParkedIo::Unix(s) => {
                let s = tokio::net::UnixStream::from_std(s)?;
                let _ = tokio::time::timeout(READINESS_WAIT, s.ready(either)).await;
                Box::new(s)
            }
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            ParkedIo::Tcp(s) => s.as_fd(),
            ParkedIo::Unix(s) => s.as_fd(),
        }
    }
}

/// A span kept for as long as a session idles: boxed, and nothing at all
/// when it is disabled (as sessions' spans are below the `info` level): a
/// span is 40 bytes even then, and every idle session keeps two.
pub struct KeptSpan(Option<Box<Span>>);

impl KeptSpan {
    pub fn new(span: Span) -> KeptSpan {
        KeptSpan((!span.is_disabled()).then(|| Box::new(span)))
    }

    /// The span (a disabled one if it was disabled).
    pub fn get(&self) -> &Span {
        static DISABLED: std::sync::LazyLock<Span> = std::sync::LazyLock::new(Span::none);
        self.0.as_deref().unwrap_or(&DISABLED)
    }

    pub fn into_span(self) -> Span {
        self.0.map_or_else(Span::none, |s| *s)
    }
}

/// What the connection's task held besides the session, kept with it
/// while it is parked: its place in the transport's `max_connections` and
/// `open` count, its log span, and its place in the listener's tasks (so
/// that a shutdown waits for parked sessions to close as for running ones).
pub struct Rest {
    /// The connection's slot and count.
    pub open: Open,
    /// The connection's span (peer, transport).
    pub span: KeptSpan,
    /// Keeps the listener's task tracker waiting for this connection.
    pub token: TaskTrackerToken,
}

/// One listener's parked sessions (cheap to clone: one shared lot). Its
/// watcher task starts with the first session parked.
#[derive(Clone, Default)]
pub struct Lot(Arc<Shared>);

impl std::fmt::Debug for Lot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lot({} parked)", self.parked())
    }
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the watcher: a session woken, or a nearer deadline.
    notify: tokio::sync::Notify,
    /// The lot could not start, and said so.
    warned: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// The epoll set of parked sockets, once the watcher runs.
    epoll: Option<Arc<AsyncFd<EpollSet>>>,
    /// The slots, [`CHUNK`] to a box: the lot grows a box at a time and
    /// never moves what it holds (a vector of slots would keep up to
    /// twice the room it uses, and copy it all as it grows).
    chunks: Vec<Box<[Slot]>>,
    /// Free slots' indexes.
    free: Vec<u32>,
    /// Sessions parked.
    used: usize,
    /// Sessions woken and not resumed yet (each once: see `Slot::woken`).
    woken: Vec<u64>,
    /// Parked sessions' deadlines: (when, as a [`tick`]; key).
    timers: BTreeSet<(u64, u64)>,
}

/// When the lot's clock began: its deadlines are nanoseconds since.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// A deadline as the lot keeps it (half an `Instant`'s room, in every
/// slot and timer): nanoseconds since [`EPOCH`] (0 for any time before).
fn tick(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(NEVER - 1)
}

/// The instant of a [`tick`].
fn instant(tick: u64) -> Instant {
    *EPOCH + std::time::Duration::from_nanos(tick)
}

/// No deadline.
const NEVER: u64 = u64::MAX;

#[derive(Default)]
struct Slot {
    /// Bumped at every reuse: a key names one session, never the next.
    generation: u32,
    /// Taken by a session being parked, whose entry is not in place yet.
    reserved: bool,
    /// Woken while reserved: woken as soon as its entry is in place.
    early: bool,
    /// The entry's key is in `woken` already.
    woken: bool,
    entry: Option<Entry>,
}

struct Entry {
    sleeper: Box<dyn Sleeper>,
    io: ParkedIo,
    rest: Rest,
    /// Its [`tick`] in `timers`, or [`NEVER`].
    deadline: u64,
}

/// The epoll set as the runtime watches it.
struct EpollSet(Epoll);

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

fn index_of(key: u64) -> usize {
    (key & 0xFFFF_FFFF) as usize
}

/// Slots per box of the lot's.
const CHUNK: usize = 256;

impl Inner {
    fn slot(&mut self, index: usize) -> Option<&mut Slot> {
        self.chunks.get_mut(index / CHUNK)?.get_mut(index % CHUNK)
    }

    /// A slot [`Inner::vacant`] gave (always there: slots are never
    /// taken away).
    fn at(&mut self, index: usize) -> &mut Slot {
        &mut self.chunks[index / CHUNK][index % CHUNK]
    }

    /// Free slot `index` for the next session, under a new generation (so
    /// that the old key wakes nothing).
    fn release(&mut self, index: usize) {
        let slot = self.at(index);
        slot.reserved = false;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
    }

    /// A free slot's index (a new box of them when none is free).
    fn vacant(&mut self) -> usize {
        if let Some(i) = self.free.pop() {
            return i as usize;
        }
        let base = self.chunks.len() * CHUNK;
        self.chunks
            .push((0..CHUNK).map(|_| Slot::default()).collect());
        // Lowest first.
        self.free
            .extend((base + 1..base + CHUNK).rev().map(|i| i as u32));
        base
    }

    /// Take the session `key` out (and out of the epoll set and timers).
    fn take(&mut self, key: u64) -> Option<Entry> {
        let index = index_of(key);
        let slot = self.slot(index)?;
        if key != key_of(index, slot.generation) {
            return None;
        }
        let e = slot.entry.take()?;
        slot.woken = false;
        self.release(index);
        self.used -= 1;
        if e.deadline != NEVER {
            self.timers.remove(&(e.deadline, key));
        }
        if let Some(epoll) = &self.epoll
            && let Err(err) = epoll.get_ref().0.delete(e.io.fd())
        {
            debug!(cause = %err, "a parked socket could not leave the lot's epoll set");
        }
        Some(e)
    }

    /// Mark `key` woken (once); a session still being parked is marked
    /// to be woken as soon as it is in place.
    fn wake(&mut self, key: u64) -> bool {
        let index = index_of(key);
        let Some(slot) = self.slot(index) else {
            return false;
        };
        if key != key_of(index, slot.generation) {
            return false;
        }
        match &slot.entry {
            Some(_) if !slot.woken => {
                slot.woken = true;
                self.woken.push(key);
                true
            }
            Some(_) => false,
            None => {
                slot.early |= slot.reserved;
                false
            }
        }
    }
}

fn key_of(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | (index as u64 & 0xFFFF_FFFF)
}

/// A parked session's waker: marks it woken and wakes the watcher. It
/// holds the lot weakly: the lot holds the session, whose outbox holds
/// this.
struct SlotWaker {
    lot: Weak<Shared>,
    key: u64,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(lot) = self.lot.upgrade() else {
            return;
        };
        let woke = lock(&lot).wake(self.key);
        if woke {
            lot.notify.notify_one();
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    // Every change under the lock leaves the lot consistent.
    shared
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sockets taken from the epoll set per look.
const EVENTS: usize = 256;

impl Lot {
    /// Sessions parked now.
    pub fn parked(&self) -> usize {
        lock(&self.0).used
    }

    /// Park `p` until something wakes it; its task's `rest` waits with it.
    /// Must run inside the runtime. A lot that cannot watch sockets (the
    /// epoll set could not be made) runs the session on at once.
    pub fn park(&self, p: Parked, rest: Rest) {
        let epoll = match self.watcher() {
            Ok(e) => e,
            Err(err) => {
                // Said once: every idle session asks again.
                if !self
                    .0
                    .warned
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    warn!(cause = %err, "cannot park idle connections (no epoll set): they stay in the runtime");
                }
                return self.run(p.sleeper, p.io, rest);
            }
        };
        let Parked { mut sleeper, io } = p;
        // The slot first (reserved: a wake that comes before the entry is
        // in place is kept for it), then the wakers, outside the lock: a
        // waker may be woken while it is registered (an `AtomicWaker`
        // does that when a wake races the registration), and waking takes
        // the lock.
        let key = {
            let mut inner = lock(&self.0);
            let index = inner.vacant();
            let slot = inner.at(index);
            slot.reserved = true;
            slot.early = false;
            key_of(index, slot.generation)
        };
        let waker = Waker::from(Arc::new(SlotWaker {
            lot: Arc::downgrade(&self.0),
            key,
        }));
        let ready = sleeper
            .poll_wake(&mut Context::from_waker(&waker))
            .is_ready();
        let deadline = sleeper.deadline().map_or(NEVER, tick);
        let mut inner = lock(&self.0);
        let index = index_of(key);
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if let Err(err) = epoll.get_ref().0.add(io.fd(), EpollEvent::new(flags, key)) {
            inner.release(index);
            drop(inner);
            debug!(cause = %err, "a socket could not join the lot's epoll set: the session runs on");
            return self.run(sleeper, io, rest);
        }
        let nearer = deadline != NEVER && inner.timers.first().is_none_or(|(t, _)| deadline < *t);
        if deadline != NEVER {
            inner.timers.insert((deadline, key));
        }
        rest.open
            .counters
            .parked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inner.used += 1;
        let slot = inner.at(index);
        slot.reserved = false;
        let early = std::mem::take(&mut slot.early);
        slot.entry = Some(Entry {
            sleeper,
            io,
            rest,
            deadline,
        });
        let woke = (ready || early) && inner.wake(key);
        drop(inner);
        if woke || nearer {
            self.0.notify.notify_one();
        }
    }

    /// The epoll set, with its watcher started on first use.
    fn watcher(&self) -> std::io::Result<Arc<AsyncFd<EpollSet>>> {
        let mut inner = lock(&self.0);
        if let Some(e) = &inner.epoll {
            return Ok(e.clone());
        }
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(std::io::Error::from)?;
        // `with_interest` (deprecated for `register`, which is `unsafe`):
        // the set owns its descriptor for its whole life and never changes
        // it, which is what `register` asks its caller to promise.
        #[allow(deprecated)]
        let afd = AsyncFd::with_interest(EpollSet(epoll), tokio::io::Interest::READABLE)?;
        let afd = Arc::new(afd);
        inner.epoll = Some(afd.clone());
        drop(inner);
        tokio::spawn(watch(Arc::downgrade(&self.0), afd.clone()));
        Ok(afd)
    }

    /// Run a session again, in a task of its listener's.
    fn run(&self, sleeper: Box<dyn Sleeper>, io: ParkedIo, rest: Rest) {
        let Rest { open, span, token } = rest;
        let lot = self.clone();
        let tracker = token.task_tracker().clone();
        let task = async move {
            let session = match io.into_io().await {
                Ok(io) => sleeper.resume(io),
                Err(err) => {
                    debug!(cause = %err, "a parked socket could not go back to the runtime: the connection is closed");
                    // Resumed without its socket: the session sees the
                    // connection lost and ends as it would.
                    sleeper.resume(Box::new(Gone))
                }
            };
            if let Some(p) = session.await {
                let span = KeptSpan::new(Span::current());
                lot.park(p, Rest { open, span, token });
            }
        };
        tracker.spawn(task.instrument(span.into_span()));
    }
}

/// A connection that is gone: reads end, writes fail.
struct Gone;

impl tokio::io::AsyncRead for Gone {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Gone {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The lot's watcher: resume every parked session whose socket became
/// readable (or closed), whose waker fired, or whose deadline came.
async fn watch(lot: Weak<Shared>, epoll: Arc<AsyncFd<EpollSet>>) {
    let mut events = vec![EpollEvent::empty(); EVENTS];
    loop {
        let Some(shared) = lot.upgrade() else {
            return;
        };
        let next = lock(&shared).timers.first().map(|(at, _)| instant(*at));
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        let mut ready = 0;
        tokio::select! {
            r = epoll.readable() => match r {
                Ok(mut guard) => {
                    ready = match epoll.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                        Ok(n) => n,
                        Err(nix::errno::Errno::EINTR) => 0,
                        Err(err) => {
                            // Not expected (the set and the buffer are
                            // ours); the next readiness tries again.
                            warn!(cause = %err, "the lot of parked connections could not be read (epoll_wait)");
                            0
                        }
                    };
                    if ready < events.len() {
                        guard.clear_ready();
                    }
                }
                // The runtime is shutting down: nothing is watched any more.
                Err(err) => {
                    debug!(cause = %err, "the lot of parked connections stops watching");
                    return;
                }
            },
            () = shared.notify.notified() => {}
            () = sleep => {}
        }
        let due = {
            let mut inner = lock(&shared);
            for e in &events[..ready] {
                inner.wake(e.data());
            }
            let now = tick(Instant::now());
            let expired: Vec<u64> = inner
                .timers
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, k)| *k)
                .collect();
            for k in expired {
                inner.wake(k);
            }
            let woken = std::mem::take(&mut inner.woken);
            woken
                .into_iter()
                .filter_map(|k| inner.take(k))
                .collect::<Vec<_>>()
        };
        let lot = Lot(shared);
        for e in due {
            e.rest
                .open
                .counters
                .parked
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            lot.run(e.sleeper, e.io, e.rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::TransportCounters;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::mpsc;

    /// A session that only waits: woken by its flag, its deadline, or its
    /// socket; each resumption is reported, and it parks again while
    /// `again` is set.
    struct Napper {
        name: String,
        flag: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
        deadline: Option<Instant>,
        again: bool,
        /// Wakes its waker while registering it (as an `AtomicWaker` does
        /// when a wake races the registration).
        racy: bool,
        resumed: mpsc::UnboundedSender<String>,
    }

    impl Sleeper for Napper {
        fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            if self.flag.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().expect("lock") = Some(cx.waker().clone());
            if self.racy {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }

        fn deadline(&self) -> Option<Instant> {
            self.deadline
        }

        fn resume(mut self: Box<Self>, io: Box<dyn Io>) -> SessionFuture {
            let _ = self.resumed.send(self.name.clone());
            Box::pin(async move {
                let mut io = Some(io);
                // Read what woke it, as a session would.
                let mut buf = [0u8; 16];
                if let Some(s) = &mut io {
                    let _ = futures::FutureExt::now_or_never(tokio::io::AsyncReadExt::read(
                        s, &mut buf,
                    ));
                }
                if !self.again {
                    return None;
                }
                self.again = false;
                self.deadline = None;
                self.flag.store(false, Ordering::SeqCst);
                let io = ParkedIo::take(&mut io)?.ok()?;
                Some(Parked { sleeper: self, io })
            })
        }
    }

    struct Setup {
        lot: Lot,
        counters: Arc<TransportCounters>,
        tracker: tokio_util::task::TaskTracker,
        permits: Arc<tokio::sync::Semaphore>,
        resumed: mpsc::UnboundedReceiver<String>,
        tx: mpsc::UnboundedSender<String>,
    }

    impl Setup {
        fn new() -> Setup {
            let (tx, resumed) = mpsc::unbounded_channel();
            Setup {
                lot: Lot::default(),
                counters: Arc::default(),
                tracker: tokio_util::task::TaskTracker::new(),
                permits: Arc::new(tokio::sync::Semaphore::new(10)),
                resumed,
                tx,
            }
        }

        /// Park a napper on one end of a socket pair; the other end, its
        /// flag and its waker slot.
        fn park(
            &self,
            name: &str,
            deadline: Option<Instant>,
            again: bool,
        ) -> (
            std::os::unix::net::UnixStream,
            Arc<AtomicBool>,
            Arc<Mutex<Option<Waker>>>,
        ) {
            self.park_with(name, deadline, again, false)
        }

        fn park_with(
            &self,
            name: &str,
            deadline: Option<Instant>,
            again: bool,
            racy: bool,
        ) -> (
            std::os::unix::net::UnixStream,
            Arc<AtomicBool>,
            Arc<Mutex<Option<Waker>>>,
        ) {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
            ours.set_nonblocking(true).expect("nonblocking");
            let flag = Arc::new(AtomicBool::new(false));
            let waker = Arc::new(Mutex::new(None));
            let napper = Napper {
                name: name.to_owned(),
                flag: flag.clone(),
                waker: waker.clone(),
                deadline,
                again,
                racy,
                resumed: self.tx.clone(),
            };
            let permit = self.permits.clone().try_acquire_owned().expect("permit");
            self.lot.park(
                Parked {
                    sleeper: Box::new(napper),
                    io: ParkedIo::Unix(ours),
                },
                Rest {
                    open: Open::new(self.counters.clone(), permit),
                    span: KeptSpan::new(Span::none()),
                    token: self.tracker.token(),
                },
            );
            (theirs, flag, waker)
        }

        async fn next(&mut self, within: Duration) -> Option<String> {
            tokio::time::timeout(within, self.resumed.recv())
                .await
                .ok()
                .flatten()
        }

        fn parked_count(&self) -> u64 {
            self.counters.parked.load(Ordering::SeqCst)
        }
    }

    const SOON: Duration = Duration::from_secs(5);
    const NOT_YET: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn a_parked_session_runs_again_when_its_socket_is_readable() {
        let mut s = Setup::new();
        let (mut peer, _, _) = s.park("a", None, false);
        let (_other, _, _) = s.park("b", None, false);
        assert_eq!((s.lot.parked(), s.parked_count()), (2, 2));
        assert_eq!(
            s.next(NOT_YET).await.as_deref(),
            None,
            "nothing happened yet"
        );
        peer.write_all(b"x").expect("write");
        assert_eq!(s.next(SOON).await.as_deref(), Some("a"));
        assert_eq!(
            s.next(NOT_YET).await.as_deref(),
            None,
            "only the readable one"
        );
        assert_eq!((s.lot.parked(), s.parked_count()), (1, 1));
        // A peer that closes wakes it too.
        drop(_other);
        assert_eq!(s.next(SOON).await.as_deref(), Some("b"));
        assert_eq!(s.lot.parked(), 0);
        // Both ended: their connections' slots and counts are given back.
        s.tracker.close();
        tokio::time::timeout(SOON, s.tracker.wait())
            .await
            .expect("tasks end");
        assert_eq!(s.counters.open.load(Ordering::SeqCst), 0);
        assert_eq!(s.permits.available_permits(), 10);
    }

    #[tokio::test]
    async fn its_waker_and_its_deadline_wake_it_and_an_old_waker_does_nothing() {
        let mut s = Setup::new();
        let (_peer, flag, waker) = s.park("woken", None, true);
        let soon = Instant::now() + Duration::from_millis(300);
        let (_peer2, _, _) = s.park("timed", Some(soon), false);
        assert_eq!(s.next(NOT_YET).await.as_deref(), None);
        flag.store(true, Ordering::SeqCst);
        let old = waker.lock().expect("lock").clone().expect("registered");
        old.wake_by_ref();
        assert_eq!(s.next(SOON).await.as_deref(), Some("woken"));
        assert_eq!(s.next(SOON).await.as_deref(), Some("timed"));
        assert!(Instant::now() >= soon, "not before its deadline");
        // "woken" parked again: the waker it had before names its old
        // place, and wakes nothing now.
        tokio::time::timeout(SOON, async {
            while s.lot.parked() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("parked again");
        old.wake();
        assert_eq!(
            s.next(NOT_YET).await.as_deref(),
            None,
            "a stale waker woke it"
        );
        let new = waker
            .lock()
            .expect("lock")
            .clone()
            .expect("registered again");
        new.wake();
        assert_eq!(s.next(SOON).await.as_deref(), Some("woken"));
    }

    #[tokio::test]
    async fn a_session_ready_when_it_parks_runs_on_at_once() {
        let mut s = Setup::new();
        let flag = Arc::new(AtomicBool::new(true));
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let permit = s.permits.clone().try_acquire_owned().expect("permit");
        s.lot.park(
            Parked {
                sleeper: Box::new(Napper {
                    name: "ready".to_owned(),
                    flag,
                    waker: Arc::default(),
                    deadline: None,
                    again: false,
                    racy: false,
                    resumed: s.tx.clone(),
                }),
                io: ParkedIo::Unix(ours),
            },
            Rest {
                open: Open::new(s.counters.clone(), permit),
                span: KeptSpan::new(Span::none()),
                token: s.tracker.token(),
            },
        );
        assert_eq!(s.next(SOON).await.as_deref(), Some("ready"));
        // And one woken while its waker was being registered (the lot's
        // lock is not held then: waking takes it).
        let (_peer, _, _) = s.park_with("racy", None, false, true);
        assert_eq!(s.next(SOON).await.as_deref(), Some("racy"));
        // And one whose deadline has passed.
        let (_peer, _, _) = s.park("late", Some(Instant::now()), false);
        assert_eq!(s.next(SOON).await.as_deref(), Some("late"));
    }

    #[tokio::test]
    async fn sessions_in_the_lots_later_boxes_wake_alone() {
        let mut s = Setup::new();
        s.permits = Arc::new(tokio::sync::Semaphore::new(1000));
        let peers: Vec<_> = (0..CHUNK + 44)
            .map(|i| s.park(&format!("n{i}"), None, false).0)
            .collect();
        assert_eq!(s.lot.parked(), CHUNK + 44);
        for i in [CHUNK + 7, 3, CHUNK] {
            (&peers[i]).write_all(b"x").expect("write");
            assert_eq!(s.next(SOON).await, Some(format!("n{i}")));
        }
        assert_eq!(s.next(NOT_YET).await, None);
        assert_eq!(s.lot.parked(), CHUNK + 41);
        // Freed slots are taken again first, the last freed first (and no
        // new box is made).
        let (_p, _, _) = s.park("again", None, false);
        assert_eq!(lock(&s.lot.0).free.last().copied(), Some(3));
        assert_eq!(lock(&s.lot.0).chunks.len(), 2);
        assert_eq!(s.lot.parked(), CHUNK + 42);
    }

    /// Every parked session keeps a slot: 128 bytes while it kept its
    /// deadline as an `Instant` and its connection's span inline.
    #[test]
    fn a_slot_stays_small() {
        let slot = std::mem::size_of::<Slot>();
        assert!(slot <= 80, "a lot's slot grew to {slot} bytes");
    }

    #[test]
    fn deadlines_keep_their_instant_in_ticks() {
        let at = Instant::now() + std::time::Duration::from_millis(1234);
        assert_eq!(instant(tick(at)), at);
        // Before the lot's clock began: due at once.
        if let Some(before) = EPOCH.checked_sub(std::time::Duration::from_secs(1)) {
            assert_eq!(tick(before), 0);
        }
    }
}
