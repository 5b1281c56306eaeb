"""Advanced Profile scenarios (cancel, timeout, progressive invocations,
retention, history, testaments, meta API, payload passthru, invoke policies,
pattern authorization), run like scenarios.py:

    python advanced.py URL SCENARIO SERIALIZER [SERIALIZER ...]

Where autobahn-python cannot send what a feature needs (cancel modes,
progressive call invocations) a raw WebSocket peer speaks for it, while
autobahn stays on the other end.
"""

import asyncio
import base64
import json

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.interfaces import IPayloadCodec
from autobahn.wamp.types import CallOptions, EncodedPayload, PublishOptions, RegisterOptions, SubscribeOptions

from raw_client import ROLES, Raw
from scenarios import main, scenario
from wamp_client import connect, expect_error, leave, slow_tagger, until, wait




@scenario
async def cancel_kill_from_autobahn(url, ser):
    callee = await connect(url, ser)
    caller = await connect(url, ser)
    started = asyncio.get_event_loop().create_future()
    interrupted = asyncio.get_event_loop().create_future()

    async def slow():
        started.set_result(True)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set_result(True)
            raise

    await callee.register(slow, "com.example.slow")
    call = asyncio.ensure_future(caller.call("com.example.slow"))
    await wait(started, "the invocation")
    call.cancel()
    await wait(interrupted, "INTERRUPT to reach the callee")
    # Both sessions carry on.
    await callee.register(lambda: "pong", "com.example.ping")
    assert await caller.call("com.example.ping") == "pong"
    await leave(callee, caller)


@scenario
async def cancel_modes(url, ser):
    callee = await connect(url, ser)
    finished, interrupted = [], []
    await callee.register(slow_tagger(finished, interrupted), "com.example.slowtag")
    r = await Raw.open(url)
    await r.hello()
    loop = asyncio.get_event_loop()
    for i, mode in enumerate(["skip", "killnowait", "kill"], start=1):
        await r.send([48, i, {}, "com.example.slowtag", [mode]])
        await asyncio.sleep(0.1)
        t0 = loop.time()
        await r.send([49, i, {"mode": mode}])
        msg = await r.recv()
        assert msg[:3] == [8, 48, i], msg
        assert msg[4] == "wamp.error.canceled", msg
        assert loop.time() - t0 < 0.4, f"{mode}: ERROR came only after the callee finished"
    await asyncio.sleep(0.8)
    assert finished == ["skip"], f"skip must not interrupt the callee: {finished}"
    assert sorted(interrupted) == ["kill", "killnowait"], interrupted
    # A CANCEL for a call that already finished is ignored.
    await r.send([49, 1, {"mode": "skip"}])
    await r.send([32, 10, {}, "com.example.t"])
    assert (await r.recv())[:2] == [33, 10]
    await r.ws.close()
    await leave(callee)


@scenario
async def call_timeout(url, ser):
    callee = await connect(url, ser)
    caller = await connect(url, ser)
    interrupted = asyncio.get_event_loop().create_future()

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set_result(True)
            raise

    await callee.register(slow, "com.example.slow")
    t0 = asyncio.get_event_loop().time()
    # WAMP's timeout is in milliseconds.
    await expect_error(caller.call("com.example.slow", options=CallOptions(timeout=300)), "wamp.error.timeout")
    elapsed = asyncio.get_event_loop().time() - t0
    assert 0.25 < elapsed < 3, elapsed
    await wait(interrupted, "INTERRUPT after the timeout")
    # A call that finishes in time is unaffected.
    await callee.register(lambda: "quick", "com.example.quick")
    assert await caller.call("com.example.quick", options=CallOptions(timeout=2000)) == "quick"
    await leave(callee, caller)


