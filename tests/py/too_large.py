"""Messages larger than the receiving session's transport takes: nobody's
connection is cut for a message someone else sent.

Usage: python too_large.py LIMITED_URL OPEN_URL

LIMITED_URL's transport takes at most 16384 bytes per message; OPEN_URL's
takes the default.
"""

import asyncio
import sys

from autobahn.wamp.types import PublishOptions

from wamp_client import connect, expect_error, leave, wait

LIMITED, OPEN = sys.argv[1], sys.argv[2]
BIG = "x" * 20000


async def main():
    # A result too large for its caller: the caller gets an error naming the
    # limit; the callee and the caller carry on.
    callee = await connect(OPEN, "json")
    await callee.register(lambda: BIG, "com.big.result")
    await callee.register(lambda: "small", "com.small.result")
    caller = await connect(LIMITED, "json")
    await expect_error(caller.call("com.big.result"), "wamp.error.invalid_argument", "16384", "max_message_size")
    assert await caller.call("com.small.result") == "small"
    print("ok a result too large for the caller is an error for it", flush=True)

    # An invocation too large for its callee: the caller gets the error, the
    # callee never sees the call and stays.
    seen = []
    limited_callee = await connect(LIMITED, "json")
    await limited_callee.register(lambda s: seen.append(len(s)) or len(s), "com.limited.len")
    open_caller = await connect(OPEN, "json")
    await expect_error(open_caller.call("com.limited.len", BIG), "wamp.error.invalid_argument", "INVOCATION")
    assert await open_caller.call("com.limited.len", "abc") == 3
    assert seen == [3], seen
    print("ok an invocation too large for the callee is an error for the caller", flush=True)

    # An event too large for a subscriber: skipped for it alone.
    got, other = [], []
    sub = await connect(LIMITED, "json")
    await sub.subscribe(lambda e: got.append(len(e)), "com.big.topic")
    open_sub = await connect(OPEN, "json")
    await open_sub.subscribe(lambda e: other.append(len(e)), "com.big.topic")
    pub = await connect(OPEN, "json")
    await pub.publish("com.big.topic", BIG, options=PublishOptions(acknowledge=True))
    await pub.publish("com.big.topic", "tiny", options=PublishOptions(acknowledge=True))
    for _ in range(200):
        if got and len(other) == 2:
            break
        await asyncio.sleep(0.02)
    assert got == [4], got
    assert other == [20000, 4], other
    print("ok an event too large for a subscriber is skipped for it alone", flush=True)
    for s in (callee, caller, limited_callee, open_caller, sub, open_sub, pub):
        assert s.is_attached(), "a session was closed"
    await leave(callee, caller, limited_callee, open_caller, sub, open_sub, pub)


asyncio.run(wait(main(), "the checks", 60))
