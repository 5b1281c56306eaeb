"""The HTTP bridge (caller and publisher paths) with Python's own HTTP
client, signed as Crossbar.io's bridge clients sign (and as PHP users do,
without base64 padding), with autobahn-python as callee and subscriber.

Usage: python bridge_check.py WS_URL HTTP_PORT
"""

import asyncio
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import sys
import urllib.error
import urllib.request

from wamp_client import connect, leave

URL, PORT = sys.argv[1], int(sys.argv[2])
KEY, SECRET = "foo", "bar"


def post(path, body, headers=None, method="POST", query=""):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/{path}{query}", data=data, method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


def signed(body, fraction=True, pad=True, secret=SECRET, key=KEY, seq=1, ts=None):
    data = json.dumps(body).encode()
    now = ts or datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if fraction else now.strftime("%Y-%m-%dT%H:%M:%SZ")
    nonce = "123456789"
    mac = hmac.new(secret.encode(), key.encode() + stamp.encode() + str(seq).encode() + nonce.encode() + data, hashlib.sha256)
    sig = base64.urlsafe_b64encode(mac.digest()).decode()
    if not pad:
        sig = sig.rstrip("=")
    q = urllib.parse.urlencode({"key": key, "timestamp": stamp, "seq": seq, "nonce": nonce, "signature": sig})
    return data, "?" + q


