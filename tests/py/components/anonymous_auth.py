"""A dynamic anonymous authenticator as a Python router component, in the
shape of Crossbar.io's authentication/anonymous/dynamic example: it decides
the role (and here the authid) of sessions that join without credentials."""

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError


class AnonymousAuthenticator(ApplicationSession):
    async def onJoin(self, details):
        def authenticate(realm, authid, details):
            # authid is the HELLO's wish, or None.
            if authid == "banned":
                raise ApplicationError("com.example.banned", "this visitor is banned")
            peer = details["transport"]["peer"]
            principal = {"role": "public", "extra": {"eins": "zwo", "peer_seen": bool(peer)}}
            if authid is not None:
                principal["authid"] = "visitor-" + authid
            return principal

        await self.register(authenticate, "com.example.authenticate_anonymous")
