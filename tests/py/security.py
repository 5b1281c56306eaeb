"""Hostile-client scenarios: what one session must not reach of another's.

    python security.py URLS_JSON SCENARIO SERIALIZER [SERIALIZER ...]

URLS_JSON maps names to the test node's transports ("main": anonymous with
the role below, "named": anonymous with a configured authid). The realm's
role "anonymous" (see tests/e2e/security.rs):

    com.private.allowed    exact     register, call
    com.open.              prefix    everything
    com.                   prefix    call, subscribe, publish
    com..private           wildcard  nothing
    com.secret.            prefix    publish
    wamp.                  prefix    call

Each scenario asserts the offender's error and that a bystander is
unaffected.
"""

import asyncio
import json
import re

from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from raw_client import ROLES, Raw
from scenarios import main
from wamp_client import connect, expect_error, leave, wait

SCENARIOS = {}
# Crossbar.io's random authids: six groups of four from this alphabet.
RANDOM_AUTHID = re.compile(r"^[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){5}$")


def scenario(fn):
    """Each scenario runs beside a bystander: a callee on the main transport
    whose procedure must still answer when the scenario is over."""

    async def beside_a_bystander(urls, ser):
        url = urls["main"]
        by = await connect(url, ser)
        await by.register(lambda x: x, "com.open.echo")
        await fn(urls, ser)
        c = await connect(url, ser)
        assert await c.call("com.open.echo", "still here") == "still here"
        await leave(c, by)

    SCENARIOS[fn.__name__] = beside_a_bystander
    return fn


@scenario
async def pattern_registration_needs_a_covering_rule(urls, ser):
    url = urls["main"]
    attacker = await connect(url, ser)
    # Allowed exactly, so not as a pattern over everything after it.
    await expect_error(
        attacker.register(lambda *a, **k: "stolen", "com.private.allowed", options=RegisterOptions(match="prefix")),
        "wamp.error.not_authorized",
        "match prefix",
        'the rule that covers it ("com.", match prefix) does not allow register',
    )
    await expect_error(
        attacker.register(lambda *a, **k: "stolen", "com.private..", options=RegisterOptions(match="wildcard")),
        "wamp.error.not_authorized",
        "match wildcard",
    )
    # Inside an allowing prefix rule a pattern is fine...
    await attacker.register(lambda *a, **k: "mine", "com.open.mine.", options=RegisterOptions(match="prefix"))
    # ...but not where a rule that decides part of it denies register.
    await expect_error(
        attacker.register(lambda *a, **k: "x", "com.", options=RegisterOptions(match="prefix")),
        "wamp.error.not_authorized",
    )
    # No call of another user's procedure reaches the attacker.
    owner = await connect(url, ser)
    await owner.register(lambda x: f"owner got {x}", "com.private.allowed")
    caller = await connect(url, ser)
    assert await caller.call("com.private.allowed", "secret") == "owner got secret"
    for uri in ("com.private.allowed.admin", "com.private.allowedXYZ"):
        await expect_error(caller.call(uri, "secret"), "wamp.error.no_such_procedure")
    assert await caller.call("com.open.mine.x") == "mine"
    await leave(attacker, owner, caller)


@scenario
async def pattern_subscription_needs_a_covering_rule(urls, ser):
    url = urls["main"]
    s = await connect(url, ser)
    await expect_error(
        s.subscribe(lambda *a: None, "com.secret.", options=SubscribeOptions(match="prefix")),
        "wamp.error.not_authorized",
        'the rule that covers it ("com.secret.", match prefix) does not allow subscribe',
    )
    await expect_error(
        s.subscribe(lambda *a: None, "", options=SubscribeOptions(match="prefix")),
        "wamp.error.not_authorized",
    )
    await expect_error(
        s.subscribe(lambda *a: None, "org..x", options=SubscribeOptions(match="wildcard")),
        "wamp.error.not_authorized",
        "match wildcard",
    )
    # The meta API answers about a pattern only to a role allowed all of it.
    await expect_error(
        s.call("wamp.subscription.lookup", "com.secret.", {"match": "prefix"}),
        "wamp.error.not_authorized",
        "wamp.subscription.lookup",
    )
    await expect_error(s.call("wamp.subscription.match", "com.secret.x"), "wamp.error.not_authorized")
    await expect_error(
        s.call("wamp.registration.lookup", "com.secret.", {"match": "prefix"}),
        "wamp.error.not_authorized",
    )
    await expect_error(s.call("wamp.registration.match", "com.x.private"), "wamp.error.not_authorized")
    sub = await s.subscribe(lambda *a: None, "com.open.", options=SubscribeOptions(match="prefix"))
    assert await s.call("wamp.subscription.lookup", "com.open.", {"match": "prefix"}) == sub.id
    await leave(s)


@scenario
async def anonymous_authid_is_never_the_clients(urls, ser):
    url = urls["main"]
    bob_wannabe = await connect(url, ser, authid="bob")
    mine = bob_wannabe.details.authid
    assert mine != "bob" and RANDOM_AUTHID.match(mine), mine
    other = await connect(url, ser, authid="bob")
    assert other.details.authid != mine, "every anonymous session gets its own authid"
    # Events for "bob" do not reach the one who claimed to be bob.
    got, sentinel = [], asyncio.Event()
    await bob_wannabe.subscribe(lambda x: got.append(x), "com.open.bw")
    await bob_wannabe.subscribe(lambda: sentinel.set(), "com.open.bw.sentinel")
    pub = await connect(url, ser)
    await pub.publish("com.open.bw", "for bob", options=PublishOptions(acknowledge=True, eligible_authid=["bob"]))
    await pub.publish("com.open.bw", "for you", options=PublishOptions(acknowledge=True, eligible_authid=[mine]))
    await pub.publish("com.open.bw.sentinel", options=PublishOptions(acknowledge=True))
    await wait(sentinel.wait(), "the sentinel")
    assert got == ["for you"], got
    # A raw HELLO with an authid fares no better.
    r = await Raw.open(url)
    welcome = await r.hello(details={**ROLES, "authid": "bob", "authmethods": ["anonymous"]})
    assert welcome[2]["authid"] != "bob" and RANDOM_AUTHID.match(welcome[2]["authid"]), welcome
    await r.ws.close()
    # The transport's anonymous config may name the authid.
    named = await connect(urls["named"], ser, authid="bob")
    assert named.details.authid == "guest", named.details.authid
    await leave(bob_wannabe, other, pub, named)


