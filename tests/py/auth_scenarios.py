"""Authentication and authorization scenarios with autobahn-python.

Usage: python auth_scenarios.py URLS_JSON SCENARIO SERIALIZER [SERIALIZER ...]

URLS_JSON names the test node's transports: {"static": ..., "dynamic": ...,
"unregistered": ..., "limited": ...}. See tests/e2e/auth.rs for the config.
"""

import asyncio
import json

from autobahn.wamp import auth
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions

from raw_client import Raw
from scenarios import main
from wamp_client import connect, cra, expect_error, leave, refused

SCENARIOS = {}
ALICE_SEED = bytes.fromhex("01" * 32)
TICKETS = {"joe": "joe-ticket-Q7", "backend": "backend-ticket-Q7", "authenticator": "auth-ticket-Q7", "watcher1": "watch-ticket-Q7"}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def ticket(value):
    return lambda challenge: value






async def login(url, ser, who, realm="realm1"):
    return await connect(url, ser, realm=realm, authmethods=["ticket"], authid=who, on_challenge=ticket(TICKETS[who]))


@scenario
async def static_methods(urls, ser):
    url = urls["static"]
    s = await connect(url, ser, authmethods=["ticket"], authid="joe", on_challenge=ticket(TICKETS["joe"]))
    d = s.details
    assert (d.authid, d.authrole, d.authmethod, d.authprovider) == ("joe", "user", "ticket", "static"), d
    await leave(s)
    await refused(
        connect(url, ser, authmethods=["ticket"], authid="joe", on_challenge=ticket("wrong")),
        "wamp.error.authentication_failed", "joe", "wrong ticket",
    )
    await refused(
        connect(url, ser, authmethods=["ticket"], authid="nobody", on_challenge=ticket("x")),
        "wamp.error.authentication_failed",
    )
    await refused(connect(url, ser, authmethods=["anonymous"]), "wamp.error.no_auth_method", "ticket", "wampcra")
    # WAMP-CRA: a stored derived key (the seed's user database) and a stored
    # password (Crossbar.io 26) with the same salt accept the same password.
    for user in ("anohni", "carol"):
        s = await connect(url, ser, authmethods=["wampcra"], authid=user, on_challenge=cra("secret1"))
        assert (s.details.authid, s.details.authmethod) == (user, "wampcra"), s.details
        ch = json.loads(s.challenges[0].extra["challenge"])
        assert ch["session"] == s.details.session and ch["nonce"] and ch["timestamp"], ch
        assert s.challenges[0].extra["salt"] == "salt123" and s.challenges[0].extra["iterations"] == 100
        await leave(s)
    s = await connect(url, ser, authmethods=["wampcra"], authid="peter", on_challenge=cra("peter-pw"))
    assert "salt" not in s.challenges[0].extra
    await leave(s)
    await refused(
        connect(url, ser, authmethods=["wampcra"], authid="anohni", on_challenge=cra("wrong")),
        "wamp.error.authentication_failed", "anohni",
    )
    # Cryptosign.
    key = CryptosignKey.from_bytes(ALICE_SEED)
    s = await connect(url, ser, authmethods=["cryptosign"], authextra={"pubkey": key.public_key()},
                      on_challenge=lambda ch: key.sign_challenge(ch))
    assert (s.details.authid, s.details.authrole, s.details.authmethod) == ("alice", "user", "cryptosign"), s.details
    await leave(s)
    stranger = CryptosignKey.from_bytes(bytes.fromhex("02" * 32))
    await refused(
        connect(url, ser, authmethods=["cryptosign"], authextra={"pubkey": stranger.public_key()},
                on_challenge=lambda ch: stranger.sign_challenge(ch)),
        "wamp.error.authentication_failed", "no principal",
    )
    # A right key that signs wrongly.
    await refused(
        connect(url, ser, authmethods=["cryptosign"], authextra={"pubkey": key.public_key()},
                on_challenge=lambda ch: "00" * 96),
        "wamp.error.authentication_failed", "alice",
    )
    # The client's order of authmethods decides among enabled ones.
    s = await connect(url, ser, authmethods=["bogus", "wampcra", "ticket"], authid="peter", on_challenge=cra("peter-pw"))
    assert s.details.authmethod == "wampcra"
    await leave(s)


