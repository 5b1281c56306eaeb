"""Peers for the node (controller) tests.

  call URL PROCEDURE SECONDS [ARGS_JSON]
                               call until it answers (retrying joins and
                               calls), print the result as JSON
  loop URL PROCEDURE ARGS_JSON STOPFILE
                               call every 20 ms until STOPFILE exists; print
                               a JSON summary: ok count, errors by URI, and
                               whether the last call succeeded
  error URL PROCEDURE          call once, expect an error, print its URI
  bystander URL STOPFILE       stay joined, register and call our own
                               procedure every 20 ms until STOPFILE exists;
                               fail if any call failed or the session ended
"""

import asyncio
import json
import os
import sys
import time

from wamp_client import connect


async def call(url, procedure, seconds, args="[]"):
    args = json.loads(args)
    deadline = time.monotonic() + float(seconds)
    last = None
    while time.monotonic() < deadline:
        try:
            s = await connect(url, "json")
            try:
                r = await asyncio.wait_for(s.call(procedure, *args), 5)
                print(json.dumps(r), flush=True)
                s.leave()
                return
            finally:
                if s.is_attached():
                    s.leave()
        except Exception as e:  # not up yet: keep trying until the deadline
            last = e
        await asyncio.sleep(0.05)
    raise SystemExit(f"{procedure} did not answer within {seconds}s; last error: {last!r}")


async def loop(url, procedure, args, stopfile):
    args = json.loads(args)
    s = await connect(url, "json")
    ok = 0
    errors = {}
    last_ok = False
    while not os.path.exists(stopfile):
        try:
            await asyncio.wait_for(s.call(procedure, *args), 5)
            ok += 1
            last_ok = True
        except Exception as e:
            uri = getattr(e, "error", repr(e))
            errors[uri] = errors.get(uri, 0) + 1
            last_ok = False
        await asyncio.sleep(0.02)
    print(json.dumps({"ok": ok, "errors": errors, "last_ok": last_ok, "attached": s.is_attached()}), flush=True)
    s.leave()


async def error(url, procedure):
    s = await connect(url, "json")
    try:
        r = await asyncio.wait_for(s.call(procedure), 5)
    except Exception as e:
        print(getattr(e, "error", repr(e)), flush=True)
    else:
        raise SystemExit(f"{procedure} answered {r!r}; an error was expected")
    finally:
        s.leave()


async def bystander(url, stopfile):
    s = await connect(url, "msgpack")
    n = 0

    def echo(x):
        return x

    await s.register(echo, "com.bystander.echo")
    print("bystander joined", flush=True)
    calls = failures = 0
    while not os.path.exists(stopfile):
        if not s.is_attached():
            raise SystemExit(f"the bystander session ended after {calls} calls")
        n += 1
        try:
            r = await asyncio.wait_for(s.call("com.bystander.echo", n), 5)
            if r != n:
                failures += 1
        except Exception as e:
            failures += 1
            print(f"call failed: {e!r}", flush=True)
        calls += 1
        await asyncio.sleep(0.02)
    print(f"bystander calls={calls} failures={failures}", flush=True)
    if failures or calls < 10:
        raise SystemExit(1)
    s.leave()


if __name__ == "__main__":
    if sys.argv[1] == "call":
        asyncio.run(call(*sys.argv[2:6]))
    elif sys.argv[1] == "loop":
        asyncio.run(loop(*sys.argv[2:6]))
    elif sys.argv[1] == "error":
        asyncio.run(error(*sys.argv[2:4]))
    elif sys.argv[1] == "bystander":
        asyncio.run(bystander(*sys.argv[2:4]))
    else:
        raise SystemExit(f"unknown command {sys.argv[1]}")
