"""Trellis's launcher for Python components, run by a container worker.

It reads the container's Python components as JSON on stdin, imports each
class from the Python path, builds autobahn's ComponentConfig(realm, extra)
and runs the class with autobahn on asyncio or on Twisted (whichever the
class derives from), over the component's transport: WebSocket or
RawSocket, TCP or Unix socket. It exits non-zero when a class cannot be
loaded, a connection cannot be made or a component's connection is lost,
so that the container worker, and its restart policy, take over. Its
output is the container worker's log.
"""

import importlib
import json
import os
import signal
import sys
import traceback

EXIT = {"code": 0, "stopping": False}
SHUTDOWN = {"mode": None}
JOINED = {"count": 0, "of": 0}


def report(name, state):
    """A component's state for the worker (`trellis status`, metrics): one
    line on the original stdout, read by the worker."""
    sys.__stdout__.write("trellis launcher: component-state " + json.dumps({"name": name, "state": state}) + "\n")
    sys.__stdout__.flush()


def joined():
    """Count a component whose onJoin finished; say so when all have (a
    router worker waits for this line before it reports ready)."""
    JOINED["count"] += 1
    if JOINED["count"] == JOINED["of"]:
        # The original stdout: Twisted's logging wraps sys.stdout.
        sys.__stdout__.write(f"trellis launcher: all {JOINED['of']} components joined\n")
        sys.__stdout__.flush()


# An onJoin still running after this long (one that loops for the
# component's life) lets the next component start anyway.
HEAD_START = 1.0


class Sequence:
    """Starts a worker's components one after another, as Crossbar.io
    does: the next one once the previous one's onJoin has finished (or
    failed), or once it has run for HEAD_START seconds. So a component
    that registers an authorizer, say, has it registered before the
    components after it in the config join."""

    def __init__(self, later):
        self.later = later
        self.starts = []
        self.i = 0

    def add(self, start):
        self.starts.append(start)

    def next(self):
        if self.i < len(self.starts):
            start = self.starts[self.i]
            self.i += 1
            start()

    def hooks(self):
        """`(entered, finished)` for one component's onJoin; the next
        component starts once, on whichever comes first."""
        done = [False]

        def finished():
            if not done[0]:
                done[0] = True
                self.next()

        def entered():
            self.later(HEAD_START, finished)

        return entered, finished


