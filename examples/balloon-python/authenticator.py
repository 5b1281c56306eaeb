"""The balloon example's dynamic authenticator, a router component.

It logs itself in as anohni over WAMP-CRA (under a router, Trellis as
Crossbar.io joins router components with their configured role, so the
challenge never comes) and registers com.balloon.authenticate, which answers
the router's WAMP-CRA logins from the user database below.
"""

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp import auth
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import inlineCallbacks

# Our user "database".
USERDB = {
    "karina": {
        "secret": "secret2",
        "role": "backend",
    },
    "ingemar": {
        # The session gets another authid than the one it logged in with.
        "authid": "ID09125",
        "secret": "123456",
        "role": "balloonpopper",
    },
    "anohni": {
        # A salted secret: derive_key("secret1", "salt123", 100, 16).
        "secret": "prq7+YkJ1/KlW1X0YczMHw==",
        "role": "authenticator",
        "salt": "salt123",
        "iterations": 100,
        "keylen": 16,
    },
}

USER = "anohni"
USER_SECRET = "secret1"


def say(text):
    print(f"[authenticator] {text}", flush=True)


class AuthenticatorSession(ApplicationSession):
    def onConnect(self):
        say(f"connected; joining realm {self.config.realm!r} as {USER!r} with WAMP-CRA")
        self.join(self.config.realm, ["wampcra"], USER)

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
        def authenticate(realm, authid, details):
            say(f"WAMP-CRA dynamic authenticator invoked: realm={realm!r}, authid={authid!r}")
            if authid in USERDB:
                return USERDB[authid]
            raise ApplicationError("com.example.no_such_user", f"could not authenticate session - no such user {authid}")

        try:
            yield self.register(authenticate, "com.balloon.authenticate")
            say("WAMP-CRA dynamic authenticator registered")
        except Exception as e:
            say(f"failed to register the dynamic authenticator: {e}")
