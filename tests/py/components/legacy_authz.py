"""A dynamic authorizer written the legacy way, with three parameters
(no options), as in crossbar-examples' authorization/dynamic examples, and
a component whose role it decides for."""

from autobahn.twisted.wamp import ApplicationSession
from twisted.internet.defer import inlineCallbacks


class LegacyAuthorizer(ApplicationSession):
    @inlineCallbacks
    def onJoin(self, details):
        yield self.register(self.decide, "com.example.legacy_auth")

    def decide(self, session, uri, action):
        return True


class Guarded(ApplicationSession):
    @inlineCallbacks
    def onJoin(self, details):
        yield self.register(lambda: "guarded ok", "com.example.guarded")
