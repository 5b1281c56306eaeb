//! Member links (`cluster.links`): direct TCP connections between the
//! router workers of a cluster, for the member-to-member RPC frames that
//! otherwise go through nats-server (calls, cancels and answers; see
//! [`crate::backplane`]).
//!
//! Each router worker listens on `cluster.links` and says every second,
//! on NATS (`trellis.<cluster>.links`), where it listens and which token
//! opens its links: a random 256-bit token made at start, so that only who
//! can read the cluster's NATS subjects (the members) can connect. A member
//! that hears of another connects to it once and sends it its frames on
//! that connection; each direction of a pair is its own connection, and
//! the listening side only reads. A frame goes on a link when one to its
//! member is up and through NATS when none is (not connected yet, or lost:
//! the next advert a second later tries again, with a growing pause after
//! failures). A link's queue is bounded ([`LinksConfig::queue`]): when it
//! is full the frame is dropped and counted, as NATS's queue does.
//! Cross-node delivery stays at-most-once.
//!
//! On the wire every message is a big-endian u32 length and then its
//! bytes ([`LinkCodec`]). The connecting side first sends a hello
//! (`trellis-link 1`, its member id and the token, one per line) and waits
//! for `ok`; a wrong token is refused and counted, and no other member is
//! affected. Then each message is a realm (its name in hex, after a u16
//! length) and one frame for that realm's inbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};
use trellis_config::router::LinksConfig;

use crate::backplane::BackplaneStats;

/// The first line of a hello.
const HELLO: &str = "trellis-link 1";

/// The largest hello taken (member id and token are short).
const MAX_HELLO: usize = 1024;

/// The largest message on a link: a realm's frame is at most
/// `backplane::FRAME_LIMIT` plus one record, and a record larger than
/// this goes through NATS instead.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Bytes of frames waiting to go out on one link, at most (beside its
/// `queue` of frames): a member that stops reading holds no more of this
/// router's memory than this.
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// Time for a hello and its answer.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// Connections in their handshake at once, at most (more are closed at
/// once): a stranger's connections cost only this much.
const HANDSHAKES: usize = 64;

/// What goes out on a link: the realm (its name in hex) and a frame.
type Outgoing = (Arc<str>, Bytes);

/// The length-prefixed messages of a link. Decoding is bounded by the
/// length read first (at most [`MAX_HELLO`] until the peer is known, then
/// [`MAX_MESSAGE`]); encoding writes the realm and the frame after one
/// length, without another copy of the frame.
pub struct LinkCodec(LengthDelimitedCodec);

impl LinkCodec {
    fn new(max: usize) -> Self {
        LinkCodec(
            LengthDelimitedCodec::builder()
                .length_field_type::<u32>()
                .max_frame_length(max)
                .new_codec(),
        )
    }
}

impl Decoder for LinkCodec {
    type Item = BytesMut;
    type Error = std::io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        self.0.decode(src)
    }
}

impl Encoder<Outgoing> for LinkCodec {
    type Error = std::io::Error;
    fn encode(&mut self, (realm, frame): Outgoing, dst: &mut BytesMut) -> std::io::Result<()> {
        let len = 2 + realm.len() + frame.len();
        let (Ok(total), Ok(rlen)) = (u32::try_from(len), u16::try_from(realm.len())) else {
            return Err(std::io::Error::other("a link message too large"));
        };
        dst.reserve(4 + len);
        dst.put_u32(total);
        dst.put_u16(rlen);
        dst.put_slice(realm.as_bytes());
        dst.put_slice(&frame);
        Ok(())
    }
}

impl Encoder<Bytes> for LinkCodec {
    type Error = std::io::Error;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> std::io::Result<()> {
        self.0.encode(item, dst)
    }
}

/// A hello: this member's id and the other's token.
fn hello(member: &str, token: &str) -> Bytes {
    Bytes::from(format!("{HELLO}\n{member}\n{token}"))
}

/// The member a hello comes from, if its token is `token` (compared in
/// constant time).
fn check_hello<'a>(bytes: &'a [u8], token: &str) -> Result<&'a str, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a hello")?;
    let mut lines = text.split('\n');
    if lines.next() != Some(HELLO) {
        return Err("not a hello of this version");
    }
    let (Some(member), Some(given), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err("not a hello");
    };
    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return Err("a wrong token");
    }
    Ok(member)
}

