"""Clustered nodes with and without NATS (autobahn-python).

Usage: python cluster_outage.py cross|local WS_URL_A WS_URL_B
  cross: an event published on A reaches a subscriber on B (retrying for
         up to 20 s while the backplane reconnects).
  local: with NATS away, node A still serves its own clients: 5000 events
         to a local subscriber, and a local call.
  calls-down NATS_PID: a caller on A, callees on B; NATS is killed with a
         call in flight: it fails at once, new cross-node calls fail fast,
         local calls work.
"""

import asyncio
import os
import signal
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions

from wamp_client import check, connect, expect_error, leave

MODE, A, B = sys.argv[1:4]  # calls-down also takes the nats-server pid


async def cross():
    pub = await connect(A, "json")
    sub = await connect(B, "json")
    got = asyncio.Queue()
    await sub.subscribe(lambda v: got.put_nowait(v), "com.outage.t")
    deadline = asyncio.get_event_loop().time() + 20
    while True:
        pub.publish("com.outage.t", "hello")
        try:
            v = await asyncio.wait_for(got.get(), 0.5)
            break
        except asyncio.TimeoutError:
            if asyncio.get_event_loop().time() > deadline:
                raise SystemExit("FAILED: no event crossed from A to B in 20 s")
    check(v == "hello", "an event from A reached B")
    await leave(pub, sub)


async def local():
    pub = await connect(A, "msgpack")
    sub = await connect(A, "json")
    got = asyncio.Queue()
    await sub.subscribe(lambda v: got.put_nowait(v), "com.outage.local")
    # A single registration must be checked across the cluster: refused
    # while the directory is away; a shared one is this node's business.
    await expect_error(sub.register(lambda x: x * 2, "com.outage.single"), "wamp.error.unavailable")
    check(True, "a single registration is refused while NATS is away")
    await sub.register(lambda x: x * 2, "com.outage.double", options=RegisterOptions(invoke="roundrobin"))
    t0 = asyncio.get_event_loop().time()
    seen = []
    # 250 at a time, read before the next 250: this one process is both
    # publisher and subscriber, and must not fall 2048 events behind.
    for i in range(5000):
        pub.publish("com.outage.local", i)
        if i % 250 == 249:
            for _ in range(250):
                seen.append(await asyncio.wait_for(got.get(), 10))
    check(seen == list(range(5000)), f"5000 local events delivered while NATS is away ({asyncio.get_event_loop().time() - t0:.2f} s)")
    check(await pub.call("com.outage.double", 21) == 42, "a local call while NATS is away")
    await leave(pub, sub)


async def calls_down():
    nats_pid = int(sys.argv[4])
    caller = await connect(A, "json")
    callee = await connect(B, "json")

    async def slow():
        await asyncio.sleep(60)

    await callee.register(lambda: "b", "com.outage.remote")
    await callee.register(slow, "com.outage.slow")
    await caller.register(lambda: "a", "com.outage.here")
    deadline = asyncio.get_event_loop().time() + 15
    while True:
        try:
            await caller.call("com.outage.remote")
            break
        except ApplicationError:
            if asyncio.get_event_loop().time() > deadline:
                raise SystemExit("FAILED: B's procedure never became callable from A")
            await asyncio.sleep(0.1)
    in_flight = asyncio.ensure_future(caller.call("com.outage.slow"))
    await asyncio.sleep(0.5)
    os.kill(nats_pid, signal.SIGKILL)
    t0 = asyncio.get_event_loop().time()
    await expect_error(asyncio.wait_for(in_flight, 10), "wamp.error.canceled")
    took = asyncio.get_event_loop().time() - t0
    check(took < 5, f"a call in flight to B failed with wamp.error.canceled ({took:.1f} s)")
    t0 = asyncio.get_event_loop().time()
    await expect_error(asyncio.wait_for(caller.call("com.outage.remote"), 5), "wamp.error.no_available_callee")
    took = asyncio.get_event_loop().time() - t0
    check(took < 1, f"a new call to B fails at once with wamp.error.no_available_callee ({took * 1000:.0f} ms)")
    check(await caller.call("com.outage.here") == "a", "a local call on A still works")