@scenario
async def concurrency_limit(url, ser):
    """Crossbar.io's RegisterOptions(concurrency=N): beyond N invocations in
    flight, the caller gets crossbar.error.max_concurrency_reached; the
    callee carries on, and a slot freed takes the next call."""
    callee = await connect(url, ser)
    caller = await connect(url, ser)
    release = asyncio.Event()
    running = []

    async def slow(n):
        running.append(n)
        await release.wait()
        return n

    await callee.register(slow, "com.example.limited", options=RegisterOptions(concurrency=2))
    first = [asyncio.ensure_future(caller.call("com.example.limited", i)) for i in range(2)]
    await until(lambda: len(running) == 2, "two invocations running")
    await expect_error(caller.call("com.example.limited", 3), "crossbar.error.max_concurrency_reached", "concurrency")
    release.set()
    assert sorted([await f for f in first]) == [0, 1]
    assert await caller.call("com.example.limited", 4) == 4
    await leave(callee, caller)


@scenario
async def late_yield(url, ser):
    """A YIELD after the call timed out is dropped (logged at debug with
    its request id); the callee and the caller carry on."""
    callee = await Raw.open(url)
    await callee.hello()
    await callee.send([64, 1, {}, "com.example.late"])
    registered = await callee.recv()
    assert registered[:2] == [65, 1], registered
    caller = await connect(url, ser)
    call = asyncio.ensure_future(caller.call("com.example.late", options=CallOptions(timeout=200)))
    inv = await callee.recv()
    assert inv[0] == 68, inv
    await expect_error(call, "wamp.error.timeout")
    await callee.send([70, inv[1], {}, ["too late"]])
    print(f"late invocation {inv[1]}", flush=True)
    # Both still work.
    call = asyncio.ensure_future(caller.call("com.example.late"))
    inv = await callee.recv()
    await callee.send([70, inv[1], {}, ["in time"]])
    assert await call == "in time"
    await callee.ws.close()
    await leave(caller)


@scenario
async def progressive_call_invocations(url, ser):
    features = {"progressive_call_invocations": True, "call_canceling": True}
    hello = {"roles": {"callee": {"features": features}, "caller": {"features": features}}}
    callee = await Raw.open(url)
    await callee.hello(details=hello)
    await callee.send([64, 1, {}, "com.example.stream"])
    reg = await callee.recv()
    assert reg[0] == 65, reg
    caller = await Raw.open(url)
    await caller.hello(details=hello)
    await caller.send([48, 7, {"progress": True}, "com.example.stream", ["a"]])
    inv = await callee.recv()
    assert inv[0] == 68 and inv[2] == reg[2] and inv[3].get("progress") is True and inv[4] == ["a"], inv
    await caller.send([48, 7, {"progress": True}, "com.example.stream", ["b"]])
    inv2 = await callee.recv()
    assert inv2[1] == inv[1] and inv2[3].get("progress") is True and inv2[4] == ["b"], inv2
    await caller.send([48, 7, {}, "com.example.stream", ["c"]])
    inv3 = await callee.recv()
    assert inv3[1] == inv[1] and not inv3[3].get("progress") and inv3[4] == ["c"], inv3
    await callee.send([70, inv[1], {}, ["abc"]])
    assert await caller.recv() == [50, 7, {}, ["abc"]]
    # A callee that did not announce the feature is not sent a stream.
    plain = await connect(url, ser)
    await plain.register(lambda x: x, "com.example.plain")
    await caller.send([48, 8, {"progress": True}, "com.example.plain", ["x"]])
    msg = await caller.recv()
    assert msg[:3] == [8, 48, 8] and msg[4] == "wamp.error.feature_not_supported", msg
    await callee.ws.close()
    await caller.ws.close()
    await leave(plain)


