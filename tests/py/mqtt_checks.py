"""MQTT clients (paho-mqtt, raw sockets) and WAMP clients (autobahn-python)
on one realm, through Trellis's `mqtt` transport.

Usage: mqtt_checks.py WS_URL HOST MQTT_PORT AUTH_PORT DYN_PORT

MQTT_PORT is an anonymous mqtt transport (role "anonymous", topics under
"app" mapped natively); AUTH_PORT takes ticket logins for the role
"device", which may publish under "devices" only; DYN_PORT's ticket
logins are decided by an authenticator procedure this script registers.
"""

import asyncio
import json
import queue
import socket
import struct
import sys
import time

import paho.mqtt.client as mqtt
from autobahn.wamp.interfaces import IPayloadCodec
from autobahn.wamp.types import EncodedPayload, PublishOptions, SubscribeOptions

from mqtt_raw import raw_connect, raw_packet, raw_string
from wamp_client import connect

WS_URL, HOST, PORT, AUTH_PORT, DYN_PORT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
T = 10


class MqttCodec:
    """Autobahn's side of payload passthru: MQTT payloads are bytes."""

    def encode(self, is_originating, uri, args=None, kwargs=None):
        return EncodedPayload(args[0], "mqtt")

    def decode(self, is_originating, uri, encoded_payload):
        return uri, [encoded_payload.payload], None


IPayloadCodec.register(MqttCodec)