class Authenticators:
    """The dynamic authenticators, living in realm "auth"."""

    def __init__(self):
        self.calls = []
        self.key = CryptosignKey.from_bytes(ALICE_SEED)

    async def ticket(self, realm, authid, details):
        self.calls.append((realm, authid, details))
        t = details.get("ticket")
        if authid == "good" and t == "t1":
            return {"role": "user", "extra": {"greeting": "hi"}}
        if authid == "ingemar" and t == "secret1":
            return {"role": "user", "authid": "ID09125"}
        if authid == "switch":
            return {"role": "authenticator", "realm": "auth"}
        if authid == "plainrole":
            return "user"
        if authid == "none":
            return None
        if authid == "wrongshape":
            return 42
        if authid == "raise":
            raise ApplicationError("com.example.invalid_ticket", "bad ticket for raise")
        if authid == "crash":
            raise RuntimeError("authenticator bug")
        if authid == "slow":
            await asyncio.sleep(5)
            return "user"
        if authid == "norole":
            return {"role": "ghost"}
        raise ApplicationError("wamp.error.not_authorized", "unknown user or wrong ticket")

    def cra(self, realm, authid, details):
        if authid == "ingemar":
            return {
                "secret": auth.derive_key("secret1", "salt123", 100, 16),
                "secret-kind": "derived-key",
                "salt": "salt123", "iterations": 100, "keylen": 16,
                "role": "user", "authid": "ID09125", "extra": {"k": 1},
            }
        if authid == "plain":
            return {"secret": "plain-pw", "role": "user"}
        if authid == "emptysecret":
            return {"secret": "", "role": "user"}
        if authid == "blanksalt":
            return {"secret": "pw", "salt": "  ", "role": "user"}
        raise ApplicationError("wamp.error.not_authorized", "no such user")

    def cryptosign(self, realm, authid, details):
        if details["authextra"].get("pubkey") == self.key.public_key():
            return {"role": "user", "authid": "dyn-alice"}
        raise ApplicationError("wamp.error.not_authorized", "unknown key")


async def start_authenticators(urls, ser):
    a = Authenticators()
    s = await login(urls["static"], ser, "authenticator", realm="auth")
    assert s.details.realm == "auth" and s.details.authrole == "authenticator"
    await s.register(a.ticket, "com.example.authenticate")
    await s.register(a.cra, "com.example.cra_authenticate")
    await s.register(a.cryptosign, "com.example.cs_authenticate")
    return s, a


@scenario
async def dynamic_ticket(urls, ser):
    url = urls["dynamic"]
    backend, a = await start_authenticators(urls, ser)

    def t(authid, value):
        return connect(url, ser, authmethods=["ticket"], authid=authid, on_challenge=ticket(value))

    s = await t("good", "t1")
    d = s.details
    assert (d.authid, d.authrole, d.authprovider, d.realm) == ("good", "user", "dynamic", "realm1"), d
    assert d.authextra == {"greeting": "hi"}, d.authextra
    realm, authid, details = a.calls[-1]
    assert (realm, authid, details["ticket"], details["authmethod"]) == ("realm1", "good", "t1", "ticket"), a.calls[-1]
    assert details["session"] == d.session, (details, d.session)
    assert details["transport"]["type"] == "websocket" and details["transport"]["peer"].startswith("tcp4:"), details
    headers = details["transport"]["http_headers_received"]
    assert headers["sec-websocket-protocol"].startswith("wamp.2."), headers
    assert "upgrade" in headers and details["transport"]["http_request_uri"] == "/ws", details["transport"]
    await leave(s)
    s = await t("ingemar", "secret1")
    assert s.details.authid == "ID09125", s.details.authid
    await leave(s)
    s = await t("switch", "x")
    assert (s.details.realm, s.details.authrole) == ("auth", "authenticator"), s.details
    await leave(s)
    s = await t("plainrole", "x")
    assert s.details.authrole == "user"
    await leave(s)
    proc = '"com.example.authenticate"'
    await refused(t("none", "x"), "wamp.error.authentication_failed", proc, "returned nothing (null)")
    await refused(t("wrongshape", "x"), "wamp.error.authentication_failed", proc, "returned a integer")
    await refused(t("raise", "x"), "com.example.invalid_ticket", proc, "bad ticket for raise")
    await refused(t("crash", "x"), "wamp.error.authentication_failed", proc, "authenticator bug")
    await refused(t("slow", "x"), "wamp.error.authentication_failed", proc, "did not answer within 500 ms")
    await refused(t("norole", "x"), "wamp.error.no_such_role", proc, '"ghost"')
    await refused(t("stranger", "x"), "wamp.error.not_authorized", proc, "wrong ticket")
    # The authenticator is fine after all that.
    s = await t("good", "t1")
    await leave(s, backend)


