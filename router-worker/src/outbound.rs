//! Messages on their way to sessions, encoded at most once per serializer.
//!
//! The realm's core wraps each outbound message in an [`OutMsg`] and hands
//! the same `Arc` to every recipient (all subscribers of a subscription get
//! one EVENT). The first session task that writes it with a given serializer
//! encodes it; everyone else reuses those bytes. Encoding thus happens on the
//! session tasks (spread across cores) and once per serializer in use, never
//! once per subscriber.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use proto::{Message, Serializer};

/// Decode `msg`'s arguments where they are still as a WAMP peer sent them
/// ([`proto::Payload::raw`]), for the readers inside the router: in-memory
/// components and MQTT clients. Arguments that do not decode (they were
/// checked on arrival, so only values another serializer cannot hold, such
/// as a JSON number beyond 64-bit floats) are left out, and that is logged.
pub fn decode_args(msg: &mut Message) {
    let name = msg.name();
    if let Some(p) = msg.payload_mut()
        && let Err(e) = p.decode_raw()
    {
        tracing::warn!(message = name, cause = %e, "arguments cannot be decoded for a reader in the router: left out");
        *p = proto::Payload::default();
    }
}

/// One encoded form of a message.
#[derive(Clone, Debug)]
pub enum Encoded {
    /// JSON (serde_json writes UTF-8 only), sent as a WebSocket text frame.
    Text(Bytes),
    /// MessagePack or CBOR: sent as a binary frame.
    Binary(Bytes),
}

impl Encoded {
    /// `bytes` in `s`: a binary frame, or text for JSON.
    fn of(s: Serializer, bytes: Bytes) -> Encoded {
        if s.is_binary() {
            Encoded::Binary(bytes)
        } else {
            Encoded::Text(bytes)
        }
    }

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

    /// Wrap a message whose encoding in `s` is at hand (`bytes`, exactly
    /// what encoding it would give, or an equivalent form of it).
    pub fn encoded_as(msg: Message, s: Serializer, bytes: Bytes) -> Arc<OutMsg> {
        let out = OutMsg {
            msg,
            cache: Default::default(),
        };
        let _ = out.cache[s.index()].set(Some(Encoded::of(s, bytes)));
        Arc::new(out)
    }

    /// The message encoded for `s`, encoding it on first use.
    pub fn encoded(&self, s: Serializer) -> Option<&Encoded> {
        self.cache[s.index()]
            .get_or_init(|| match s.encode_to_vec(&self.msg) {
                Ok(v) => Some(Encoded::of(s, Bytes::from(v))),
                Err(e) => {
                    tracing::error!(cause = %e, message = self.msg.name(), "cannot encode outbound message");
                    None
                }
            })
            .as_ref()
    }
}

/// A session's outbound queue and its kill switch, in one small allocation.
///
/// The realm (one producer) pushes with [`OutboxSender::try_send`] and
/// never waits: a full queue is the slow-peer policy's business. The
/// session's task (the one consumer) takes messages with
/// [`OutboxReceiver::poll_recv`]. The queue's memory is taken on use and
/// given back once a burst has drained, so an idle session holds about a
/// hundred bytes here (a tokio channel and a cancellation token held close
/// to a kilobyte for every session).
#[derive(Debug)]
struct Outbox {
    state: Mutex<OutboxState>,
    /// Messages the queue holds at most.
    capacity: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    queue: VecDeque<Arc<OutMsg>>,
    /// Why the realm closed the session (the first reason wins).
    killed: Option<Box<(String, String)>>,
    /// The consumer's waker, while it waits for something to happen.
    waker: Option<Waker>,
    /// The realm let go of the session (its sender was dropped).
    sender_gone: bool,
    /// The session's task ended (its receiver was dropped).
    receiver_gone: bool,
}

/// The queue capacity kept after a burst drains; a larger one is freed.
const KEPT_SLOTS: usize = 16;

impl OutboxState {
    /// The next queued message; the queue's memory goes back once a
    /// burst has drained.
    fn pop(&mut self) -> Option<Arc<OutMsg>> {
        let m = self.queue.pop_front()?;
        if self.queue.is_empty() && self.queue.capacity() > KEPT_SLOTS {
            self.queue = VecDeque::new();
        }
        Some(m)
    }
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // A panic while holding this lock leaves a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Make a session's outbox holding at most `capacity` messages.
pub fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Outbox {
        state: Mutex::new(OutboxState::default()),
        capacity: capacity.max(1),
    });
    (OutboxSender(shared.clone()), OutboxReceiver(shared))
}

/// Why [`OutboxSender::try_send`] did not queue a message.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The queue holds `capacity` messages already.
    Full,
    /// The session's task has ended.
    Closed,
}

/// The realm's side of a session's outbox. Dropping it tells the session
/// that the realm let go of it.
#[derive(Debug)]
pub struct OutboxSender(Arc<Outbox>);

