"""websocket.testee echoes text and binary messages and answers pings.

Usage: python testee_echo.py ws://127.0.0.1:PORT
"""

import asyncio
import sys

import websockets


async def main(url):
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        blob = bytes(range(256)) * 100
        await ws.send(blob)
        assert await ws.recv() == blob
        pong = await ws.ping(b"x")
        await asyncio.wait_for(pong, 5)
    print("echo ok", flush=True)


asyncio.run(main(sys.argv[1]))