@scenario
async def disclose_me_is_honoured_unless_refused(url, ser):
    """Default permissions (disclose caller and publisher false) honour a
    client's own disclose_me, as Crossbar.io ignores it and swampyer sends it
    on every call; com.example.private. sets disclose.on_request false."""
    callee = await connect(url, ser)
    seen = []
    await callee.register(lambda details=None: seen.append(details.caller) or "ok", "com.example.who",
                          options=RegisterOptions(details_arg="details"))
    # autobahn-python no longer sends disclose_me; a raw peer asks as
    # swampyer does (tests/py/swampyer_peer.py uses swampyer itself).
    caller = await Raw.open(url)
    me = (await caller.hello())[1]
    await caller.send([48, 1, {"disclose_me": True}, "com.example.who"])
    assert (await caller.recv())[:2] == [50, 1]
    await caller.send([48, 2, {}, "com.example.who"])
    assert (await caller.recv())[:2] == [50, 2]
    assert seen == [me, None], seen
    got = asyncio.get_event_loop().create_future()
    await callee.subscribe(lambda details=None: got.set_result(details.publisher), "com.example.t",
                           options=SubscribeOptions(details_arg="details"))
    await caller.send([16, 3, {"disclose_me": True, "acknowledge": True}, "com.example.t"])
    assert (await caller.recv())[:2] == [17, 3]
    assert await wait(got, "the disclosed event") == me
    await caller.ws.close()
    # An operator may refuse it per permission.
    await callee.register(lambda: "ok", "com.example.private.who")
    r = await Raw.open(url)
    await r.hello()
    await r.send([48, 1, {"disclose_me": True}, "com.example.private.who"])
    text = await r.expect_error(48, 1, "wamp.error.option_disallowed.disclose_me")
    assert "disclose.on_request" in text and "without disclose_me" in text, text
    await r.send([16, 2, {"disclose_me": True, "acknowledge": True}, "com.example.private.t"])
    await r.expect_error(16, 2, "wamp.error.option_disallowed.disclose_me")
    # Without the option everything works there too.
    await r.send([48, 3, {}, "com.example.private.who"])
    assert (await r.recv())[:2] == [50, 3]
    await r.ws.close()
    await leave(callee)


@scenario
async def event_retention(url, ser):
    pub = await connect(url, ser)
    for v in ("v1", "v2"):
        await pub.publish("com.example.retained", v, options=PublishOptions(acknowledge=True, retain=True))
    sub = await connect(url, ser)
    got = asyncio.get_event_loop().create_future()
    await sub.subscribe(
        lambda x, details=None: got.set_result((x, details.retained)),
        "com.example.retained",
        options=SubscribeOptions(get_retained=True, details_arg="details"),
    )
    assert await wait(got, "the retained event") == ("v2", True)
    # Without get_retained nothing old arrives.
    other = await connect(url, ser)
    seen, sentinel = [], asyncio.Event()
    await other.subscribe(lambda x: seen.append(x), "com.example.retained")
    await other.subscribe(lambda: sentinel.set(), "com.example.sentinel")
    await pub.publish("com.example.sentinel", options=PublishOptions(acknowledge=True))
    await wait(sentinel.wait(), "the sentinel")
    assert seen == [], seen
    await leave(pub, sub, other)


@scenario
async def event_history(url, ser):
    """The test node keeps 5 events of com.example.history."""
    pub = await connect(url, ser)
    sub = await connect(url, ser)
    s = await sub.subscribe(lambda *a: None, "com.example.history")
    for i in range(7):
        await pub.publish("com.example.history", i, note=f"n{i}", options=PublishOptions(acknowledge=True))
    events = await sub.call("wamp.subscription.get_events", s.id, 10)
    assert [e["args"] for e in events] == [[2], [3], [4], [5], [6]], events
    assert events[0]["kwargs"] == {"note": "n2"} and events[0]["topic"] == "com.example.history", events[0]
    assert events[0]["timestamp"].endswith("Z"), events[0]
    assert [e["args"] for e in await sub.call("wamp.subscription.get_events", s.id, 2)] == [[5], [6]]
    other = await sub.subscribe(lambda *a: None, "com.example.nohistory")
    await expect_error(sub.call("wamp.subscription.get_events", other.id), "wamp.error.history_unavailable")
    await expect_error(sub.call("wamp.subscription.get_events", 999999), "wamp.error.no_such_subscription")
    await leave(pub, sub)


@scenario
async def testaments(url, ser):
    a = await connect(url, ser)
    b = await connect(url, ser)
    got = []
    arrived = asyncio.Event()

    def on(*args, **kwargs):
        got.append((list(args), kwargs))
        arrived.set()

    await b.subscribe(on, "com.example.testament")
    await a.call("wamp.session.add_testament", "com.example.testament", ["flushed"], {})
    assert await a.call("wamp.session.flush_testaments") == 1
    await a.call("wamp.session.add_testament", "com.example.testament", ["gone"], {"who": "a"})
    await expect_error(
        a.call("wamp.session.add_testament", "com.example.testament", [], {}, {"scope": "forever"}),
        "wamp.error.invalid_argument",
    )
    # The session is lost without GOODBYE.
    a._transport.transport.abort()
    await wait(arrived.wait(), "the testament")
    assert got == [(["gone"], {"who": "a"})], got
    await leave(b)


