"""A dynamic WAMP-SCRAM authenticator as a Python router component: it
answers with a credential from its user table (here its `extra`), as a
Crossbar.io authenticator answers from a database; the password is never
known to it."""

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError


class ScramAuthenticator(ApplicationSession):
    async def onJoin(self, details):
        users = self.config.extra["principals"]

        def authenticate(realm, authid, details):
            assert details["authmethod"] == "scram", details
            user = users.get(authid)
            if user is None:
                raise ApplicationError("com.example.no_such_user", f"no user {authid!r}")
            return dict(user, extra={"source": "scram_auth"})

        await self.register(authenticate, "com.example.scram_authenticate")
