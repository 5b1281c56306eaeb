"""MQTT devices on two nodes of a cluster: a publication on node A reaches
MQTT and WAMP subscribers on node B, user properties included.

Usage: mqtt_cluster.py HOST A_MQTT_PORT B_MQTT_PORT B_WS_URL
"""

import asyncio
import json
import queue
import sys

import paho.mqtt.client as mqtt
from autobahn.wamp.types import SubscribeOptions
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wamp_client import connect

HOST, A, B, B_WS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
T = 10


def device(name, port):
    messages, acks, subs = queue.Queue(), queue.Queue(), queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, u, flags, rc, props: acks.put(getattr(rc, "value", rc))
    c.on_subscribe = lambda cl, u, mid, rcs, props: subs.put([getattr(r, "value", r) for r in rcs])

    def on_message(cl, u, m):
        user = list(getattr(m.properties, "UserProperty", []) or []) if m.properties else []
        messages.put((m.topic, m.payload, user))

    c.on_message = on_message
    c.connect(HOST, port)
    c.loop_start()
    assert acks.get(timeout=T) == 0
    return c, messages, subs


async def main():
    loop = asyncio.get_event_loop()
    w = await connect(B_WS, "json")
    got = asyncio.Queue()
    await w.subscribe(lambda *a, **k: got.put_nowait((k["details"].topic, list(a))), "plant.",
                      options=SubscribeOptions(match="prefix", details=True))
    sub, messages, subs = device("b-sub", B)
    sub.subscribe("plant/#", 1)
    assert subs.get(timeout=T) == [1]
    pub, _, _ = device("a-pub", A)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "a")]
    # Subscriptions travel to the other node shortly: publish until seen.
    for i in range(50):
        info = pub.publish("plant/a/temp", json.dumps({"args": [i]}).encode(), qos=1, properties=props)
        await loop.run_in_executor(None, lambda: info.wait_for_publish(timeout=T))
        try:
            topic, args = await asyncio.wait_for(got.get(), 0.3)
            break
        except asyncio.TimeoutError:
            continue
    assert topic == "plant.a.temp" and len(args) == 1, (topic, args)
    topic, payload, user = await loop.run_in_executor(None, lambda: messages.get(timeout=T))
    assert topic == "plant/a/temp" and json.loads(payload)["args"][0] >= 0, (topic, payload)
    assert user == [("site", "a")], user
    print("ok an mqtt publication on node a reaches mqtt and wamp subscribers on node b", flush=True)
    pub.disconnect()
    sub.disconnect()
    pub.loop_stop()
    sub.loop_stop()


asyncio.run(main())
