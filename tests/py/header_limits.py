"""Upgrade-request limits on a plain WebSocket transport: 431 for a head
over 16 KiB or with more than 64 header lines, 400 for a malformed head, a
trickled head cut off at the handshake deadline; autobahn still joins.

Usage: python header_limits.py PORT
"""

import asyncio
import sys

from web_checks import check, get, trickle_until_closed
from wamp_client import connect, leave


async def main(port):
    upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: wamp.2.json\r\n"
    big = b"".join(f"X-Filler-{i}: {'a' * 200}\r\n".encode() for i in range(100))
    s, _, _ = await get(port, "/ws", extra=upgrade + big)
    check(s == 431, "a 20 KB upgrade request: 431")
    many = b"".join(f"X-{i}: 1\r\n".encode() for i in range(80))
    s, _, _ = await get(port, "/ws", extra=upgrade + many)
    check(s == 431, "80 header lines: 431")
    s, _, _ = await get(port, "/ws", extra=b"Bad Header Line\r\n")
    check(s == 400, "a malformed head: 400")
    elapsed = await trickle_until_closed(port)
    check(elapsed is not None and elapsed < 3, "a trickled upgrade request is cut off")
    sess = await connect(f"ws://127.0.0.1:{port}/ws", "json")
    await leave(sess)
    check(True, "autobahn joins as before")


asyncio.run(main(int(sys.argv[1])))