@scenario
async def dynamic_wampcra_and_cryptosign(urls, ser):
    url = urls["dynamic"]
    backend, a = await start_authenticators(urls, ser)
    s = await connect(url, ser, authmethods=["wampcra"], authid="ingemar", on_challenge=cra("secret1"))
    assert (s.details.authid, s.details.authprovider) == ("ID09125", "dynamic"), s.details
    assert s.details.authextra == {"k": 1}, s.details.authextra
    await leave(s)
    s = await connect(url, ser, authmethods=["wampcra"], authid="plain", on_challenge=cra("plain-pw"))
    await leave(s)
    await refused(
        connect(url, ser, authmethods=["wampcra"], authid="ingemar", on_challenge=cra("nope")),
        "wamp.error.authentication_failed", "ID09125",
    )
    await refused(
        connect(url, ser, authmethods=["wampcra"], authid="ghost", on_challenge=cra("x")),
        "wamp.error.not_authorized", "no such user",
    )
    # An authenticator that returns an empty secret (or salt) admits nobody,
    # not even a client that signs with the empty key.
    for who, what in (("emptysecret", "secret"), ("blanksalt", "salt")):
        await refused(
            connect(url, ser, authmethods=["wampcra"], authid=who, on_challenge=cra("")),
            "wamp.error.authentication_failed", '"com.example.cra_authenticate"', f'empty "{what}"',
        )
    key = a.key
    s = await connect(url, ser, authmethods=["cryptosign"], authextra={"pubkey": key.public_key()},
                      on_challenge=lambda ch: key.sign_challenge(ch))
    assert (s.details.authid, s.details.authmethod) == ("dyn-alice", "cryptosign"), s.details
    await leave(s)
    other = CryptosignKey.from_bytes(bytes.fromhex("03" * 32))
    await refused(
        connect(url, ser, authmethods=["cryptosign"], authextra={"pubkey": other.public_key()},
                on_challenge=lambda ch: other.sign_challenge(ch)),
        "wamp.error.not_authorized", "unknown key",
    )
    await leave(backend)


@scenario
async def unregistered_authenticator(urls, ser):
    await refused(
        connect(urls["unregistered"], ser, authmethods=["ticket"], authid="x", on_challenge=ticket("y")),
        "wamp.error.authentication_failed", '"com.example.nobody"', "is not registered in realm \"realm1\"",
    )


@scenario
async def authorization_matrix(urls, ser):
    url = urls["static"]
    backend = await login(url, ser, "backend")
    await backend.register(lambda: "secret", "com.example.taken")
    joe = await login(url, ser, "joe")
    ack = PublishOptions(acknowledge=True)
    # call: allowed under com.example. (so the callee answers)
    assert await joe.call("com.example.taken") == "secret"
    # register: only the exact com.example.reg and the wildcard org..wild
    await expect_error(joe.register(lambda: 1, "com.example.other"), "wamp.error.not_authorized", '"user"')
    # Authorization comes first: joe learns nothing about com.example.taken.
    await expect_error(joe.register(lambda: 1, "com.example.taken"), "wamp.error.not_authorized")
    await joe.register(lambda: "mine", "com.example.reg")
    await joe.register(lambda: "wild", "org.a.wild")
    await expect_error(joe.register(lambda: 1, "org.a.b"), "wamp.error.not_authorized")
    assert await joe.call("org.a.wild") == "wild"
    await expect_error(joe.call("org.a.b"), "wamp.error.not_authorized")
    # publish: only under com.example.pub.
    await expect_error(joe.publish("com.example.x", options=ack), "wamp.error.not_authorized", "publish")
    await joe.publish("com.example.pub.x", options=ack)
    # subscribe: com.example. yes, elsewhere no.
    await joe.subscribe(lambda: None, "com.example.pub.x")
    await expect_error(joe.subscribe(lambda: None, "net.other"), "wamp.error.not_authorized", "subscribe")
    # meta API: not granted to "user".
    await expect_error(joe.call("wamp.session.count"), "wamp.error.not_authorized")
    # A client cannot choose its own role: HELLO's authrole is ignored.
    r, welcome = await raw_login(url, "joe", authrole="backend")
    assert (welcome[2]["authid"], welcome[2]["authrole"]) == ("joe", "user"), welcome
    await r.ws.close()
    await leave(joe, backend)


