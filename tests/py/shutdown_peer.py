"""Join, then report the reason the router gives when it shuts down."""

import asyncio
import sys

from wamp_client import connect, wait


async def main():
    s = await connect(sys.argv[1], "json")
    details = await wait(s.left, "the router's GOODBYE", 20)
    print("left", details.reason, flush=True)


asyncio.run(main())
