"""Limits that hold exactly, tried with raw sockets (no client library sends
these on purpose): an unfinished frame declaring more than the message
limit, a fragment that would take a message over it, a binary frame on
wamp.2.json, over-long URIs, a RawSocket client that accepts less than the
WELCOME, a RawSocket client over max_connections.

Usage: python frame_limits.py WS_PORT RAWSOCKET_PORT

The WebSocket transport has max_message_size 65536 and max_frame_size
1048576; the RawSocket transport (JSON) has max_connections 2. An autobahn
session on the WebSocket transport must not notice anything.
"""

import asyncio
import base64
import json
import os
import struct
import sys

from raw_client import ROLES, T, Raw
from wamp_client import connect, leave


def ws_frame(opcode, payload, fin=True, declared=None):
    """A masked client frame; `declared` overrides the length field."""
    n = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_ws_frame(r):
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", await r.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", await r.readexactly(8))
    return b0 & 0x0F, await r.readexactly(n)


async def raw_ws(port):
    """A WebSocket opened by hand (wamp.2.json), joined to realm1."""
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), T)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), T)
    assert head.startswith(b"HTTP/1.1 101"), head
    w.write(ws_frame(1, json.dumps([1, "realm1", ROLES]).encode()))
    op, payload = await asyncio.wait_for(read_ws_frame(r), T)
    assert op == 1 and json.loads(payload)[0] == 2, payload
    return r, w


async def expect_abort_and_1009(r, *fragments):
    """The router answers at once: ABORT naming the limit, then close 1009."""
    op, payload = await asyncio.wait_for(read_ws_frame(r), 3)
    assert op == 1, (op, payload)
    msg = json.loads(payload)
    assert msg[0] == 3 and msg[2] == "wamp.error.protocol_violation", msg
    for f in fragments:
        assert f in msg[1]["message"], msg
    op, payload = await asyncio.wait_for(read_ws_frame(r), 3)
    assert op == 8, (op, payload)
    (code,) = struct.unpack(">H", payload[:2])
    assert code == 1009, code


async def unfinished_frame(port):
    r, w = await raw_ws(port)
    # 990 KB declared (under max_frame_size), 100 bytes sent: refused at
    # the header, not after a megabyte has been reserved and waited for.
    w.write(ws_frame(2, b"x" * 100, declared=990_000)[: 14 + 100])
    await expect_abort_and_1009(r, "a WebSocket frame of 990000 bytes", "max_message_size of 65536 bytes")
    w.close()
    print("ok unfinished frame refused at its header", flush=True)


async def fragment_over_the_limit(port):
    r, w = await raw_ws(port)
    w.write(ws_frame(1, b"[" + b" " * 39_999, fin=False))
    w.write(ws_frame(0, b"", fin=True, declared=40_000)[:14])
    await expect_abort_and_1009(r, "a WebSocket frame of 40000 bytes after 40000 bytes")
    w.close()
    print("ok fragment over the message limit refused at its header", flush=True)


async def binary_frame_on_json(url):
    c = await Raw.open(url)
    await c.hello()
    await c.ws.send(json.dumps([32, 1, {}, "com.x"]).encode())
    await c.expect_abort("wamp.error.protocol_violation", "binary frame received", "(json) uses text frames")
    print("ok binary frame on wamp.2.json", flush=True)


async def long_uris(url):
    c = await Raw.open(url)
    await c.hello()
    await c.send([32, 1, {}, "com." + "a" * 60_007])
    text = await c.expect_error(32, 1, "wamp.error.invalid_uri")
    assert "60011 bytes long" in text and "1024 bytes" in text, text
    await c.send([48, 2, {}, "com." + "b" * 2000])
    await c.expect_error(48, 2, "wamp.error.invalid_uri")
    await c.send([32, 3, {}, "com." + "a" * 1000])
    assert (await c.recv())[:2] == [33, 3]
    await c.ws.close()
    c = await Raw.open(url)
    await c.send([1, "realm" + "1" * 5000, ROLES])
    await c.expect_abort("wamp.error.invalid_uri", "1024 bytes")
    print("ok URIs longer than 1024 bytes refused", flush=True)


async def rawsocket_open(port, length_exp=15, serializer=1):
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), T)
    w.write(bytes([0x7F, (length_exp << 4) | serializer, 0, 0]))
    return r, w, await asyncio.wait_for(r.readexactly(4), T)


async def rawsocket_recv(r):
    head = await asyncio.wait_for(r.readexactly(4), T)
    n = int.from_bytes(head[1:], "big")
    return head[0] & 7, await r.readexactly(n)


async def rawsocket_small_client(port):
    # The client accepts at most 512 bytes; the WELCOME is larger.
    r, w, reply = await rawsocket_open(port, length_exp=0)
    assert reply[0] == 0x7F and reply[1] & 0x0F == 1, reply
    hello = json.dumps([1, "realm1", ROLES]).encode()
    w.write(bytes([0]) + len(hello).to_bytes(3, "big") + hello)
    kind, payload = await rawsocket_recv(r)
    msg = json.loads(payload)
    assert kind == 0 and msg[0] == 3 and msg[2] == "wamp.error.payload_size_exceeded", msg
    assert "WELCOME of" in msg[1]["message"] and "512 bytes this RawSocket client accepts" in msg[1]["message"], msg
    assert await asyncio.wait_for(r.read(), T) == b"", "the connection stays open"
    w.close()
    print("ok RawSocket client told that the WELCOME is too large for it", flush=True)


async def rawsocket_over_max_connections(port):
    held = []
    for _ in range(2):
        r, w, reply = await rawsocket_open(port)
        assert reply[0] == 0x7F and reply[1] & 0x0F == 1, reply
        held.append(w)
    await asyncio.sleep(0.1)
    for _ in range(5):
        r, w, reply = await rawsocket_open(port)
        assert reply == bytes([0x7F, 0x40, 0, 0]), f"expected error 4 (connection limit), got {reply}"
        assert await asyncio.wait_for(r.read(), T) == b""
        w.close()
    for w in held:
        w.close()
    print("ok RawSocket over max_connections gets error 4", flush=True)


async def main():
    ws_port, rs_port = int(sys.argv[1]), int(sys.argv[2])
    url = f"ws://127.0.0.1:{ws_port}/ws"
    good = await connect(url, "json")
    await good.register(lambda x: x, "com.good.echo")
    await unfinished_frame(ws_port)
    await fragment_over_the_limit(ws_port)
    await binary_frame_on_json(url)
    await long_uris(url)
    await rawsocket_small_client(rs_port)
    await rawsocket_over_max_connections(rs_port)
    assert not good.left.done(), f"the well-behaved session was disconnected: {good.left.result()}"
    other = await connect(url, "msgpack")
    assert await other.call("com.good.echo", 5) == 5
    await leave(good, other)
    print("ok bystander unaffected", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
