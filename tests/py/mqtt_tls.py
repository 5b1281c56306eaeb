"""MQTT over TLS with client certificates as the login (the transport's
auth takes `tls`), with paho-mqtt.

Usage: mqtt_tls.py HOST PORT CA CERTS_JSON
CERTS_JSON: {"device1": [crt, key], "device2": [...], "other_ca": [...]}
device1 is a principal (role device); device2 has a certificate of the
same CA but is no principal; other_ca's certificate is from another CA.
"""

import json
import queue
import ssl
import sys

import paho.mqtt.client as mqtt

HOST, PORT, CA, CERTS = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
T = 10


def client(name, cert):
    acks = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, u, flags, rc, props: acks.put(getattr(rc, "value", rc))
    if cert:
        c.tls_set(ca_certs=CA, certfile=cert[0], keyfile=cert[1])
    else:
        c.tls_set(ca_certs=CA)
    return c, acks


c, acks = client("dev-1", CERTS["device1"])
c.connect(HOST, PORT)
c.loop_start()
assert acks.get(timeout=T) == 0, "device-1 logs in by its certificate"
subs = queue.Queue()
c.on_subscribe = lambda cl, u, mid, rcs, props: subs.put([getattr(r, "value", r) for r in rcs])
c.subscribe("devices/#", 1)
assert subs.get(timeout=T) == [1], "the role's permissions"
c.subscribe("other/#", 1)
assert subs.get(timeout=T) == [0x87], "beyond the role's permissions"
c.disconnect()
c.loop_stop()
print("ok a client certificate logs in", flush=True)

c, acks = client("dev-2", CERTS["device2"])
c.connect(HOST, PORT)
c.loop_start()
assert acks.get(timeout=T) in (0x86, 0x87), "a certificate that is no principal"
c.loop_stop()
for name in ("other_ca", None):
    c, acks = client("dev-x", CERTS[name] if name else None)
    try:
        c.connect(HOST, PORT)
        c.loop_start()
        rc = acks.get(timeout=3)
        raise AssertionError(f"{name}: connected with {rc}")
    except (ssl.SSLError, OSError, queue.Empty):
        pass
    finally:
        c.loop_stop()
print("ok other certificates are refused", flush=True)
