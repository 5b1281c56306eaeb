"""Function authenticators in Crossbar.io's shape (`"type": "function"`,
`"create"`), written as Crossbar.io users write them: on Twisted, `create`
async or not, `authenticate` returning a dict, a Deferred or a coroutine."""

import txaio

txaio.use_twisted()

from autobahn.wamp.exception import ApplicationError  # noqa: E402
from twisted.internet import defer  # noqa: E402


async def create_cra_authenticator(config, controller):
    assert controller is None, controller
    users = config["users"]

    def authenticate(realm, authid, details):
        print(f"WAMP-CRA function authenticator asked for {authid!r} in {realm!r}", flush=True)
        if authid not in users:
            raise ApplicationError("com.example.no_such_user", f"no user {authid!r}")
        return defer.succeed({"secret": users[authid], "role": "frontend", "extra": {"db": config["dbname"]}})

    return authenticate


def create_ticket_authenticator(config, controller):
    tickets = config["tickets"]

    async def authenticate(realm, authid, details):
        if details.get("ticket") != tickets.get(authid):
            raise ApplicationError("com.example.invalid_ticket", f"wrong ticket for {authid!r}")
        return {"role": "frontend"}

    return authenticate
