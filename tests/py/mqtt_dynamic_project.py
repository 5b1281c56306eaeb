"""A Crossbar.io MQTT project in dynamic mode (crossbar-examples'
mqtt/basic/dynamic shape): a paho-mqtt device publishes struct-packed
binary payloads; the project's codec (a router component registering
com.example.mqtt.decode and .encode in realm "codec") turns them into WAMP
arguments for an autobahn subscriber, and WAMP publications back into the
same binary format for the device.

Usage: mqtt_dynamic_project.py HOST MQTT_PORT UNIVERSAL_PORT
"""

import asyncio
import os
import queue
import struct
import sys

import paho.mqtt.client as paho
from autobahn.wamp.types import PublishOptions

from wamp_client import connect

HOST, MQTT_PORT, UNIVERSAL_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
FORMAT = ">Hl8s"
TOPIC = "mqtt/test/mytopic1"
T = 20


async def main():
    loop = asyncio.get_event_loop()
    w = None
    for _ in range(100):
        try:
            w = await connect(f"ws://{HOST}:{UNIVERSAL_PORT}/ws", "json")
            break
        except Exception:
            await asyncio.sleep(0.2)
    assert w is not None, "the universal transport's WebSocket path"
    got = asyncio.Queue()
    await w.subscribe(lambda *args: got.put_nowait(list(args)), "mqtt.test.mytopic1")

    messages, connacks = queue.Queue(), queue.Queue()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="device-1")
    c.on_connect = lambda cl, u, flags, rc, props: connacks.put(rc)
    c.on_message = lambda cl, u, m: messages.put((m.topic, m.payload))
    c.connect(HOST, MQTT_PORT)
    c.loop_start()
    assert connacks.get(timeout=T) == 0
    c.subscribe(TOPIC, qos=0)
    await asyncio.sleep(0.5)

    # The device's binary payload, decoded by the project's codec. The
    # codec registers when the router has started: publish until it has.
    ran = os.urandom(8)
    args = None
    for seq in range(1, 40):
        c.publish(TOPIC, struct.pack(FORMAT, 7, seq, ran), qos=1).wait_for_publish(timeout=T)
        try:
            args = await asyncio.wait_for(got.get(), 0.5)
            break
        except asyncio.TimeoutError:
            continue
    assert args is not None and args[0] == 7 and args[2] == ran.hex(), args
    print("ok the decoder turned mqtt bytes into wamp args", flush=True)

    # A WAMP publication reaches the device in its binary format (and the
    # device's own publications come back to it, encoded).
    while not messages.empty():
        messages.get()
    await w.publish("mqtt.test.mytopic1", 9, 1234, "00ff00ff00ff00ff", options=PublishOptions(acknowledge=True))
    while True:
        topic, payload = await loop.run_in_executor(None, lambda: messages.get(timeout=T))
        pid, seq, r = struct.unpack(FORMAT, payload)
        if pid == 9:
            break
    assert (topic, seq, r) == (TOPIC, 1234, bytes.fromhex("00ff00ff00ff00ff")), (topic, seq, r)
    print("ok the encoder turned wamp args into mqtt bytes", flush=True)
    c.disconnect()
    c.loop_stop()


asyncio.run(main())