@scenario
async def meta_sessions(url, ser):
    watcher = await connect(url, ser)
    joins, leaves = [], []
    await watcher.subscribe(lambda d: joins.append(d), "wamp.session.on_join")
    await watcher.subscribe(lambda *a: leaves.append(list(a)), "wamp.session.on_leave")
    s = await connect(url, ser)
    sid, subject = s.details.session, s.details.authid
    await until(lambda: joins, "on_join")
    j = joins[0]
    assert j["session"] == sid and j["authid"] == subject and j["authrole"] == "anonymous", j
    assert j["transport"]["type"] == "websocket" and j["transport"]["peer"].startswith("tcp4:127.0.0.1:"), j
    assert not any(k.startswith("http_") for k in j["transport"]), j["transport"]
    assert await watcher.call("wamp.session.count") == 2
    assert sorted(await watcher.call("wamp.session.list")) == sorted([sid, watcher.details.session])
    assert await watcher.call("wamp.session.count", ["nobody"]) == 0
    got = await watcher.call("wamp.session.get", sid)
    assert got["authid"] == subject and got["authmethod"] == "anonymous", got
    await expect_error(watcher.call("wamp.session.get", 4242), "wamp.error.no_such_session")

    # kill: the victim gets GOODBYE with the given reason.
    victim = await connect(url, ser)
    await watcher.call("wamp.session.kill", victim.details.session, reason="com.example.bye", message="go away")
    details = await wait(victim.left, "the victim to be closed")
    assert details.reason == "com.example.bye", details.reason
    await expect_error(watcher.call("wamp.session.kill", watcher.details.session), "wamp.error.no_such_session")
    # kill_by_authid never closes the caller itself.
    assert await s.call("wamp.session.kill_by_authid", subject) == []
    assert await watcher.call("wamp.session.kill_by_authid", subject) == [sid]
    await wait(s.left, "the subject to be closed")
    await until(lambda: any(l[0] == sid for l in leaves), "on_leave of the subject")
    leave_args = next(l for l in leaves if l[0] == sid)
    # Crossbar.io's shape (the default): the session id alone.
    assert leave_args == [sid], leave_args
    others = [await connect(url, ser) for _ in range(2)]
    assert await watcher.call("wamp.session.kill_by_authrole", "anonymous") == 2
    for o in others:
        await wait(o.left, "kill_by_authrole")
    # The killed sessions are gone once the router has closed them.
    for _ in range(500):
        if await watcher.call("wamp.session.count") == 1:
            break
        await asyncio.sleep(0.01)
    assert await watcher.call("wamp.session.count") == 1
    await leave(watcher)


