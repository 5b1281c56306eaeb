"""Leave and rejoin at once, in a tight loop, over every transport: a
session that gets the router's GOODBYE reply and opens a new session at once
registers the same procedure again, every time. The router answers GOODBYE
only once the realm has dropped the old session's registrations.

Usage: python rejoin_loop.py WS_URL RAWSOCKET_PORT LONGPOLL_URL CYCLES

Clients: autobahn-python over WebSocket (JSON, MessagePack, CBOR) and
RawSocket (JSON, MessagePack); swampyer over WebSocket and RawSocket with
MessagePack (the client that found the race); long-poll spoken with
Python's HTTP client (no Python WAMP client speaks it).
"""

import asyncio
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse

from autobahn.wamp.exception import ApplicationError
from swampyer import WAMPClient
from swampyer.messages import GOODBYE

from raw_client import Raw
from wamp_client import connect, leave

WS_URL, RS_PORT, LP_URL, CYCLES = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])


async def autobahn_cycles(url, ser, procedure):
    for i in range(CYCLES):
        s = await connect(url, ser)
        try:
            await s.register(lambda: i, procedure)
        except ApplicationError as e:
            raise AssertionError(f"{url} {ser} cycle {i}: {e.error}: {e.args}") from None
        await leave(s)
    print(f"ok autobahn {urlparse(url).scheme} {ser}: {CYCLES} leave-rejoin-register cycles", flush=True)


class Swampyer(WAMPClient):
    """swampyer, told of the router's GOODBYE reply (it has no leave that
    waits for one: its shutdown leaves the socket open)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.goodbye = threading.Event()

    def handle_goodbye(self, goodbye):
        self.goodbye.set()


def swampyer_cycles(url, procedure):
    for i in range(CYCLES):
        c = Swampyer(url=url, realm="realm1", serializers=["msgpack"], auto_reconnect=False).start()
        try:
            c.register(procedure, lambda *a, **k: i)
        except Exception as e:  # swampyer raises its own error types
            raise AssertionError(f"swampyer {url} cycle {i}: {e}") from None
        transport = c.transport
        c.send_message(GOODBYE(details={}, reason="wamp.close.close_realm"))
        assert c.goodbye.wait(10), f"swampyer {url} cycle {i}: no GOODBYE reply"
        c.shutdown()
        transport.close()
    print(f"ok swampyer {urlparse(url).scheme} msgpack: {CYCLES} leave-rejoin-register cycles", flush=True)


def lp_post(path, body=b""):
    u = urlparse(LP_URL)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    c.request("POST", u.path + path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def lp_recv(tid):
    s, body = lp_post(f"/{tid}/receive")
    assert s == 200, (s, body)
    return json.loads(body)


def longpoll_cycles(procedure):
    roles = {"roles": {"callee": {}, "caller": {}}}
    for i in range(CYCLES):
        s, body = lp_post("/open", json.dumps({"protocols": ["wamp.2.json"]}).encode())
        assert s == 200, (s, body)
        tid = json.loads(body)["transport"]
        lp_post(f"/{tid}/send", json.dumps([1, "realm1", roles]).encode())
        assert lp_recv(tid)[0] == 2
        lp_post(f"/{tid}/send", json.dumps([64, 1, {}, procedure]).encode())
        got = lp_recv(tid)
        assert got[0] == 65, f"long-poll cycle {i}: {got}"
        lp_post(f"/{tid}/send", json.dumps([6, {}, "wamp.close.close_realm"]).encode())
        bye = lp_recv(tid)
        assert bye[0] == 6, f"long-poll cycle {i}: {bye}"
        lp_post(f"/{tid}/close")
    print(f"ok longpoll json: {CYCLES} leave-rejoin-register cycles", flush=True)


async def lingering_cycles(url, procedure):
    """A client that keeps its old connection open after the GOODBYE
    reply (it closes it later, or never): its new session still finds the
    procedure free."""
    old = []
    for i in range(CYCLES):
        r = await Raw.open(url)
        await r.hello()
        await r.send([64, 1, {}, procedure])
        got = await r.recv()
        assert got[:2] == [65, 1], f"lingering cycle {i}: {got}"
        await r.send([6, {}, "wamp.close.close_realm"])
        bye = await r.recv()
        assert bye[0] == 6, f"lingering cycle {i}: {bye}"
        old.append(r)
    for r in old:
        await r.ws.close()
    print(f"ok lingering ws json: {CYCLES} leave-rejoin-register cycles", flush=True)


async def main():
    loop = asyncio.get_event_loop()
    await lingering_cycles(WS_URL, "com.rejoin.lingering")
    rs_url = f"rs://127.0.0.1:{RS_PORT}"
    t0 = time.monotonic()
    for url, ser in [(WS_URL, "json"), (WS_URL, "msgpack"), (WS_URL, "cbor"), (rs_url, "json"), (rs_url, "msgpack")]:
        await autobahn_cycles(url, ser, f"com.rejoin.{urlparse(url).scheme}.{ser}")
    await loop.run_in_executor(None, swampyer_cycles, WS_URL, "com.rejoin.swampyer.ws")
    await loop.run_in_executor(None, swampyer_cycles, f"tcpip://127.0.0.1:{RS_PORT}", "com.rejoin.swampyer.rs")
    await loop.run_in_executor(None, longpoll_cycles, "com.rejoin.longpoll")
    print(f"all cycles in {time.monotonic() - t0:.1f} s", flush=True)


asyncio.run(main())
