"""autobahn-python over TLS: WebSocket (wss://) and RawSocket, verifying the
router's certificate against a CA file for the name "localhost".

Usage: python tls_check.py WSS_URL RAWSOCKET_PORT CAFILE ok|refused

With "ok", both sessions join realm1 and call wamp.session.count; with
"refused", both handshakes must fail certificate verification.
"""

import asyncio
import ssl
import sys
from urllib.parse import urlparse

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig

from wamp_client import Session

URL, RS_PORT, CAFILE, EXPECT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


async def join(make_factory, host, port, what):
    loop = asyncio.get_event_loop()
    ctx = ssl.create_default_context(cafile=CAFILE)
    joined = loop.create_future()

    def make():
        return Session(ComponentConfig(realm="realm1"), joined, None, None, None, None)

    try:
        await asyncio.wait_for(
            loop.create_connection(make_factory(make), host, port, ssl=ctx, server_hostname="localhost"), 10
        )
    except ssl.SSLCertVerificationError as e:
        if EXPECT == "refused":
            print(f"{what} refused: {e.verify_message}", flush=True)
            return
        raise
    assert EXPECT == "ok", f"{what}: the handshake succeeded with the wrong CA"
    s = await asyncio.wait_for(joined, 10)
    count = await s.call("wamp.session.count")
    assert count >= 1, count
    s.leave()
    print(f"{what} ok", flush=True)


async def main():
    u = urlparse(URL)
    await join(
        lambda make: WampWebSocketClientFactory(make, url=URL, serializers=[JsonSerializer()]),
        u.hostname,
        u.port,
        "wss",
    )
    await join(
        lambda make: WampRawSocketClientFactory(make, serializer=MsgPackSerializer()),
        "127.0.0.1",
        RS_PORT,
        "rawsocket tls",
    )


asyncio.run(main())
