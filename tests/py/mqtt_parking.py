"""Idle MQTT clients are parked (no task while nothing happens), and
everything that concerns one wakes it: an event for it, a packet from it,
its keep-alive running out, its connection lost, its client id taken over.

Usage: mqtt_parking.py WS_URL HOST MQTT_PORT ADMIN_PORT

MQTT_PORT is an anonymous mqtt transport with the id "devices", topics
mapped natively as JSON; ADMIN_PORT serves the node's /metrics, whose
`trellis_connections_parked` counts the parked connections.
"""

import asyncio
import json
import sys
import time
import urllib.request

from autobahn.wamp.types import PublishOptions, SubscribeOptions

from mqtt_raw import Raw, raw_packet, raw_string
from wamp_client import connect

WS_URL, HOST, PORT, ADMIN = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
T = 10


def parked():
    """The transport's parked connections, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=T) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("trellis_connections_parked{") and 'transport="devices"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError(f"no trellis_connections_parked for the devices transport:\n{text}")


async def until_parked(n, within=6.0):
    """Wait until at least `n` connections are parked."""
    deadline = time.monotonic() + within
    while True:
        got = parked()
        if got >= n:
            return got
        assert time.monotonic() < deadline, f"{got} connections parked after {within} s, wanted {n}"
        await asyncio.sleep(0.1)


def native(*args):
    return json.dumps({"args": list(args)}).encode()


async def main():
    wamp = await connect(WS_URL, "json")
    events = asyncio.Queue()

    def on_event(*args, **kwargs):
        details = kwargs.pop("details")
        events.put_nowait((details.topic, list(args)))

    await wamp.subscribe(on_event, "park", options=SubscribeOptions(match="prefix", details=True))

    async def event(within=T):
        return await asyncio.wait_for(events.get(), within)

    async def sessions():
        return await wamp.call("wamp.session.count")

    before = await sessions()
    a = Raw(HOST, PORT, "park-a")
    assert a.connack() == 0
    a.subscribe("park/to/a")
    b = Raw(HOST, PORT, "park-b", will=("park/will/b", native("b lost")))
    assert b.connack() == 0
    # Silent: its keep-alive (4 s) ends it 6 s after its last packet.
    c = Raw(HOST, PORT, "park-c", keep_alive=4, will=("park/will/c", native("c silent")))
    assert c.connack() == 0
    silent_since = time.monotonic()
    # A client that says nothing after its CONNACK parks within moments.
    await until_parked(3, within=2.0)
    assert await sessions() == before + 3, "parked clients are still the realm's sessions"
    print("ok idle clients park and stay in the realm")

    # An event for a parked subscriber wakes it.
    await wamp.publish("park.to.a", "hello a", options=PublishOptions(acknowledge=True))
    dup, topic, pid, payload = a.publish()
    assert (topic, json.loads(payload)["args"]) == ("park/to/a", ["hello a"]), (topic, payload)
    a.puback(pid)
    print("ok an event wakes a parked subscriber")

    # A packet from a parked client is read.
    await until_parked(3)
    a.s.sendall(raw_packet(0x30, raw_string(b"park/from/a") + native("from a")))
    assert await event() == ("park.from.a", ["from a"])
    print("ok a parked client's publish is read")

    # The keep-alive runs out while the client is parked: closed, will out.
    assert await event(within=T) == ("park.will.c", ["c silent"])
    waited = time.monotonic() - silent_since
    assert 5.0 <= waited < 9.0, f"the keep-alive ended the silent client after {waited:.1f} s (1.5 x 4 s expected)"
    assert c.closed(within=2), "the silent client's connection stays open"
    print("ok the keep-alive ends a parked silent client")

    # A new connection takes a parked client's id over: the old one is
    # closed, the new one welcomed.
    await until_parked(2)
    b2 = Raw(HOST, PORT, "park-b")
    assert b2.connack() == 0
    assert b.closed(within=T), "the parked connection whose id was taken stays open"
    print("ok a new connection takes over a parked client's id")

    # A parked client lost: its will goes out.
    e = Raw(HOST, PORT, "park-e", will=("park/will/e", native("e lost")))
    assert e.connack() == 0
    await until_parked(3)
    e.s.close()
    while True:
        got = await event()
        if got[0] == "park.will.e":
            break
        assert got[0] == "park.will.b", got
    assert got == ("park.will.e", ["e lost"]), got
    print("ok a parked client lost publishes its will")

    for r in (a, b2):
        r.s.sendall(b"\xe0\x00")  # DISCONNECT
        r.s.close()
    wamp.leave()


asyncio.run(main())
