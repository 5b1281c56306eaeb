"""A raw WAMP-over-WebSocket peer (Python `websockets`), for what autobahn
cannot or will not send: bad input, cancel modes, progressive call
invocations, and checking bytes on the wire."""

import asyncio
import json

import cbor2
import msgpack
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

ROLES = {"roles": {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}}
T = 5


async def send_until_closed(host, port, data):
    """Send `data` on a plain TCP connection and return what comes back
    until the other side closes; a reset counts as closed (the kernel resets
    a connection closed with unread bytes)."""
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), T)
    w.write(data)
    await w.drain()
    try:
        rest = await asyncio.wait_for(r.read(), T)
    except ConnectionResetError:
        rest = b""
    w.close()
    return rest


class Raw:
    """A raw WAMP-over-WebSocket connection with one serializer."""

    def __init__(self, ws, ser):
        self.ws, self.ser = ws, ser

    @classmethod
    async def open(cls, url, proto="wamp.2.json", **kw):
        ws = await asyncio.wait_for(ws_connect(url, subprotocols=[proto], max_size=None, **kw), T)
        assert ws.subprotocol == proto, ws.subprotocol
        return cls(ws, proto.removeprefix("wamp.2."))

    async def send(self, msg):
        if self.ser == "json":
            await self.ws.send(json.dumps(msg))
        elif self.ser == "cbor":
            await self.ws.send(cbor2.dumps(msg))
        else:
            await self.ws.send(msgpack.packb(msg, use_bin_type=True))

    async def recv(self):
        data = await asyncio.wait_for(self.ws.recv(), T)
        if self.ser == "json":
            assert isinstance(data, str), f"JSON must arrive in text frames, got {type(data)}"
            return json.loads(data)
        if self.ser == "cbor":
            return cbor2.loads(data)
        return msgpack.unpackb(data, raw=False)

    async def hello(self, realm="realm1", details=None):
        await self.send([1, realm, details or ROLES])
        welcome = await self.recv()
        assert welcome[0] == 2, welcome
        return welcome

    async def expect_abort(self, reason, *fragments):
        msg = await self.recv()
        assert msg[0] == 3, f"expected ABORT, got {msg}"
        assert msg[2] == reason, f"expected ABORT {reason}, got {msg}"
        text = msg[1].get("message", "")
        for f in fragments:
            assert f in text, f"ABORT message {text!r} lacks {f!r}"
        await self.expect_closed()
        return text

    async def expect_closed(self):
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), T)
        except ConnectionClosed as e:
            return e
        except asyncio.TimeoutError:
            raise AssertionError("the router did not close the connection") from None

    async def drain(self):
        """Every message until the router closes the connection."""
        got = []
        try:
            while True:
                got.append(await self.recv())
        except ConnectionClosed:
            return got
        except asyncio.TimeoutError:
            raise AssertionError(f"the router did not close the connection (received {got})") from None

    async def expect_error(self, request_type, request, error):
        msg = await self.recv()
        assert msg[:3] == [8, request_type, request], f"expected ERROR for {request_type}/{request}, got {msg}"
        assert msg[4] == error, f"expected {error}, got {msg}"
        assert msg[5] and isinstance(msg[5][0], str) and msg[5][0], f"ERROR without a readable message: {msg}"
        return msg[5][0]
