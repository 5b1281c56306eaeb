"""WAMP-SCRAM, TLS client certificates and cookies with autobahn-python.

Usage: python auth_methods.py URLS_JSON SCENARIO SERIALIZER [SERIALIZER ...]

URLS_JSON names the test node's transports and what the scenario needs to
know (passwords, files); see tests/e2e/auth_methods.rs.
"""

import asyncio
import base64
import json

import autobahn.wamp.auth as ab_auth
from autobahn.wamp.auth import AuthScram

from scenarios import main
from wamp_client import connect, leave, refused

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def _pbkdf2_as_the_spec_says(password, salt, iterations):
    # autobahn 26.10.2 passes the challenge's base64 salt (a str) to its
    # pbkdf2(), which refuses anything but bytes ("Invalid argument types"):
    # its PBKDF2 SCRAM cannot log in anywhere. Decode it, as the WAMP-SCRAM
    # specification and RFC 5802 do; the rest of AuthScram is autobahn's.
    return ab_auth.pbkdf2(password, base64.b64decode(salt), iterations, keylen=32)


ab_auth._hash_pbkdf2_secret = _pbkdf2_as_the_spec_says


async def scram_login(url, ser, authid, password):
    """Log in with autobahn's SCRAM client; check the router's signature."""
    client = AuthScram(authid=authid, password=password)
    s = await connect(
        url,
        ser,
        authmethods=["scram"],
        authid=authid,
        authextra=client.authextra,
        on_challenge=lambda c: client.on_challenge(None, c),
    )
    # autobahn checks the router's proof of the server key: None is success.
    problem = client.on_welcome(s, s.details.authextra)
    assert problem is None, problem
    return s


@scenario
async def scram(urls, ser):
    url, dyn = urls["scram"], urls["scram_dynamic"]
    for authid, password, kdf in [("joe", urls["joe"], "argon2id-13"), ("pat", urls["pat"], "pbkdf2")]:
        s = await scram_login(url, ser, authid, password)
        d = s.details
        assert (d.authid, d.authrole, d.authmethod, d.authprovider) == (authid, "user", "scram", "static"), (kdf, d)
        await leave(s)
        await refused(
            scram_login(url, ser, authid, password + "x"),
            "wamp.error.authentication_failed",
            f'authid "{authid}"',
            "wrong password",
        )
    # An unknown authid is challenged like a known one and fails the same way.
    await refused(
        scram_login(url, ser, "nobody", "guess"),
        "wamp.error.authentication_failed",
        "unknown authid or wrong password",
    )
    # Without the nonce, the login is refused at HELLO with the reason.
    await refused(
        connect(url, ser, authmethods=["scram"], authid="joe", on_challenge=lambda c: "x"),
        "wamp.error.authentication_failed",
        "authextra.nonce",
    )
    # A dynamic authenticator answers with the stored credential.
    s = await scram_login(dyn, ser, "joe", urls["joe"])
    d = s.details
    assert (d.authrole, d.authprovider) == ("user", "dynamic"), d
    assert d.authextra.get("source") == "scram_auth", d.authextra
    await leave(s)
    await refused(scram_login(dyn, ser, "joe", "wrong"), "wamp.error.authentication_failed", "wrong password")
    await refused(scram_login(dyn, ser, "zed", "x"), "com.example.no_such_user", "zed")


if __name__ == "__main__":
    asyncio.run(main(SCENARIOS, json.loads, 90))
