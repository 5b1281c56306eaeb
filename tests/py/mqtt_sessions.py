"""MQTT sessions that outlive their connection, message expiry and user
properties, through Trellis's `mqtt` transport, with paho-mqtt, raw
sockets (to leave publications unacknowledged) and autobahn-python as the
WAMP publisher.

Usage: mqtt_sessions.py WS_URL HOST MQTT_PORT

MQTT_PORT keeps at most 5 messages for a client that is away
(options.offline_queue_messages).
"""

import asyncio
import queue
import socket
import struct
import sys
import time

import paho.mqtt.client as mqtt
from autobahn.wamp.types import PublishOptions
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_raw import Raw, raw_packet, raw_string
from wamp_client import connect

WS_URL, HOST, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
T = 10


class Device:
    """A paho-mqtt 5 client."""

    def __init__(self, client_id, clean_start, expiry=None):
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

        def on_message(c, u, m):
            props = m.properties
            user = list(getattr(props, "UserProperty", []) or []) if props else []
            expiry = getattr(props, "MessageExpiryInterval", None) if props else None
            self.messages.put((m.topic, m.payload, user, expiry))

        self.c.on_message = on_message
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put((flags.session_present, getattr(rc, "value", rc)))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put([getattr(r, "value", r) for r in rcs])
        props = None
        if expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
        self.c.connect(HOST, PORT, keepalive=30, clean_start=clean_start, properties=props)
        self.c.loop_start()

    def connack(self):
        return self.connacks.get(timeout=T)

    def subscribe(self, filt):
        self.c.subscribe(filt, 1)
        return self.subacks.get(timeout=T)

    def message(self, timeout=T):
        return self.messages.get(timeout=timeout)

    def publish(self, topic, payload, properties=None):
        info = self.c.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(timeout=T)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