@scenario
async def meta_registrations_and_subscriptions(url, ser):
    watcher = await connect(url, ser)
    events = []
    for t in ("on_create", "on_register", "on_unregister", "on_delete"):
        await watcher.subscribe(lambda *a, t=t: events.append(("reg." + t, list(a))), "wamp.registration." + t)
    for t in ("on_create", "on_subscribe", "on_unsubscribe", "on_delete"):
        await watcher.subscribe(lambda *a, t=t: events.append(("sub." + t, list(a))), "wamp.subscription." + t)
    s = await connect(url, ser)
    sid = s.details.session
    reg = await s.register(lambda: 1, "com.example.meta.proc")
    assert await watcher.call("wamp.registration.lookup", "com.example.meta.proc") == reg.id
    assert await watcher.call("wamp.registration.lookup", "com.example.meta.proc", {"match": "prefix"}) is None
    assert await watcher.call("wamp.registration.match", "com.example.meta.proc") == reg.id
    info = await watcher.call("wamp.registration.get", reg.id)
    assert info["uri"] == "com.example.meta.proc" and info["match"] == "exact" and info["invoke"] == "single", info
    assert reg.id in (await watcher.call("wamp.registration.list"))["exact"]
    assert await watcher.call("wamp.registration.list_callees", reg.id) == [sid]
    assert await watcher.call("wamp.registration.count_callees", reg.id) == 1
    await reg.unregister()
    await expect_error(watcher.call("wamp.registration.get", reg.id), "wamp.error.no_such_registration")

    sub = await s.subscribe(lambda: None, "com.example.", options=SubscribeOptions(match="prefix"))
    assert await watcher.call("wamp.subscription.lookup", "com.example.", {"match": "prefix"}) == sub.id
    assert await watcher.call("wamp.subscription.match", "com.example.x") == [sub.id]
    assert await watcher.call("wamp.subscription.match", "org.x") is None
    info = await watcher.call("wamp.subscription.get", sub.id)
    assert info["uri"] == "com.example." and info["match"] == "prefix", info
    assert sub.id in (await watcher.call("wamp.subscription.list"))["prefix"]
    assert await watcher.call("wamp.subscription.list_subscribers", sub.id) == [sid]
    assert await watcher.call("wamp.subscription.count_subscribers", sub.id) == 1
    await sub.unsubscribe()
    # Only the subject's events: the watcher's own meta subscriptions are
    # announced too.
    mine = lambda: [e for e in events if e[1][0] == sid]
    await until(lambda: len(mine()) >= 8, "all eight meta events")
    events = mine()
    names = [e[0] for e in events]
    assert names == [
        "reg.on_create", "reg.on_register", "reg.on_unregister", "reg.on_delete",
        "sub.on_create", "sub.on_subscribe", "sub.on_unsubscribe", "sub.on_delete",
    ], names
    assert events[0][1][0] == sid and events[0][1][1]["uri"] == "com.example.meta.proc", events[0]
    assert events[1][1] == [sid, reg.id], events[1]
    await leave(s, watcher)


@scenario
async def meta_api_is_authorized(url, ser):
    """The test node's anonymous role may not call wamp.session.list."""
    s = await connect(url, ser)
    await expect_error(s.call("wamp.session.list"), "wamp.error.not_authorized", "wamp.session.list")
    assert await s.call("wamp.session.count") == 1
    await leave(s)


class OpaqueCodec(IPayloadCodec):
    """A stand-in for end-to-end encryption: the router sees only bytes."""

    MAGIC = b"\x00\xffopaque:"

    def encode(self, is_originating, uri, args=None, kwargs=None):
        return EncodedPayload(self.MAGIC + json.dumps([args, kwargs]).encode(), "x_trellis_test", "json")

    def decode(self, is_originating, uri, encoded_payload):
        assert encoded_payload.enc_algo == "x_trellis_test", encoded_payload.enc_algo
        data = encoded_payload.payload
        assert data.startswith(self.MAGIC), data
        args, kwargs = json.loads(data[len(self.MAGIC):])
        return uri, args, kwargs


