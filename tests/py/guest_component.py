"""A guest worker: an autobahn-python Component that finds the router in
TRELLIS_ROUTER_URL / TRELLIS_ROUTER_REALM, registers com.guest.ping, and
reconnects by itself whenever the router goes away."""

import os
import sys

from autobahn.asyncio.component import Component, run

joins = 0

component = Component(
    transports=[
        {
            "url": os.environ["TRELLIS_ROUTER_URL"],
            "max_retries": -1,
            "initial_retry_delay": 0.1,
            "max_retry_delay": 0.5,
            "retry_delay_growth": 1.5,
        }
    ],
    realm=os.environ["TRELLIS_ROUTER_REALM"],
)


@component.on_join
async def joined(session, details):
    global joins
    joins += 1

    def ping():
        # Its parent is the shim the controller started (trellis status
        # shows the shim's pid).
        return {"pid": os.getpid(), "ppid": os.getppid(), "joins": joins, "worker": os.environ.get("TRELLIS_WORKER_ID")}

    await session.register(ping, "com.guest.ping")
    print(f"guest component joined (join {joins})", flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)


if __name__ == "__main__":
    run([component], log_level="warn")
