"""Scrape the admin listener's /metrics around a scripted load and check
that the counters moved by exactly what the load did, that the exposition
parses with Prometheus's own OpenMetrics parser, and that many sessions
and topics add no series.

Usage: python metrics_check.py ADMIN_URL WS_URL TOKEN
"""

import asyncio
import json
import sys
import urllib.request

import websockets
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from wamp_client import connect, leave

ADMIN, URL, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
CALLS, EVENTS, SESSIONS, TOPICS = 25, 10, 10000, 1000


def scrape():
    req = urllib.request.Request(ADMIN + "/metrics", headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text"), r.headers["Content-Type"]
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):  # raises on a malformed exposition
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            samples[key] = s.value
    return samples


def value(samples, name, **labels):
    want = {k: v for k, v in {"worker": "router1", "realm": "realm1", **labels}.items() if v is not None}
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == val for k, val in want.items()))


async def load():
    """CALLS calls, EVENTS events to one subscriber: 3 sessions."""
    callee = await connect(URL, "json")
    await callee.register(lambda x: x, "com.metrics.echo")
    sub = await connect(URL, "json")
    got = asyncio.Queue()
    await sub.subscribe(lambda n: got.put_nowait(n), "com.metrics.topic")
    caller = await connect(URL, "json")
    for i in range(CALLS):
        assert await caller.call("com.metrics.echo", i) == i
    from autobahn.wamp.types import PublishOptions

    for i in range(EVENTS):
        await caller.publish("com.metrics.topic", i, options=PublishOptions(acknowledge=True))
    for _ in range(EVENTS):
        await asyncio.wait_for(got.get(), 10)
    for s in (caller, sub, callee):
        await leave(s)


async def crowd():
    """SESSIONS sessions over raw WebSocket, publishing to TOPICS distinct
    topics between them."""
    sem = asyncio.Semaphore(200)

    async def one(i):
        async with sem:
            async with websockets.connect(URL, subprotocols=["wamp.2.json"], max_size=None) as ws:
                await ws.send(json.dumps([1, "realm1", {"roles": {"publisher": {}}}]))
                welcome = json.loads(await ws.recv())
                assert welcome[0] == 2, welcome
                if i < TOPICS:
                    await ws.send(json.dumps([16, 1, {"acknowledge": True}, f"com.metrics.crowd.t{i}", [i]]))
                    published = json.loads(await ws.recv())
                    assert published[0] == 17, published
                await ws.send(json.dumps([6, {}, "wamp.close.normal"]))
                await ws.recv()

    await asyncio.gather(*(one(i) for i in range(SESSIONS)))


async def main():
    before = scrape()
    await load()
    await asyncio.sleep(0.3)
    after = scrape()
    for name, labels, delta in [
        ("trellis_calls_total", {"result": "ok"}, CALLS),
        ("trellis_messages_received_total", {"type": "CALL"}, CALLS),
        ("trellis_messages_sent_total", {"type": "RESULT"}, CALLS),
        ("trellis_messages_sent_total", {"type": "INVOCATION"}, CALLS),
        ("trellis_events_published_total", {}, EVENTS),
        ("trellis_events_delivered_total", {}, EVENTS),
        ("trellis_sessions_joined_total", {}, 3),
        ("trellis_sessions_left_total", {}, 3),
        ("trellis_authorizations_total", {"action": "call", "result": "allowed"}, CALLS),
        ("trellis_call_duration_seconds_count", {}, CALLS),
        ("trellis_call_duration_seconds_bucket", {"le": "+Inf"}, CALLS),
    ]:
        moved = value(after, name, **labels) - value(before, name, **labels)
        assert moved == delta, f"{name}{labels} moved by {moved}, expected {delta}"
    sent = value(after, "trellis_sent_bytes_total", realm=None) - value(before, "trellis_sent_bytes_total", realm=None)
    received = value(after, "trellis_received_bytes_total", realm=None) - value(
        before, "trellis_received_bytes_total", realm=None
    )
    # At least each CALL and RESULT went through (JSON, a few dozen bytes).
    assert received > CALLS * 20 and sent > CALLS * 20, (received, sent)
    print("counters moved as expected", flush=True)
    await crowd()
    await asyncio.sleep(0.3)
    crowded = scrape()
    new = sorted(set(crowded) - set(after))
    # Only the crowd's message types may add series (PUBLISHED, ...); no
    # session, topic or address ever does.
    assert len(new) <= 5, f"{len(new)} new series: {new[:10]}"
    assert not any("com.metrics" in str(k) for k in crowded), "a topic became a label"
    joined = value(crowded, "trellis_sessions_joined_total") - value(after, "trellis_sessions_joined_total")
    assert joined == SESSIONS, joined
    print(f"ok metrics: {len(crowded)} series after {SESSIONS} sessions and {TOPICS} topics", flush=True)


asyncio.run(main())