@scenario
async def payload_passthru(url, ser):
    pub = await connect(url, ser)
    sub = await connect(url, ser)
    for s in (pub, sub):
        s.set_payload_codec(OpaqueCodec())
    got = asyncio.get_event_loop().create_future()
    await sub.subscribe(lambda *a, **k: got.set_result((list(a), k)), "com.example.ppt")
    # A raw subscriber checks the bytes on the wire are untouched.
    raw = await Raw.open(url)
    await raw.hello()
    await raw.send([32, 1, {}, "com.example.ppt"])
    assert (await raw.recv())[0] == 33
    await pub.publish("com.example.ppt", 1, "two", three=3, options=PublishOptions(acknowledge=True))
    decoded = await wait(got, "the decoded event")
    assert decoded == ([1, "two"], {"three": 3}), decoded
    ev = await raw.recv()
    # autobahn-python spells the passthru options enc_algo/enc_serializer.
    assert ev[0] == 36 and ev[3]["enc_algo"] == "x_trellis_test" and ev[3]["enc_serializer"] == "json", ev
    # Passthru: one binary element where args would be ("\u0000"+base64 in JSON).
    assert isinstance(ev[4], str) and ev[4][0] == "\x00" and len(ev) == 5, ev
    wire = base64.b64decode(ev[4][1:])
    assert wire == OpaqueCodec.MAGIC + json.dumps([[1, "two"], {"three": 3}]).encode(), wire
    # The specification's ppt_* spelling passes through the same way.
    await raw.send([32, 2, {}, "com.example.ppt2"])
    assert (await raw.recv())[0] == 33
    blob = bytes(range(256))
    # A publisher that did not announce payload_passthru_mode may not use
    # it: the specification makes that a protocol violation.
    rude = await Raw.open(url)
    await rude.hello()
    await rude.send([16, 4, {"acknowledge": True, "ppt_scheme": "x_raw"}, "com.example.ppt2",
                     "\x00" + base64.b64encode(blob).decode()])
    await rude.expect_abort("wamp.error.protocol_violation", "payload_passthru_mode")
    raw_pub = await Raw.open(url)
    await raw_pub.hello(details={"roles": {"publisher": {"features": {"payload_passthru_mode": True}}}})
    await raw_pub.send([16, 5, {"acknowledge": True, "ppt_scheme": "x_raw", "ppt_serializer": "native"},
                        "com.example.ppt2", "\x00" + base64.b64encode(blob).decode()])
    assert (await raw_pub.recv())[:2] == [17, 5]
    ev = await raw.recv()
    assert ev[3] == {"ppt_scheme": "x_raw", "ppt_serializer": "native"}, ev
    assert base64.b64decode(ev[4][1:]) == blob
    await raw_pub.ws.close()
    # RPC through the codec both ways.
    await sub.register(lambda a, b: a * b, "com.example.ppt.mul")
    assert await pub.call("com.example.ppt.mul", 6, 7) == 42
    await raw.ws.close()
    await leave(pub, sub)


@scenario
async def invoke_policies(url, ser):
    callees = [await connect(url, ser) for _ in range(3)]
    caller = await connect(url, ser)
    for policy in ("first", "last", "random"):
        for i, c in enumerate(callees):
            await c.register(lambda i=i: i, f"com.example.{policy}", options=RegisterOptions(invoke=policy))
    assert [await caller.call("com.example.first") for _ in range(3)] == [0, 0, 0]
    assert [await caller.call("com.example.last") for _ in range(3)] == [2, 2, 2]
    picks = {await caller.call("com.example.random") for _ in range(40)}
    assert picks == {0, 1, 2}, picks
    callees[0].leave()
    await wait(callees[0].left, "callee 0 to leave")
    callees[2].leave()
    await wait(callees[2].left, "callee 2 to leave")
    assert await caller.call("com.example.first") == 1
    assert await caller.call("com.example.last") == 1
    assert await caller.call("com.example.random") == 1
    await leave(callees[1], caller)


@scenario
async def pattern_subscription_respects_authorization(url, ser):
    """The test node's anonymous role may publish, but not subscribe, under
    com.example.secret."""
    pub = await connect(url, ser)
    await pub.publish("com.example.secret.r", "s", options=PublishOptions(acknowledge=True, retain=True))
    await pub.publish("com.example.public.r", "p", options=PublishOptions(acknowledge=True, retain=True))
    sub = await connect(url, ser)
    seen, done = [], asyncio.Event()

    def on(x, details=None):
        seen.append((x, details.topic))
        if x == "last":
            done.set()

    await sub.subscribe(on, "com.example.", options=SubscribeOptions(match="prefix", details_arg="details", get_retained=True))
    await expect_error(sub.subscribe(on, "com.example.secret.x"), "wamp.error.not_authorized")
    for topic, x in [("com.example.secret.x", "leak"), ("com.example.public.x", "ok"), ("com.example.z", "last")]:
        await pub.publish(topic, x, options=PublishOptions(acknowledge=True))
    await wait(done.wait(), "the last event")
    assert seen == [("p", "com.example.public.r"), ("ok", "com.example.public.x"), ("last", "com.example.z")], seen
    await leave(pub, sub)


if __name__ == "__main__":
    asyncio.run(main())
