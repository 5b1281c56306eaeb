"""A node killed and started again (autobahn-python).

Usage: python cluster_restart.py before WS_URL_A WS_URL_B B_PIDS
         B registers com.re.proc (invoke single), A calls it, then B is
         killed with SIGKILL.
       python cluster_restart.py after WS_URL_A WS_URL_B
         B, started again, registers com.re.proc: it gets it once the dead
         node's claim is purged, and A's calls reach it.
"""

import asyncio
import os
import signal
import sys

from autobahn.wamp.exception import ApplicationError

from wamp_client import check, connect

MODE, A, B = sys.argv[1:4]


async def callable_from(caller, procedure, want, timeout=15):
    deadline = asyncio.get_event_loop().time() + timeout
    while True:
        try:
            got = await caller.call(procedure)
            if got == want:
                return True
        except ApplicationError:
            pass
        if asyncio.get_event_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)


async def before():
    b = await connect(B, "json")
    await b.register(lambda: "first life", "com.re.proc")
    caller = await connect(A, "json")
    check(await callable_from(caller, "com.re.proc", "first life"), "A calls B's procedure")
    for pid in sys.argv[4].split(","):
        os.kill(int(pid), signal.SIGKILL)


async def after():
    b = await connect(B, "json")
    deadline = asyncio.get_event_loop().time() + 15
    while True:
        try:
            await b.register(lambda: "second life", "com.re.proc")
            break
        except ApplicationError as e:
            if e.error != "wamp.error.procedure_already_exists" or asyncio.get_event_loop().time() > deadline:
                raise SystemExit(f"FAILED: the restarted node cannot register: {e.error}")
            await asyncio.sleep(0.2)
    check(True, "the restarted node takes the procedure once the dead node's claim is purged")
    caller = await connect(A, "json")
    check(await callable_from(caller, "com.re.proc", "second life"), "A's calls reach the restarted node")


asyncio.run(before() if MODE == "before" else after())
