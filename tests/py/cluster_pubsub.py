"""Pub/Sub across clustered nodes with autobahn-python: per-publisher order
across topics, prefix and wildcard subscriptions, black- and
whitelisting, publisher disclosure and meta events, all across nodes.

Usage: python cluster_pubsub.py WS_URL_A WS_URL_B WS_URL_C
"""

import asyncio
import sys

from autobahn.wamp.types import PublishOptions, SubscribeOptions

from wamp_client import check, connect, leave

A, B, C = sys.argv[1:4]
N = 2000


async def settle(pub, topic, sub_queues, timeout=10):
    """Publish probes on `topic` until every queue got one: the
    subscriptions are in place on every node. Returns after draining."""
    deadline = asyncio.get_event_loop().time() + timeout
    while True:
        pub.publish(topic, "probe")
        await asyncio.sleep(0.05)
        if all(not q.empty() for q in sub_queues):
            break
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit(f"FAILED: probes on {topic} never arrived everywhere")
    await asyncio.sleep(0.2)
    for q in sub_queues:
        while not q.empty():
            q.get_nowait()


async def ordering():
    pub = await connect(A, "msgpack")
    subs = [await connect(B, "msgpack"), await connect(C, "json")]
    queues = []
    for s in subs:
        q = asyncio.Queue()
        for t in ("com.order.t1", "com.order.t2"):
            await s.subscribe(lambda seq, topic=t, q=q: q.put_nowait((topic, seq)), t)
        await s.subscribe(lambda *_a, q=q: q.put_nowait(("probe", -1)), "com.order.probe")
        queues.append(q)
    await settle(pub, "com.order.probe", queues)
    for i in range(N):
        pub.publish("com.order.t1" if i % 2 == 0 else "com.order.t2", i)
        if i % 200 == 199:
            await asyncio.sleep(0.01)
    for q in queues:
        got = []
        while len(got) < N:
            try:
                got.append(await asyncio.wait_for(q.get(), 10))
            except asyncio.TimeoutError:
                raise SystemExit(f"FAILED: only {len(got)} of {N} events arrived")
        seqs = [s for _, s in got]
        if seqs != list(range(N)):
            raise SystemExit(f"FAILED: out of order or lost: {seqs[:20]}...")
        topics_ok = all(t == ("com.order.t1" if s % 2 == 0 else "com.order.t2") for t, s in got)
        if not topics_ok:
            raise SystemExit("FAILED: an event arrived on the wrong topic")
    check(True, f"{N} events from A reached B and C in order across two topics")
    await leave(pub, *subs)


async def patterns():
    pub = await connect(A, "json")
    sub = await connect(B, "json")
    got = asyncio.Queue()

    def on(*args, details=None):
        got.put_nowait((details.topic, args[0]))

    await sub.subscribe(on, "com.a", options=SubscribeOptions(match="prefix", details_arg="details"))
    await sub.subscribe(on, "com..x", options=SubscribeOptions(match="wildcard", details_arg="details"))
    probe = asyncio.Queue()
    await sub.subscribe(lambda *_a: probe.put_nowait(1), "com.pattern.probe")
    await settle(pub, "com.pattern.probe", [probe])
    for topic in ["com.a.b", "com.ab", "com.b", "com.y.x", "com.y.z", "com.y.x.z"]:
        pub.publish(topic, topic)
    pub.publish("com.pattern.probe", "end")
    await asyncio.wait_for(probe.get(), 10)
    await asyncio.sleep(0.2)
    seen = []
    while not got.empty():
        seen.append(got.get_nowait())
    check(sorted(seen) == sorted([("com.a.b", "com.a.b"), ("com.ab", "com.ab"), ("com.y.x", "com.y.x")]),
          f"prefix and wildcard subscriptions on B match as on one node ({seen})")
    await leave(pub, sub)


