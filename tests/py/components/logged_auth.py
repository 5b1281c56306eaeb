"""A function authenticator module as Crossbar.io users write them: it
makes its txaio logger at import, before anything chose a framework (Crossbar.io
imports it inside its Twisted worker)."""

import txaio

log = txaio.make_logger()


def create_authenticator(config, controller):
    tickets = config["tickets"]

    def authenticate(realm, authid, details):
        log.info("ticket login for {authid}", authid=authid)
        if details.get("ticket") != tickets.get(authid):
            from autobahn.wamp.exception import ApplicationError

            raise ApplicationError("com.example.invalid_ticket", f"wrong ticket for {authid!r}")
        return {"role": "frontend"}

    return authenticate
