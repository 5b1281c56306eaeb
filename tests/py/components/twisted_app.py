"""A Twisted component, as many Crossbar.io nodes run them."""

from autobahn.twisted.wamp import ApplicationSession


class Greeter(ApplicationSession):
    def onJoin(self, details):
        return self.register(lambda name: f"hello {name}", "com.example.greet")