async def main():
    loop = asyncio.get_event_loop()
    w = await connect(WS_URL, "json")

    async def publish(topic, value):
        await w.publish(topic, value, options=PublishOptions(acknowledge=True))

    # MQTT 3.1.1 without a clean session: a QoS 1 publication left
    # unacknowledged is sent again, as a duplicate, when the client comes
    # back; what was published while it was away follows, in order.
    r = Raw(HOST, PORT, "keeper", clean=False)
    assert r.packet() == (0x20, b"\x00\x00"), "CONNACK, no session yet"
    r.subscribe("keep/#")
    await publish("keep.a", 1)
    dup, topic, first_id, _ = r.publish()
    assert (dup, topic) == (False, "keep/a"), (dup, topic)
    r.s.close()
    await asyncio.sleep(0.3)
    await publish("keep.b", 2)
    await publish("keep.c", 3)
    r = Raw(HOST, PORT, "keeper", clean=False)
    assert r.packet() == (0x20, b"\x01\x00"), "CONNACK, session present"
    dup, topic, pid, payload = r.publish()
    assert (dup, topic, pid) == (True, "keep/a", first_id), (dup, topic, pid)
    got = []
    for _ in range(2):
        dup, topic, pid, payload = r.publish()
        assert not dup
        got.append(topic)
        r.puback(pid)
    assert got == ["keep/b", "keep/c"], got
    r.puback(first_id)
    r.nothing()
    print("ok qos 1 sent again after a reconnect", flush=True)

    # The subscription is part of the session: no SUBSCRIBE needed.
    r.s.close()
    await asyncio.sleep(0.3)
    # A clean session discards the kept one.
    c = Raw(HOST, PORT, "keeper", clean=True)
    assert c.packet() == (0x20, b"\x00\x00"), "CONNACK, no session present"
    await publish("keep.d", 4)
    c.nothing()
    c.s.sendall(b"\xe0\x00")
    c.s.close()
    print("ok a clean session discards the kept one", flush=True)

    # MQTT 5: a session expiry keeps the session across a DISCONNECT; the
    # queue is bounded (5 here); messages past their expiry are not sent.
    d = Device("v5-keeper", clean_start=True, expiry=60)
    assert d.connack() == (False, 0)
    assert d.subscribe("away/#") == [1]

    async def mqtt_sessions():
        """The meta API's MQTT sessions: client id -> transport details."""
        out = {}
        for sid in await w.call("wamp.session.list"):
            info = await w.call("wamp.session.get", sid)
            t = info.get("transport", {})
            if t.get("type") == "mqtt":
                out[t.get("mqtt_client_id")] = t
        return out

    listed = await mqtt_sessions()
    assert listed.get("v5-keeper", {}).get("protocol") == "mqtt.5", listed
    d.stop()
    await asyncio.sleep(0.3)
    assert "v5-keeper" in await mqtt_sessions(), "a kept session is listed while its client is away"
    print("ok mqtt sessions in the meta api", flush=True)
    short = Properties(PacketTypes.PUBLISH)
    short.MessageExpiryInterval = 1
    p = Device("v5-pub", clean_start=True)
    assert p.connack() == (False, 0)
    await loop.run_in_executor(None, lambda: p.publish("away/short", b"gone soon", short))
    for i in range(8):
        await publish("away.n", i)
    await asyncio.sleep(1.5)
    d = Device("v5-keeper", clean_start=False, expiry=60)
    assert d.connack() == (True, 0), "session present"
    got = []
    while True:
        try:
            topic, payload, _, _ = d.message(timeout=1)
        except queue.Empty:
            break
        got.append((topic, payload))
    # The expired one was first in the queue: the next four follow.
    assert got == [("away/n", f'{{"args":[{i}]}}'.encode()) for i in range(4)], got
    print("ok mqtt 5 session expiry with a bounded queue and message expiry", flush=True)

    # User properties, a content type and the expiry cross the bridge
    # from an MQTT 5 publisher to an MQTT 5 subscriber.
    assert d.subscribe("props/#") == [1]
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("unit", "celsius"), ("unit", "kelvin"), ("site", "b7")]
    props.MessageExpiryInterval = 120
    await loop.run_in_executor(None, lambda: p.publish("props/t", b"21", props))
    topic, payload, user, expiry = d.message()
    assert (topic, payload) == ("props/t", b"21"), (topic, payload)
    assert user == [("unit", "celsius"), ("unit", "kelvin"), ("site", "b7")], user
    assert expiry is not None and 110 <= expiry <= 120, expiry
    print("ok user properties and message expiry carried", flush=True)

    # A client that comes back while its old connection still looks open
    # (a half-open TCP connection, say): the old one is closed, told why
    # (MQTT 5: session taken over), and its session goes on in the new one.
    # (raw MQTT 5 here: paho does not report the server's reason).
    props = b"\x11" + struct.pack(">I", 60)  # session expiry interval
    old = socket.create_connection((HOST, PORT), timeout=T)
    old.sendall(raw_packet(0x10, raw_string(b"MQTT") + bytes([5, 0x02]) + struct.pack(">H", 30)
                           + bytes([len(props)]) + props + raw_string(b"twin")))
    assert old.recv(2)[0] == 0x20, "CONNACK"
    old.recv(4096)
    old.sendall(raw_packet(0x82, struct.pack(">H", 1) + b"\x00" + raw_string(b"twin/#") + b"\x01"))
    time.sleep(0.3)
    new = Device("twin", clean_start=False, expiry=60)
    assert new.connack() == (True, 0), "the live session, resumed"
    old.settimeout(T)
    tail = b""
    while b"\xe0\x02\x8e" not in tail:
        chunk = old.recv(4096)
        assert chunk, f"closed without DISCONNECT 0x8E: {tail!r}"
        tail += chunk
    old.close()
    await publish("twin.x", 1)
    topic, payload, _, _ = new.message()
    assert topic == "twin/x", topic
    new.stop()
    print("ok a live session taken over by its returning client", flush=True)

    # A session expiry of 1 s: gone after it, the next connection starts
    # afresh.
    e = Device("v5-brief", clean_start=True, expiry=1)
    assert e.connack() == (False, 0)
    assert e.subscribe("brief/#") == [1]
    e.stop()
    time.sleep(2)
    e = Device("v5-brief", clean_start=False, expiry=1)
    assert e.connack() == (False, 0), "the session expired"
    e.stop()
    print("ok an expired session is gone", flush=True)

    # A shared subscription: each message to one of the group's members,
    # beside an ordinary subscriber that gets them all; no retained
    # message on it.
    await w.publish("jobs.old", "retained", options=PublishOptions(acknowledge=True, retain=True))
    members = [Device(f"worker-{i}", clean_start=True) for i in range(2)]
    for m in members:
        assert m.connack() == (False, 0)
        assert m.subscribe("$share/workers/jobs/#") == [1]
    assert d.subscribe("jobs/#") == [1]
    assert d.message()[:2] == ("jobs/old", b'{"args":["retained"]}'), "retained for the plain one"
    for i in range(40):
        await publish("jobs.j", i)
    everyone = [d.message()[1] for _ in range(40)]
    assert everyone == [f'{{"args":[{i}]}}'.encode() for i in range(40)]
    shares = []
    for m in members:
        n = 0
        while True:
            try:
                topic, _, _, _ = m.message(timeout=1)
            except queue.Empty:
                break
            assert topic == "jobs/j", topic
            n += 1
        shares.append(n)
    assert sum(shares) == 40 and min(shares) > 0, shares
    assert members[0].subscribe("$share//jobs/#") == [0x8F], "a shared subscription without a group"
    for m in members:
        m.stop()
    p.stop()
    d.c.disconnect()
    d.c.loop_stop()
    print("ok a shared subscription spreads messages over its group", flush=True)


asyncio.run(main())