async def audience():
    pub = await connect(A, "json")
    b1 = await connect(B, "json")
    b2 = await connect(B, "msgpack")
    c1 = await connect(C, "json")
    queues = {}
    for name, s in [("b1", b1), ("b2", b2), ("c1", c1)]:
        q = asyncio.Queue()
        await s.subscribe(lambda v, details=None, q=q: q.put_nowait((v, details.publisher if details else None)),
                          "com.aud.t", options=SubscribeOptions(details_arg="details"))
        queues[name] = q
    await settle(pub, "com.aud.t", list(queues.values()))
    ids = {n: s._session_id for n, s in [("b1", b1), ("b2", b2), ("c1", c1)]}
    authids = {n: s.details.authid for n, s in [("b1", b1), ("b2", b2), ("c1", c1)]}
    cases = [
        ("eligible", PublishOptions(eligible=[ids["b2"]]), {"b2"}),
        ("exclude", PublishOptions(exclude=[ids["b1"], ids["c1"]]), {"b2"}),
        ("eligible_authid", PublishOptions(eligible_authid=[authids["c1"]]), {"c1"}),
        ("exclude_authid", PublishOptions(exclude_authid=[authids["b2"]]), {"b1", "c1"}),
        ("exclude_authrole", PublishOptions(exclude_authrole=["anonymous"]), set()),
        ("eligible_authrole", PublishOptions(eligible_authrole=["anonymous"]), {"b1", "b2", "c1"}),
    ]
    for name, opts, want in cases:
        pub.publish("com.aud.t", name, options=opts)
        pub.publish("com.aud.t", "end:" + name)
        got = set()
        for n, q in queues.items():
            while True:
                v, _ = await asyncio.wait_for(q.get(), 10)
                if v == "end:" + name:
                    break
                if v == name:
                    got.add(n)
        if got != want:
            raise SystemExit(f"FAILED: {name}: delivered to {got}, expected {want}")
    check(True, "eligible and exclude by session, authid and authrole across nodes")
    # The role discloses publishers (the nodes' config).
    pub.publish("com.aud.t", "disclosed")
    v, publisher = await asyncio.wait_for(queues["c1"].get(), 10)
    check(v == "disclosed" and publisher == pub._session_id, "publisher disclosure across nodes")
    await leave(pub, b1, b2, c1)


async def meta():
    watcher = await connect(A, "json")
    joins = asyncio.Queue()
    await watcher.subscribe(lambda details: joins.put_nowait(details["session"]), "wamp.session.on_join")
    await asyncio.sleep(0.5)
    newcomer = await connect(B, "json")
    deadline = asyncio.get_event_loop().time() + 10
    while True:
        sid = await asyncio.wait_for(joins.get(), 10)
        if sid == newcomer._session_id:
            break
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit("FAILED: B's join never seen on A")
    check(True, "B's join seen on A as wamp.session.on_join")
    # A subscriber on the publisher's own node gets each event once (the
    # node does not get its own publications back from NATS).
    local = asyncio.Queue()
    await watcher.subscribe(lambda v: local.put_nowait(v), "com.local.t")
    for i in range(20):
        newcomer.publish("com.local.t", i)
    pub_a = await connect(A, "json")
    for i in range(20, 40):
        pub_a.publish("com.local.t", i)
    await asyncio.sleep(1.0)
    seen = []
    while not local.empty():
        seen.append(local.get_nowait())
    check(sorted(seen) == list(range(40)),
          f"a local subscriber still gets its node's events once ({len(seen)} of 40)")
    await leave(watcher, newcomer, pub_a)


async def retained():
    """An event retained on A is retained on B too: a later subscriber on
    B with get_retained gets it, publisher disclosure and all."""
    pub = await connect(A, "json")
    watcher = await connect(B, "json")
    seen = asyncio.Queue()
    # B hears the realm's events: the retained one reaches it.
    await watcher.subscribe(lambda v: seen.put_nowait(v), "com.ret.probe")
    await settle(pub, "com.ret.probe", [seen])
    # (The role discloses publishers: node_config.)
    await pub.publish("com.ret.t", "kept", options=PublishOptions(retain=True, acknowledge=True))
    await pub.publish("com.ret.probe", "after", options=PublishOptions(acknowledge=True))
    check(await asyncio.wait_for(seen.get(), 10) == "after", "B heard A's events after the retained one")
    late = await connect(B, "msgpack")
    got = asyncio.Queue()
    await late.subscribe(lambda v, details=None: got.put_nowait((v, details)), "com.ret.t",
                         options=SubscribeOptions(get_retained=True, details_arg="details"))
    v, details = await asyncio.wait_for(got.get(), 10)
    check(v == "kept" and details.retained and details.publisher == pub._session_id,
          "a subscriber on B gets the event retained on A (get_retained)")
    await leave(pub, watcher, late)


async def main():
    await ordering()
    await patterns()
    await audience()
    await meta()
    await retained()


asyncio.run(main())
