"""The balloon flow with autobahn-python: WAMP-CRA login answered by the
router's user-database component, authid rewrite, then com.balloon.pop from
the container component.

Usage: python balloon_login.py URL
"""

import asyncio
import sys

from wamp_client import connect, cra, leave, refused


async def main(url):
    s = await connect(url, "json", authmethods=["wampcra"], authid="ingemar", on_challenge=cra("secret123"))
    d = s.details
    assert d.authid == "ID09125", d
    assert d.authrole == "balloonpopper", d
    assert d.authextra.get("greeting") == "hej", d
    r = await s.call("com.balloon.pop", 2, 3)
    assert r == 5, r
    print("ingemar popped", r, flush=True)
    try:
        await s.call("com.balloon.authenticate", "realm1", "ingemar", {})
    except Exception as e:
        assert e.error == "wamp.error.not_authorized", e
        print("balloonpopper may not call the authenticator", flush=True)
    await leave(s)
    # Plain secret, ticket login through the same database.
    t = await connect(url, "msgpack", authmethods=["ticket"], authid="peter", on_challenge=lambda c: "peter-secret")
    assert t.details.authid == "peter" and t.details.authrole == "balloonpopper", t.details
    await leave(t)
    print("peter logged in with a ticket", flush=True)
    await refused(connect(url, "json", authmethods=["wampcra"], authid="ingemar", on_challenge=cra("wrong")),
                  "wamp.error.authentication_failed", "wrong signature")
    await refused(connect(url, "json", authmethods=["wampcra"], authid="nobody", on_challenge=cra("x")),
                  "wamp.error.not_authorized", "no user")
    print("wrong password and unknown user refused", flush=True)


asyncio.run(main(sys.argv[1]))
