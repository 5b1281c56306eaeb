"""Per-transport limits and deadlines nobody else tests: max_connections,
authenticate_timeout, require_websocket_subprotocol false.

Usage: python limits.py MAIN_URL LIMITED_URL

The limited transport allows 3 connections, gives 500 ms for AUTHENTICATE
after a CHALLENGE (ticket auth, joe / joe-ticket) and accepts clients that
offer no subprotocol. A well-behaved autobahn session on the main transport
must not notice anything.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from raw_client import ROLES, T, Raw
from wamp_client import connect, leave


async def refused(url):
    """True if a WebSocket upgrade on `url` does not complete."""
    try:
        ws = await asyncio.wait_for(ws_connect(url, subprotocols=["wamp.2.json"]), T)
    except (InvalidHandshake, ConnectionClosed, OSError, EOFError):
        return True
    await ws.close()
    return False


async def max_connections(url):
    held = []
    for i in range(3):
        r = await Raw.open(url)
        await r.hello()
        held.append(r)
    # The fourth and more are refused at once, and keep being refused.
    for _ in range(20):
        assert await refused(url), "a connection beyond max_connections (3) was accepted"
    # The three held are untouched: each can still subscribe.
    for i, r in enumerate(held):
        await r.send([32, 100 + i, {}, "com.limits.ok"])
        got = await r.recv()
        assert got[:2] == [33, 100 + i], got
    # A slot freed is a slot available again.
    await held.pop().ws.close()
    for _ in range(100):
        if not await refused(url):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("a closed connection's slot was never given back")
    for r in held:
        await r.ws.close()
    print("ok max_connections", flush=True)


async def authenticate_timeout(url):
    r = await Raw.open(url)
    await r.send([1, "realm1", {**ROLES, "authmethods": ["ticket"], "authid": "joe"}])
    challenge = await r.recv()
    assert challenge[0] == 4 and challenge[1] == "ticket", challenge
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    text = await r.expect_abort("wamp.error.timeout", "no AUTHENTICATE within 500 ms")
    waited = loop.time() - t0
    assert 0.3 < waited < 3, f"ABORT after {waited:.2f} s for a 500 ms deadline: {text}"
    # Answering in time still works.
    r = await Raw.open(url)
    await r.send([1, "realm1", {**ROLES, "authmethods": ["ticket"], "authid": "joe"}])
    assert (await r.recv())[0] == 4
    await r.send([5, "joe-ticket", {}])
    welcome = await r.recv()
    assert welcome[0] == 2 and welcome[2]["authid"] == "joe", welcome
    await r.ws.close()
    print("ok authenticate_timeout", flush=True)


async def optional_subprotocol(url, main_url):
    # Here a client that offers no subprotocol speaks JSON.
    ws = await asyncio.wait_for(ws_connect(url), T)
    assert ws.subprotocol is None, ws.subprotocol
    await ws.send(json.dumps([1, "realm1", ROLES]))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), T))
    assert welcome[0] == 2, welcome
    await ws.close()
    # The main transport keeps Crossbar.io's default: a subprotocol is required.
    try:
        ws = await asyncio.wait_for(ws_connect(main_url), T)
    except InvalidStatus as e:
        assert e.response.status_code == 400, e.response.status_code
    else:
        await ws.close()
        raise AssertionError("require_websocket_subprotocol (default true) let a client in without one")
    print("ok require_websocket_subprotocol", flush=True)


async def main():
    main_url, limited = sys.argv[1], sys.argv[2]
    good = await connect(main_url, "json")
    await good.register(lambda x: x, "com.good.echo")
    await max_connections(limited)
    await authenticate_timeout(limited)
    await optional_subprotocol(limited, main_url)
    assert not good.left.done(), f"the well-behaved session was disconnected: {good.left.result()}"
    other = await connect(main_url, "msgpack")
    assert await other.call("com.good.echo", 5) == 5
    await leave(good, other)
    print("ok bystander unaffected", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
