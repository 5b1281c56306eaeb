"""autobahn-python over RawSocket on a Unix socket.

Usage: python unix_peer.py SOCKET_PATH WS_URL

With JSON and with MessagePack: join realm1 over the Unix socket (no
authmethods: the router knows us by our uid), check the identity WELCOME
gives, register a procedure and call it from a WebSocket session; then call
one registered over WebSocket from the Unix-socket session.
"""

import asyncio
import json
import sys

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
from autobahn.wamp.types import ComponentConfig

from wamp_client import SERIALIZERS, TIMEOUT, Session, connect, leave


async def connect_unix(path, serializer, realm="realm1"):
    loop = asyncio.get_event_loop()
    joined = loop.create_future()
    factory = WampRawSocketClientFactory(
        lambda: Session(ComponentConfig(realm=realm), joined), serializer=SERIALIZERS[serializer]()
    )
    await asyncio.wait_for(loop.create_unix_connection(factory, path), TIMEOUT)
    return await asyncio.wait_for(joined, TIMEOUT)


async def main(path, url):
    for ser in ("json", "msgpack"):
        local = await connect_unix(path, ser)
        d = local.details
        assert d.authmethod == "peercred", d
        assert d.authrole == "backend", d
        assert d.authid == "svc", d
        remote = await connect(url, "json")

        def add(a, b):
            return a + b

        await local.register(add, f"com.local.add.{ser}")
        assert await remote.call(f"com.local.add.{ser}", 2, 3) == 5
        await remote.register(lambda: "remote", f"com.remote.{ser}")
        assert await local.call(f"com.remote.{ser}") == "remote"
        blob = bytes(range(256))
        assert await local.call(f"com.local.add.{ser}", blob, b"!") == blob + b"!"
        await leave(local, remote)
        print(f"unix {ser} ok", flush=True)
    # A realm this user may not join.
    try:
        await connect_unix(path, "json", realm="realm2")
    except Exception as e:
        print("realm2 refused:", json.dumps(str(e)), flush=True)
    else:
        raise SystemExit("joined realm2, which the config forbids")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
