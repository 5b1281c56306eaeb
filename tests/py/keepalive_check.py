"""Keepalive: with auto_ping_interval/timeout of 500 ms, a RawSocket peer
that never answers the router's pings is closed within about a second; an
autobahn-python session (which answers pings) stays.

Usage: python keepalive_check.py WS_URL RAWSOCKET_PORT
"""

import asyncio
import json
import struct
import sys
import time

from wamp_client import connect, leave


async def silent_rawsocket(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(bytes([0x7F, 0xF1, 0, 0]))  # JSON, 16 MiB
    await w.drain()
    assert (await r.readexactly(4))[0] == 0x7F
    hello = json.dumps([1, "realm1", {"roles": {"caller": {}}}]).encode()
    w.write(struct.pack(">I", len(hello)) + hello)
    await w.drain()
    head = await r.readexactly(4)
    welcome = json.loads(await r.readexactly(struct.unpack(">I", head)[0] & 0xFFFFFF))
    assert welcome[0] == 2, welcome
    t0 = time.monotonic()
    pings = 0
    # Read frames but never answer: the router must give up on us.
    while True:
        head = await asyncio.wait_for(r.read(4), 10)
        if len(head) < 4:
            break
        kind = head[0] & 0x07
        body = await r.readexactly(struct.unpack(">I", b"\0" + head[1:])[0])
        if kind == 1:
            pings += 1
    elapsed = time.monotonic() - t0
    w.close()
    assert pings >= 1, "the router never pinged"
    assert elapsed < 5, f"closed only after {elapsed:.1f}s"
    print(f"silent peer closed after {elapsed:.1f}s and {pings} ping(s)", flush=True)


async def main(url, port):
    s = await connect(url, "json")
    await silent_rawsocket(int(port))
    await asyncio.sleep(1.5)
    assert s.is_attached(), "the answering session was dropped"
    n = await s.call("wamp.session.count")
    assert n >= 1
    await leave(s)
    print("answering session kept", flush=True)


asyncio.run(main(*sys.argv[1:3]))
