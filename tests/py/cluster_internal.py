"""The router's own calls in a cluster: a dynamic authenticator registered
only on another node is not waited for (its answer could not come back);
the login is refused at once, saying why. With one on the login's own
node, logins work.

Usage: python cluster_internal.py TICKET_URL_ON_A WS_URL_ON_A WS_URL_ON_B
"""

import asyncio
import sys
import time

from autobahn.wamp.types import RegisterOptions

from wamp_client import connect, leave, refused, until

TICKET_A, WS_A, WS_B = sys.argv[1], sys.argv[2], sys.argv[3]


def ticket(_challenge):
    return "secret"


async def main():
    calls = []

    def authenticate(realm, authid, details):
        calls.append(authid)
        return {"role": "anonymous"}

    on_b = await connect(WS_B, "json")
    shared = RegisterOptions(invoke="roundrobin")
    await on_b.register(authenticate, "com.example.auth", options=shared)
    # A's dealer hears of B's registration through the directory.
    watcher = await connect(WS_A, "json")
    known = []

    async def lookup():
        known.append(await watcher.call("wamp.registration.lookup", "com.example.auth"))

    while not (known and known[-1]):
        await lookup()
        await asyncio.sleep(0.05)

    t0 = time.monotonic()
    await refused(
        connect(TICKET_A, "json", authmethods=["ticket"], authid="alice", on_challenge=ticket),
        "wamp.error.no_available_callee",
        "com.example.auth",
        "on another node",
    )
    took = time.monotonic() - t0
    assert took < 2, f"the refusal took {took:.1f} s: it waited instead of failing at once"
    assert calls == [], calls
    print(f"ok a login on A with the authenticator only on B is refused at once ({took * 1000:.0f} ms)", flush=True)

    # With an authenticator on A too, logins on A use it.
    on_a = await connect(WS_A, "json")
    mine = []
    await on_a.register(lambda realm, authid, details: mine.append(authid) or {"role": "anonymous"},
                        "com.example.auth", options=shared)
    s = await connect(TICKET_A, "json", authmethods=["ticket"], authid="bob", on_challenge=ticket)
    assert s.details.authid == "bob", s.details
    await until(lambda: mine == ["bob"], "A's authenticator to be asked")
    assert calls == [], calls
    print("ok with an authenticator on A, a login on A is decided there", flush=True)
    await leave(s, on_a, watcher, on_b)


asyncio.run(main())
