"""WAMP-SCRAM, TLS client certificates and cookies with autobahn-python.

Usage: python auth_methods.py URLS_JSON SCENARIO SERIALIZER [SERIALIZER ...]

URLS_JSON names the test node's transports and what the scenario needs to
know (passwords, files); see tests/e2e/auth_methods.rs.
"""

import asyncio
import base64
import hashlib
import json
import socket
import ssl
from urllib.parse import urlparse

import autobahn.wamp.auth as ab_auth
from autobahn.wamp.auth import AuthScram

from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig

from scenarios import main
from wamp_client import Refused, Session, connect, leave, refused

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


async def cert_join(url, ser, ca, cert=None, authid=None):
    """Join over wss:// with autobahn, verifying the router against `ca`
    and presenting the client certificate `cert` ([certfile, keyfile])."""
    loop = asyncio.get_event_loop()
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    joined = loop.create_future()

    def make():
        return Session(ComponentConfig(realm="realm1"), joined, ["tls"], authid, None, None)

    sers = {"json": JsonSerializer, "msgpack": MsgPackSerializer}
    factory = WampWebSocketClientFactory(make, url=url, serializers=[sers[ser]()])
    u = urlparse(url)
    await asyncio.wait_for(loop.create_connection(factory, "127.0.0.1", u.port, ssl=ctx, server_hostname="localhost"), 10)
    return await asyncio.wait_for(joined, 10)


async def cert_refused_by_tls(url, ser, ca, cert, alert):
    """TLS refuses the client certificate with `alert`, as Python's ssl
    sees it (TLS 1.3 reports it on the first read after the handshake; no
    WebSocket, hence no WAMP, ever starts)."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    port = urlparse(url).port

    def attempt():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                try:
                    tls.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n")
                except OSError:
                    pass  # the alert is still there to read
                return tls.recv(100)

    try:
        data = await asyncio.to_thread(attempt)
    except ssl.SSLError as e:
        assert alert in str(e).upper(), f"expected the TLS alert {alert}, got {e}"
        return
    raise AssertionError(f"the router answered {data!r} over TLS with a certificate it should refuse ({alert})")


def sha1_of(certfile):
    der = ssl.PEM_cert_to_DER_cert(open(certfile).read())
    return ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())


@scenario
async def tls_client_certs(urls, ser):
    ca, certs = urls["ca"], urls["certs"]
    url, dyn = urls["static"], urls["dynamic"]
    # Static: the principal whose certificate-sha1 matches.
    s = await cert_join(url, ser, ca, certs["device1"])
    d = s.details
    assert (d.authid, d.authrole, d.authmethod, d.authprovider) == ("device-1", "user", "tls", "static"), d
    await leave(s)
    # A verified certificate that no principal has: refused at HELLO.
    await refused(
        cert_join(url, ser, ca, certs["device2"]),
        "wamp.error.authentication_failed",
        "no tls principal has this client certificate",
        sha1_of(certs["device2"][0]),
    )
    # Asking for another principal's authid with one's own certificate.
    await refused(
        cert_join(url, ser, ca, certs["device1"], authid="device-9"),
        "wamp.error.authentication_failed",
        "principal \"device-1\"'s",
    )
    # Refused by TLS itself: another CA, expired, none at all.
    await cert_refused_by_tls(url, ser, ca, certs["other_ca"], "UNKNOWN_CA")
    await cert_refused_by_tls(url, ser, ca, certs["expired"], "CERTIFICATE_EXPIRED")
    await cert_refused_by_tls(url, ser, ca, None, "CERTIFICATE_REQUIRED")
    # Dynamic: the authenticator sees the certificate's details.
    s = await cert_join(dyn, ser, ca, certs["device2"])
    d = s.details
    assert (d.authid, d.authrole, d.authprovider) == ("device-2", "user", "dynamic"), d
    x = d.authextra
    assert x["sha1"] == sha1_of(certs["device2"][0]), x
    assert x["issuer_cn"] == "Trellis Test CA A" and x["expired"] is False, x
    assert x["not_after"].startswith("2999-"), x
    await leave(s)
    await refused(cert_join(dyn, ser, ca, certs["banned"]), "com.example.invalid_cert", "denied")


@scenario
async def tls_after_ca_reload(urls, ser):
    """After the CA file names CA B (and SIGHUP), B's certificates get in
    and A's no longer do."""
    ca, certs, dyn = urls["ca"], urls["certs"], urls["dynamic"]
    s = await cert_join(dyn, ser, ca, certs["other_ca"])
    assert s.details.authid == "device-b", s.details
    await leave(s)
    await cert_refused_by_tls(dyn, ser, ca, certs["device2"], "UNKNOWN_CA")


if __name__ == "__main__":
    asyncio.run(main(SCENARIOS, json.loads, 90))
