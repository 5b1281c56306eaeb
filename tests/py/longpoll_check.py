"""WAMP-over-Longpoll with Python's own HTTP client: the batched protocol,
bad requests (clear errors for the offender), a client that stops polling
(closed at queue_limit_messages and told why at its next poll, nobody
else affected), a transport nobody
polls (closed after session_timeout).

Usage: python longpoll_check.py HTTP_PORT WS_URL
"""

import asyncio
import http.client
import json
import sys
import time

from wamp_client import check, connect, leave

PORT, WS_URL = int(sys.argv[1]), sys.argv[2]


def post(path, body=b"", method="POST"):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=15)
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def open_transport(protocol="wamp.2.json"):
    s, body = post("/lp/open", json.dumps({"protocols": [protocol]}).encode())
    assert s == 200, (s, body)
    j = json.loads(body)
    assert j["protocol"] == protocol, j
    return j["transport"]


HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]


def sync_checks():
    # Bad requests: each answered with what was wrong.
    s, b = post("/lp/open", b"{not json")
    check(s == 400 and b"not JSON" in b, "open with a body that is not JSON: 400")
    s, b = post("/lp/open", json.dumps({"protocols": ["wamp.2.cbor"]}).encode())
    check(s == 400 and b"no common protocol" in b and b"wamp.2.json" in b, "no common protocol: 400 naming ours")
    s, b = post("/lp/open", json.dumps({"nothing": 1}).encode())
    check(s == 400 and b"protocols" in b, "open without protocols: 400")
    s, _ = post("/lp/open", method="GET")
    check(s == 405, "GET: 405")
    for what in ("send", "receive"):
        s, b = post(f"/lp/NOSUCHTRANSPORT/{what}", b"[]" if what == "send" else b"")
        check(s == 404 and b"open a new one" in b, f"{what} on an unknown transport: 404")
    s, _ = post("/lp/NOSUCHTRANSPORT/close")
    check(s == 204, "close of an unknown transport: 204 (nothing to close)")
    tid = open_transport()
    # Refused at the head: the 2 MB body is never sent.
    import socket
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as sock:
        sock.sendall(f"POST /lp/{tid}/send HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n[1,".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    check(data.startswith(b"HTTP/1.1 413") and b"max_message_size" in data, "a send over max_message_size: 413 before the body is read")

    # The batched protocol: messages separated by 0x18 both ways.
    tid = open_transport("wamp.2.json.batched")
    s, _ = post(f"/lp/{tid}/send", json.dumps(HELLO).encode() + b"\x18")
    check(s == 204, "a batched send: 204")
    s, body = post(f"/lp/{tid}/receive")
    msgs = [json.loads(m) for m in body.split(b"\x18") if m]
    check(s == 200 and msgs[0][0] == 2, "a batched receive carries WELCOME")
    s, _ = post(f"/lp/{tid}/close")
    check(s == 204, "close: 204")
    s, _ = post(f"/lp/{tid}/receive")
    check(s == 404, "a closed transport is gone")
    return tid


async def stops_polling():
    tid = open_transport()
    post(f"/lp/{tid}/send", json.dumps(HELLO).encode())
    s, body = post(f"/lp/{tid}/receive")
    check(s == 200 and json.loads(body)[0] == 2, "WELCOME over long-poll")
    post(f"/lp/{tid}/send", json.dumps([32, 1, {}, "com.lp.flood"]).encode())
    s, body = post(f"/lp/{tid}/receive")
    check(json.loads(body)[0] == 33, "SUBSCRIBED")
    pub = await connect(WS_URL, "json")
    bystander = await connect(WS_URL, "json")
    before = await pub.call("wamp.session.count")
    # 150 events for a subscriber that does not poll: over the 100 that
    # may wait, its session is closed.
    for i in range(150):
        pub.publish("com.lp.flood", i)
    after = before
    for _ in range(50):
        await asyncio.sleep(0.1)
        after = await pub.call("wamp.session.count")
        if after < before:
            break
    check(after == before - 1, f"the client that stopped polling was closed ({before} -> {after} sessions)")
    check(await bystander.call("wamp.session.count") == after, "a bystander is unaffected")
    # Its next poll says why (an ABORT naming the limit), then the
    # transport is gone.
    loop = asyncio.get_event_loop()
    s, body = await loop.run_in_executor(None, post, f"/lp/{tid}/receive")
    msg = json.loads(body) if s == 200 else None
    check(
        msg is not None and msg[0] == 3 and msg[2] == "wamp.close.killed"
        and "not polling" in msg[1].get("message", "") and "queue_limit_messages" in msg[1]["message"],
        f"the next poll brings the ABORT saying why: {s} {body[:300]!r}",
    )
    s, _ = await loop.run_in_executor(None, post, f"/lp/{tid}/receive")
    check(s == 404, f"then the transport is gone: {s}")
    await leave(pub, bystander)


def idle_timeout():
    tid = open_transport()
    time.sleep(4)
    s, _ = post(f"/lp/{tid}/receive")
    check(s == 404, "a transport nobody polled for session_timeout (2 s) is closed")


async def main():
    sync_checks()
    await stops_polling()
    idle_timeout()


asyncio.run(main())
