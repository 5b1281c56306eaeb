"""The callee of the Python-component benchmark (scripts/bench): a Twisted
autobahn component, as Crossbar.io's containers run them, that registers
bench.echo and answers with its argument. Trellis and Crossbar.io run this
same class in a container worker over a Unix socket."""

from autobahn.twisted.wamp import ApplicationSession


class Echo(ApplicationSession):
    async def onJoin(self, details):
        await self.register(lambda blob: blob, "bench.echo")
        print(f"bench_echo.Echo joined {details.realm}", flush=True)