class Device:
    """A paho-mqtt client (its own thread); messages and acks in queues."""

    def __init__(self, client_id, port=PORT, username=None, password=None, protocol=mqtt.MQTTv311):
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.pubacks = {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.correlations = {}

        def on_message(c, u, m):
            data = getattr(m.properties, "CorrelationData", None) if m.properties else None
            self.correlations[m.topic] = data
            self.messages.put((m.topic, m.payload, m.retain, m.qos))

        self.c.on_message = on_message
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put(rc)
        self.disconnects = 0

        def on_disconnect(c, u, flags, rc, props):
            self.disconnects += 1

        self.c.on_disconnect = on_disconnect
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put([getattr(r, "value", r) for r in rcs])
        self.c.on_publish = lambda c, u, mid, rc, props: self.pubacks.__setitem__(mid, getattr(rc, "value", rc))
        self.c.connect(HOST, port, keepalive=30)
        self.c.loop_start()

    def connack(self):
        """The CONNACK's code; paho reports MQTT 3.1.1's codes as MQTT 5's
        (4, bad user name or password: 0x86; 5, not authorized: 0x87)."""
        rc = self.connacks.get(timeout=T)
        return getattr(rc, "value", rc)

    def subscribe(self, filt, qos=1):
        self.c.subscribe(filt, qos)
        return self.subacks.get(timeout=T)

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        """Publish; the acknowledgement's reason code (MQTT 5; 0 for 3.1.1)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=T)
        assert info.is_published(), f"no PUBACK for {topic}"
        return self.pubacks.get(info.mid, 0)

    def message(self, timeout=T):
        return self.messages.get(timeout=timeout)

    def no_message(self, within=0.5):
        try:
            got = self.messages.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {got}")

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


async def wamp(codec=False):
    s = await connect(WS_URL, "msgpack")
    if codec:
        s.set_payload_codec(MqttCodec())
    return s


async def subscribe(session, topic, match=None):
    got = asyncio.Queue()

    def on_event(*args, **kwargs):
        details = kwargs.pop("details", None)
        got.put_nowait((list(args), kwargs, details))

    await session.subscribe(on_event, topic, options=SubscribeOptions(match=match, details=True))
    return got


async def next_event(q):
    return await asyncio.wait_for(q.get(), T)


def raw_client(data):
    s = socket.create_connection((HOST, PORT), timeout=T)
    s.sendall(data)
    return s


def closed(s):
    """True when the server closes the socket (after any CONNACK)."""
    s.settimeout(T)
    try:
        while True:
            b = s.recv(4096)
            if not b:
                return True
    except (ConnectionResetError, socket.timeout):
        return False


async def main():
    loop = asyncio.get_event_loop()

    # MQTT publish -> WAMP subscriber, opaque bytes (payload passthru).
    w = await wamp(codec=True)
    events = await subscribe(w, "sensors.t1")
    d = Device("sensor-1")
    assert d.connack() == 0
    await loop.run_in_executor(None, d.publish, "sensors/t1", b"\x00\x01raw", 1)
    args, _, details = await next_event(events)
    assert args == [b"\x00\x01raw"], args
    await loop.run_in_executor(None, d.publish, "sensors/t1", b"exactly once", 2)
    args, _, _ = await next_event(events)
    assert args == [b"exactly once"], args
    print("ok mqtt publish reaches wamp as passthru bytes", flush=True)

    # WAMP publish -> MQTT subscriber with a '+' filter: arguments arrive
    # as JSON, passthru bytes as they are.
    assert d.subscribe("sensors/+/temp") == [1]
    plain = await wamp()
    await plain.publish("sensors.k1.temp", 21.5, options=PublishOptions(acknowledge=True))
    topic, payload, _, qos = await loop.run_in_executor(None, d.message)
    assert topic == "sensors/k1/temp" and json.loads(payload) == {"args": [21.5]} and qos == 1, (topic, payload, qos)
    await w.publish("sensors.k2.temp", b"\x10\x20", options=PublishOptions(acknowledge=True))
    topic, payload, _, _ = await loop.run_in_executor(None, d.message)
    assert (topic, payload) == ("sensors/k2/temp", b"\x10\x20"), (topic, payload)
    print("ok wamp publish reaches mqtt on a wildcard filter", flush=True)

    # A native mapping: the MQTT payload is {"args", "kwargs"} in JSON.
    app = await subscribe(plain, "app.", match="prefix")
    await loop.run_in_executor(None, d.publish, "app/add", json.dumps({"args": [1, 2], "kwargs": {"a": "b"}}).encode())
    args, kwargs, details = await next_event(app)
    assert args == [1, 2] and kwargs == {"a": "b"} and details.topic == "app.add", (args, kwargs, details)
    print("ok native mapping", flush=True)

    # Native mappings in MessagePack and CBOR: both ways, binary intact.
    import cbor2
    import msgpack

    for prefix, dumps, loads in (("packed", msgpack.packb, msgpack.unpackb), ("tagged", cbor2.dumps, cbor2.loads)):
        q = await subscribe(plain, f"{prefix}.", match="prefix")
        body = dumps({"args": [1, b"\x00\xff"], "kwargs": {"k": "v"}})
        await loop.run_in_executor(None, d.publish, f"{prefix}/in", body)
        args, kwargs, details = await next_event(q)
        assert args == [1, b"\x00\xff"] and kwargs == {"k": "v"}, (prefix, args, kwargs)
        assert d.subscribe(f"{prefix}/out") == [1]
        await plain.publish(f"{prefix}.out", 2, b"\x01", x=3, options=PublishOptions(acknowledge=True))
        topic, payload, _, _ = await loop.run_in_executor(None, d.message)
        assert topic == f"{prefix}/out" and loads(payload) == {"args": [2, b"\x01"], "kwargs": {"x": 3}}, (topic, payload)
    print("ok native msgpack and cbor mappings", flush=True)

    # Retained: a later subscriber gets the last retained message, flagged.
    await loop.run_in_executor(None, lambda: d.publish("state/door", b"open", 1, True))
    late = Device("late-1")
    assert late.connack() == 0
    assert late.subscribe("state/#") == [1]
    topic, payload, retain, _ = await loop.run_in_executor(None, late.message)
    assert (topic, payload, retain) == ("state/door", b"open", True), (topic, payload, retain)
    late.stop()
    # An empty retained payload clears it: the next subscriber gets none.
    await loop.run_in_executor(None, lambda: d.publish("state/door", b"", 1, True))
    later = Device("late-2")
    assert later.connack() == 0
    assert later.subscribe("state/#") == [1]
    later.no_message(within=1.0)
    later.stop()
    print("ok retained message for a later subscriber", flush=True)

    # Topics and filters with no WAMP equivalent: refused, nothing else
    # happens, and the client goes on.
    assert d.subscribe("a/+/#") == [128]
    odd = await subscribe(w, "x.", match="prefix")
    await loop.run_in_executor(None, d.publish, "x.y/z", b"dot")
    await loop.run_in_executor(None, d.publish, "x/ok", b"fine")
    args, _, details = await next_event(odd)
    assert details.topic == "x.ok", details
    print("ok unmappable topics refused", flush=True)

    # The will: published when the client is lost, not after DISCONNECT.
    wills = await subscribe(w, "clients.", match="prefix")
    s = raw_client(raw_connect("will-1", ("clients/will-1/status", b"lost")))
    assert s.recv(4) == b"\x20\x02\x00\x00", "CONNACK accepted"
    s.close()
    args, _, details = await next_event(wills)
    assert args == [b"lost"] and details.topic == "clients.will-1.status", (args, details)
    s = raw_client(raw_connect("will-2", ("clients/will-2/status", b"lost")))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.sendall(b"\xe0\x00")
    assert closed(s)
    await asyncio.sleep(0.5)
    assert wills.empty(), "a clean DISCONNECT sends no will"
    print("ok will on a lost client only", flush=True)

    # Keep-alive: a client silent for 1.5 times its keep-alive (1 s) is
    # closed and leaves its will; one that pings within it stays.
    pinging = raw_client(raw_connect("alive-1", ("clients/alive-1/status", b"gone"), keep_alive=1))
    assert pinging.recv(4) == b"\x20\x02\x00\x00"

    def keep_pinging():
        for _ in range(6):
            time.sleep(0.5)
            pinging.sendall(b"\xc0\x00")  # PINGREQ
            assert pinging.recv(2) == b"\xd0\x00", "PINGRESP"

    start = time.monotonic()
    s = raw_client(raw_connect("silent-1", ("clients/silent-1/status", b"silent"), keep_alive=1))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    pings = loop.run_in_executor(None, keep_pinging)
    args, _, details = await next_event(wills)
    waited = time.monotonic() - start
    assert args == [b"silent"] and details.topic == "clients.silent-1.status", (args, details)
    assert 1.4 <= waited <= 4.0, f"the will came after {waited:.2f} s, expected about 1.5 s"
    assert closed(s), "the silent client is closed"
    await pings
    assert wills.empty(), "the pinging client is still there"
    pinging.sendall(b"\xe0\x00")
    assert closed(pinging)
    print("ok keep-alive: a silent client closed with its will, a pinging one kept", flush=True)

    # A client id in use: the new connection takes it over, the old one
    # is closed (and, gone without DISCONNECT, leaves its will).
    first = raw_client(raw_connect("same-id", ("clients/same-id/status", b"replaced")))
    assert first.recv(4) == b"\x20\x02\x00\x00"
    second = raw_client(raw_connect("same-id"))
    assert second.recv(4) == b"\x20\x02\x00\x00"
    assert closed(first), "the old connection is closed"
    args, _, details = await next_event(wills)
    assert args == [b"replaced"], args
    second.sendall(b"\xc0\x00")  # PINGREQ: the new one lives on
    assert second.recv(2) == b"\xd0\x00"
    second.close()
    print("ok client id taken over", flush=True)

    # Ticket logins, and the role's permissions on what a device publishes.
    good = Device("dev-1", AUTH_PORT, "device1", "secret-1")
    assert good.connack() == 0
    # A connection that cannot log in cannot take a client id over.
    bad = Device("dev-1", AUTH_PORT, "device1", "wrong")
    assert bad.connack() == 0x86, "bad user name or password"
    await asyncio.sleep(0.3)
    assert good.disconnects == 0, "a refused login closed the client holding its id"
    bad.c.loop_stop()
    nobody = Device("dev-3", AUTH_PORT)
    assert nobody.connack() in (0x86, 0x87)
    nobody.c.loop_stop()
    everything = await subscribe(w, "devices.", match="prefix")
    others = await subscribe(w, "other.", match="prefix")
    await loop.run_in_executor(None, good.publish, "other/x", b"no")
    await loop.run_in_executor(None, good.publish, "devices/dev-1/up", b"yes")
    args, _, details = await next_event(everything)
    assert details.topic == "devices.dev-1.up", details
    assert others.empty(), "the denied publication got through"
    good.stop()
    print("ok ticket logins and authorized publications", flush=True)

    # MQTT 5.0: the same bridge, with reason codes for what is refused,
    # and topic aliases.
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    v5 = Device("v5-1", protocol=mqtt.MQTTv5)
    assert v5.connack() == 0
    rc = await loop.run_in_executor(None, v5.publish, "sensors/t1", b"from v5", 1)
    assert rc == 0, rc
    args, _, _ = await next_event(events)
    assert args == [b"from v5"], args
    alias = Properties(PacketTypes.PUBLISH)
    alias.TopicAlias = 3
    await loop.run_in_executor(None, lambda: v5.publish("sensors/t1", b"alias set", 1, properties=alias))
    await loop.run_in_executor(None, lambda: v5.publish("", b"by alias", 1, properties=alias))
    for want in (b"alias set", b"by alias"):
        args, _, _ = await next_event(events)
        assert args == [want], args
    rc = await loop.run_in_executor(None, v5.publish, "x.y/z", b"dot", 1)
    assert rc == 0x90, f"topic name invalid, got {rc}"
    assert v5.subscribe("a/+/#") == [0x8F], "topic filter invalid"
    v5.c.subscribe([(f"many/{i}", 0) for i in range(1001)])
    codes = v5.subacks.get(timeout=T)
    assert codes[:1000] == [0] * 1000 and codes[1000] == 0x97, codes[995:]
    assert v5.subscribe("sensors/#") == [0x97], "still at the limit"
    v5.c.unsubscribe("many/0")
    await asyncio.sleep(0.3)
    assert v5.subscribe("sensors/#") == [1]
    await w.publish("sensors.v5", b"to v5", options=PublishOptions(acknowledge=True))
    topic, payload, _, _ = await loop.run_in_executor(None, v5.message)
    assert (topic, payload) == ("sensors/v5", b"to v5"), (topic, payload)
    # Request/response: a PUBLISH with a response topic calls the WAMP
    # procedure its topic names; the result comes back on the response
    # topic with the correlation data.
    await plain.register(lambda a, b: a + b, "app.add")
    request = Properties(PacketTypes.PUBLISH)
    request.ResponseTopic = "replies/v5-1"
    request.CorrelationData = b"req-1"
    body = json.dumps({"args": [2, 3]}).encode()
    await loop.run_in_executor(None, lambda: v5.publish("app/add", body, 1, properties=request))
    topic, payload, _, _ = await loop.run_in_executor(None, v5.message)
    assert (topic, json.loads(payload)) == ("replies/v5-1", {"args": [5]}), (topic, payload)
    assert v5.correlations[topic] == b"req-1", v5.correlations
    request.CorrelationData = b"req-2"
    await loop.run_in_executor(None, lambda: v5.publish("app/missing", b"", 1, properties=request))
    topic, payload, _, _ = await loop.run_in_executor(None, v5.message)
    assert json.loads(payload)["error"] == "wamp.error.no_such_procedure", payload
    assert v5.correlations[topic] == b"req-2"
    v5.stop()
    dev5 = Device("dev-5", AUTH_PORT, "device1", "secret-1", protocol=mqtt.MQTTv5)
    assert dev5.connack() == 0
    rc = await loop.run_in_executor(None, dev5.publish, "other/x", b"no", 1)
    assert rc == 0x87, f"not authorized, got {rc}"
    assert dev5.subscribe("other/#") == [0x87], "a subscription the role may not make"
    dev5.stop()
    bad5 = Device("dev-6", AUTH_PORT, "device1", "wrong", protocol=mqtt.MQTTv5)
    assert bad5.connack() == 0x86
    bad5.c.loop_stop()
    print("ok mqtt 5 with reason codes, topic aliases and request/response", flush=True)

    # Logins decided by an authenticator procedure (ticket, dynamic).
    from autobahn.wamp.exception import ApplicationError

    seen = []

    def authenticate(realm, authid, details):
        seen.append(authid)
        if details.get("ticket") == "dyn-secret":
            return {"role": "device"}
        raise ApplicationError("com.example.invalid_ticket", "no such device")

    await plain.register(authenticate, "com.example.mqtt_authenticate")
    # The authenticator answers on this loop: wait for the CONNACK off it.
    dyn = Device("dyn-1", DYN_PORT, "dyn-device", "dyn-secret", protocol=mqtt.MQTTv5)
    assert await loop.run_in_executor(None, dyn.connack) == 0
    rc = await loop.run_in_executor(None, dyn.publish, "other/x", b"no", 1)
    assert rc == 0x87, "the role the authenticator gave decides"
    dyn.stop()
    wrong = Device("dyn-2", DYN_PORT, "dyn-device", "nope", protocol=mqtt.MQTTv5)
    assert await loop.run_in_executor(None, wrong.connack) in (0x86, 0x87)
    wrong.c.loop_stop()
    assert seen == ["dyn-device", "dyn-device"], seen
    print("ok an authenticator procedure logs mqtt devices in", flush=True)

    # Bad input costs only the offender.
    s = raw_client(raw_packet(0x30, raw_string(b"a/b") + b"x"))
    assert closed(s), "PUBLISH before CONNECT"
    # A QoS 2 publication sent twice before its PUBREL is delivered once.
    s = raw_client(raw_connect("dup-1"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    q2 = raw_packet(0x34, raw_string(b"sensors/t1") + struct.pack(">H", 7) + b"dup")
    s.sendall(q2)
    assert s.recv(4) == b"\x50\x02\x00\x07", "PUBREC"
    s.sendall(bytes([0x3C]) + q2[1:])  # the same, with DUP set
    assert s.recv(4) == b"\x50\x02\x00\x07", "PUBREC again"
    s.sendall(b"\x62\x02\x00\x07")  # PUBREL
    assert s.recv(4) == b"\x70\x02\x00\x07", "PUBCOMP"
    args, _, _ = await next_event(events)
    assert args == [b"dup"], args
    s.close()
    s = raw_client(raw_connect("twice"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.sendall(raw_connect("twice"))
    assert closed(s), "a second CONNECT"
    s = raw_client(raw_connect("bad-len"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.sendall(b"\x30\xff\xff\xff\xff\x01")  # a remaining length of 5 bytes
    assert closed(s), "a malformed remaining length"
    s = raw_client(raw_connect("bad-qos"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.sendall(raw_packet(0x82, struct.pack(">H", 1) + raw_string(b"a/b") + b"\x03"))
    assert closed(s), "a SUBSCRIBE asking QoS 3"
    s = raw_client(raw_connect("bad-utf8"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.sendall(raw_packet(0x30, raw_string(b"a/\xff") + b"x"))
    assert closed(s), "a topic that is not UTF-8"
    s = raw_client(raw_connect("big"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.sendall(b"\x30\x80\x80\x80\x01")  # a PUBLISH declaring 2 MiB
    assert closed(s), "an oversize packet"
    await loop.run_in_executor(None, d.publish, "sensors/t1", b"still here", 1)
    args, _, _ = await next_event(events)
    assert args == [b"still here"], args
    print("ok bad input closes only the offender", flush=True)

    # A client that subscribes and never reads: cut off when its writes
    # stall (options.write_timeout), while the others go on.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((HOST, PORT))
    slow.sendall(raw_connect("slow-1"))
    assert slow.recv(4) == b"\x20\x02\x00\x00"
    slow.sendall(raw_packet(0x82, struct.pack(">H", 1) + raw_string(b"flood/#") + b"\x00"))
    assert slow.recv(5) == b"\x90\x03\x00\x01\x00", "SUBACK"
    assert d.subscribe("flood/x") == [1]
    blob = "x" * 16384
    for i in range(400):
        plain.publish("flood.x", blob)
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(3)
    got = 0
    while True:
        try:
            topic, payload, _, _ = d.message(timeout=2)
        except queue.Empty:
            break
        got += 1
    assert got > 0, "the reading client got nothing"
    assert closed(slow), "the client that never reads is still connected"
    await loop.run_in_executor(None, d.publish, "sensors/t1", b"after", 1)
    args, _, _ = await next_event(events)
    assert args == [b"after"], args
    d.stop()
    print("ok a client that never reads is cut off alone", flush=True)


asyncio.run(main())
