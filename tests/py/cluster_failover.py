"""A node of the cluster dying under load (autobahn-python): callers on A,
callees on B and C; B is killed with SIGKILL (its controller and router)
while 20 calls to it are in flight.

Usage: python cluster_failover.py WS_URL_A WS_URL_B WS_URL_C B_PIDS
  (B_PIDS: comma-separated pids to SIGKILL)
"""

import asyncio
import os
import signal
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions

from wamp_client import check, connect, expect_error

A, B, C, PIDS = sys.argv[1:5]


async def main():
    caller = await connect(A, "json")
    b = await connect(B, "json")
    c = await connect(C, "json")
    hits = {"b": 0, "c": 0}

    def on(name):
        def who():
            hits[name] += 1
            return name
        return who

    await b.register(on("b"), "com.fo.shared", options=RegisterOptions(invoke="roundrobin"))
    await c.register(on("c"), "com.fo.shared", options=RegisterOptions(invoke="roundrobin"))

    async def slow():
        await asyncio.sleep(120)

    await b.register(slow, "com.fo.slow")
    deadline = asyncio.get_event_loop().time() + 15
    while not (hits["b"] and hits["c"]):
        try:
            await caller.call("com.fo.shared")
        except ApplicationError:
            await asyncio.sleep(0.1)
        if asyncio.get_event_loop().time() > deadline:
            raise SystemExit(f"FAILED: the shared procedure never reached B and C: {hits}")
    while True:
        try:
            fut = caller.call("com.fo.slow")
            await asyncio.wait_for(asyncio.shield(fut), 0.3)
        except asyncio.TimeoutError:
            break  # it is running on B
        except ApplicationError:
            await asyncio.sleep(0.1)
    in_flight = [fut] + [asyncio.ensure_future(caller.call("com.fo.slow")) for _ in range(19)]
    await asyncio.sleep(0.5)
    t0 = asyncio.get_event_loop().time()
    for pid in PIDS.split(","):
        os.kill(int(pid), signal.SIGKILL)
    # Before B is taken for dead (5 s without a heartbeat), A already
    # passes over its callee once B has been silent for 2.5 s: calls to
    # the shared procedure go to C, none waits on B.
    await asyncio.sleep(3.8)
    early = []
    for _ in range(10):
        try:
            early.append(await asyncio.wait_for(caller.call("com.fo.shared"), 3))
        except (ApplicationError, asyncio.TimeoutError) as e:
            early.append(repr(e))
    check(early == ["c"] * 10,
          f"calls made {asyncio.get_event_loop().time() - t0:.1f} s after the kill pass over the silent node ({early})")
    errors = []
    for f in in_flight:
        try:
            await asyncio.wait_for(f, 15)
            errors.append("answered")
        except ApplicationError as e:
            errors.append(e.error)
        except asyncio.TimeoutError:
            errors.append("hung")
    took = asyncio.get_event_loop().time() - t0
    check(errors == ["wamp.error.canceled"] * 20 and took < 10,
          f"20 calls in flight to the killed node failed with wamp.error.canceled in {took:.1f} s")
    hits["b"] = hits["c"] = 0
    results = [await caller.call("com.fo.shared") for _ in range(30)]
    check(results == ["c"] * 30, f"the shared procedure goes to C only now ({set(results)})")
    await expect_error(caller.call("com.fo.slow"), "wamp.error.no_such_procedure")
    check(True, "the dead node's registrations are gone")


asyncio.run(main())