def fail(message, code=1):
    print(f"trellis launcher: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def import_module(module):
    """Import `module`; if it uses txaio at import time (txaio.make_logger()
    at the top, as modules written for Crossbar.io do) before any framework
    is chosen, choose Twisted, as Crossbar.io's workers run (asyncio where
    Twisted is not installed), and import it again."""
    try:
        return importlib.import_module(module)
    except Exception as e:
        if "select a framework" not in str(e):
            raise
    import txaio

    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        del sys.modules[name]
    try:
        import twisted  # noqa: F401

        txaio.use_twisted()
    except ImportError:
        txaio.use_asyncio()
    return importlib.import_module(module)


def load(classname):
    module, _, name = classname.rpartition(".")
    try:
        mod = import_module(module)
    except Exception:
        traceback.print_exc()
        fail(f"cannot import module {module!r} of component {classname!r} (options.pythonpath: {sys.path[:3]})")
    cls = getattr(mod, name, None)
    if cls is None:
        fail(f"module {module!r} has no {name!r} (component {classname!r})")
    return cls


def framework(cls):
    for base in getattr(cls, "__mro__", ()):
        if base.__module__.startswith("autobahn.twisted"):
            return "twisted"
        if base.__module__.startswith("autobahn.asyncio"):
            return "asyncio"
    return None


def serializer_objects(names):
    from autobahn.wamp import serializer as s

    known = {"json": s.JsonSerializer, "msgpack": s.MsgPackSerializer, "cbor": s.CBORSerializer}
    out = []
    for n in names or []:
        if n in known:
            out.append(known[n]())
    return out or None


def broken(name, what, tb, stop):
    """A component that cannot even be made (its constructor or onOpen
    raised): logged with its traceback, and the launcher ends at once with
    status 1, as Crossbar.io's worker fails its start."""
    print(f"trellis launcher: component {name}: {what} raised:\n{tb}", file=sys.stderr, flush=True)
    print(f"trellis launcher: component {name} cannot start: {what} raised; see the traceback above", file=sys.stderr, flush=True)
    # At once, whatever loop is running: autobahn would otherwise swallow it.
    sys.stdout.flush()
    os._exit(1)


def maker(cls, cfg, name, stop):
    """A factory for `cls(cfg)` whose failure is logged and ends the
    launcher (autobahn would swallow it)."""

    def make():
        try:
            return cls(cfg)
        except Exception:
            broken(name, f"{cls.__qualname__}.__init__", traceback.format_exc(), stop)
            raise

    return make


def watched(cls, on_end, on_joined=lambda: None, stop=lambda code: None, on_entered=lambda: None, on_gone=lambda: None):
    """The class, but its end is reported: `on_end(name, failed)`. A
    component that leaves by itself has stopped; one whose onJoin raises,
    or whose connection is lost, has failed (with the traceback in the log).
    A failed onJoin has finished joining too (`on_joined`): the router's
    start does not wait for it. `on_entered` is called as onJoin starts,
    `on_gone` when the connection ends (joined or not)."""
    name = f"{cls.__module__}.{cls.__name__}"

    class Watched(cls):
        _trellis_leaving = False
        _trellis_failed = False

        def onOpen(self, transport):
            try:
                return super().onOpen(transport)
            except Exception:
                broken(name, f"{cls.__qualname__}.onOpen", traceback.format_exc(), stop)
                raise

        def leave(self, *args, **kwargs):
            self._trellis_leaving = True
            return super().leave(*args, **kwargs)

        def _trellis_join_failed(self, tb):
            print(f"trellis launcher: {cls.__module__}.{cls.__name__}.onJoin raised:\n{tb}", file=sys.stderr, flush=True)
            self._trellis_failed = True
            report(name, "failed")
            on_joined()
            try:
                self.disconnect()
            except Exception:
                traceback.print_exc()

        def onJoin(self, details):
            on_entered()
            try:
                result = super().onJoin(details)
            except Exception:
                self._trellis_join_failed(traceback.format_exc())
                return None
            if hasattr(result, "addErrback"):  # a Twisted Deferred
                result.addCallbacks(
                    lambda r: (report(name, "running"), on_joined(), r)[2],
                    lambda f: self._trellis_join_failed(f.getTraceback()),
                )
                return result
            if hasattr(result, "__await__"):

                async def guarded():
                    try:
                        r = await result
                    except Exception:
                        self._trellis_join_failed(traceback.format_exc())
                        return None
                    report(name, "running")
                    on_joined()
                    return r

                return guarded()
            report(name, "running")
            on_joined()
            return result

        def onDisconnect(self):
            try:
                return super().onDisconnect()
            finally:
                # Neither left nor failed in onJoin: the connection to the
                # router was lost (the router restarts, say).
                lost = not self._trellis_failed and not self._trellis_leaving
                on_gone()
                on_end(f"{cls.__module__}.{cls.__name__}", self._trellis_failed or lost, lost)

    Watched.__name__ = cls.__name__
    Watched.__qualname__ = cls.__qualname__
    return Watched


class Ends:
    """Decides when the launcher ends, by Crossbar.io's container
    `shutdown` mode (by default `shutdown-manual`, as in Crossbar.io: a
    component that ends stays down and the others run on)."""

    def __init__(self, count, mode, stop):
        # Crossbar.io's default: a component that ends stays down, the
        # others run on.
        self.count, self.mode, self.stop = count, mode or "shutdown-manual", stop
        self.explicit = mode is not None
        self.ended = {}

    def __call__(self, name, failed, lost=False):
        if EXIT["stopping"]:
            return
        self.ended[name] = failed
        how = "failed" if failed else "stopped"
        report(name, how)
        print(f"trellis launcher: component {name} {how}", file=sys.stderr, flush=True)
        code = 1 if any(self.ended.values()) else 0
        if lost and not self.explicit:
            # Its router went away (Trellis restarts routers, Crossbar.io
            # stops the node): the container ends, its restart policy starts
            # it again, and its components join the router that came back.
            print(f"trellis launcher: component {name} lost its router: the container restarts to join it again", file=sys.stderr, flush=True)
            self.stop(1)
            return
        if self.mode == "shutdown-on-any-component-stopped":
            self.stop(code)
        elif self.mode == "shutdown-on-any-component-failed" and failed:
            self.stop(1)
        elif self.mode == "shutdown-on-last-component-stopped" and len(self.ended) >= self.count:
            self.stop(code)


def ssl_context(spec):
    """asyncio's client TLS context for a component's `tls` (the router's
    certificate checked against `ca_certificates`, else the system's CAs;
    the component's own certificate when given), or None without one."""
    import ssl

    tls = spec.get("tls")
    if tls is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.get("ca_certificates"):
        for f in tls["ca_certificates"]:
            ctx.load_verify_locations(cafile=f)
    else:
        ctx.load_default_certs()
    if tls.get("certificate"):
        ctx.load_cert_chain(tls["certificate"], tls["key"])
    return ctx


def twisted_tls(spec):
    """Twisted's client TLS options for a component's `tls`, as
    `ssl_context` makes them for asyncio."""
    from twisted.internet.ssl import (
        Certificate,
        PrivateCertificate,
        optionsForClientTLS,
        platformTrust,
        trustRootFromCertificates,
    )

    tls = spec["tls"]

    def certificates(path):
        with open(path, "rb") as f:
            text = f.read()
        end = b"-----END CERTIFICATE-----"
        return [Certificate.loadPEM(block + end) for block in text.split(end) if b"-----BEGIN" in block]

    cas = tls.get("ca_certificates")
    trust = trustRootFromCertificates([c for f in cas for c in certificates(f)]) if cas else platformTrust()
    client = None
    if tls.get("certificate"):
        with open(tls["certificate"], "rb") as c, open(tls["key"], "rb") as k:
            client = PrivateCertificate.loadPEM(c.read() + b"\n" + k.read())
    return optionsForClientTLS(tls["hostname"], trustRoot=trust, clientCertificate=client)


def run_asyncio(components):
    import asyncio

    import txaio

    txaio.use_asyncio()
    txaio.start_logging(level="info")
    from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
    from autobahn.asyncio.websocket import WampWebSocketClientFactory
    from autobahn.wamp.types import ComponentConfig
    from autobahn.websocket.util import parse_url

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    txaio.config.loop = loop

    def stop(code):
        if not EXIT["stopping"]:
            EXIT["stopping"] = True
            EXIT["code"] = code
            loop.call_soon(loop.stop)

    ends = Ends(len(components), SHUTDOWN["mode"], stop)
    seq = Sequence(loop.call_later)

    for spec, cls in components:
        cfg = ComponentConfig(spec["realm"], spec.get("extra") or {})
        entered, finished = seq.hooks()
        klass = watched(cls, ends, lambda finished=finished: (joined(), finished()), stop, entered, finished)
        make = maker(klass, cfg, f"{spec.get('key', '')} ({spec['name']})", stop)
        url = spec["url"]
        sers = serializer_objects(spec.get("serializers"))
        if spec["kind"] == "websocket":
            ws_url = "ws://localhost/ws" if url.startswith("unix:") else url
            factory = WampWebSocketClientFactory(make, url=ws_url, serializers=sers)
        else:
            factory = WampRawSocketClientFactory(make, serializer=(sers or [None])[0])
        try:
            ctx = ssl_context(spec)
        except Exception as e:
            fail(f"component {spec['name']}: its transport's endpoint.tls cannot be used: {e}")
        name = (spec.get("tls") or {}).get("hostname")
        if url.startswith("unix:"):
            connect = lambda factory=factory, url=url: loop.create_unix_connection(factory, url[len("unix:"):])  # noqa: E731
        elif url.startswith(("rs://", "rss://")):
            host, _, port = url.split("://", 1)[1].rpartition(":")
            connect = lambda factory=factory, host=host, port=port, ctx=ctx, name=name: loop.create_connection(  # noqa: E731
                factory, host, int(port), ssl=ctx, server_hostname=(name or host) if ctx else None
            )
        else:
            secure, host, port, _res, _path, _params = parse_url(url)
            if ctx is None and secure:
                import ssl

                ctx = ssl.create_default_context()
            connect = lambda factory=factory, host=host, port=port, ctx=ctx, name=name: loop.create_connection(  # noqa: E731
                factory, host, port, ssl=ctx, server_hostname=(name or host) if ctx else None
            )

        def start(connect=connect, spec=spec, url=url):
            def connected(task):
                if not task.cancelled() and task.exception() is not None:
                    print(f"trellis launcher: component {spec['name']} cannot connect to {url}: {task.exception()}", file=sys.stderr, flush=True)
                    stop(1)

            loop.create_task(connect()).add_done_callback(connected)

        seq.add(start)
    loop.call_soon(seq.next)
    loop.add_signal_handler(signal.SIGTERM, lambda: stop(0))
    loop.add_signal_handler(signal.SIGINT, lambda: stop(0))
    loop.run_forever()
    sys.exit(EXIT["code"])


def run_twisted(components):
    import txaio

    txaio.use_twisted()
    txaio.start_logging(level="info")
    from autobahn.twisted.wamp import ApplicationRunner
    from twisted.internet import reactor

    def stop(code):
        if not EXIT["stopping"]:
            EXIT["stopping"] = True
            EXIT["code"] = code
            reactor.callLater(0, reactor.stop)

    ends = Ends(len(components), SHUTDOWN["mode"], stop)
    # A signal stops the reactor: what ends then is not a failure.
    reactor.addSystemEventTrigger("before", "shutdown", lambda: EXIT.update(stopping=True))

    def connect_failed(f, spec):
        print(f"trellis launcher: component {spec['name']} cannot connect to {spec['url']}: {f.value}", file=sys.stderr, flush=True)
        stop(1)

    seq = Sequence(reactor.callLater)
    for spec, cls in components:
        entered, finished = seq.hooks()
        klass = watched(cls, ends, lambda finished=finished: (joined(), finished()), stop, entered, finished)
        url = spec["url"]
        if url.startswith("unix:"):
            from autobahn.twisted.rawsocket import WampRawSocketClientFactory
            from autobahn.twisted.websocket import WampWebSocketClientFactory
            from autobahn.wamp.types import ComponentConfig
            from twisted.internet.endpoints import UNIXClientEndpoint

            cfg = ComponentConfig(spec["realm"], spec.get("extra") or {})
            make = maker(klass, cfg, f"{spec.get('key', '')} ({spec['name']})", stop)
            sers = serializer_objects(spec.get("serializers"))
            if spec["kind"] == "websocket":
                factory = WampWebSocketClientFactory(make, url="ws://localhost/ws", serializers=sers)
            else:
                factory = WampRawSocketClientFactory(make, serializer=(sers or [None])[0])

            def start_unix(factory=factory, url=url, spec=spec):
                d = UNIXClientEndpoint(reactor, url[len("unix:"):]).connect(factory)
                d.addErrback(connect_failed, spec)

            seq.add(start_unix)
            continue
        tls = None
        if spec.get("tls"):
            try:
                tls = twisted_tls(spec)
            except Exception as e:
                fail(f"component {spec['name']}: its transport's endpoint.tls cannot be used: {e}")
        runner = ApplicationRunner(
            url, spec["realm"], extra=spec.get("extra") or {}, serializers=serializer_objects(spec.get("serializers")), ssl=tls
        )
        name = f"{spec.get('key', '')} ({spec['name']})"

        def make(cfg, klass=klass, name=name):
            return maker(klass, cfg, name, stop)()

        def start_runner(runner=runner, make=make, spec=spec):
            d = runner.run(make, start_reactor=False, auto_reconnect=False)
            d.addErrback(connect_failed, spec)

        seq.add(start_runner)
    reactor.callWhenRunning(seq.next)
    reactor.run()
    sys.exit(EXIT["code"])


def function_component(spec, fw):
    """A `"type": "function"` component: a session that calls the
    configured functions on connect, join, leave and disconnect."""
    funcs = {event: load(name) for event, name in spec["callbacks"].items()}
    if fw == "twisted":
        from autobahn.twisted.wamp import ApplicationSession
    else:
        from autobahn.asyncio.wamp import ApplicationSession

    class FunctionComponent(ApplicationSession):
        def onConnect(self):
            if "connect" in funcs:
                funcs["connect"](self, None)
            self.join(self.config.realm)

        def onJoin(self, details):
            if "join" in funcs:
                return funcs["join"](self, details)

        def onLeave(self, details):
            try:
                if "leave" in funcs:
                    funcs["leave"](self, details)
            finally:
                self.disconnect()

        def onDisconnect(self):
            if "disconnect" in funcs:
                funcs["disconnect"](self, None)

    FunctionComponent.__module__ = "function"
    FunctionComponent.__name__ = FunctionComponent.__qualname__ = spec["name"]
    return FunctionComponent


def authenticators_component(spec, fw, creates):
    """A router's `"type": "function"` authenticators, as Crossbar.io runs
    them: `create(config, controller)` (controller is None) returns
    `authenticate(realm, authid, details)`, either may be async; each is
    registered as the dynamic authenticator the router calls for it."""
    if fw == "twisted":
        from autobahn.twisted.wamp import ApplicationSession
    else:
        from autobahn.asyncio.wamp import ApplicationSession

    def endpoint(authenticate):
        async def call(realm, authid, details):
            result = authenticate(realm, authid, details)
            if hasattr(result, "__await__"):
                result = await result
            return result

        return call

    class FunctionAuthenticators(ApplicationSession):
        async def onJoin(self, details):
            for f in spec["functions"]:
                made = creates[f["create"]](f.get("config") or {}, None)
                if hasattr(made, "__await__"):
                    made = await made
                if not callable(made):
                    raise TypeError(
                        f"{f['create']} (at {f['path']}.create) returned {made!r}, "
                        "not a function authenticate(realm, authid, details)"
                    )
                await self.register(endpoint(made), f["uri"])
                print(f"trellis launcher: function authenticator {f['create']} ready for {f['path']}", flush=True)

    FunctionAuthenticators.__module__ = "trellis"
    return FunctionAuthenticators


def main():
    spec = json.load(sys.stdin)
    SHUTDOWN["mode"] = spec.get("shutdown")
    JOINED["of"] = len(spec["components"])
    classes = {
        i: load(c["classname"])
        for i, c in enumerate(spec["components"])
        if c.get("type") not in ("function", "authenticators")
    }
    creates = {
        f["create"]: load(f["create"])
        for c in spec["components"]
        if c.get("type") == "authenticators"
        for f in c["functions"]
    }
    class_kinds = {framework(cls) for cls in classes.values()}
    # With no classes to go by, authenticators written for Crossbar.io
    # (Twisted) say so by having chosen Twisted when imported.
    import txaio

    chosen = getattr(txaio, "_explicit_framework", None)
    fw = "twisted" if "twisted" in class_kinds or (not class_kinds and chosen == "twisted") else "asyncio"

    if chosen in ("twisted", "asyncio") and chosen != fw:
        fail(
            f"an imported module chose {chosen} (txaio.use_{chosen}()) and the components here run on {fw}: "
            "one interpreter runs one of the two; put the components in another container"
        )

    def build(c):
        if c.get("type") == "authenticators":
            return authenticators_component(c, fw, creates)
        return function_component(c, fw)

    components = [(c, classes[i] if i in classes else build(c)) for i, c in enumerate(spec["components"])]
    kinds = {framework(cls) for _, cls in components}
    if None in kinds:
        names = [c["classname"] for c, cls in components if framework(cls) is None]
        fail(f"{', '.join(names)}: not an autobahn ApplicationSession (autobahn.asyncio.wamp or autobahn.twisted.wamp)")
    if len(kinds) > 1:
        fail("a container runs either asyncio or Twisted components, not both: put them in two containers")
    print(f"trellis launcher: starting {len(components)} {kinds.pop()} component(s)", file=sys.stderr, flush=True)
    if framework(components[0][1]) == "twisted":
        run_twisted(components)
    else:
        run_asyncio(components)


if __name__ == "__main__":
    main()
