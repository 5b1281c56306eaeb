"""End-to-end WAMP scenarios run by the Rust e2e suite with autobahn-python.

Usage: python scenarios.py URL SCENARIO SERIALIZER [SERIALIZER ...]

Each scenario asserts what the other side received; the script prints
"ok SCENARIO SERIALIZER" per pass and exits non-zero with a traceback on the
first failure.
"""

import asyncio
import sys
import traceback

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import (
    CallOptions,
    CallResult,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

from wamp_client import connect, expect_error, leave, until, wait

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


PAYLOAD_ARGS = [
    1,
    -7,
    2**53,
    3.25,
    "unicode ✓ ünï",
    b"\x00\x01\xfe\xff binary",
    [1, [2, [3]]],
    {"nested": {"list": [True, False, None]}},
    "",
]
PAYLOAD_KWARGS = {"a": 1, "b": b"\x00bytes", "c": {"d": [1.5, "x"]}, "empty": {}}


@scenario
async def join_leave(url, ser):
    s = await connect(url, ser)
    d = s.details
    assert d.realm == "realm1", d.realm
    assert d.authrole == "anonymous", d.authrole
    assert d.authmethod == "anonymous", d.authmethod
    assert isinstance(d.session, int) and 1 <= d.session <= 2**53, d.session
    broker = d.authextra  # not set for anonymous
    assert broker is None or broker == {}, broker
    s.leave("wamp.close.normal")
    details = await wait(s.left, "GOODBYE reply")
    # Crossbar.io's reply, which code written for it checks.
    assert details.reason == "wamp.close.normal", details.reason
    await wait(s.disconnected, "the transport to close")


async def leave_as_watched(url, ser, reason):
    """Leave with `reason` while a monitor watches wamp.session.on_leave;
    return (the GOODBYE reply's reason, the on_leave arguments)."""
    watcher = await connect(url, ser)
    leaves = []
    await watcher.subscribe(lambda *a: leaves.append(list(a)), "wamp.session.on_leave")
    s = await connect(url, ser)
    sid = s.details.session
    s.leave(reason)
    details = await wait(s.left, "GOODBYE reply")
    await until(lambda: any(l[0] == sid for l in leaves), "on_leave of the session")
    await leave(watcher)
    return details.reason, next(l for l in leaves if l[0] == sid)


@scenario
async def session_stats(url, ser):
    """Crossbar.io's realm stats: wamp.session.on_stats(session, stats) on
    join, after 10 rated messages, and on leave, in Crossbar.io's shape."""
    monitor = await connect(url, ser)
    events = []
    await monitor.subscribe(lambda who, st: events.append((who, st)), "wamp.session.on_stats")
    s = await connect(url, ser)
    sid = s.details.session
    for _ in range(8):
        await s.call("wamp.session.count")
    await leave(s)
    mine = lambda: [st for who, st in events if who.get("session") == sid]
    await until(lambda: any(st["last"] for st in mine()), "the last statistics")
    st = mine()
    who = next(w for w, _ in events if w.get("session") == sid)
    assert who == {"realm": "realm1", "session": sid, "authid": s.details.authid, "authrole": "anonymous"}, who
    keys = {"bytes", "cycle", "duration", "first", "last", "messages", "rated_messages", "serializer", "timestamp"}
    assert all(set(x) == keys for x in st), st
    assert st[0]["first"] and st[0]["cycle"] == 1 and st[0]["messages"] == 0, st[0]
    assert [x["cycle"] for x in st] == list(range(1, len(st) + 1)), st
    assert len(st) >= 3, f"join, at least one after 10 rated messages, leave: {st}"
    assert any(x["rated_messages"] >= 10 and not x["first"] and not x["last"] for x in st), st
    assert st[-1]["last"] and all(not x["last"] for x in st[:-1]), st
    assert all(x["serializer"] == ser for x in st), st
    assert sum(x["messages"] for x in st) >= 16, st
    await leave(monitor)


@scenario
async def session_stats_by_time(url, ser):
    """Crossbar.io's realm stats with trigger_after_duration 1 s: an idle
    session gets statistics every second, the first marked first."""
    monitor = await connect(url, ser)
    events = []
    await monitor.subscribe(lambda who, st: events.append((who, st)), "wamp.session.on_stats")
    s = await connect(url, ser)
    sid = s.details.session
    mine = lambda: [st for who, st in events if who.get("session") == sid]
    await until(lambda: len(mine()) >= 2, "two statistics by time", timeout=10)
    st = mine()
    assert st[0]["first"] and not st[1]["first"] and not st[0]["last"], st
    assert all(0.5e9 < x["duration"] < 3e9 for x in st), st
    await leave(s, monitor)


@scenario
async def crossbar_goodbye_and_on_leave(url, ser):
    """As Crossbar.io (the default): GOODBYE is answered wamp.close.normal
    whatever the client said, and on_leave carries the session id alone,
    so a monitor's `def on_leave(session_id)` works."""
    reason, args = await leave_as_watched(url, ser, "com.example.bye")
    assert reason == "wamp.close.normal", reason
    assert len(args) == 1 and isinstance(args[0], int), args

    calls = []

    def on_leave(session_id):
        calls.append(session_id)

    watcher = await connect(url, ser)
    await watcher.subscribe(on_leave, "wamp.session.on_leave")
    s = await connect(url, ser)
    sid = s.details.session
    await leave(s)
    await until(lambda: sid in calls, "a one-argument on_leave handler called")
    await leave(watcher)


@scenario
async def spec_goodbye_and_on_leave(url, ser):
    """With the router's options.compat "spec": goodbye_and_out, and on_leave
    with session, authid and authrole."""
    reason, args = await leave_as_watched(url, ser, "wamp.close.normal")
    assert reason == "wamp.close.goodbye_and_out", reason
    assert len(args) == 3 and args[2] == "anonymous", args


@scenario
async def unknown_realm(url, ser):
    try:
        await connect(url, ser, realm="no.such.realm")
    except Exception as e:
        assert getattr(e, "reason", None) == "wamp.error.no_such_realm", repr(e)
        assert "no.such.realm" in e.message, e.message
    else:
        raise AssertionError("joining an unknown realm succeeded")


@scenario
async def anonymous_refused_by_realm2(url, ser):
    """realm2 does not define the transport's anonymous role: joining it is
    refused at HELLO, naming the role (Crossbar.io does the same)."""
    try:
        await connect(url, ser, realm="realm2")
    except Exception as e:
        assert getattr(e, "reason", None) == "wamp.error.no_such_role", repr(e)
        assert '"anonymous"' in e.message and '"realm2"' in e.message, e.message
    else:
        raise AssertionError("an anonymous session joined a realm without its role")


@scenario
async def rpc_args_kwargs(url, ser):
    callee = await connect(url, ser)
    caller = await connect(url, ser)

    def echo(*args, **kwargs):
        return CallResult(*args, **kwargs)

    await callee.register(echo, "com.example.echo")
    res = await caller.call("com.example.echo", *PAYLOAD_ARGS, **PAYLOAD_KWARGS)
    assert list(res.results) == PAYLOAD_ARGS, res.results
    assert res.kwresults == PAYLOAD_KWARGS, res.kwresults
    # kwargs only, args only, nothing.
    res = await caller.call("com.example.echo", x=1)
    assert list(res.results) == [] and res.kwresults == {"x": 1}, (res.results, res.kwresults)
    assert await caller.call("com.example.echo", 42) == 42
    assert await caller.call("com.example.echo") is None
    await leave(callee, caller)


@scenario
async def args_across_serializers(url, ser):
    """A callee and a publisher on `ser`; callers and subscribers on every
    serializer. The router forwards arguments as they came to a peer of the
    same serializer and converts them for the others: each gets exactly
    what was sent (binary stays binary), in results, progressive results,
    errors and events."""
    sers = ["json", "msgpack", "cbor"]
    callee = await connect(url, ser)
    pub = await connect(url, ser)
    peers = {s: await connect(url, s) for s in sers}

    def echo(*args, **kwargs):
        return CallResult(*args, **kwargs)

    async def progress(n, details=None):
        for i in range(n):
            details.progress(i, b"\x00\xff", part={"i": i})
        return CallResult(n, b"done")

    def fail(*args, **kwargs):
        raise ApplicationError("com.example.failed", *args, **kwargs)

    await callee.register(echo, f"com.example.{ser}.echo")
    await callee.register(progress, f"com.example.{ser}.progress", options=RegisterOptions(details_arg="details"))
    await callee.register(fail, f"com.example.{ser}.fail")
    got = {s: [] for s in sers}
    for s, peer in peers.items():
        await peer.subscribe(lambda *a, s=s, **k: got[s].append((list(a), k)), f"com.example.{ser}.topic")
    for s, caller in peers.items():
        res = await caller.call(f"com.example.{ser}.echo", *PAYLOAD_ARGS, **PAYLOAD_KWARGS)
        assert list(res.results) == PAYLOAD_ARGS, (s, res.results)
        assert res.kwresults == PAYLOAD_KWARGS, (s, res.kwresults)
        res = await caller.call(f"com.example.{ser}.echo", k=b"\x01")
        assert list(res.results) == [] and res.kwresults == {"k": b"\x01"}, (s, res.results, res.kwresults)
        parts = []
        res = await caller.call(
            f"com.example.{ser}.progress",
            3,
            options=CallOptions(on_progress=lambda *a, **k: parts.append((list(a), k))),
        )
        assert list(res.results) == [3, b"done"], (s, res.results)
        assert parts == [([i, b"\x00\xff"], {"part": {"i": i}}) for i in range(3)], (s, parts)
        try:
            await caller.call(f"com.example.{ser}.fail", b"\x02", "why", n=2**53)
            raise AssertionError("no error")
        except ApplicationError as e:
            assert e.error == "com.example.failed", e
            assert list(e.args) == [b"\x02", "why"] and e.kwargs == {"n": 2**53}, (s, e.args, e.kwargs)
    await pub.publish(f"com.example.{ser}.topic", *PAYLOAD_ARGS, options=PublishOptions(acknowledge=True), **PAYLOAD_KWARGS)
    await until(lambda: all(got.values()), "the event at every serializer")
    for s in sers:
        assert got[s] == [(PAYLOAD_ARGS, PAYLOAD_KWARGS)], (s, got[s])
    await leave(callee, pub, *peers.values())


@scenario
async def rpc_application_error(url, ser):
    callee = await connect(url, ser)
    caller = await connect(url, ser)

    def fail(x):
        raise ApplicationError("com.example.error.too_big", x, "limit", 10, hint={"max": 10})

    await callee.register(fail, "com.example.fail")
    try:
        await caller.call("com.example.fail", 99)
    except ApplicationError as e:
        assert e.error == "com.example.error.too_big", e.error
        assert list(e.args) == [99, "limit", 10], e.args
        assert e.kwargs == {"hint": {"max": 10}}, e.kwargs
    else:
        raise AssertionError("the callee's error did not reach the caller")
    await leave(callee, caller)


@scenario
async def rpc_errors(url, ser):
    a = await connect(url, ser)
    b = await connect(url, ser)
    try:
        await a.call("com.example.nobody")
    except ApplicationError as e:
        assert e.error == "wamp.error.no_such_procedure", e.error
        assert "com.example.nobody" in e.args[0], e.args
    else:
        raise AssertionError("call to an unregistered procedure succeeded")
    reg = await a.register(lambda: 1, "com.example.taken")
    try:
        await b.register(lambda: 2, "com.example.taken")
    except ApplicationError as e:
        assert e.error == "wamp.error.procedure_already_exists", e.error
    else:
        raise AssertionError("second registration succeeded")
    # After unregistering, the name is free again and calls fail cleanly.
    await reg.unregister()
    try:
        await b.call("com.example.taken")
    except ApplicationError as e:
        assert e.error == "wamp.error.no_such_procedure", e.error
    else:
        raise AssertionError("call after unregister succeeded")
    await b.register(lambda: 2, "com.example.taken")
    assert await a.call("com.example.taken") == 2
    await leave(a, b)


@scenario
async def callee_leaves_mid_call(url, ser):
    callee = await connect(url, ser)
    caller = await connect(url, ser)
    started = asyncio.get_event_loop().create_future()

    async def slow():
        started.set_result(True)
        await asyncio.sleep(30)
        return "too late"

    await callee.register(slow, "com.example.slow")
    call = asyncio.ensure_future(caller.call("com.example.slow"))
    await wait(started, "the invocation to reach the callee")
    callee.leave()
    try:
        await wait(call, "the pending call to fail")
    except ApplicationError as e:
        assert e.error == "wamp.error.canceled", e.error
        assert "callee left" in e.args[0], e.args
    else:
        raise AssertionError("pending call did not fail when its callee left")
    try:
        await caller.call("com.example.slow")
    except ApplicationError as e:
        assert e.error == "wamp.error.no_such_procedure", e.error
    else:
        raise AssertionError("registration survived its callee")
    await leave(caller)


@scenario
async def concurrent_calls(url, ser):
    callee = await connect(url, ser)
    caller = await connect(url, ser)

    async def delayed_double(x):
        # Answer out of order: later requests finish first.
        await asyncio.sleep((500 - x) / 50000)
        return x * 2

    await callee.register(delayed_double, "com.example.double")
    results = await wait(
        asyncio.gather(*(caller.call("com.example.double", i) for i in range(500))),
        "500 concurrent calls",
    )
    assert results == [i * 2 for i in range(500)], results[:10]
    await leave(callee, caller)


@scenario
async def pubsub_basic(url, ser):
    pub = await connect(url, ser)
    sub1 = await connect(url, ser)
    sub2 = await connect(url, ser)
    got1, got2, got_self = [], [], []
    ev1 = asyncio.Event()

    def on1(*args, **kwargs):
        got1.append((list(args), kwargs))
        ev1.set()

    s1 = await sub1.subscribe(on1, "com.example.topic")
    await sub2.subscribe(lambda *a, **k: got2.append((list(a), k)), "com.example.topic")
    await pub.subscribe(lambda *a, **k: got_self.append(a), "com.example.topic")

    p = await pub.publish(
        "com.example.topic", *PAYLOAD_ARGS, options=PublishOptions(acknowledge=True), **PAYLOAD_KWARGS
    )
    assert isinstance(p.id, int) and 1 <= p.id <= 2**53, p.id
    await wait(ev1.wait(), "the event at subscriber 1")
    await until(lambda: got2, "the event at subscriber 2")
    assert got1 == [(PAYLOAD_ARGS, PAYLOAD_KWARGS)], got1
    assert got2 == [(PAYLOAD_ARGS, PAYLOAD_KWARGS)], got2

    # exclude_me=False: the publisher receives its own event.
    await pub.publish("com.example.topic", "mine", options=PublishOptions(acknowledge=True, exclude_me=False))
    await until(lambda: got_self, "the publisher's own event")
    assert got_self == [("mine",)], got_self
    # Other sessions' events have no order relative to ours: wait for it.
    await until(lambda: len(got1) == 2, "subscriber 1's copy of the publisher's own event")

    # Unsubscribed: no more events; a sentinel on a second topic orders it.
    await s1.unsubscribe()
    sentinel = asyncio.get_event_loop().create_future()
    await sub1.subscribe(lambda: sentinel.set_result(True), "com.example.sentinel")
    await pub.publish("com.example.topic", "after", options=PublishOptions(acknowledge=True))
    await pub.publish("com.example.sentinel", options=PublishOptions(acknowledge=True))
    await wait(sentinel, "the sentinel event")
    assert len(got1) == 2, got1
    await leave(pub, sub1, sub2)


@scenario
async def publish_errors(url, ser):
    s = await connect(url, ser)
    try:
        await s.publish("wamp.session.on_join", options=PublishOptions(acknowledge=True))
    except ApplicationError as e:
        assert e.error == "wamp.error.invalid_uri", e.error
        assert "reserved" in e.args[0], e.args
    else:
        raise AssertionError("publishing to a wamp. topic succeeded")
    try:
        await s.register(lambda: 1, "wamp.my.proc")
    except ApplicationError as e:
        assert e.error == "wamp.error.invalid_uri", e.error
    else:
        raise AssertionError("registering a wamp. procedure succeeded")
    await leave(s)


@scenario
async def blackwhite_listing(url, ser):
    pub = await connect(url, ser)
    a = await connect(url, ser)
    b = await connect(url, ser)
    got = {"alice": [], "bob": []}
    sentinels = {"alice": asyncio.Event(), "bob": asyncio.Event()}
    for name, s in (("alice", a), ("bob", b)):
        await s.subscribe(lambda x, name=name: got[name].append(x), "com.example.bw")
        await s.subscribe(lambda name=name: sentinels[name].set(), "com.example.bw.sentinel")
    ack = PublishOptions
    await pub.publish("com.example.bw", 1, options=ack(acknowledge=True, exclude=[a.details.session]))
    await pub.publish("com.example.bw", 2, options=ack(acknowledge=True, eligible=[a.details.session]))
    # Anonymous sessions get their own random authids.
    bob = b.details.authid
    await pub.publish("com.example.bw", 3, options=ack(acknowledge=True, exclude_authid=[bob]))
    await pub.publish("com.example.bw", 4, options=ack(acknowledge=True, eligible_authid=[bob]))
    await pub.publish("com.example.bw", 5, options=ack(acknowledge=True, eligible_authrole=["anonymous"]))
    await pub.publish("com.example.bw", 6, options=ack(acknowledge=True, exclude_authrole=["anonymous"]))
    await pub.publish("com.example.bw.sentinel", options=ack(acknowledge=True))
    await wait(sentinels["alice"].wait(), "alice's sentinel")
    await wait(sentinels["bob"].wait(), "bob's sentinel")
    assert got["alice"] == [2, 3, 5], got
    assert got["bob"] == [1, 4, 5], got
    await leave(pub, a, b)


@scenario
async def pattern_subscriptions(url, ser):
    pub = await connect(url, ser)
    sub = await connect(url, ser)
    seen = []
    done = asyncio.Event()

    def on(x, details=None):
        seen.append((x, details.topic))
        if x == "last":
            done.set()

    await sub.subscribe(on, "com.example.prefix.", options=SubscribeOptions(match="prefix", details_arg="details"))
    await sub.subscribe(on, "com..wild", options=SubscribeOptions(match="wildcard", details_arg="details"))
    for topic, x in [
        ("com.example.prefix.a", "p1"),
        ("com.example.prefix.a.b", "p2"),
        ("com.example.other", "none"),
        ("com.foo.wild", "w1"),
        ("com.foo.bar.wild", "none2"),
        ("com.example.prefix.z", "last"),
    ]:
        await pub.publish(topic, x, options=PublishOptions(acknowledge=True))
    await wait(done.wait(), "the last pattern event")
    assert seen == [
        ("p1", "com.example.prefix.a"),
        ("p2", "com.example.prefix.a.b"),
        ("w1", "com.foo.wild"),
        ("last", "com.example.prefix.z"),
    ], seen
    await leave(pub, sub)


@scenario
async def identification(url, ser):
    """Needs a role with disclose caller and publisher set in the config."""
    a = await connect(url, ser)
    b = await connect(url, ser)
    seen = {}

    def proc(details=None):
        seen["caller"] = (details.caller, details.caller_authid, details.caller_authrole)
        return "ok"

    await b.register(proc, "com.example.whoami", options=RegisterOptions(details_arg="details"))
    assert await a.call("com.example.whoami") == "ok"
    assert seen["caller"] == (a.details.session, a.details.authid, "anonymous"), seen
    ev = asyncio.get_event_loop().create_future()
    await b.subscribe(lambda details=None: ev.set_result(details), "com.example.who",
                      options=SubscribeOptions(details_arg="details"))
    await a.publish("com.example.who", options=PublishOptions(acknowledge=True))
    d = await wait(ev, "the disclosed event")
    assert d.publisher == a.details.session, d.publisher
    assert d.publisher_authid == a.details.authid, d.publisher_authid
    await leave(a, b)


@scenario
async def progressive_results(url, ser):
    callee = await connect(url, ser)
    caller = await connect(url, ser)

    async def countdown(n, details=None):
        assert details.progress is not None, "caller asked for progress"
        for i in range(n, 0, -1):
            details.progress(i)
        return "liftoff"

    await callee.register(countdown, "com.example.countdown", options=RegisterOptions(details_arg="details"))
    progress = []
    res = await caller.call("com.example.countdown", 3, options=CallOptions(on_progress=progress.append))
    assert progress == [3, 2, 1], progress
    assert res == "liftoff", res
    await leave(callee, caller)


@scenario
async def pattern_and_shared_registrations(url, ser):
    c1 = await connect(url, ser)
    c2 = await connect(url, ser)
    c3 = await connect(url, ser)
    caller = await connect(url, ser)

    def who(name):
        def f(*args, details=None):
            return [name, details.procedure]
        return f

    opts = lambda **kw: RegisterOptions(details_arg="details", **kw)
    await c1.register(who("prefix"), "com.example.rpc.", options=opts(match="prefix"))
    await c2.register(who("wildcard"), "com.example..x", options=opts(match="wildcard"))
    await c3.register(who("exact"), "com.example.rpc.x", options=opts())
    # autobahn fills details.procedure with the registered URI for exact ones.
    assert await caller.call("com.example.rpc.x") == ["exact", "com.example.rpc.x"]
    assert await caller.call("com.example.rpc.y") == ["prefix", "com.example.rpc.y"]
    assert await caller.call("com.example.other.x") == ["wildcard", "com.example.other.x"]

    # Shared registration, round robin, and a policy mismatch refused.
    for s, name in ((c1, "one"), (c2, "two"), (c3, "three")):
        await s.register(who(name), "com.example.shared", options=opts(invoke="roundrobin"))
    order = [(await caller.call("com.example.shared"))[0] for _ in range(6)]
    assert order == ["one", "two", "three"] * 2, order
    try:
        await caller.register(who("x"), "com.example.shared", options=opts(invoke="first"))
    except ApplicationError as e:
        assert e.error == "wamp.error.procedure_already_exists", e.error
        assert "roundrobin" in e.args[0], e.args
    else:
        raise AssertionError("registration with another invoke policy succeeded")
    await leave(c1, c2, c3, caller)


@scenario
async def shared_port_spreads_sessions(url, ser):
    """Sessions on a port that several router workers share: each router
    counts only its own, so if they are spread no session sees them all."""
    n = 24
    sessions = [await connect(url, ser) for _ in range(n)]
    counts = [await s.call("wamp.session.count") for s in sessions]
    print(f"session counts seen: {sorted(set(counts))}", flush=True)
    assert max(counts) < n, f"every session landed on one router: {counts}"
    await leave(*sessions)


async def call_when_registered(session, procedure, *args, within=20):
    """Call `procedure`, retrying while nobody has registered it yet."""
    loop = asyncio.get_event_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await session.call(procedure, *args)
        except ApplicationError as e:
            if e.error != "wamp.error.no_such_procedure" or loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@scenario
async def python_components(url, ser):
    """Python components in containers: they answer, and one's crash
    restarts its own container while the other keeps answering."""
    caller = await connect(url, ser)
    assert await call_when_registered(caller, "com.example.add2", 2, 3) == 5 + 10
    assert await call_when_registered(caller, "com.example.greet", "ann") == "hello ann"
    before = await call_when_registered(caller, "com.example.crasher_pid")
    try:
        await caller.call("com.example.crash")
    except ApplicationError as e:
        assert e.error == "wamp.error.canceled", e.error
    else:
        raise AssertionError("the crashing call returned")
    # The other container's component answers throughout.
    assert await caller.call("com.example.add2", 1, 1) == 12
    loop = asyncio.get_event_loop()
    deadline = loop.time() + 30
    while True:
        try:
            after = await caller.call("com.example.crasher_pid")
            if after != before:
                break
        except ApplicationError as e:
            assert e.error == "wamp.error.no_such_procedure", e.error
        assert loop.time() < deadline, "the crashed container did not come back"
        await asyncio.sleep(0.2)
    assert await caller.call("com.example.add2", 20, 22) == 52
    await leave(caller)


@scenario
async def kill9_spares_the_others(url, ser):
    """kill -9 of the crasher's interpreter, then of its container worker:
    the adder, in another container, answers every call meanwhile, and the
    crasher comes back each time with a new interpreter."""
    import os
    import signal

    caller = await connect(url, ser)
    loop = asyncio.get_event_loop()
    # The adder's container starts beside the crasher's: wait for it too.
    assert await call_when_registered(caller, "com.example.add2", 1, 2) == 13

    async def kill_and_wait(procedure):
        victim = await call_when_registered(caller, procedure)
        before = await caller.call("com.example.crasher_pid")
        os.kill(victim, signal.SIGKILL)
        answered, gone = 0, False
        deadline = loop.time() + 30
        while True:
            assert await caller.call("com.example.add2", 1, 2) == 13
            answered += 1
            try:
                after = await caller.call("com.example.crasher_pid")
                if after != before:
                    break
            except ApplicationError as e:
                assert e.error in ("wamp.error.no_such_procedure", "wamp.error.canceled"), e.error
                gone = True
            assert loop.time() < deadline, f"the crasher did not come back after kill -9 of {procedure}"
            await asyncio.sleep(0.05)
        assert gone, f"the crasher never went away after kill -9 of {procedure}"
        print(f"kill -9 of {procedure}: the adder answered {answered} calls meanwhile", flush=True)

    await kill_and_wait("com.example.crasher_pid")
    await kill_and_wait("com.example.crasher_parent")
    await leave(caller)


async def ticket_login_and_refusal(url, ser, ticket, role):
    """joe logs in with `ticket` and gets `role`; a wrong ticket is refused
    with the authenticator's com.example.invalid_ticket."""
    s = await connect(url, ser, authmethods=["ticket"], authid="joe", on_challenge=lambda c: ticket)
    assert s.details.authrole == role, s.details
    await leave(s)
    try:
        await connect(url, ser, authmethods=["ticket"], authid="joe", on_challenge=lambda c: "guess")
    except Exception as e:
        assert getattr(e, "reason", None) == "com.example.invalid_ticket", repr(e)
    else:
        raise AssertionError("a wrong ticket logged in")


@scenario
async def ticket_via_python_authenticator(url, ser):
    """A Python router component authenticates ticket logins."""
    await ticket_login_and_refusal(url, ser, "secret", "user")


@scenario
async def anonymous_dynamic(url, ser):
    """Crossbar.io's dynamic anonymous login: the authenticator gives the
    role, the authid (from the HELLO's wish) and authextra, or refuses."""
    from wamp_client import refused

    s = await connect(url, ser, authid="ann")
    d = s.details
    assert (d.authmethod, d.authrole, d.authid, d.authprovider) == ("anonymous", "public", "visitor-ann", "dynamic"), d
    assert d.authextra.get("eins") == "zwo" and d.authextra.get("peer_seen") is True, d.authextra
    await leave(s)
    # Without an authid, the router picks a random one.
    s = await connect(url, ser)
    assert s.details.authrole == "public" and len(s.details.authid) == 29, s.details
    await leave(s)
    await refused(connect(url, ser, authid="banned"), "com.example.banned", "banned")


@scenario
async def call_queue(url, ser):
    """Calls to com.queued.* wait for a callee (the realm's call queue)."""
    caller = await connect(url, ser)
    early = [asyncio.ensure_future(caller.call("com.queued.add", i, 1)) for i in range(3)]
    await asyncio.sleep(0.3)
    assert not any(f.done() for f in early), "a queued call ended before any callee registered"
    # The caller's timeout ends a wait.
    await expect_error(
        caller.call("com.queued.never", options=CallOptions(timeout=300)),
        "wamp.error.timeout",
        "call queue",
    )
    callee = await connect(url, ser)
    running = []

    async def add(a, b):
        running.append(a)
        await asyncio.sleep(0.05)
        return a + b

    await callee.register(add, "com.queued.add", options=RegisterOptions(concurrency=1))
    assert [await wait(f, "a queued call") for f in early] == [1, 2, 3]
    # Under concurrency=1, more calls wait for the callee instead of
    # failing with crossbar.error.max_concurrency_reached.
    results = await wait(asyncio.gather(*[caller.call("com.queued.add", i, 10) for i in range(5)]), "calls under concurrency")
    assert results == [10, 11, 12, 13, 14], results
    await leave(caller, callee)


@scenario
async def proxied_logins(url, ser):
    """A Crossbar.io proxy worker's universal transport, served by the
    router: WebSocket and RawSocket on one port, anonymous and ticket."""
    from urllib.parse import urlparse

    rs = f"rs://127.0.0.1:{urlparse(url).port}"
    for u in (url, rs):
        s = await connect(u, ser)
        assert s.details.authrole == "anonymous", s.details
        await leave(s)
        s = await connect(u, ser, authmethods=["ticket"], authid="user1", on_challenge=lambda c: "secret1")
        assert (s.details.authid, s.details.authrole) == ("user1", "user"), s.details
        await leave(s)


@scenario
async def ticket_login_frontend(url, ser):
    """A ticket login checked by a function authenticator: joe gets role
    frontend, a wrong ticket is refused."""
    await ticket_login_and_refusal(url, ser, "secret", "frontend")


@scenario
async def function_component(url, ser):
    """A function component's join callback registered com.example.fn_echo."""
    s = await connect(url, ser)
    assert await call_when_registered(s, "com.example.fn_echo", "hi") == "fn: hi"
    await leave(s)


@scenario
async def function_authenticators(url, ser):
    """Crossbar.io's function authenticators (WAMP-CRA and ticket on one
    WebSocket path); their realm and procedures are the router's own."""
    from autobahn.wamp import auth

    def cra(secret):
        return lambda c: auth.compute_wcs(secret, c.extra["challenge"])

    s = await connect(url, ser, authmethods=["wampcra"], authid="client1", on_challenge=cra("secret123"))
    assert s.details.authrole == "frontend", s.details
    assert s.details.authmethod == "wampcra", s.details
    assert s.details.authprovider == "function", s.details
    # Nobody reaches the authenticators' procedures, even with every
    # permission in realm1.
    try:
        await s.call("authenticate.function0", "realm1", "client1", {})
    except ApplicationError as e:
        assert e.error == "wamp.error.no_such_procedure", e.error
    else:
        raise AssertionError("a client called a function authenticator")
    await leave(s)
    for authid, secret, reason in [
        ("client1", "guess", "wamp.error.authentication_failed"),
        ("nobody", "x", "com.example.no_such_user"),
    ]:
        try:
            await connect(url, ser, authmethods=["wampcra"], authid=authid, on_challenge=cra(secret))
        except Exception as e:
            assert getattr(e, "reason", None) == reason, repr(e)
        else:
            raise AssertionError(f"{authid} logged in with {secret!r}")
    await ticket_login_and_refusal(url, ser, "tk", "frontend")
    # Their realm does not exist for clients, whatever the function says.
    try:
        await connect(
            url, ser, realm="trellis.internal.functions", authmethods=["ticket"], authid="joe", on_challenge=lambda c: "tk"
        )
    except Exception as e:
        assert getattr(e, "reason", None) == "wamp.error.no_such_realm", repr(e)
    else:
        raise AssertionError("a client joined the function authenticators' realm")


async def main(registry=None, target=str, timeout=60):
    """Run `argv[2]` of `registry` (this file's scenarios by default) once
    per serializer, against `target(argv[1])` (the URL, or the JSON of a
    node's URLs)."""
    arg, name, sers = sys.argv[1], sys.argv[2], sys.argv[3:]
    url = target(arg)
    fn = (SCENARIOS if registry is None else registry)[name]
    for ser in sers:
        try:
            await asyncio.wait_for(fn(url, ser), timeout)
        except Exception:
            print(f"FAILED {name} with {ser}", flush=True)
            traceback.print_exc()
            sys.exit(1)
        print(f"ok {name} {ser}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
