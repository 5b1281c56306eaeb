"""A dynamic TLS client-certificate authenticator as a Python router
component, in the shape of Crossbar.io's authentication/tls/dynamic
example: it reads details["transport"]["client_cert"]."""

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError


class CertAuthenticator(ApplicationSession):
    async def onJoin(self, details):
        def authenticate(realm, authid, details):
            cert = details["transport"].get("client_cert")
            if not cert:
                raise ApplicationError("com.example.no_cert", "no client certificate presented")
            cn = cert["subject"]["cn"]
            if cn == "banned-device":
                raise ApplicationError("com.example.invalid_cert", f"certificate {cert['sha1']} denied")
            return {
                "authid": cn,
                "role": "user",
                "extra": {
                    "sha1": cert["sha1"],
                    "issuer_cn": cert["issuer"]["cn"],
                    "expired": cert["expired"],
                    "not_after": cert["not_after"],
                },
            }

        await self.register(authenticate, "com.example.cert_authenticate")