/// A link message's realm (hex) and frame.
fn split_message(mut m: BytesMut) -> Option<(String, Bytes)> {
    if m.len() < 2 {
        return None;
    }
    let rlen = usize::from(m.get_u16());
    if m.len() < rlen {
        return None;
    }
    let realm = String::from_utf8(m.split_to(rlen).to_vec()).ok()?;
    Some((realm, m.freeze()))
}

/// An advert: who listens where, and the token that opens its links.
#[derive(serde::Serialize, serde::Deserialize)]
struct Advert {
    member: String,
    address: String,
    token: String,
}

/// One other member, as this one's outgoing link to it.
enum Peer {
    /// Connecting now.
    Connecting,
    /// Up: its frames go here.
    Up(Outlet),
    /// Lost or never reached: tried again after `retry` (failures so far).
    Down { failures: u32, retry: Instant },
}

/// Where a link's frames go: its queue, the bytes waiting there, and its
/// number (which tells one link to a member from the next).
struct Outlet {
    tx: mpsc::Sender<Outgoing>,
    queued: Arc<AtomicUsize>,
    n: u64,
}

/// A router worker's member links.
pub struct Links {
    member: Arc<str>,
    token: String,
    /// What this member says on NATS every second.
    advert: Bytes,
    queue: usize,
    peers: std::sync::Mutex<HashMap<Arc<str>, Peer>>,
    stats: Arc<BackplaneStats>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

/// Where a host and port are reached (`[v6]:port` for an IPv6 address).
fn address(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Links {
    /// Listen for member links.
    ///
    /// # Errors
    /// The address cannot be listened on (named with its config key).
    pub async fn bind(
        cfg: &LinksConfig,
        member: Arc<str>,
        stats: Arc<BackplaneStats>,
    ) -> Result<(Arc<Links>, TcpListener), String> {
        let listener = TcpListener::bind((cfg.interface.as_str(), cfg.port))
            .await
            .map_err(|e| {
                format!(
                    "cluster.links: cannot listen on {}: {e}",
                    address(&cfg.interface, cfg.port)
                )
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cluster.links: {e}"))?
            .port();
        let token = hex::encode(rand::random::<[u8; 32]>());
        let advert = serde_json::to_vec(&Advert {
            member: member.to_string(),
            address: address(cfg.advertised_host(), port),
            token: token.clone(),
        })
        .map_err(|e| format!("cluster.links: {e}"))?;
        info!(
            address = %address(&cfg.interface, port),
            "cluster backplane: listening for member links"
        );
        let links = Arc::new(Links {
            member,
            token,
            advert: Bytes::from(advert),
            queue: cfg.queue.max(1),
            peers: std::sync::Mutex::default(),
            stats,
        });
        Ok((links, listener))
    }

    /// This member's advert (it holds the token: never logged).
    pub fn advert(&self) -> Bytes {
        self.advert.clone()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Peer>> {
        // Every change is one insert or remove: a panic leaves it whole.
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Send `frame` for `realm` to `member` on its link if one is up.
    /// `false`: none is (the caller sends it through NATS). A frame that
    /// finds the link's queue full is dropped and counted (`true`).
    pub fn send(&self, member: &str, realm: &Arc<str>, frame: &Bytes) -> bool {
        if frame.len() + realm.len() + 2 > MAX_MESSAGE {
            return false;
        }
        let mut peers = self.peers();
        let Some(Peer::Up(out)) = peers.get(member) else {
            return false;
        };
        if out.queued.load(Ordering::Relaxed) + frame.len() > MAX_QUEUED_BYTES {
            self.stats.link_dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        match out.tx.try_send((realm.clone(), frame.clone())) {
            Ok(()) => {
                out.queued.fetch_add(frame.len(), Ordering::Relaxed);
                self.stats.link_sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.link_dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                peers.remove(member);
                false
            }
        }
    }

    /// A member is gone: its link is closed.
    pub fn forget(&self, member: &str) {
        self.peers().remove(member);
    }

    /// An advert heard on NATS: connect to its member if no link to it is
    /// up or being made (and its pause after failures is over).
    pub fn heard(self: &Arc<Self>, advert: &[u8]) {
        let Ok(a) = serde_json::from_slice::<Advert>(advert) else {
            debug!("cluster backplane: an unreadable member link advert: ignored");
            return;
        };
        if *a.member == *self.member {
            return;
        }
        let member: Arc<str> = a.member.into();
        let failures = {
            let mut peers = self.peers();
            let failures = match peers.get(&member) {
                None => 0,
                Some(Peer::Down { failures, retry }) if Instant::now() >= *retry => *failures,
                Some(_) => return,
            };
            peers.insert(member.clone(), Peer::Connecting);
            failures
        };
        let me = self.clone();
        tokio::spawn(async move { me.connect(member, a.address, a.token, failures).await });
    }

    /// Make the link to `member` and send on it until it is lost.
    async fn connect(
        self: Arc<Self>,
        member: Arc<str>,
        addr: String,
        token: String,
        failures: u32,
    ) {
        let opened = tokio::time::timeout(HANDSHAKE, async {
            let stream = TcpStream::connect(&addr).await?;
            let _ = stream.set_nodelay(true);
            let mut framed = Framed::new(stream, LinkCodec::new(MAX_HELLO));
            framed.send(hello(&self.member, &token)).await?;
            match framed.next().await {
                Some(Ok(answer)) if &answer[..] == b"ok" => Ok(framed),
                Some(Err(e)) => Err(e),
                _ => Err(std::io::Error::other("refused (a wrong token?)")),
            }
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer in 5 s")));
        let mut framed = match opened {
            Ok(f) => f,
            Err(e) => {
                let failures = failures + 1;
                if failures == 1 {
                    warn!(%member, %addr, "cluster backplane: cannot open a member link: {e}; its calls go through NATS (trying again)");
                } else {
                    debug!(%member, %addr, failures, "cluster backplane: cannot open a member link: {e}");
                }
                let pause = Duration::from_secs(1 << failures.min(5));
                self.set_down(&member, None, failures, pause);
                return;
            }
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // The map holds the only sender: the link ends once it is removed.
        let (tx, mut rx) = mpsc::channel::<Outgoing>(self.queue);
        let queued = Arc::new(AtomicUsize::new(0));
        {
            let mut peers = self.peers();
            // Forgotten meanwhile (the member died): not linked after all.
            if !matches!(peers.get(&member), Some(Peer::Connecting)) {
                return;
            }
            let out = Outlet {
                tx,
                queued: queued.clone(),
                n,
            };
            peers.insert(member.clone(), Peer::Up(out));
        }
        self.stats.links_open.fetch_add(1, Ordering::Relaxed);
        info!(%member, %addr, "cluster backplane: member link up");
        // The peer only reads: a message from it, or its end, is the end.
        let lost = loop {
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { break None };
                    if let Err(e) = write_batch(&mut framed, first, &mut rx, &queued).await {
                        break Some(e.to_string());
                    }
                }
                _ = framed.next() => break Some("closed by the other member".into()),
            }
        };
        self.stats.links_open.fetch_sub(1, Ordering::Relaxed);
        if let Some(why) = lost {
            info!(%member, "cluster backplane: member link lost ({why}); its calls go through NATS meanwhile");
            self.set_down(&member, Some(n), 0, Duration::from_secs(1));
        }
    }

    /// `member`'s link is down (if it is still link `n`, or still being
    /// made for `None`).
    fn set_down(&self, member: &Arc<str>, n: Option<u64>, failures: u32, pause: Duration) {
        let mut peers = self.peers();
        let ours = match (peers.get(member), n) {
            (Some(Peer::Up(out)), Some(n)) => out.n == n,
            (Some(Peer::Connecting), None) => true,
            _ => false,
        };
        if ours {
            peers.insert(
                member.clone(),
                Peer::Down {
                    failures,
                    retry: Instant::now() + pause,
                },
            );
        }
    }

    /// Accept other members' links and hand their frames to `deliver`
    /// (the realm's name in hex, the frame).
    pub async fn accept<F>(self: Arc<Self>, listener: TcpListener, deliver: F)
    where
        F: Fn(&str, Bytes) + Send + Sync + 'static,
    {
        let deliver = Arc::new(deliver);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    debug!("cluster backplane: accepting a member link: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                debug!(%peer, "cluster backplane: too many member links in their handshake: one closed");
                continue;
            };
            let me = self.clone();
            let deliver = deliver.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut framed = Framed::new(stream, LinkCodec::new(MAX_HELLO));
                let hello = tokio::time::timeout(HANDSHAKE, framed.next()).await;
                let checked = match &hello {
                    Ok(Some(Ok(h))) => check_hello(h, &me.token),
                    Ok(Some(Err(_))) => Err("not a hello"),
                    Ok(None) => Err("closed before its hello"),
                    Err(_) => Err("no hello in 5 s"),
                };
                let from = match checked {
                    Ok(m) => m.to_owned(),
                    Err(why) => {
                        // Loud for the first few (a member with an old
                        // token, a misconfiguration), then quiet: a stranger
                        // knocking cannot fill the log.
                        let n = me.stats.links_refused.fetch_add(1, Ordering::Relaxed);
                        if n < 10 || n.is_power_of_two() {
                            warn!(%peer, refused = n + 1, "cluster backplane: a member link refused: {why}");
                        } else {
                            debug!(%peer, "cluster backplane: a member link refused: {why}");
                        }
                        return;
                    }
                };
                if framed.send(Bytes::from_static(b"ok")).await.is_err() {
                    return;
                }
                drop(permit);
                framed.codec_mut().0.set_max_frame_length(MAX_MESSAGE);
                debug!(member = %from, %peer, "cluster backplane: a member link accepted");
                while let Some(Ok(m)) = framed.next().await {
                    let Some((realm, frame)) = split_message(m) else {
                        warn!(member = %from, "cluster backplane: a malformed member link message: link closed");
                        return;
                    };
                    me.stats.link_received.fetch_add(1, Ordering::Relaxed);
                    deliver(&realm, frame);
                }
            });
        }
    }
}

/// Write `first` and whatever else is queued now, then flush (`Framed`
/// writes its buffer out whenever it passes 8 KiB, so the loop's 256 KiB
/// is only a bound on what one batch may hold).
async fn write_batch(
    framed: &mut Framed<TcpStream, LinkCodec>,
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    queued: &AtomicUsize,
) -> std::io::Result<()> {
    queued.fetch_sub(first.1.len(), Ordering::Relaxed);
    framed.feed(first).await?;
    while framed.write_buffer().len() < 256 * 1024 {
        match rx.try_recv() {
            Ok(m) => {
                queued.fetch_sub(m.1.len(), Ordering::Relaxed);
                framed.feed(m).await?
            }
            Err(_) => break,
        }
    }
    SinkExt::<Outgoing>::flush(framed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_opens_only_with_the_token() {
        let token = hex::encode([7u8; 32]);
        let h = hello("a-router1-0000abcd", &token);
        assert_eq!(check_hello(&h, &token), Ok("a-router1-0000abcd"));
        let other = hex::encode([8u8; 32]);
        assert_eq!(check_hello(&h, &other), Err("a wrong token"));
        assert_eq!(check_hello(&h, ""), Err("a wrong token"));
        for bad in [
            &b"trellis-link 2\na\nb"[..],
            b"trellis-link 1\na",
            b"trellis-link 1\na\nb\nc",
            b"\xff\xfe",
            b"",
        ] {
            assert!(check_hello(bad, &token).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn messages_round_trip_and_are_bounded() {
        let mut c = LinkCodec::new(MAX_MESSAGE);
        let mut buf = BytesMut::new();
        let realm: Arc<str> = hex::encode("realm1").into();
        c.encode((realm.clone(), Bytes::from_static(b"\x02frame")), &mut buf)
            .expect("encode");
        c.encode((realm.clone(), Bytes::new()), &mut buf)
            .expect("encode");
        let one = c.decode(&mut buf).expect("decode").expect("a message");
        assert_eq!(
            split_message(one),
            Some((realm.to_string(), Bytes::from_static(b"\x02frame")))
        );
        let two = c.decode(&mut buf).expect("decode").expect("a message");
        assert_eq!(split_message(two), Some((realm.to_string(), Bytes::new())));
        assert!(c.decode(&mut buf).expect("decode").is_none());
        // A realm length past the message's end, or no length at all.
        assert_eq!(split_message(BytesMut::from(&b"\x00\x09abc"[..])), None);
        assert_eq!(split_message(BytesMut::from(&b"\x00"[..])), None);
        // A length over the bound is refused before its bytes are read.
        let mut small = LinkCodec::new(MAX_HELLO);
        let mut big = BytesMut::new();
        big.put_u32(MAX_HELLO as u32 + 1);
        assert!(small.decode(&mut big).is_err());
    }

    /// Wait (up to 5 s) until `f` holds.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn members_link_by_advert_and_a_wrong_token_is_refused() {
        let cfg: LinksConfig = serde_json::from_value(serde_json::json!({})).expect("links");
        let (sa, sb) = (
            Arc::new(BackplaneStats::default()),
            Arc::new(BackplaneStats::default()),
        );
        let (a, _la) = Links::bind(&cfg, "a".into(), sa.clone())
            .await
            .expect("bind a");
        let (b, lb) = Links::bind(&cfg, "b".into(), sb.clone())
            .await
            .expect("bind b");
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(b.clone().accept(lb, move |realm, frame| {
            let _ = tx.send((realm.to_owned(), frame));
        }));
        let realm: Arc<str> = hex::encode("realm1").into();
        let frame = Bytes::from_static(b"\x02records");
        assert!(!a.send("b", &realm, &frame), "no link yet: NATS's");

        // An advert with another token: refused by b, counted there, and a
        // stays on NATS, pausing before it tries again.
        let mut forged: Advert = serde_json::from_slice(&b.advert()).expect("advert");
        forged.token = "00".repeat(32);
        a.heard(&serde_json::to_vec(&forged).expect("json"));
        until("b refuses the wrong token", || {
            sb.links_refused.load(Ordering::Relaxed) == 1
        })
        .await;
        until("a takes the link as down", || {
            matches!(a.peers().get("b"), Some(Peer::Down { failures: 1, .. }))
        })
        .await;
        a.heard(&b.advert());
        assert!(
            matches!(a.peers().get("b"), Some(Peer::Down { .. })),
            "not tried again before its pause is over"
        );
        assert!(!a.send("b", &realm, &frame));

        // The pause over, the true advert: linked, frames go through.
        a.peers().insert(
            "b".into(),
            Peer::Down {
                failures: 1,
                retry: Instant::now(),
            },
        );
        a.heard(&b.advert());
        until("a's link to b is up", || {
            sa.links_open.load(Ordering::Relaxed) == 1
        })
        .await;
        assert!(a.send("b", &realm, &frame));
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(
            got.expect("in time"),
            Some((realm.to_string(), frame.clone()))
        );
        assert_eq!(sa.link_sent.load(Ordering::Relaxed), 1);
        assert_eq!(sb.link_received.load(Ordering::Relaxed), 1);
        match a.peers().get("b") {
            Some(Peer::Up(out)) => assert_eq!(out.queued.load(Ordering::Relaxed), 0),
            _ => panic!("the link is up"),
        }
        // Too large for a link: NATS's (which has its own bound).
        let big = Bytes::from(vec![0u8; MAX_MESSAGE]);
        assert!(!a.send("b", &realm, &big));

        // Its own advert is no one to link to.
        a.heard(&a.advert());
        assert!(a.peers().get("a").is_none());

        // The member gone: the link closes, frames go to NATS again.
        a.forget("b");
        until("the link closes", || {
            sa.links_open.load(Ordering::Relaxed) == 0
        })
        .await;
        assert!(!a.send("b", &realm, &frame));
    }

    #[tokio::test]
    async fn a_full_link_drops_and_counts() {
        let stats = Arc::new(BackplaneStats::default());
        let cfg: LinksConfig =
            serde_json::from_value(serde_json::json!({"queue": 1})).expect("links");
        let (a, _l) = Links::bind(&cfg, "a".into(), stats.clone())
            .await
            .expect("bind");
        // A link whose writer never takes anything.
        let (tx, rx) = mpsc::channel(a.queue);
        let queued = Arc::new(AtomicUsize::new(0));
        let out = Outlet {
            tx,
            queued: queued.clone(),
            n: 1,
        };
        a.peers().insert("b".into(), Peer::Up(out));
        let realm: Arc<str> = "00".into();
        let frame = Bytes::from_static(b"x");
        assert!(a.send("b", &realm, &frame));
        assert!(a.send("b", &realm, &frame), "dropped, not sent to NATS");
        assert_eq!(stats.link_sent.load(Ordering::Relaxed), 1);
        assert_eq!(stats.link_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(queued.load(Ordering::Relaxed), 1);
        // Bounded by bytes too: with the bytes waiting at the bound, even a
        // link with room in its queue drops.
        let (tx, rx2) = mpsc::channel(a.queue + 10);
        let out = Outlet {
            tx,
            queued: Arc::new(AtomicUsize::new(MAX_QUEUED_BYTES)),
            n: 2,
        };
        a.peers().insert("c".into(), Peer::Up(out));
        assert!(a.send("c", &realm, &frame), "dropped, not sent to NATS");
        assert_eq!(stats.link_dropped.load(Ordering::Relaxed), 2);
        drop(rx2);
        // Its writer gone: NATS's, and the link forgotten.
        drop(rx);
        assert!(!a.send("b", &realm, &frame));
        assert!(a.peers().get("b").is_none());
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(address("::1", 9), "[::1]:9");
        assert_eq!(address("127.0.0.1", 9), "127.0.0.1:9");
        assert_eq!(address("node1.example.com", 9), "node1.example.com:9");
    }
}