impl OutboxSender {
    /// Queue `msg` now, or say why not.
    pub fn try_send(&self, msg: Arc<OutMsg>) -> Result<(), SendError> {
        let waker = {
            let mut s = self.0.lock();
            if s.receiver_gone {
                return Err(SendError::Closed);
            }
            if s.queue.len() >= self.0.capacity {
                return Err(SendError::Full);
            }
            s.queue.push_back(msg);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// Close the session with `reason` (a URI) and `message`; a second
    /// kill keeps the first reason.
    pub fn kill(&self, reason: &str, message: String) {
        let waker = {
            let mut s = self.0.lock();
            if s.killed.is_none() {
                s.killed = Some(Box::new((reason.to_owned(), message)));
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock();
            s.sender_gone = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What the session's side of the outbox gives next.
#[derive(Debug)]
pub enum Next {
    /// A message to write.
    Msg(Arc<OutMsg>),
    /// The realm killed the session ([`OutboxReceiver::kill_reason`]).
    Killed,
    /// The realm let go of the session without a kill (it stopped).
    Closed,
}

/// The session task's side of its outbox.
#[derive(Debug)]
pub struct OutboxReceiver(Arc<Outbox>);

impl OutboxReceiver {
    /// A kill first, then the queued messages, then the realm's departure;
    /// `Pending` (with the task's waker kept) while there is none of them.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut s = self.0.lock();
        if s.killed.is_some() {
            return Poll::Ready(Next::Killed);
        }
        if let Some(m) = s.pop() {
            return Poll::Ready(Next::Msg(m));
        }
        if s.sender_gone {
            return Poll::Ready(Next::Closed);
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// The next queued message, if one is there now (and no kill is).
    pub fn try_recv(&self) -> Option<Arc<OutMsg>> {
        let mut s = self.0.lock();
        if s.killed.is_some() {
            return None;
        }
        s.pop()
    }

    /// Ready once [`OutboxReceiver::poll_recv`] has something to give (a
    /// kill, a message, the realm's departure), taking nothing: what a
    /// parked session watches ([`crate::park`]).
    pub fn poll_any(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock();
        if s.killed.is_some() || !s.queue.is_empty() || s.sender_gone {
            return Poll::Ready(());
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// Ready once the realm has killed the session.
    pub fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock();
        if s.killed.is_some() {
            return Poll::Ready(());
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// The reason URI and message the realm killed the session with.
    pub fn kill_reason(&self) -> Option<(String, String)> {
        self.0.lock().killed.as_deref().cloned()
    }
}

fn register(s: &mut OutboxState, cx: &mut Context<'_>) {
    if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        s.waker = Some(cx.waker().clone());
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.receiver_gone = true;
        s.queue = VecDeque::new();
        s.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Id;
    use proto::message::Published;

    #[test]
    fn an_encoding_at_hand_is_used_and_others_are_made() {
        let msg = Message::Published(Published {
            request: 3,
            publication: 4,
        });
        let given = Bytes::from_static(b"given bytes");
        let out = OutMsg::encoded_as(msg.clone(), Serializer::MsgPack, given.clone());
        match out.encoded(Serializer::MsgPack) {
            Some(Encoded::Binary(b)) => assert_eq!(*b, given),
            other => panic!("{other:?}"),
        }
        let json = out.encoded(Serializer::Json).map(Encoded::as_bytes);
        assert_eq!(json, Some(&b"[17,3,4]"[..]));
    }

    fn published(n: Id) -> Arc<OutMsg> {
        OutMsg::new(Message::Published(Published {
            request: n,
            publication: n,
        }))
    }

    fn request(m: &OutMsg) -> Id {
        match &m.msg {
            Message::Published(p) => p.request,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_outbox_is_bounded_ordered_and_wakes_its_consumer() {
        let (tx, rx) = outbox(2);
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert_eq!(tx.try_send(published(1)), Ok(()));
        assert_eq!(
            count.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "woken by the first message"
        );
        assert_eq!(tx.try_send(published(2)), Ok(()));
        assert_eq!(
            tx.try_send(published(3)),
            Err(SendError::Full),
            "bounded at its capacity"
        );
        assert_eq!(tx.capacity(), 2);
        match rx.poll_recv(&mut cx) {
            Poll::Ready(Next::Msg(m)) => assert_eq!(request(&m), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.try_recv().map(|m| request(&m)), Some(2));
        assert!(rx.try_recv().is_none());
        drop(tx);
        assert!(
            matches!(rx.poll_recv(&mut cx), Poll::Ready(Next::Closed)),
            "the realm let go"
        );
    }

    #[test]
    fn a_kill_comes_before_queued_messages_and_keeps_the_first_reason() {
        let (tx, rx) = outbox(8);
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_killed(&mut cx).is_pending());
        tx.try_send(published(1)).unwrap();
        tx.kill("wamp.error.protocol_violation", "first".into());
        tx.kill("wamp.close.killed", "second".into());
        assert!(count.0.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert!(rx.poll_killed(&mut cx).is_ready());
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Next::Killed)));
        assert!(
            rx.try_recv().is_none(),
            "nothing more is written once killed"
        );
        assert_eq!(
            rx.kill_reason(),
            Some(("wamp.error.protocol_violation".into(), "first".into()))
        );
    }

    #[test]
    fn a_gone_session_refuses_messages_and_a_drained_burst_frees_its_queue() {
        let (tx, rx) = outbox(1000);
        for n in 0..100 {
            tx.try_send(published(n)).unwrap();
        }
        assert!(rx.0.lock().queue.capacity() >= 100);
        while rx.try_recv().is_some() {}
        assert_eq!(
            rx.0.lock().queue.capacity(),
            0,
            "the burst's memory is given back"
        );
        let m = published(7);
        drop(rx);
        assert_eq!(tx.try_send(m.clone()), Err(SendError::Closed));
        assert_eq!(Arc::strong_count(&m), 1, "the refused message is not kept");
    }

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
