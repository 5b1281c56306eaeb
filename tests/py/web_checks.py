"""The web transport over plain sockets: static files, traversal attempts,
limits; then autobahn-python over its WebSocket path.

Usage: python web_checks.py PORT
"""

import asyncio
import sys

from raw_client import send_until_closed
from wamp_client import check, connect, leave


async def get(port, path, method="GET", extra=b""):
    raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + extra + b"\r\n"
    data = await send_until_closed("127.0.0.1", port, raw)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


async def trickle_until_closed(port):
    """Send one byte of a request head every 100 ms (at most 40); the
    seconds until the server closed, or None if it never did."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_event_loop()
    t0 = loop.time()
    try:
        for _ in range(40):
            try:
                w.write(b"X")
                await w.drain()
                if await asyncio.wait_for(r.read(1), 0.1) == b"":
                    return round(loop.time() - t0, 1)
            except asyncio.TimeoutError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                return round(loop.time() - t0, 1)
        return None
    finally:
        w.close()


def responses(data):
    """Split concatenated HTTP responses (each with a Content-Length):
    [(status, headers, body)]."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        n = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        data = rest[n:]
    return out


async def keep_alive(port):
    """HTTP/1.1 keep-alive: requests one after another on one connection,
    pipelined ones too, until the client says close."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for i in range(3):
        w.write(b"GET /js/app.js HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        check(b"Connection: keep-alive" in head, f"request {i + 1} on one connection: kept alive")
        await r.readexactly(16)
    # Two pipelined requests in one write; the second asks to close.
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /docs/readme.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(r.read(), 5)
    w.close()
    got = responses(data.replace(b"Content-Length: 5\r\n", b"Content-Length: 0\r\n"))
    check([g[0] for g in got] == [200, 200] and got[0][2] == b"<h1>balloon</h1>\n", "pipelined requests answered in order")
    check(got[1][1]["connection"] == "close", "Connection: close honoured, and the connection closed")
    # HTTP/1.0 closes; a body a static path does not read closes too.
    data = await send_until_closed("127.0.0.1", port, b"GET / HTTP/1.0\r\n\r\n")
    check(b"Connection: close" in data, "HTTP/1.0: closed after the answer")
    data = await send_until_closed("127.0.0.1", port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    check(data.startswith(b"HTTP/1.1 405") and b"Connection: close" in data, "an unread body: answered, then closed")


async def main(port):
    s, h, b = await get(port, "/")
    check(s == 200 and b == b"<h1>balloon</h1>\n" and h["content-type"].startswith("text/html"), "index.html at /")
    s, h, b = await get(port, "/js/app.js")
    check(s == 200 and "javascript" in h["content-type"] and b == b"console.log(1);\n", "a script with its content type")
    s, h, b = await get(port, "/js/app.js", method="HEAD")
    check(s == 200 and b == b"" and h["content-length"] == "16", "HEAD: headers only")
    s, h, _ = await get(port, "/js")
    check(s == 301 and h["location"] == "/js/", "a directory without its slash redirects")
    s, h, b = await get(port, "/docs/readme.txt")
    check(s == 200 and b == b"docs\n", "a second static path")
    for p in ["/../secret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
              "/js/..%2f..%2fsecret.txt", "/escape", "/nothing-here", "/docs/../../secret.txt"]:
        s, h, b = await get(port, p)
        check(s == 404 and b == b"404 Not Found\n", f"404 for {p}, saying nothing else")
    s, _, _ = await get(port, "/", method="POST", extra=b"Content-Length: 0\r\n")
    check(s == 405, "POST refused")
    s, _, b = await get(port, "/ws")
    check(s == 200 and b"WAMP WebSocket endpoint" in b, "a plain GET on the WebSocket path: its status page")
    big = b"".join(f"X-Filler-{i}: {'a' * 200}\r\n".encode() for i in range(100))
    s, _, _ = await get(port, "/", extra=big)
    check(s == 431, "a 20 KB head: 431")
    many = b"".join(f"X-{i}: 1\r\n".encode() for i in range(80))
    s, _, _ = await get(port, "/", extra=many)
    check(s == 431, "80 header lines: 431")
    s, _, _ = await get(port, "/", extra=b"Bad Header Line\r\n")
    check(s == 400, "a malformed head: 400")
    await keep_alive(port)
    # A slowloris trickling its head is cut off at the handshake deadline.
    elapsed = await trickle_until_closed(port)
    check(elapsed is not None and elapsed < 3, f"slowloris closed after {elapsed}s")

    for ser in ("json", "msgpack"):
        sess = await connect(f"ws://127.0.0.1:{port}/ws", ser)
        await sess.register(lambda x, y: x + y, f"com.web.add.{ser}")
        check(await sess.call(f"com.web.add.{ser}", 2, 3) == 5, f"WAMP over the ws path ({ser})")
        await leave(sess)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
