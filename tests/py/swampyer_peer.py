"""swampyer (a Python WAMP client users run, not autobahn) against a Trellis
node with the default transport options, plus raw checks of the tolerance
the specification leaves to the router.

Usage: python swampyer_peer.py WS_URL RAWSOCKET_PORT TICKET_URL IDLE_SECONDS

- swampyer sends disclose_me on every call: its calls work and the callee
  sees who called.
- swampyer never answers a RawSocket ping: its idle RawSocket session
  survives IDLE_SECONDS, and the router's end of the connection has TCP
  keepalive instead (read from /proc/net/tcp).
- null options are absent ones; a HELLO with a null realm joins the realm
  its principal names, or is told it named none.
"""

import asyncio
import sys

from autobahn.wamp.types import RegisterOptions
from swampyer import WAMPClient

from raw_client import ROLES, Raw
from wamp_client import connect, leave


def tcp_timer(router_port, client_port):
    """The timer of the router's socket to the client: /proc/net/tcp's
    `tr` field (2 is keepalive)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                local, remote = cols[1], cols[2]
                if int(local.rsplit(":", 1)[1], 16) == router_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                    return int(cols[5].split(":")[0], 16)
    raise AssertionError(f"no socket from port {router_port} to {client_port} in /proc/net/tcp")


async def disclose_me(ws_url, loop):
    callee = await connect(ws_url, "json")
    await callee.register(lambda details=None: details.caller, "com.interop.who",
                          options=RegisterOptions(details_arg="details"))
    client = await loop.run_in_executor(None, lambda: WAMPClient(url=ws_url, realm="realm1", auto_reconnect=False).start())
    try:
        who = await loop.run_in_executor(None, client.call, "com.interop.who")
        assert who == client.session_id, f"the callee saw caller {who}, swampyer is {client.session_id}"
    finally:
        await loop.run_in_executor(None, client.shutdown)
    await leave(callee)
    print("ok swampyer calls with disclose_me and the callee sees it", flush=True)


async def idle_rawsocket(ws_url, rs_port, idle, loop):
    callee = await connect(ws_url, "json")
    await callee.register(lambda x: x, "com.interop.echo")
    rs_url = f"tcpip://127.0.0.1:{rs_port}"
    client = await loop.run_in_executor(None, lambda: WAMPClient(url=rs_url, realm="realm1", auto_reconnect=False).start())
    try:
        assert await loop.run_in_executor(None, client.call, "com.interop.echo", "before") == "before"
        client_port = client.transport.socket.getsockname()[1]
        # Once the last reply is acknowledged (no retransmit timer, 1),
        # an idle socket with keepalive shows its keepalive timer (2).
        for _ in range(100):
            timer = tcp_timer(rs_port, client_port)
            if timer == 2:
                break
            await asyncio.sleep(0.02)
        assert timer == 2, f"the router's socket has timer {timer}, not TCP keepalive (2)"
        await asyncio.sleep(idle)
        got = await loop.run_in_executor(None, client.call, "com.interop.echo", "after")
        assert got == "after", got
    finally:
        await loop.run_in_executor(None, client.shutdown)
    await leave(callee)
    print(f"ok an idle swampyer RawSocket session lives {idle} s (TCP keepalive on)", flush=True)


async def tolerance(ws_url, ticket_url):
    r = await Raw.open(ws_url)
    await r.hello()
    await r.send([32, 1, {"match": None, "get_retained": None}, "com.interop.t"])
    assert (await r.recv())[:2] == [33, 1], "a null match is not the default"
    await r.send([48, 2, {"timeout": None, "disclose_me": None}, "wamp.session.count"])
    assert (await r.recv())[:2] == [50, 2]
    await r.ws.close()
    # A null realm: anonymous names none, so it is refused, saying so...
    r = await Raw.open(ws_url)
    await r.send([1, None, ROLES])
    await r.expect_abort("wamp.error.no_such_realm", "named no realm")
    # ...while a principal with a realm joins that realm.
    r = await Raw.open(ticket_url)
    await r.send([1, None, {**ROLES, "authmethods": ["ticket"], "authid": "joe"}])
    assert (await r.recv())[0] == 4
    await r.send([5, "joe-ticket", {}])
    welcome = await r.recv()
    assert welcome[0] == 2 and welcome[2]["realm"] == "realm1", welcome
    await r.ws.close()
    print("ok null options and a null realm", flush=True)


async def main():
    ws_url, rs_port, ticket_url, idle = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    loop = asyncio.get_running_loop()
    await tolerance(ws_url, ticket_url)
    await disclose_me(ws_url, loop)
    await idle_rawsocket(ws_url, rs_port, idle, loop)


if __name__ == "__main__":
    asyncio.run(main())
