"""Open real autobahn-python (asyncio) sessions against a router.

Used by the end-to-end scenarios: each scenario opens as many sessions as it
needs with `connect()`, and every wait is bounded by a timeout.
"""

import asyncio
from urllib.parse import urlparse

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig

SERIALIZERS = {
    "json": JsonSerializer,
    "msgpack": MsgPackSerializer,
    "cbor": CBORSerializer,
}

TIMEOUT = 10


class Refused(Exception):
    """The router answered HELLO with ABORT (or the connection dropped)."""

    def __init__(self, reason, message):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Session(ApplicationSession):
    """An ApplicationSession that reports join, leave and disconnect."""

    def __init__(self, config, joined, authmethods=None, authid=None, authextra=None, on_challenge=None):
        super().__init__(config)
        self._joined = joined
        self._authmethods = authmethods
        self._authid = authid
        self._authextra = authextra
        self._on_challenge = on_challenge
        self.challenges = []
        self.left = asyncio.get_event_loop().create_future()
        self.disconnected = asyncio.get_event_loop().create_future()
        self.details = None

    def onConnect(self):
        self.join(self.config.realm, authmethods=self._authmethods, authid=self._authid, authextra=self._authextra)

    def onChallenge(self, challenge):
        self.challenges.append(challenge)
        if self._on_challenge is None:
            raise Exception(f"unexpected CHALLENGE {challenge.method}")
        return self._on_challenge(challenge)

    def onJoin(self, details):
        self.details = details
        if not self._joined.done():
            self._joined.set_result(self)

    def onLeave(self, details):
        if not self._joined.done():
            self._joined.set_exception(Refused(details.reason, details.message))
        if not self.left.done():
            self.left.set_result(details)
        super().onLeave(details)

    def onDisconnect(self):
        if not self._joined.done():
            self._joined.set_exception(Refused("disconnected", "transport closed before WELCOME"))
        if not self.disconnected.done():
            self.disconnected.set_result(True)


async def connect(
    url,
    serializer,
    realm="realm1",
    authmethods=None,
    authid=None,
    authextra=None,
    on_challenge=None,
    local_addr=None,
):
    """Join `realm` at `url` with one serializer; return the Session.

    `on_challenge(challenge)` answers a CHALLENGE; `local_addr` picks the
    source address (e.g. ("127.0.0.2", 0)) to look like another peer.
    """
    loop = asyncio.get_event_loop()
    joined = loop.create_future()

    def make():
        return Session(ComponentConfig(realm=realm), joined, authmethods, authid, authextra, on_challenge)

    if url.startswith("rs://"):
        # WAMP over RawSocket (TCP).
        from autobahn.asyncio.rawsocket import WampRawSocketClientFactory

        factory = WampRawSocketClientFactory(make, serializer=SERIALIZERS[serializer]())
    else:
        factory = WampWebSocketClientFactory(make, url=url, serializers=[SERIALIZERS[serializer]()])
    u = urlparse(url)
    await asyncio.wait_for(loop.create_connection(factory, u.hostname, u.port, local_addr=local_addr), TIMEOUT)
    return await asyncio.wait_for(joined, TIMEOUT)


def cra(password):
    """An on_challenge answering WAMP-CRA with `password` (salted or not)."""
    from autobahn.wamp import auth

    def answer(challenge):
        extra = challenge.extra
        key = password
        if "salt" in extra:
            key = auth.derive_key(password, extra["salt"], extra["iterations"], extra["keylen"])
        return auth.compute_wcs(key, extra["challenge"])

    return answer


async def wait(fut, what, timeout=TIMEOUT):
    """Await with a timeout that says what was being waited for."""
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def leave(*sessions):
    """Leave every session and wait until each has left."""
    for s in sessions:
        if s.is_attached():
            s.leave()
    for s in sessions:
        await wait(s.left, "the session to leave")


async def until(predicate, what, timeout=TIMEOUT):
    """Poll `predicate` every few milliseconds until it holds, or fail."""

    async def poll():
        while not predicate():
            await asyncio.sleep(0.002)

    await wait(poll(), what, timeout)


async def refused(coro, reason, *fragments):
    """Expect joining to end in ABORT `reason` whose message has every fragment."""
    try:
        s = await coro
    except Refused as e:
        assert e.reason == reason, f"expected ABORT {reason}, got {e.reason}: {e.message}"
        for f in fragments:
            assert f in e.message, f"ABORT message {e.message!r} lacks {f!r}"
        return e
    await leave(s)
    raise AssertionError(f"expected ABORT {reason}, but the session joined as {s.details.authid}")


async def expect_error(coro, uri, *fragments):
    """Expect a call (or register, subscribe, ...) to fail with `uri`."""
    from autobahn.wamp.exception import ApplicationError

    try:
        await coro
    except ApplicationError as e:
        assert e.error == uri, f"expected {uri}, got {e.error}: {e.args}"
        for f in fragments:
            assert f in (e.args[0] if e.args else ""), f"{e.args} lacks {f!r}"
        return e
    raise AssertionError(f"expected {uri}, but it succeeded")


def slow_tagger(finished, interrupted, seconds=0.6):
    """A callee procedure that takes `seconds` to return its argument (a
    tag): the tags it finished go to `finished`, the ones canceled
    (INTERRUPT) to `interrupted`. For the cancel modes."""

    async def slow(tag):
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            interrupted.append(tag)
            raise
        finished.append(tag)
        return tag

    return slow


def check(cond, what):
    """One checked outcome of a scenario script: "ok WHAT" on stdout (the
    Rust test looks for these lines), or exit with "FAILED: WHAT"."""
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print("ok", what, flush=True)
