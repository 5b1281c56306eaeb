"""allowed_origins: a browser origin not on the list gets 403 naming the
option; a listed one (and a client with no Origin) gets through.

Usage: python origin_check.py ws://127.0.0.1:PORT/ws
"""

import asyncio
import sys

import websockets

from wamp_client import connect, leave


async def main(url):
    try:
        async with websockets.connect(url, subprotocols=["wamp.2.json"], origin="https://evil.org"):
            raise SystemExit("an unlisted origin was let in")
    except websockets.exceptions.InvalidStatus as e:
        assert e.response.status_code == 403, e.response.status_code
        body = e.response.body.decode()
        assert "allowed_origins" in body, body
        print("evil origin refused", flush=True)
    async with websockets.connect(url, subprotocols=["wamp.2.json"], origin="https://app.example.com") as ws:
        assert ws.subprotocol == "wamp.2.json"
        print("listed origin accepted", flush=True)
    s = await connect(url, "json")  # autobahn-python sends no Origin
    await leave(s)
    print("no origin accepted", flush=True)


asyncio.run(main(sys.argv[1]))
