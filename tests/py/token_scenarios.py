"""One-time login token scenarios (tests/e2e/tokens.rs drives them).

Usage: python token_scenarios.py URLS_JSON REDIS_PORT_OR_EMPTY PHASE

URLS_JSON: {"backend": url of a transport with static tickets,
            "token": url of a transport with token auth only}.
PHASE: "up" (everything works), "down" (Redis is stopped), "recovered".
Every minted token is printed as "TOKEN <value>" so the caller can check
none reached the router's log.
"""

import asyncio
import json
import sys
import time
import traceback

from autobahn.wamp.exception import ApplicationError

from raw_client import Raw
from wamp_client import connect, leave, refused

TICKETS = {"backend": "backend-ticket-T1", "joe": "joe-ticket-T1"}


def say_token(token):
    print(f"TOKEN {token}", flush=True)
    return token


async def login(url, who):
    return await connect(url, "json", authmethods=["ticket"], authid=who, on_challenge=lambda c: TICKETS[who])


async def with_token(url, token, ser="json"):
    return await connect(url, ser, authmethods=["ticket"], on_challenge=lambda c: token)




async def raw_with_query(url, token):
    r = await Raw.open(f"{url}?ws_token={token}")
    await r.send([1, "realm1", {"roles": {"subscriber": {}}}])
    return r, await r.recv()


async def up(urls, redis_port):
    backend = await login(urls["backend"], "backend")
    mint = lambda *a, **k: backend.call("trellis.token.issue", *a, **k)

    # Minted, then presented as the WAMP ticket (autobahn-python).
    token = say_token(await mint("joe", "user"))
    assert isinstance(token, str) and len(token) >= 40, token
    s = await with_token(urls["token"], token, "msgpack")
    d = s.details
    expected_store = "redis" if redis_port else "embedded"
    assert (d.authid, d.authrole, d.authmethod, d.authprovider) == ("joe", "user", "token", expected_store), d
    await leave(s)
    # Used once: refused the second time, saying so.
    await refused(with_token(urls["token"], token), "wamp.error.not_authorized", "already used")

    # In the URL, whatever the client offers.
    token = say_token(await mint("mary"))
    r, welcome = await raw_with_query(urls["token"], token)
    assert welcome[0] == 2 and welcome[2]["authid"] == "mary" and welcome[2]["authrole"] == "user", welcome
    await r.ws.close()
    r, abort = await raw_with_query(urls["token"], token)
    assert abort[0] == 3 and abort[2] == "wamp.error.not_authorized" and "already used" in abort[1]["message"], abort

    # Forged.
    await refused(with_token(urls["token"], "A" * 43), "wamp.error.not_authorized", "unknown token")

    # Expired: a 1-second lifetime.
    token = say_token(await mint("joe", "user", 1))
    await asyncio.sleep(1.3)
    await refused(with_token(urls["token"], token), "wamp.error.not_authorized", "expired")

    # Two concurrent uses of one token admit exactly one.
    token = say_token(await mint("joe", "user"))
    results = await asyncio.gather(
        *(raw_with_query(urls["token"], token) for _ in range(2)), return_exceptions=True
    )
    codes = sorted(res[1][0] for res in results)
    assert codes == [2, 3], results
    for res in results:
        await res[0].ws.close()

    # Only a role allowed to call it may mint.
    joe = await login(urls["backend"], "joe")
    try:
        await joe.call("trellis.token.issue", "joe", "backend")
    except ApplicationError as e:
        assert e.error == "wamp.error.not_authorized", e.error
    else:
        raise AssertionError("role user minted a token")
    try:
        await mint("joe", "no-such-role")
    except ApplicationError as e:
        assert e.error == "wamp.error.no_such_role", e.error
    else:
        raise AssertionError("minted a token for an undefined role")
    await leave(joe)

    # Another application mints by writing Redis directly (three lines).
    if redis_port:
        import redis

        rc = redis.Redis(port=int(redis_port))
        token = say_token("flask-" + str(time.time_ns()))
        rc.set("trellis:token:" + token, json.dumps({"authid": "flask-user", "role": "user", "iat": time.time()}), ex=60)
        s = await with_token(urls["token"], token)
        assert (s.details.authid, s.details.authprovider) == ("flask-user", "redis"), s.details
        await leave(s)
        assert rc.get("trellis:token:" + token) is None, "the token was not consumed"
    await leave(backend)


async def down(urls, redis_port):
    backend = await login(urls["backend"], "backend")
    try:
        await backend.call("trellis.token.issue", "joe", "user")
    except ApplicationError as e:
        assert e.error == "wamp.error.authentication_failed" and "token store unavailable" in e.args[0], (e.error, e.args)
    else:
        raise AssertionError("minted a token with Redis down")
    await refused(with_token(urls["token"], "B" * 43), "wamp.error.authentication_failed", "token store unavailable")
    # The router keeps serving the other transport.
    await backend.register(lambda: "alive", "com.example.alive")
    other = await login(urls["backend"], "joe")
    assert await other.call("com.example.alive") == "alive"
    await leave(other, backend)


async def recovered(urls, redis_port):
    backend = await login(urls["backend"], "backend")
    deadline = time.monotonic() + 15
    while True:
        try:
            token = say_token(await backend.call("trellis.token.issue", "joe", "user"))
            break
        except ApplicationError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    s = await with_token(urls["token"], token)
    assert s.details.authid == "joe"
    await leave(s, backend)


async def main():
    urls, redis_port, phase = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    try:
        await asyncio.wait_for({"up": up, "down": down, "recovered": recovered}[phase](urls, redis_port), 90)
    except Exception:
        print(f"FAILED {phase}", flush=True)
        traceback.print_exc()
        sys.exit(1)
    print(f"ok {phase}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