@scenario
async def retained_events_keep_their_audience(urls, ser):
    url = urls["main"]
    pub = await connect(url, ser)
    friend = await connect(url, ser)
    stranger = await connect(url, ser)
    ack = PublishOptions
    await pub.publish("com.open.r.eligible", "e", options=ack(acknowledge=True, retain=True, eligible=[friend.details.session]))
    await pub.publish("com.open.r.excluded", "x", options=ack(acknowledge=True, retain=True, exclude=[stranger.details.session]))
    await pub.publish(
        "com.open.r.authid", "a", options=ack(acknowledge=True, retain=True, eligible_authid=[friend.details.authid])
    )
    await pub.publish("com.open.r.role", "r", options=ack(acknowledge=True, retain=True, exclude_authrole=["anonymous"]))
    await pub.publish("com.open.r.all", "all", options=ack(acknowledge=True, retain=True))

    async def retained(s):
        got = {}
        for topic in ("eligible", "excluded", "authid", "role", "all"):
            got[topic] = []
            await s.subscribe(
                lambda x, t=topic: got[t].append(x),
                f"com.open.r.{topic}",
                options=SubscribeOptions(get_retained=True),
            )
        # A retained event arrives right after SUBSCRIBED: one round trip
        # more and everything due has arrived.
        await s.call("wamp.session.count")
        return {t: v for t, v in got.items() if v}

    assert await retained(friend) == {"eligible": ["e"], "excluded": ["x"], "authid": ["a"], "all": ["all"]}
    assert await retained(stranger) == {"all": ["all"]}
    # Pattern subscriptions see the same.
    seen = []
    p = await connect(url, ser)
    await p.subscribe(lambda x: seen.append(x), "com.open.r.", options=SubscribeOptions(match="prefix", get_retained=True))
    await p.call("wamp.session.count")
    assert sorted(seen) == ["all", "x"], seen
    await leave(pub, friend, stranger, p)


@scenario
async def wildcard_rule_decides_over_prefix(urls, ser):
    url = urls["main"]
    s = await connect(url, ser)
    # com. allows call, but the wildcard com..private decides (as in Crossbar.io).
    await expect_error(s.call("com.foo.private"), "wamp.error.not_authorized", '"com.foo.private"')
    await expect_error(s.call("com.foo.public"), "wamp.error.no_such_procedure")
    await expect_error(s.call("com.foo.private.x"), "wamp.error.no_such_procedure")
    await leave(s)


@scenario
async def meta_kill_follows_the_specification(urls, ser):
    url = urls["main"]
    killer = await connect(url, ser)
    victim = await connect(url, ser)
    await expect_error(
        killer.call("wamp.session.kill", killer.details.session),
        "wamp.error.no_such_session",
        "GOODBYE",
    )
    assert killer.is_attached()
    await killer.call("wamp.session.kill", victim.details.session)
    details = await wait(victim.left, "the victim to be closed")
    assert details.reason == "wamp.close.normal", details.reason
    others = [await connect(url, ser) for _ in range(2)]
    for o in others:
        await killer.call("wamp.session.kill_by_authid", o.details.authid)
        assert (await wait(o.left, "kill_by_authid")).reason == "wamp.close.normal"
    await leave(killer)


@scenario
async def secrets_stay_out_of_logs(urls, ser):
    """The node runs at trace level; the Rust side greps its logs for the
    ticket, the signature-like token and the arguments used here."""
    s = await connect(
        urls["ticket"], ser, authmethods=["ticket"], authid="joe", on_challenge=lambda c: "TICKET-7f3a9c-SECRET"
    )
    await s.register(lambda x, **kw: "RESULT-5d1e-SECRET", "com.open.secret_proc")
    assert await s.call("com.open.secret_proc", "ARG-91bc-SECRET", key="KWARG-44aa-SECRET") == "RESULT-5d1e-SECRET"
    await s.publish("com.open.t", "EVENT-0e2f-SECRET", options=PublishOptions(acknowledge=True))
    await leave(s)


@scenario
async def secrets_from_the_environment(urls, ser):
    """The envticket transport's joe has the ticket "${TRELLIS_TEST_TICKET}",
    and the node runs with that variable set."""
    url = urls["envticket"]

    async def login(ticket):
        r = await Raw.open(url)
        await r.send([1, "realm1", {**ROLES, "authmethods": ["ticket"], "authid": "joe"}])
        assert (await r.recv())[0] == 4
        await r.send([5, ticket, {}])
        answer = await r.recv()
        await r.ws.close()
        return answer

    assert (await login("s3cr3t-from-env"))[0] == 2, "the ticket from the environment was refused"
    refused = await login("${TRELLIS_TEST_TICKET}")
    assert refused[0] == 3 and refused[2] == "wamp.error.authentication_failed", refused


if __name__ == "__main__":
    asyncio.run(main(SCENARIOS, json.loads, 90))