async def frozen():
    """NATS frozen (SIGSTOP), then thawed (SIGCONT)."""
    nats_pid = int(sys.argv[4])
    caller = await connect(A, "json")
    callee = await connect(B, "json")
    await callee.register(lambda: "b", "com.frozen.remote")
    await caller.register(lambda: "a", "com.frozen.here")

    async def cross_call():
        try:
            return await asyncio.wait_for(caller.call("com.frozen.remote"), 10)
        except ApplicationError as e:
            return e.error
        except asyncio.TimeoutError:
            return "hung"

    async def until(want, within):
        deadline = asyncio.get_event_loop().time() + within
        while True:
            got = await cross_call()
            if got == want:
                return True
            if asyncio.get_event_loop().time() > deadline:
                return False
            await asyncio.sleep(0.2)

    check(await until("b", 15), "before: A calls B")
    os.kill(nats_pid, signal.SIGSTOP)
    try:
        t0 = asyncio.get_event_loop().time()
        ok = await until("wamp.error.no_available_callee", 10)
        took = asyncio.get_event_loop().time() - t0
        check(ok, f"NATS frozen: calls to B fail with no_available_callee after {took:.1f} s")
        t0 = asyncio.get_event_loop().time()
        got = await cross_call()
        check(got == "wamp.error.no_available_callee" and asyncio.get_event_loop().time() - t0 < 1,
              "then at once, not after a wait")
        check(await caller.call("com.frozen.here") == "a", "NATS frozen: local calls on A work")
    finally:
        os.kill(nats_pid, signal.SIGCONT)
    check(await until("b", 20), "NATS thawed: A calls B again")


async def cross_call():
    """A single registration on B (claimed in the directory) called from A."""
    caller = await connect(A, "json")
    callee = await connect(B, "msgpack")
    await callee.register(lambda x: x + 1, "com.outage.inc")
    deadline = asyncio.get_event_loop().time() + 20
    while True:
        try:
            got = await caller.call("com.outage.inc", 41)
            break
        except ApplicationError:
            if asyncio.get_event_loop().time() > deadline:
                raise SystemExit("FAILED: A never reached B's callee in 20 s")
            await asyncio.sleep(0.1)
    check(got == 42, "a call from A reached a single registration on B")
    await leave(caller, callee)


async def churn():
    """20 callees on B, one after another: each registers (shared) and
    leaves."""
    for i in range(20):
        s = await connect(B, "json")
        await s.register(lambda: i, "com.churn.p", options=RegisterOptions(invoke="roundrobin"))
        await leave(s)
    check(True, "20 callees registered and left on B")


async def stale():
    """A callee on B leaves while NATS is frozen (B's delete of its
    directory entry waits, or fails, meanwhile); once NATS is back, A
    forgets the callee."""
    nats_pid = int(sys.argv[4])
    caller = await connect(A, "json")
    callee = await connect(B, "json")
    await callee.register(lambda: "b", "com.stale.p", options=RegisterOptions(invoke="roundrobin"))
    deadline = asyncio.get_event_loop().time() + 15
    while True:
        try:
            if await caller.call("com.stale.p") == "b":
                break
        except ApplicationError:
            pass
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit("FAILED: A never reached B's callee")
        await asyncio.sleep(0.1)
    os.kill(nats_pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(4)
        await leave(callee)
        # Longer than JetStream's 5 s for an answer: B's delete fails.
        await asyncio.sleep(8)
    finally:
        os.kill(nats_pid, signal.SIGCONT)
    deadline = asyncio.get_event_loop().time() + 20
    last = None
    while True:
        try:
            last = await caller.call("com.stale.p")
        except ApplicationError as e:
            last = e.error
            if e.error == "wamp.error.no_such_procedure":
                break
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit(f"FAILED: A still routes to the callee that left during the outage ({last})")
        await asyncio.sleep(0.2)
    check(True, "a callee that left while NATS was frozen is gone from A once NATS is back")
    await leave(caller)


MODES = {"stale": stale, "churn": churn, "cross": cross, "cross-call": cross_call, "local": local, "calls-down": calls_down, "frozen": frozen}
asyncio.run(MODES[MODE]())
