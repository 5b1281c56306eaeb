"""A dynamic authenticator as a Python router component, in the shape of
Crossbar.io's (and the seed's) AuthenticatorSession."""

import asyncio

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError

USERS = {"joe": {"ticket": "secret", "role": "user"}}


class AuthenticatorSession(ApplicationSession):
    async def onJoin(self, details):
        # A slow start (extra.delay seconds) before the procedure exists:
        # clients must not be admitted meanwhile.
        await asyncio.sleep(self.config.extra.get("delay", 0))

        def authenticate(realm, authid, details):
            user = USERS.get(authid)
            if user is None or details.get("ticket") != user["ticket"]:
                raise ApplicationError("com.example.invalid_ticket", f"wrong ticket for {authid!r}")
            return {"role": user["role"], "extra": {"via": self.config.extra.get("name")}}

        await self.register(authenticate, "com.example.authenticate")
        print(f"AuthenticatorSession joined {details.realm} as {details.authrole}", flush=True)