class Authorizer:
    def __init__(self):
        self.calls = []

    def authorize(self, session, uri, action, options):
        self.calls.append((session, uri, action, options))
        if uri.startswith("com.example.chan.") and action == "publish":
            return options.get("x_token") == "letmein"
        if uri == "com.example.cached" and action == "subscribe":
            return {"allow": True, "cache": True}
        if uri == "com.example.filtered" and action == "subscribe":
            return {"allow": options.get("x_team") == "a", "cache": False}
        if uri == "com.example.boom":
            raise ApplicationError("com.example.oops", "authorizer bug")
        return False


async def raw_login(url, who, **hello):
    r = await Raw.open(url)
    details = {"roles": {"publisher": {}, "subscriber": {}}, "authmethods": ["ticket"], "authid": who, **hello}
    await r.send([1, "realm1", details])
    ch = await r.recv()
    assert ch[0] == 4 and ch[1] == "ticket", ch
    await r.send([5, TICKETS[who], {}])
    welcome = await r.recv()
    assert welcome[0] == 2, welcome
    return r, welcome


@scenario
async def dynamic_authorizer(urls, ser):
    url = urls["static"]
    backend = await login(url, ser, "backend")
    az = Authorizer()
    await backend.register(az.authorize, "com.example.authorize")
    got = []
    await backend.subscribe(lambda x: got.append(x), "com.example.chan.1")
    r, welcome = await raw_login(url, "watcher1")
    assert welcome[2]["authrole"] == "watched", welcome
    # Publish options carry application data the authorizer decides on.
    await r.send([16, 1, {"acknowledge": True, "x_token": "letmein"}, "com.example.chan.1", ["ok"]])
    assert (await r.recv())[:2] == [17, 1]
    await r.send([16, 2, {"acknowledge": True, "x_token": "nope"}, "com.example.chan.1", ["no"]])
    await r.expect_error(16, 2, "wamp.error.not_authorized")
    session, uri, action, options = az.calls[0]
    assert (uri, action, options.get("x_token")) == ("com.example.chan.1", "publish", "letmein"), az.calls[0]
    assert session["authid"] == "watcher1" and session["authrole"] == "watched", session
    assert session["session"] == welcome[1] and session["authmethod"] == "ticket", session
    # Subscribe options too; an uncached answer is asked again each time.
    await r.send([32, 3, {"x_team": "a"}, "com.example.filtered"])
    assert (await r.recv())[:2] == [33, 3]
    await r.send([32, 4, {"x_team": "b"}, "com.example.filtered"])
    await r.expect_error(32, 4, "wamp.error.not_authorized")
    # A cached answer is reused for this session.
    before = len(az.calls)
    for req in (5, 6, 7):
        await r.send([32, req, {}, "com.example.cached"])
        assert (await r.recv())[:2] == [33, req]
    assert len(az.calls) == before + 1, az.calls[before:]
    # An authorizer that raises denies, saying why.
    await r.send([32, 8, {}, "com.example.boom"])
    text = await r.expect_error(32, 8, "wamp.error.authorization_failed")
    assert "com.example.authorize" in text and "com.example.oops" in text, text
    # Messages keep their order while the authorizer thinks.
    await r.send([16, 9, {"acknowledge": True, "x_token": "letmein"}, "com.example.chan.1", ["a"]])
    await r.send([16, 10, {"acknowledge": True, "x_token": "letmein"}, "com.example.chan.1", ["b"]])
    assert [(await r.recv())[:2] for _ in range(2)] == [[17, 9], [17, 10]]
    for _ in range(200):
        if len(got) >= 3:
            break
        await asyncio.sleep(0.01)
    assert got == ["ok", "a", "b"], got
    await r.ws.close()
    # An authorizer that is gone denies with a clear error.
    await backend.leave()
    await backend.left
    r, _ = await raw_login(url, "watcher1")
    await r.send([32, 11, {}, "com.example.anything"])
    text = await r.expect_error(32, 11, "wamp.error.authorization_failed")
    assert "not registered" in text, text
    await r.ws.close()