def keep_alive():
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    socks = []
    for i in range(20):
        body = {"procedure": "com.example.add2", "args": [i, 1]} if i != 10 else {"args": []}
        c.request("POST", "/call", body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        got = json.loads(r.read())
        want = (400, None) if i == 10 else (200, {"args": [i + 1]})
        assert (r.status, None if i == 10 else got) == want, (i, r.status, got)
        assert r.getheader("Connection") == "keep-alive", r.getheader("Connection")
        socks.append(c.sock)
    assert all(s is socks[0] for s in socks), "the connection was reopened"
    c.close()
    print("ok 20 bridge calls on one kept-alive connection", flush=True)


async def main():
    backend = await connect(URL, "json")
    await backend.register(lambda a, b: a + b, "com.example.add2")
    got = asyncio.Queue()
    await backend.subscribe(lambda *a, **kw: got.put_nowait((a, kw)), "com.example.topic")

    # caller: result as {"args": [...]}; a WAMP error is 200 with "error".
    loop = asyncio.get_event_loop()
    code, r = await loop.run_in_executor(None, post, "call", {"procedure": "com.example.add2", "args": [2, 3]})
    assert (code, r) == (200, {"args": [5]}), (code, r)
    code, r = await loop.run_in_executor(None, post, "call", {"procedure": "com.example.nope"})
    assert code == 200 and r["error"] == "wamp.error.no_such_procedure", (code, r)
    # The bridge's role may call com.example.* only.
    code, r = await loop.run_in_executor(None, post, "call", {"procedure": "wamp.session.count"})
    assert code == 200 and r["error"] == "wamp.error.not_authorized", (code, r)

    # publisher: {"id": publication}, the event arrives.
    code, r = await loop.run_in_executor(None, post, "pub", {"topic": "com.example.topic", "args": ["hi"], "kwargs": {"n": 1}})
    assert code == 200 and isinstance(r["id"], int), (code, r)
    event = await asyncio.wait_for(got.get(), 10)
    assert event == (("hi",), {"n": 1}), event

    # HTTP errors as Crossbar.io's bridge gives them.
    for args, want in [
        (("call", {"procedure": "x"}, None, "GET"), 405),
        (("call", b"[1, 2]"), 400),
        (("call", b"{not json"), 400),
        (("call", {"args": [1]}), 400),
        (("pub", {"args": [1]}), 400),
        (("call", {"procedure": "com.example.add2"}, {"Content-Type": "text/plain"}), 400),
        (("small", {"topic": "com.example.topic", "args": ["x" * 200]}), 413),
    ]:
        code, r = await loop.run_in_executor(None, post, *args)
        assert code == want, (args, code, r)
        assert r is None or "error" in r, r
    # require_ip: this client (127.0.0.1) is in one list, not the other.
    code, r = await loop.run_in_executor(None, post, "lan", {"topic": "com.example.topic", "args": ["lan"]})
    assert code == 400 and "IP address" in r["error"], (code, r)
    code, r = await loop.run_in_executor(None, post, "lo", {"topic": "com.example.topic", "args": ["lo"]})
    assert code == 200, (code, r)
    assert (await asyncio.wait_for(got.get(), 10))[0] == ("lo",)
    code, r = await loop.run_in_executor(None, post, "call", b"", None, "OPTIONS")
    assert code == 200, code

    # Signed: padded and unpadded, with and without fractional seconds.
    body = {"topic": "com.example.topic", "args": ["signed"]}
    for fraction, pad in [(True, True), (False, False)]:
        data, q = signed(body, fraction=fraction, pad=pad)
        code, r = await loop.run_in_executor(None, post, "signed", data, None, "POST", q)
        assert code == 200, (fraction, pad, code, r)
        assert (await asyncio.wait_for(got.get(), 10))[0] == ("signed",)
    data, q = signed(body, secret="wrong")
    assert (await loop.run_in_executor(None, post, "signed", data, None, "POST", q))[0] == 401
    data, q = signed(body, key="other")
    assert (await loop.run_in_executor(None, post, "signed", data, None, "POST", q))[0] == 401
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    data, q = signed(body, ts=old)
    assert (await loop.run_in_executor(None, post, "signed", data, None, "POST", q))[0] == 400
    assert (await loop.run_in_executor(None, post, "signed", json.dumps(body).encode()))[0] == 400
    assert got.empty(), "a refused request published"
    # replay_protection: the same signed request twice is refused the
    # second time; a fresh signature (another nonce/seq) is fine.
    data, q = signed(body, seq=7)
    assert (await loop.run_in_executor(None, post, "once", data, None, "POST", q))[0] == 200
    assert (await asyncio.wait_for(got.get(), 10))[0] == ("signed",)
    code, r = await loop.run_in_executor(None, post, "once", data, None, "POST", q)
    assert code == 401 and "replayed" in r["error"], (code, r)
    unpadded = q.replace("%3D", "")
    assert unpadded != q
    code, r = await loop.run_in_executor(None, post, "once", data, None, "POST", unpadded)
    assert code == 401, ("the same signature unpadded", code, r)
    data, q = signed(body, seq=8)
    assert (await loop.run_in_executor(None, post, "once", data, None, "POST", q))[0] == 200
    assert (await asyncio.wait_for(got.get(), 10))[0] == ("signed",)
    assert got.empty(), "a replayed request published"
    print("ok replay protection", flush=True)

    # Keep-alive: many calls on one connection (Python's http.client keeps
    # it open), a bad request in between does not end it.
    await loop.run_in_executor(None, keep_alive)

    # webhook: any body, published with the request's headers; 202 "OK".
    hooks = asyncio.Queue()
    await backend.subscribe(lambda e: hooks.put_nowait(e), "com.example.hook")

    def raw(path, data, headers):
        # http.client sends header names exactly as given.
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        c.request("POST", f"/{path}", body=data, headers=headers)
        r = c.getresponse()
        out = r.status, r.read().decode()
        c.close()
        return out

    code, text = await loop.run_in_executor(None, raw, "hook", b"plain text, not JSON", {"X-Thing": "1", "Content-Type": "text/plain"})
    assert (code, text) == (202, "OK"), (code, text)
    e = await asyncio.wait_for(hooks.get(), 10)
    # Header names as sent, as Crossbar.io publishes them.
    assert e["body"] == "plain text, not JSON" and e["headers"]["X-Thing"] == ["1"], e
    assert e["headers"]["Content-Type"] == ["text/plain"], e
    payload = b'{"zen": "Keep it logically awesome."}'
    good = "sha256=" + hmac.new(b"gh", payload, hashlib.sha256).hexdigest()
    code, _ = await loop.run_in_executor(None, raw, "gh", payload, {"X-Hub-Signature-256": good})
    assert code == 202, code
    assert (await asyncio.wait_for(hooks.get(), 10))["body"] == payload.decode()
    code, _ = await loop.run_in_executor(None, raw, "gh", payload, {"X-Hub-Signature-256": "sha256=00"})
    assert code == 400, code
    assert hooks.empty(), "a badly signed webhook published"

    # The bridge's sessions killed through the meta API: the next request
    # joins a new one (the path keeps working).
    killed = await backend.call("wamp.session.kill_by_authid", "trellis.http-bridge")
    assert isinstance(killed, list) and len(killed) >= 2, killed
    code, r = await loop.run_in_executor(None, post, "call", {"procedure": "com.example.add2", "args": [4, 5]})
    assert (code, r) == (200, {"args": [9]}), ("after the kill", code, r)
    code, r = await loop.run_in_executor(None, post, "pub", {"topic": "com.example.topic", "args": ["again"]})
    assert code == 200, ("after the kill", code, r)
    assert (await asyncio.wait_for(got.get(), 10))[0] == ("again",)
    count = await backend.call("wamp.session.count")
    print(f"ok bridge sessions joined again after a kill ({len(killed)} killed, {count} now)", flush=True)
    await leave(backend)
    print("ok bridge", flush=True)


asyncio.run(main())
