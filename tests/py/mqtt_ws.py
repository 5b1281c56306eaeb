"""MQTT over WebSocket on a web path (type `mqtt`), with paho-mqtt's
websockets transport beside autobahn-python on the same web port.

Usage: mqtt_ws.py HOST PORT
"""

import asyncio
import json
import queue
import socket
import sys
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from wamp_client import connect

HOST, PORT = sys.argv[1], int(sys.argv[2])
T = 10


async def main():
    loop = asyncio.get_event_loop()
    messages, connacks, subacks = queue.Queue(), queue.Queue(), queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-1", protocol=mqtt.MQTTv5, transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.on_message = lambda cl, u, m: messages.put((m.topic, m.payload))
    c.on_connect = lambda cl, u, flags, rc, props: connacks.put(getattr(rc, "value", rc))
    c.on_subscribe = lambda cl, u, mid, rcs, props: subacks.put([getattr(r, "value", r) for r in rcs])
    c.connect(HOST, PORT, keepalive=30)
    c.loop_start()
    assert connacks.get(timeout=T) == 0
    c.subscribe("room/+", 1)
    assert subacks.get(timeout=T) == [1]

    w = await connect(f"ws://{HOST}:{PORT}/ws", "json")
    await w.publish("room.a", "hello", options=PublishOptions(acknowledge=True))
    topic, payload = await loop.run_in_executor(None, lambda: messages.get(timeout=T))
    assert (topic, json.loads(payload)) == ("room/a", {"args": ["hello"]}), (topic, payload)

    got = asyncio.Queue()
    await w.subscribe(lambda *a, **k: got.put_nowait((k["details"].topic, a)), "room.", options=SubscribeOptions(match="prefix", details=True))
    # Large enough to span frames of the client's writes.
    big = "x" * 70000
    info = c.publish("room/b", json.dumps({"args": [big]}).encode(), qos=1)
    await loop.run_in_executor(None, lambda: info.wait_for_publish(timeout=T))
    assert await asyncio.wait_for(got.get(), T) == ("room.b", (big,))
    c.disconnect()
    c.loop_stop()
    print("ok mqtt over websocket beside wamp", flush=True)

    # A plain GET, and a WebSocket client offering another subprotocol.
    try:
        urllib.request.urlopen(f"http://{HOST}:{PORT}/mqtt", timeout=T)
        raise AssertionError("a plain GET was served")
    except urllib.error.HTTPError as e:
        assert e.code == 426, e.code
    s = socket.create_connection((HOST, PORT), timeout=T)
    s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n")
    answer = b""
    while b"mqtt" not in answer:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b'"mqtt"' in answer, answer
    s.close()
    print("ok the mqtt path refuses what is not mqtt over websocket", flush=True)


asyncio.run(main())
