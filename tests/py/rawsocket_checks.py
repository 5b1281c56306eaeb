"""RawSocket handshake and framing errors, spoken over plain TCP sockets.

Usage: python rawsocket_checks.py HOST PORT
"""

import asyncio
import sys

from raw_client import send_until_closed

T = 5


async def exchange(host, port, data, want=4):
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), T)
    w.write(data)
    await w.drain()
    got = b""
    try:
        while len(got) < want:
            chunk = await asyncio.wait_for(r.read(want - len(got)), T)
            if not chunk:
                break
            got += chunk
    finally:
        w.close()
    return got


async def main():
    host, port = sys.argv[1], int(sys.argv[2])
    # A good handshake: JSON, 16 MiB max; the router announces its own max.
    reply = await exchange(host, port, bytes([0x7F, 0xF1, 0, 0]))
    assert reply[0] == 0x7F and reply[1] & 0x0F == 1 and reply[2:] == b"\0\0", reply
    assert 512 << (reply[1] >> 4) <= 65536, f"announced more than max_message_size: {reply}"
    print("ok handshake", flush=True)
    # Serializer 5 does not exist: error 1.
    assert await exchange(host, port, bytes([0x7F, 0xF5, 0, 0])) == bytes([0x7F, 0x10, 0, 0])
    # CBOR is not offered on this transport: error 1.
    assert await exchange(host, port, bytes([0x7F, 0xF3, 0, 0])) == bytes([0x7F, 0x10, 0, 0])
    print("ok unsupported serializer", flush=True)
    # Reserved octets: error 3.
    assert await exchange(host, port, bytes([0x7F, 0xF1, 1, 0])) == bytes([0x7F, 0x30, 0, 0])
    print("ok reserved bits", flush=True)
    # Not RawSocket at all (an HTTP request): closed without a reply.
    assert await send_until_closed(host, port, b"GET / HTTP/1.1\r\n\r\n") == b""
    print("ok not rawsocket", flush=True)
    # A frame announcing more than the limit: the connection is closed
    # (after an ABORT in a frame) without the router reading the body.
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), T)
    w.write(bytes([0x7F, 0xF1, 0, 0]))
    await w.drain()
    await asyncio.wait_for(r.readexactly(4), T)
    w.write(bytes([0, 0x10, 0, 0]))  # a 1 MiB message frame header, no body
    await w.drain()
    rest = await asyncio.wait_for(r.read(), T)
    w.close()
    assert b"protocol_violation" in rest and b"max_message_size" in rest, rest
    print("ok frame too long", flush=True)
    # A ping is answered with a pong carrying the same payload.
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), T)
    w.write(bytes([0x7F, 0xF1, 0, 0]))
    await w.drain()
    await asyncio.wait_for(r.readexactly(4), T)
    w.write(bytes([1, 0, 0, 3]) + b"abc")
    await w.drain()
    pong = await asyncio.wait_for(r.readexactly(7), T)
    assert pong == bytes([2, 0, 0, 3]) + b"abc", pong
    w.close()
    print("ok ping pong", flush=True)


asyncio.run(main())
