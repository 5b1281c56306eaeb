"""websocket.testee echoes text and binary messages and answers pings;
with `compression.deflate` it negotiates permessage-deflate and its echoes
come back compressed.

Usage: python testee_echo.py PLAIN_URL DEFLATE_URL
"""

import asyncio
import sys

import websockets


async def echo(url):
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        blob = bytes(range(256)) * 100
        await ws.send(blob)
        assert await ws.recv() == blob
        pong = await ws.ping(b"x")
        await asyncio.wait_for(pong, 5)
        return ws.response.headers.get("Sec-WebSocket-Extensions")


async def compressed_echo(url):
    """Count the bytes that arrive: 1 MB of repetitive text echoed
    compressed is a small fraction of it on the wire."""
    received = 0
    async with websockets.connect(url, max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        assert "permessage-deflate" in ext, ext
        proto = ws.transport.get_protocol()
        data_received = proto.data_received

        def counting(data):
            nonlocal received
            received += len(data)
            data_received(data)

        proto.data_received = counting
        text = "all work and no play makes a dull router " * 25_000
        for _ in range(3):
            await ws.send(text)
            assert await ws.recv() == text
        blob = bytes(1_000_000)
        await ws.send(blob)
        assert await ws.recv() == blob
    assert 0 < received < 200_000, f"{received} bytes arrived for about 4 MB echoed"
    return ext


async def main(plain, deflate):
    ext = await echo(plain)
    assert ext is None, f"the plain testee negotiated {ext}"
    print("plain: no extension", flush=True)
    await echo(deflate)
    ext = await compressed_echo(deflate)
    print(f"deflate: compressed echo ok ({ext})", flush=True)
    print("echo ok", flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
