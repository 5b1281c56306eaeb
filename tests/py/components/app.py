"""Python components the end-to-end tests run in Trellis containers, in
the shape Crossbar.io runs them (classes by classname, ComponentConfig with
realm and extra)."""

import asyncio
import os

from autobahn.asyncio.wamp import ApplicationSession


class Adder(ApplicationSession):
    """Registers com.example.add2; its offset comes from `extra`."""

    async def onJoin(self, details):
        offset = self.config.extra.get("offset", 0)

        def add2(a, b):
            return a + b + offset

        await self.register(add2, "com.example.add2")
        print(f"Adder joined {details.realm} as session {details.session}", flush=True)


class Crasher(ApplicationSession):
    """Registers com.example.crash, which takes its interpreter down."""

    async def onJoin(self, details):
        def crash():
            print("Crasher: exiting the interpreter on purpose", flush=True)
            os._exit(1)

        await self.register(crash, "com.example.crash")
        await self.register(lambda: os.getpid(), "com.example.crasher_pid")
        # The interpreter's parent: the container worker.
        await self.register(lambda: os.getppid(), "com.example.crasher_parent")


class NotASession:
    """Importable, but not a component: the launcher refuses it at start."""


class Leaver(ApplicationSession):
    """Does its job and leaves: a component that stopped, not failed."""

    async def onJoin(self, details):
        print("Leaver: done, leaving", flush=True)
        self.leave()


class BadJoin(ApplicationSession):
    """onJoin raises: a component that failed, with its traceback logged."""

    async def onJoin(self, details):
        raise RuntimeError("BadJoin cannot start: the database is gone")


class BadInit(ApplicationSession):
    """Its constructor raises: it cannot even be made."""

    def __init__(self, config=None):
        1 / 0


class SlowJoin(ApplicationSession):
    """Takes two seconds in onJoin: its router is not ready before."""

    async def onJoin(self, details):
        await asyncio.sleep(2)
        print("SlowJoin: joined after 2 s", flush=True)
