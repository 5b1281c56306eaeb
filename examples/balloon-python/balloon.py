"""The balloon example's backend, a container component: logs in as karina
over WebSocket with WAMP-CRA and registers com.balloon.pop."""

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp import auth
from autobahn.wamp.types import PublishOptions
from twisted.internet.defer import inlineCallbacks

USER = "karina"
USER_SECRET = "secret2"


def say(text):
    print(f"[balloon] {text}", flush=True)


class App(ApplicationSession):
    def onConnect(self):
        self.join(self.config.realm, ["wampcra"], USER)
        say(f"onConnect called: {__name__}")

    def onChallenge(self, challenge):
        if challenge.method == "wampcra":
            if "salt" in challenge.extra:
                key = auth.derive_key(
                    USER_SECRET,
                    challenge.extra["salt"],
                    challenge.extra["iterations"],
                    challenge.extra["keylen"],
                )
            else:
                key = USER_SECRET
            return auth.compute_wcs(key, challenge.extra["challenge"])
        raise Exception(f"Invalid authmethod {challenge.method}")

    @inlineCallbacks
    def onJoin(self, details):
        # Publish to a topic: the backend role may not, and says so.
        for topic in ["com.example.oncounter"]:
            try:
                yield self.publish(topic, "hello", options=PublishOptions(acknowledge=True))
                say(f"ok, event published to topic {topic}")
            except Exception as e:
                say(f"publication to topic {topic} failed: {e}")

        def pop(x, y):
            say(f"pop() called with {x} and {y}")
            return x + y

        try:
            yield self.register(pop, "com.balloon.pop")
            say("pop() registered")
        except Exception as e:
            say(f"could not register procedure: {e}")
