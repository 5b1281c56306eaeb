"""Bad input, spoken over raw WebSocket (Python `websockets`), where autobahn
would refuse to misbehave.

Usage: python bad_input.py URL CHECK [CHECK ...]   (or "all")

A well-behaved autobahn-python session joins before the first check and
must still be joined, and answering calls, after the last one: bad input
costs only the offender.
"""

import asyncio
import json
import sys
import traceback

import msgpack
from autobahn.wamp.types import PublishOptions, RegisterOptions
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from raw_client import ROLES, T, Raw
from wamp_client import connect, leave, until, wait

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


@check
async def malformed_json(url):
    r = await Raw.open(url)
    await r.hello()
    await r.ws.send('[16, 1, {"acknowledge": tr')
    await r.expect_abort("wamp.error.protocol_violation", "JSON")


@check
async def malformed_websocket_frame(url):
    """A frame with reserved bits set (no extension negotiated), written raw."""
    r = await Raw.open(url)
    await r.hello()
    # FIN + RSV1 + text opcode, masked, 2-byte payload "[]" under a zero mask.
    r.ws.transport.write(bytes([0xC1, 0x82, 0, 0, 0, 0]) + b"[]")
    closed = await r.expect_closed()
    assert closed.rcvd is None or closed.rcvd.code == 1002, closed


@check
async def invalid_utf8_text_frame(url):
    """A text frame that is not UTF-8: RFC 6455 closes with 1007, not 1002."""
    r = await Raw.open(url)
    await r.hello()
    # FIN + text opcode, masked with a zero mask, 2-byte payload 0xC3 0x28.
    r.ws.transport.write(bytes([0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28]))
    closed = await r.expect_closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1007, closed


@check
async def unmasked_client_frame(url):
    r = await Raw.open(url)
    await r.hello()
    r.ws.transport.write(bytes([0x81, 0x02]) + b"[]")
    closed = await r.expect_closed()
    assert closed.rcvd is None or closed.rcvd.code == 1002, closed