@scenario
async def brute_force_is_rate_limited(urls, ser):
    url = urls["limited"]
    attacker = ("127.0.0.2", 0)
    for i in range(5):
        await refused(
            connect(url, ser, authmethods=["ticket"], authid="joe", on_challenge=ticket(f"guess{i}"), local_addr=attacker),
            "wamp.error.authentication_failed", "wrong ticket",
        )
    # Over the limit: refused before any challenge, even with the right ticket.
    e = await refused(
        connect(url, ser, authmethods=["ticket"], authid="joe", on_challenge=ticket(TICKETS["joe"]), local_addr=attacker),
        "wamp.error.authentication_failed", "too many failed authentication attempts",
    )
    # The legitimate client from another address still gets in.
    s = await connect(url, ser, authmethods=["ticket"], authid="joe", on_challenge=ticket(TICKETS["joe"]))
    assert s.details.authid == "joe"
    await leave(s)


async def raw_ticket(url, authid, value, forwarded_for=None, source="127.0.0.1"):
    """A ticket login with Python `websockets` (which can send headers and
    pick its source address): the router's first answer after AUTHENTICATE
    (WELCOME or ABORT), or the ABORT it sends at HELLO."""
    kw = {"additional_headers": {"X-Forwarded-For": forwarded_for}} if forwarded_for else {}
    r = await Raw.open(url, local_addr=(source, 0), **kw)
    await r.send([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": authid}])
    msg = await r.recv()
    if msg[0] == 4:
        await r.send([5, value, {}])
        msg = await r.recv()
    await r.ws.close()
    return msg


@scenario
async def login_storm_spares_the_innocent(urls, ser):
    """The limited transport: 5 failures per (address, authid) in 60 s."""
    url = urls["limited"]
    attacker = "127.0.0.3"
    # A storm over many authids from one address (credential stuffing).
    for batch in range(3):
        answers = await asyncio.gather(
            *(raw_ticket(url, f"user{batch}-{i}", "guess", source=attacker) for i in range(10))
        )
        assert all(a[0] == 3 and a[2] == "wamp.error.authentication_failed" for a in answers), answers
    # ...and at one user, who is locked out from that address.
    for i in range(5):
        a = await raw_ticket(url, "joe", f"guess{i}", source=attacker)
        assert a[0] == 3 and a[2] == "wamp.error.authentication_failed", a
    for i in range(20):
        a = await raw_ticket(url, "joe", TICKETS["joe"], source=attacker)
        assert a[0] == 3 and "too many failed authentication attempts for this authid" in a[1]["message"], a
    # Another user behind the same address gets in, slowed by at most
    # auth_failure_delay (1 s by default).
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    s = await connect(url, ser, authmethods=["wampcra"], authid="peter", on_challenge=cra("peter-pw"), local_addr=(attacker, 0))
    took = loop.time() - t0
    assert s.details.authid == "peter", s.details
    assert took < 3, f"a correct login behind a stormed address took {took:.2f} s"
    await leave(s)
    # joe from elsewhere is not locked out.
    a = await raw_ticket(url, "joe", TICKETS["joe"], source="127.0.0.4")
    assert a[0] == 2, a
    print(f"correct login behind the stormed address took {took:.2f} s", flush=True)


@scenario
async def trusted_proxy_names_the_client(urls, ser):
    """The proxied transport trusts 127.0.0.1 and allows 3 failures."""
    url = urls["proxied"]
    for i in range(3):
        a = await raw_ticket(url, "joe", f"guess{i}", forwarded_for="198.51.100.7")
        assert a[0] == 3 and a[2] == "wamp.error.authentication_failed", a
    # The client behind the proxy is locked out...
    a = await raw_ticket(url, "joe", TICKETS["joe"], forwarded_for="198.51.100.7")
    assert a[0] == 3 and "too many failed" in a[1]["message"], a
    # ...not every client of the proxy, nor the proxy itself.
    a = await raw_ticket(url, "joe", TICKETS["joe"], forwarded_for="198.51.100.8")
    assert a[0] == 2, a
    a = await raw_ticket(url, "joe", TICKETS["joe"])
    assert a[0] == 2, a
    # A client that is not a trusted proxy cannot pick its address: its
    # forged header is ignored and its failures are its own.
    for i in range(3):
        a = await raw_ticket(url, "joe", f"guess{i}", forwarded_for="198.51.100.9", source="127.0.0.5")
        assert a[0] == 3 and a[2] == "wamp.error.authentication_failed", a
    a = await raw_ticket(url, "joe", TICKETS["joe"], forwarded_for="198.51.100.9")
    assert a[0] == 2, "the forged address was not locked out"
    a = await raw_ticket(url, "joe", TICKETS["joe"], source="127.0.0.5")
    assert a[0] == 3 and "too many failed" in a[1]["message"], a


if __name__ == "__main__":
    asyncio.run(main(SCENARIOS, json.loads, 90))
