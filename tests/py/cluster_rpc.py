"""Calls across clustered nodes with autobahn-python: a caller on A, callees
on B and C; results, errors, caller disclosure, progressive results,
cancel, timeout, a shared registration spread over two nodes, and a
callee that leaves.

Usage: python cluster_rpc.py WS_URL_A WS_URL_B WS_URL_C
"""

import asyncio
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions, SubscribeOptions

from raw_client import Raw
from wamp_client import check, connect, expect_error, leave, slow_tagger

A, B, C = sys.argv[1:4]


async def until_callable(caller, procedure, *args, timeout=15):
    """Call until the directory has brought the remote callee here."""
    deadline = asyncio.get_event_loop().time() + timeout
    while True:
        try:
            return await caller.call(procedure, *args)
        except ApplicationError as e:
            if e.error != "wamp.error.no_such_procedure" or asyncio.get_event_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def main():
    caller = await connect(A, "json")
    b = await connect(B, "msgpack")
    c = await connect(C, "json")

    # The meta API answers for the whole cluster (the nodes learn of each
    # other from their heartbeats first).
    ids = {caller._session_id, b._session_id, c._session_id}
    deadline = asyncio.get_event_loop().time() + 10
    while True:
        t0 = asyncio.get_event_loop().time()
        n = await caller.call("wamp.session.count")
        took = asyncio.get_event_loop().time() - t0
        if n == 3 or asyncio.get_event_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    check(n == 3 and took < 0.5, f"wamp.session.count on A counts the sessions of all three nodes ({n}, {took * 1000:.0f} ms)")
    # B too knows every node by now (heartbeats come every second).
    deadline = asyncio.get_event_loop().time() + 10
    while await b.call("wamp.session.count") != 3:
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit("FAILED: B never counted all three nodes' sessions")
        await asyncio.sleep(0.2)
    listed = await caller.call("wamp.session.list")
    check(set(listed) == ids, "wamp.session.list on A lists them all")
    got = await b.call("wamp.session.get", c._session_id)
    check(got["session"] == c._session_id and got["authrole"] == "anonymous",
          "wamp.session.get on B finds a session of C")
    await expect_error(caller.call("wamp.session.get", 12345), "wamp.error.no_such_session")
    check(True, "a session no node has: wamp.error.no_such_session")
    # Killing a session of another node.
    victim = await connect(C, "json")
    await caller.call("wamp.session.kill", victim._session_id, reason="com.rpc.bye", message="go")
    details = await asyncio.wait_for(victim.left, 5)
    check(details.reason == "com.rpc.bye", "wamp.session.kill on A closes a session of C")

    seen_callers = []

    def add(x, y, details=None):
        seen_callers.append(details.caller if details else None)
        return x + y

    await b.register(add, "com.rpc.add", options=RegisterOptions(details_arg="details"))
    check(await until_callable(caller, "com.rpc.add", 2, 3) == 5, "a caller on A reached a callee on B")
    results = await asyncio.gather(*[caller.call("com.rpc.add", i, i) for i in range(200)])
    check(results == [2 * i for i in range(200)], "200 concurrent calls across nodes answered right")
    check(seen_callers[-1] == caller._session_id, "the caller disclosed to the remote callee")

    def oops():
        raise ApplicationError("com.rpc.oops", "it went wrong", code=7)

    await b.register(oops, "com.rpc.oops")
    await asyncio.sleep(0.5)
    e = await expect_error(until_callable(caller, "com.rpc.oops"), "com.rpc.oops")
    check(e.args[0] == "it went wrong" and e.kwargs.get("code") == 7,
          "a remote callee's error reaches the caller with its args")

    async def count(n, details=None):
        for i in range(n):
            details.progress(i)
            await asyncio.sleep(0.001)
        return "done"

    await c.register(count, "com.rpc.count", options=RegisterOptions(details_arg="details"))
    chunks = []
    await until_callable(caller, "com.rpc.count", 0)
    r = await caller.call("com.rpc.count", 50, options=CallOptions(on_progress=lambda i: chunks.append(i)))
    check(r == "done" and chunks == list(range(50)), f"50 progressive results from C in order ({len(chunks)})")

    started = asyncio.Event()

    async def slow(details=None):
        started.set()
        await asyncio.sleep(30)
        return "late"

    await b.register(slow, "com.rpc.slow", options=RegisterOptions(details_arg="details"))
    await asyncio.sleep(0.5)
    t0 = asyncio.get_event_loop().time()
    await expect_error(caller.call("com.rpc.slow", options=CallOptions(timeout=300)), "wamp.error.timeout")
    took = asyncio.get_event_loop().time() - t0
    check(took < 3, f"timeout 300 ms across nodes ({took:.2f} s)")
    started.clear()
    fut = asyncio.ensure_future(caller.call("com.rpc.slow"))
    await asyncio.wait_for(started.wait(), 10)
    fut.cancel()
    try:
        await fut
    except (asyncio.CancelledError, ApplicationError):
        pass
    check(fut.cancelled() or fut.done(), "a remote call canceled by its caller")
    # The router still answers after the cancel (nothing stuck).
    check(await caller.call("com.rpc.add", 1, 1) == 2, "calls still work after the cancel")

    # The three cancel modes across nodes (autobahn-python sends no mode:
    # a raw caller on A, an autobahn callee on B).
    finished, interrupted = [], []
    await b.register(slow_tagger(finished, interrupted), "com.rpc.slowtag")
    await until_callable(caller, "com.rpc.slowtag", "probe")
    finished.clear()
    raw = await Raw.open(A)
    await raw.hello()
    loop = asyncio.get_event_loop()
    for i, mode in enumerate(["skip", "killnowait", "kill"], start=1):
        await raw.send([48, i, {}, "com.rpc.slowtag", [mode]])
        await asyncio.sleep(0.15)
        t0 = loop.time()
        await raw.send([49, i, {"mode": mode}])
        msg = await raw.recv()
        check(msg[:3] == [8, 48, i] and msg[4] == "wamp.error.canceled" and loop.time() - t0 < 0.4,
              f"cancel mode {mode} across nodes: ERROR canceled at once")
    await asyncio.sleep(0.8)
    check(finished == ["skip"] and sorted(interrupted) == ["kill", "killnowait"],
          f"skip leaves the remote callee alone, kill and killnowait interrupt it ({finished}, {interrupted})")
    await raw.ws.close()

    # A shared registration with a callee on B and one on C.
    hits = {"b": 0, "c": 0}
    await b.register(lambda: hits.__setitem__("b", hits["b"] + 1) or "b", "com.rpc.who",
                     options=RegisterOptions(invoke="roundrobin"))
    await c.register(lambda: hits.__setitem__("c", hits["c"] + 1) or "c", "com.rpc.who",
                     options=RegisterOptions(invoke="roundrobin"))
    deadline = asyncio.get_event_loop().time() + 15
    while True:
        await until_callable(caller, "com.rpc.who")
        if hits["b"] and hits["c"]:
            break
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit(f"FAILED: round robin never reached both nodes: {hits}")
    hits = {"b": 0, "c": 0}
    for _ in range(100):
        await caller.call("com.rpc.who")
    check(hits["b"] == 50 and hits["c"] == 50, f"round robin over callees on two nodes ({hits})")

    # The registration queries answer for the whole cluster, with the
    # same registration id on every node.
    ids_by_node = [await x.call("wamp.registration.lookup", "com.rpc.who") for x in (caller, b, c)]
    check(ids_by_node[0] is not None and len(set(ids_by_node)) == 1,
          f"wamp.registration.lookup gives one id on every node ({ids_by_node})")
    rid = ids_by_node[0]
    check(await c.call("wamp.registration.match", "com.rpc.who") == rid, "wamp.registration.match on C agrees")
    check(rid in (await caller.call("wamp.registration.list"))["exact"], "wamp.registration.list on A has it")
    callees = await caller.call("wamp.registration.list_callees", rid)
    check(set(callees) == {b._session_id, c._session_id}
          and await caller.call("wamp.registration.count_callees", rid) == 2,
          "wamp.registration.list_callees on A names the callees on B and C")
    reg = await caller.call("wamp.registration.get", rid)
    check(reg["uri"] == "com.rpc.who" and reg["invoke"] == "roundrobin", "wamp.registration.get on A")

    # first and last: the order of registration across nodes.
    for invoke, want in (("first", "c"), ("last", "b")):
        procedure = f"com.rpc.{invoke}"
        regs = {}
        for name, s_ in (("c", c), ("a", caller), ("b", b)):
            regs[name] = await s_.register(lambda name=name: name, procedure,
                                           options=RegisterOptions(invoke=invoke))
            # Each reaches the directory before the next registers.
            deadline = asyncio.get_event_loop().time() + 15
            while True:
                rid = await caller.call("wamp.registration.lookup", procedure)
                if rid is not None and len(await caller.call("wamp.registration.list_callees", rid)) == len(regs) \
                        and await b.call("wamp.registration.lookup", procedure) is not None \
                        and len(await b.call("wamp.registration.list_callees", rid)) == len(regs) \
                        and len(await c.call("wamp.registration.list_callees", rid)) == len(regs):
                    break
                if asyncio.get_event_loop().time() > deadline:
                    raise SystemExit(f"FAILED: {procedure}'s callees never all showed on A, B and C")
                await asyncio.sleep(0.1)
        got = [await x.call(procedure) for x in (caller, b, c) for _ in range(3)]
        check(got == [want] * 9, f"invoke {invoke}: every node calls the callee registered {invoke} ({want}): {got}")
        await regs[want].unregister()
        want2 = "a"
        deadline = asyncio.get_event_loop().time() + 15
        while (got := [await x.call(procedure) for x in (caller, b, c)]) != [want2] * 3:
            if asyncio.get_event_loop().time() > deadline:
                raise SystemExit(f"FAILED: invoke {invoke} after {want} left: {got}")
            await asyncio.sleep(0.1)
        check(True, f"invoke {invoke}: once {want} left, every node calls the next in order (a)")
        for r in regs.values():
            if r.active:
                await r.unregister()

    # The subscription queries answer for the whole cluster too, with
    # the same subscription id on every node.
    sb = await b.subscribe(lambda *a: None, "com.meta.t")
    sc = await c.subscribe(lambda *a: None, "com.meta.t")
    sp = await c.subscribe(lambda *a: None, "com.meta", options=SubscribeOptions(match="prefix"))
    check(sb.id == sc.id and sp.id != sb.id, "B and C got the same subscription id for one topic")
    check(await caller.call("wamp.subscription.lookup", "com.meta.t") == sb.id,
          "wamp.subscription.lookup on A finds a subscription of B and C")
    check(await caller.call("wamp.subscription.lookup", "com.meta", {"match": "prefix"}) == sp.id,
          "wamp.subscription.lookup on A finds C's prefix subscription")
    check(await caller.call("wamp.subscription.lookup", "com.meta.none") is None,
          "wamp.subscription.lookup of a topic nobody has: null")
    listed = await caller.call("wamp.subscription.list")
    check(sb.id in listed["exact"] and sp.id in listed["prefix"], "wamp.subscription.list on A has both")
    check(sorted(await caller.call("wamp.subscription.match", "com.meta.t")) == sorted([sb.id, sp.id]),
          "wamp.subscription.match on A: the exact and the prefix subscription")
    got = await caller.call("wamp.subscription.get", sp.id)
    check(got["uri"] == "com.meta" and got["match"] == "prefix", "wamp.subscription.get on A")
    check(set(await caller.call("wamp.subscription.list_subscribers", sb.id)) == {b._session_id, c._session_id}
          and await caller.call("wamp.subscription.count_subscribers", sb.id) == 2,
          "wamp.subscription.list_subscribers on A names the subscribers on B and C")
    await expect_error(caller.call("wamp.subscription.get", 4242), "wamp.error.no_such_subscription")
    check(True, "a subscription no node has: no_such_subscription")
    await sb.unsubscribe()
    await sc.unsubscribe()
    await sp.unsubscribe()
    check(await caller.call("wamp.subscription.lookup", "com.meta.t") is None,
          "unsubscribed everywhere: wamp.subscription.lookup on A gives null")

    # 50 sessions over the three nodes register the same procedure
    # (invoke single) at once: exactly one wins, cluster-wide.
    racers = [await connect((A, B, C)[i % 3], "json") for i in range(50)]
    outcomes = await asyncio.gather(
        *[r.register(lambda: "won", "com.rpc.only") for r in racers], return_exceptions=True
    )
    won = [r for r, o in zip(racers, outcomes) if not isinstance(o, Exception)]
    lost = [o for o in outcomes if isinstance(o, ApplicationError)]
    check(len(won) == 1 and len(lost) == 49
          and all(e.error == "wamp.error.procedure_already_exists" for e in lost),
          f"50 single registrations from three nodes: {len(won)} won, {len(lost)} got procedure_already_exists")
    # Once the winner leaves, the procedure is free again.
    await leave(won[0])
    deadline = asyncio.get_event_loop().time() + 15
    while True:
        try:
            await racers[1 if won[0] is not racers[1] else 2].register(lambda: "again", "com.rpc.only")
            break
        except ApplicationError:
            if asyncio.get_event_loop().time() > deadline:
                raise SystemExit("FAILED: the single procedure stayed claimed after its holder left")
            await asyncio.sleep(0.2)
    check(True, "a single procedure is free again once its holder left")
    await leave(*[r for r in racers if r is not won[0]])

    await leave(b)
    deadline = asyncio.get_event_loop().time() + 15
    while True:
        try:
            await caller.call("com.rpc.add", 1, 1)
        except ApplicationError as e:
            if e.error == "wamp.error.no_such_procedure":
                break
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit("FAILED: B's registrations outlived its session")
        await asyncio.sleep(0.1)
    check(True, "a callee that left is gone from the other nodes")
    await leave(caller, c)


asyncio.run(main())