@check
async def unknown_message_type(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([99, 1, {}])
    await r.expect_abort("wamp.error.protocol_violation", "unknown WAMP message type 99")


@check
async def wrong_field_type(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([16, 1, "not a dict", "com.example.t"])
    await r.expect_abort("wamp.error.protocol_violation", "PUBLISH", "Options", "dict")


@check
async def not_a_list(url):
    r = await Raw.open(url)
    await r.send({"hello": "realm1"})
    await r.expect_abort("wamp.error.protocol_violation", "list")


@check
async def message_before_hello(url):
    r = await Raw.open(url)
    await r.send([32, 1, {}, "com.example.t"])
    await r.expect_abort("wamp.error.protocol_violation", "expected HELLO", "SUBSCRIBE")


@check
async def hello_without_roles(url):
    r = await Raw.open(url)
    await r.send([1, "realm1", {}])
    await r.expect_abort("wamp.error.protocol_violation", "roles")


@check
async def second_hello(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([1, "realm1", ROLES])
    await r.expect_abort("wamp.error.protocol_violation", "already established")


@check
async def router_only_message(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([36, 1, 1, {}])
    await r.expect_abort("wamp.error.protocol_violation", "EVENT")


@check
async def error_for_non_invocation(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([8, 48, 1, {}, "com.example.error"])
    await r.expect_abort("wamp.error.protocol_violation", "INVOCATION")


@check
async def request_id_out_of_range(url):
    for bad in (0, 2**53 + 1):
        r = await Raw.open(url)
        await r.hello()
        await r.send([32, bad, {}, "com.example.t"])
        await r.expect_abort("wamp.error.protocol_violation", "between 1 and 2^53")


@check
async def trailing_elements(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([34, 1, 2, "extra"])
    await r.expect_abort("wamp.error.protocol_violation", "trailing")


@check
async def invalid_uri_keeps_session(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([32, 1, {}, "com..t"])
    text = await r.expect_error(32, 1, "wamp.error.invalid_uri")
    assert "empty component" in text, text
    await r.send([64, 2, {}, "com.example bad"])
    text = await r.expect_error(64, 2, "wamp.error.invalid_uri")
    assert "' '" in text, text
    await r.send([48, 3, {}, "com.#"])
    await r.expect_error(48, 3, "wamp.error.invalid_uri")
    await r.send([32, 4, {"match": "sideways"}, "com.t"])
    await r.expect_error(32, 4, "wamp.error.invalid_argument")
    # The session is still fine.
    await r.send([32, 5, {}, "com.example.t"])
    msg = await r.recv()
    assert msg[0] == 33 and msg[1] == 5, msg


@check
async def no_such_subscription_or_registration(url):
    r = await Raw.open(url)
    await r.hello()
    await r.send([34, 1, 123456])
    await r.expect_error(34, 1, "wamp.error.no_such_subscription")
    await r.send([66, 2, 123456])
    await r.expect_error(66, 2, "wamp.error.no_such_registration")
    # A stray YIELD for an unknown invocation is dropped, the session lives.
    await r.send([70, 99, {}])
    await r.send([32, 3, {}, "com.example.t"])
    msg = await r.recv()
    assert msg[0] == 33 and msg[1] == 3, msg


@check
async def oversize_message(url):
    """The test node sets max_message_size to 65536."""
    r = await Raw.open(url)
    await r.hello()
    await r.send([16, 1, {}, "com.example.big", ["x" * 100_000]])
    try:
        msg = await r.recv()
        assert msg[0] == 3 and msg[2] == "wamp.error.protocol_violation", msg
        assert "max_message_size" in msg[1]["message"], msg
        closed = await r.expect_closed()
    except ConnectionClosed as e:
        closed = e
    assert closed.rcvd is not None and closed.rcvd.code == 1009, closed


@check
async def oversize_in_fragments(url):
    """Many small fragments that add up past the limit are refused too."""
    r = await Raw.open(url)
    await r.hello()

    async def fragments():
        yield '[16, 1, {}, "com.example.big", ["'
        for _ in range(100):
            yield "y" * 1000
        yield '"]]'

    try:
        await r.ws.send(fragments())
    except ConnectionClosed:
        pass
    closed = await r.expect_closed()
    assert closed.rcvd is None or closed.rcvd.code in (1009,), closed


@check
async def unsupported_subprotocol(url):
    for offer in (["wamp.2.xml"], None):
        try:
            kw = {"subprotocols": offer} if offer else {}
            ws = await asyncio.wait_for(ws_connect(url, **kw), T)
        except InvalidStatus as e:
            assert e.response.status_code == 400, e.response.status_code
            body = e.response.body.decode()
            assert "wamp.2.json" in body and "wamp.2.msgpack" in body, body
        else:
            await ws.close()
            raise AssertionError(f"upgrade with {offer} was accepted")


@check
async def text_frame_on_binary_serializer(url):
    r = await Raw.open(url, "wamp.2.msgpack")
    await r.hello()
    await r.ws.send(json.dumps([32, 1, {}, "com.t"]))
    await r.expect_abort("wamp.error.protocol_violation", "text frame", "msgpack")


@check
async def msgpack_garbage(url):
    r = await Raw.open(url, "wamp.2.msgpack")
    await r.hello()
    await r.ws.send(b"\xc1\xc1\xc1")
    await r.expect_abort("wamp.error.protocol_violation", "MessagePack")


@check
async def deeply_nested_payload(url):
    r = await Raw.open(url)
    await r.hello()
    await r.ws.send('[16, 1, {}, "com.t", [' + "[" * 5000 + "]" * 5000 + "]]")
    await r.expect_abort("wamp.error.protocol_violation")


@check
async def deeply_nested_binary_payloads(url):
    """5000 nested arrays in PUBLISH's arguments, in MessagePack and CBOR."""
    for proto, head, one, empty in (
        ("wamp.2.msgpack", b"\x95\x10\x01\x80\xa5com.t", b"\x91", b"\x90"),
        ("wamp.2.cbor", b"\x85\x10\x01\xa0\x65com.t", b"\x81", b"\x80"),
    ):
        r = await Raw.open(url, proto)
        await r.hello()
        await r.ws.send(head + one * 5000 + empty)
        await r.expect_abort("wamp.error.protocol_violation")


@check
async def huge_declared_collections(url):
    """Headers that announce billions of elements with a few bytes behind
    them: refused without reserving memory for them."""
    for proto, body in (
        ("wamp.2.msgpack", b"\xdd\xff\xff\xff\xff\x10\x01"),  # array32 of 2^32-1
        ("wamp.2.msgpack", b"\x95\x10\x01\xdf\xff\xff\xff\xff\xa1a\x01"),  # map32 as options
        ("wamp.2.cbor", b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff\x10"),  # array of 2^64-1
        ("wamp.2.cbor", b"\x85\x10\x01\xbb\x00\x00\x00\x01\x00\x00\x00\x00\x61a"),  # map of 2^32
        ("wamp.2.cbor", b"\x85\x10\x01\xbf\x61a\x01"),  # indefinite map, never closed
    ):
        r = await Raw.open(url, proto)
        await r.hello()
        await r.ws.send(body)
        await r.expect_abort("wamp.error.protocol_violation")


@check
async def large_collections_within_the_limit(url):
    """A 4000-entry map and a 4000-element list under the 64 KiB limit
    are ordinary messages: published and delivered whole."""
    got = []
    sub = await connect(url, "cbor")
    await sub.subscribe(lambda *a, **kw: got.append((a, kw)), "com.big.ok")
    r = await Raw.open(url, "wamp.2.msgpack")
    await r.hello()
    kwargs = {f"k{i}": i for i in range(4000)}
    args = list(range(4000))
    await r.send([16, 7, {"acknowledge": True, "exclude_me": False}, "com.big.ok", args, kwargs])
    ack = await r.recv()
    assert ack[:2] == [17, 7], ack
    await until(lambda: got, "the large event")
    assert got[0][0] == tuple(args) and got[0][1] == kwargs, "the large event arrived altered"
    await leave(sub)


@check
async def messages_after_goodbye_or_abort(url):
    """Whatever a peer sends after its GOODBYE or ABORT is not acted on."""
    seen = []
    watcher = await connect(url, "json")
    await watcher.subscribe(lambda *a: seen.append(a), "com.after.close")
    r = await Raw.open(url)
    await r.hello()
    await r.send([6, {}, "wamp.close.normal"])
    await r.send([16, 1, {"acknowledge": True}, "com.after.close", ["after goodbye"]])
    after = await r.drain()
    assert after and after[0][0] == 6 and after[0][2] == "wamp.close.normal", after
    assert after[1:] == [], f"the router answered after GOODBYE: {after}"
    r = await Raw.open(url)
    await r.hello()
    await r.send([3, {}, "wamp.close.normal"])
    await r.send([16, 2, {"acknowledge": True}, "com.after.close", ["after abort"]])
    after = await r.drain()
    assert after == [], f"the router answered after ABORT: {after}"
    # ABORT instead of HELLO, then HELLO: no session is opened.
    r = await Raw.open(url)
    await r.send([3, {}, "wamp.close.normal"])
    await r.send([1, "realm1", ROLES])
    after = await r.drain()
    assert all(m[0] != 2 for m in after), f"a session was opened after ABORT: {after}"
    await asyncio.sleep(0.5)
    assert seen == [], f"a message sent after GOODBYE or ABORT was published: {seen}"
    await leave(watcher)


# More 4 KiB results than the socket buffers between router and caller
# can hide (tens of MB on loopback), so the queue limit is what stops them.
N_RESULTS = 20000


@check
async def progressive_results_reader_stops(url):
    """A caller that asks for progressive results and stops reading is
    closed by the slow-peer policy (the test node's queue holds 64); the
    callee streaming them keeps its session and learns the call is gone."""
    callee = await connect(url, "msgpack")
    sent = []
    finished = asyncio.Event()
    blob = b"p" * 4096

    async def stream(n, details=None):
        # Ends when every result is out, or when the router interrupts the
        # call because its caller is gone (autobahn cancels the handler).
        try:
            for i in range(n):
                if details.progress:
                    details.progress(i, blob)
                sent.append(i)
                if i % 20 == 0:
                    await asyncio.sleep(0.001)
            return n
        finally:
            finished.set()

    await callee.register(stream, "com.stream.results", options=RegisterOptions(details_arg="details"))
    slow = await Raw.open(url, max_queue=1)
    await slow.hello(details={"roles": {"caller": {"features": {"progressive_call_results": True}}}})
    await slow.send([48, 1, {"receive_progress": True}, "com.stream.results", [N_RESULTS]])
    await wait(finished.wait(), "the callee's handler to end", 30)
    count = len(await slow.drain())
    assert count < N_RESULTS, f"the slow caller got all {count} results: nothing bounded it"
    assert len(sent) < N_RESULTS, "the callee was not told that its caller is gone"
    assert not callee.left.done(), f"the callee was disconnected: {callee.left.result()}"
    # The callee is still a working callee.
    caller = await connect(url, "json")
    finished.clear()
    assert await caller.call("com.stream.results", 2) == 2
    await leave(callee, caller)


@check
async def duplicate_call_request_id(url):
    callee = await Raw.open(url)
    await callee.hello()
    await callee.send([64, 1, {}, "com.example.hang"])
    assert (await callee.recv())[0] == 65
    r = await Raw.open(url)
    await r.hello()
    await r.send([48, 7, {}, "com.example.hang"])
    await r.send([48, 7, {}, "com.example.hang"])
    await r.expect_abort("wamp.error.protocol_violation", "request id 7")
    # The callee sees the first invocation; its late YIELD is harmless.
    inv = await callee.recv()
    assert inv[0] == 68, inv
    await callee.send([70, inv[1], {}, ["late"]])
    await callee.send([32, 2, {}, "com.example.t"])
    assert (await callee.recv())[0] == 33


@check
async def hello_timeout(url):
    """The test node sets hello_timeout to 500 ms."""
    r = await Raw.open(url)
    text = await r.expect_abort("wamp.error.timeout", "no HELLO")
    assert "500" in text, text


@check
async def json_batched(url):
    ws = await asyncio.wait_for(ws_connect(url, subprotocols=["wamp.2.json.batched"]), T)
    await ws.send(json.dumps([1, "realm1", ROLES]) + "\x18")
    data = await asyncio.wait_for(ws.recv(), T)
    assert data.endswith("\x18"), repr(data)
    assert json.loads(data[:-1])[0] == 2
    await ws.send(json.dumps([32, 1, {}, "com.a"]) + "\x18" + json.dumps([32, 2, {}, "com.b"]) + "\x18")
    got = []
    while len(got) < 2:
        data = await asyncio.wait_for(ws.recv(), T)
        got += [json.loads(p) for p in data.split("\x18") if p]
    assert [m[:2] for m in got] == [[33, 1], [33, 2]], got
    await ws.close()


@check
async def msgpack_batched_bad_length(url):
    ws = await asyncio.wait_for(ws_connect(url, subprotocols=["wamp.2.msgpack.batched"]), T)
    hello = msgpack.packb([1, "realm1", ROLES])
    await ws.send(len(hello).to_bytes(4, "big") + hello)
    data = await asyncio.wait_for(ws.recv(), T)
    n = int.from_bytes(data[:4], "big")
    assert msgpack.unpackb(data[4 : 4 + n])[0] == 2
    await ws.send((1000).to_bytes(4, "big") + b"\x93")
    data = await asyncio.wait_for(ws.recv(), T)
    n = int.from_bytes(data[:4], "big")
    msg = msgpack.unpackb(data[4 : 4 + n])
    assert msg[0] == 3 and msg[2] == "wamp.error.protocol_violation", msg
    assert "announces a 1000-byte message" in msg[1]["message"], msg


@check
async def slow_subscriber_is_dropped(url):
    """The test node sets max_queue_messages to 64."""
    # The slow one reads nothing after subscribing (max_queue=1 stops the
    # client library from reading ahead).
    slow = await Raw.open(url, max_queue=1)
    await slow.hello()
    await slow.send([32, 1, {}, "com.example.flood"])
    assert (await slow.recv())[0] == 33
    fast = await connect(url, "json")
    pub = await connect(url, "msgpack")
    n, got = 3000, []
    done = asyncio.Event()

    def on(i, blob):
        got.append(i)
        if len(got) == n:
            done.set()

    await fast.subscribe(on, "com.example.flood")
    blob = b"z" * 4096
    # Publish in rounds the fast subscriber confirms, so only the session
    # that stopped reading can fall behind.
    for start in range(0, n, 30):
        for i in range(start, min(start + 30, n)):
            pub.publish("com.example.flood", i, blob)
        await until(lambda: len(got) >= min(start + 30, n) or fast.left.done(), f"events up to {start + 30}")
        assert not fast.left.done(), f"the fast subscriber was disconnected: {fast.left.result()}"
    await wait(done.wait(), "every event at the fast subscriber", 30)
    assert got == list(range(n)), (len(got), got[:5])
    # The slow session was closed by the router: draining its socket ends
    # in GOODBYE wamp.close.killed and a closed connection, not 3000 events.
    count, last = 0, None
    try:
        while True:
            last = await asyncio.wait_for(slow.ws.recv(), T)
            count += 1
    except ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        raise AssertionError(f"slow subscriber still connected after {count} events") from None
    assert count < n, count
    # GOODBYE arrives only if it fit into the socket the peer stopped
    # draining; otherwise the router closes after a bounded wait.
    last = json.loads(last)
    if last[0] == 6:
        assert last[2] == "wamp.close.killed", last
        assert "outbound queue overflow" in last[1]["message"], last
    else:
        assert last[0] == 36, last
    await leave(fast, pub)


async def blocked_callee_fails_its_calls(url):
    """A callee that stops reading its invocations is closed by the
    slow-peer policy; its callers get an error, not silence. Run on a node
    with the default queue (2048): the caller gets its 600 errors in one
    burst, which a 64-message queue could not hold."""
    slow = await Raw.open(url, max_queue=1)
    await slow.hello()
    await slow.send([64, 1, {}, "com.example.blocked"])
    assert (await slow.recv())[0] == 65
    caller = await connect(url, "msgpack")
    blob = b"c" * 16384
    calls = [asyncio.ensure_future(caller.call("com.example.blocked", i, blob)) for i in range(600)]
    errors = {}
    for c in calls:
        try:
            await asyncio.wait_for(c, 30)
            raise AssertionError("a call to the blocked callee succeeded")
        except asyncio.TimeoutError:
            raise AssertionError("a caller waited in silence for a blocked callee") from None
        except Exception as e:
            uri = getattr(e, "error", repr(e))
            errors[uri] = errors.get(uri, 0) + 1
    assert set(errors) <= {"wamp.error.canceled", "wamp.error.no_such_procedure"}, errors
    assert caller.is_attached()
    await leave(caller)


async def main():
    url, names = sys.argv[1], sys.argv[2:]
    if names == ["all"]:
        names = list(CHECKS)
    CHECKS["blocked_callee_fails_its_calls"] = blocked_callee_fails_its_calls
    good = await connect(url, "json")
    calls = []
    await good.register(lambda x: calls.append(x) or x, "com.good.ping")
    for name in names:
        try:
            await asyncio.wait_for(CHECKS[name](url), 60)
        except Exception:
            print(f"FAILED {name}", flush=True)
            traceback.print_exc()
            sys.exit(1)
        print(f"ok {name}", flush=True)
    assert not good.left.done(), f"the well-behaved session was disconnected: {good.left.result()}"
    other = await connect(url, "cbor")
    assert await other.call("com.good.ping", 7) == 7
    assert calls == [7], calls
    await leave(good, other)
    print("ok bystander unaffected", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
