"""WebSocket options of Crossbar.io configs: permessage-deflate (with the
`websockets` library, a real RFC 7692 client, and frame by frame over a raw
socket), a deflate bomb, auto_fragment_size, auto_ping_size,
close_handshake_timeout, fail_by_drop, allow_null_origin, enable_webstatus.

Usage: python ws_options_check.py PORT_A PORT_B PORT_C ROUTER_PID
  A: compression, auto_fragment_size 1000, auto_ping_size 20 (pings after
     700 ms of silence), close_handshake_timeout 200, allowed_origins
  B: fail_by_drop, allow_null_origin false, enable_webstatus false,
     allowed_origins
  C: close_handshake_timeout 8000
"""

import asyncio
import base64
import json
import os
import struct
import sys
import zlib

import websockets

from wamp_client import check, connect, leave

T = 10


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawWs:
    """A WebSocket client written out frame by frame: what the checks need
    to see (RSV1, fragments, ping payloads, close codes) or to send (bombs,
    violations)."""

    @classmethod
    async def open(cls, port, ext=None, origin=None, path="/"):
        self = cls()
        self.r, self.w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), T)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: wamp.2.json\r\n"
        )
        if ext:
            req += f"Sec-WebSocket-Extensions: {ext}\r\n"
        if origin:
            req += f"Origin: {origin}\r\n"
        self.w.write((req + "\r\n").encode())
        head = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), T)
        self.status = int(head.split()[1])
        self.headers = {}
        for line in head.decode().split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k:
                self.headers[k.strip().lower()] = v.strip()
        return self

    def send_frame(self, opcode, payload, fin=True, rsv1=False, rsv2=False):
        mask = os.urandom(4)
        b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | opcode
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", b0, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.w.write(head + mask + body)

    def send_json(self, msg, compress=None):
        data = json.dumps(msg).encode()
        if compress is not None:
            data = compress.compress(data) + compress.flush(zlib.Z_SYNC_FLUSH)
            assert data.endswith(b"\x00\x00\xff\xff")
            self.send_frame(1, data[:-4], rsv1=True)
        else:
            self.send_frame(1, data)

    async def read_frame(self, timeout=T):
        h = await asyncio.wait_for(self.r.readexactly(2), timeout)
        fin, rsv1, opcode = h[0] & 0x80, h[0] & 0x40, h[0] & 0x0F
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.r.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.r.readexactly(8))[0]
        payload = await asyncio.wait_for(self.r.readexactly(n), timeout)
        return bool(fin), bool(rsv1), opcode, payload

    async def read_message(self, inflate):
        """One data message: (frames, text), inflated if RSV1 says so."""
        frames = []
        while True:
            f = await self.read_frame()
            if f[2] >= 8:
                continue
            frames.append(f)
            if f[0]:
                break
        data = b"".join(f[3] for f in frames)
        if frames[0][1]:
            data = inflate.decompress(data + b"\x00\x00\xff\xff")
        return frames, json.loads(data)

    async def expect_close(self, timeout=T):
        """The close code the router sends, or None if it dropped the
        connection without one."""
        try:
            while True:
                fin, rsv1, opcode, payload = await self.read_frame(timeout)
                if opcode == 8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None

    async def close_frame(self):
        """Read up to the router's close frame; False if none came."""
        try:
            while (await self.read_frame())[2] != 8:
                pass
            return True
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return False

    async def eof_within(self, seconds):
        """Did the router end the TCP connection within `seconds`?"""
        try:
            while True:
                if await asyncio.wait_for(self.r.read(4096), seconds) == b"":
                    return True
        except asyncio.TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.w.close()


HELLO = [1, "realm1", {"roles": {"publisher": {}, "subscriber": {}, "caller": {}}}]


async def compression(port_a):
    url = f"ws://127.0.0.1:{port_a}/"
    # The websockets library offers permessage-deflate by default.
    async with websockets.connect(url, subprotocols=["wamp.2.json"], max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        check(ext.startswith("permessage-deflate"), f"websockets negotiated permessage-deflate ({ext})")
        await ws.send(json.dumps(HELLO))
        check(json.loads(await ws.recv())[0] == 2, "HELLO/WELCOME through deflate")
        await ws.send(json.dumps([32, 1, {}, "com.deflate.topic"]))
        check(json.loads(await ws.recv())[0] == 33, "SUBSCRIBED")
        big = "balloon " * 20000 + os.urandom(3000).hex()
        await ws.send(json.dumps([16, 2, {"exclude_me": False, "acknowledge": True}, "com.deflate.topic", [big]]))
        got = [json.loads(await ws.recv()) for _ in range(2)]
        event = [m for m in got if m[0] == 36]
        check(event and event[0][4] == [big], "a 166 KB event comes back whole, compressed both ways")

    # Frame by frame: RSV1 on the router's messages, fragments of at most
    # auto_fragment_size bytes, a compressed message from the client.
    raw = await RawWs.open(port_a, ext="permessage-deflate; client_max_window_bits")
    check(raw.status == 101 and raw.headers.get("sec-websocket-extensions") == "permessage-deflate",
          "the raw client's offer accepted")
    deflate = zlib.compressobj(wbits=-15)
    inflate = zlib.decompressobj(wbits=-15)
    raw.send_json(HELLO, compress=deflate)
    frames, welcome = await raw.read_message(inflate)
    check(welcome[0] == 2 and frames[0][1], "a compressed HELLO answered by a compressed WELCOME")
    raw.send_json([32, 1, {}, "com.deflate.raw"], compress=deflate)
    frames, subscribed = await raw.read_message(inflate)
    check(subscribed[0] == 33, "a compressed SUBSCRIBE")
    payload = os.urandom(10000).hex()
    raw.send_json([16, 2, {"exclude_me": False}, "com.deflate.raw", [payload]], compress=deflate)
    frames, event = await raw.read_message(inflate)
    check(event[0] == 36 and event[4] == [payload], "the EVENT inflates to what was published")
    check(len(frames) > 5 and all(len(f[3]) <= 1000 for f in frames),
          f"auto_fragment_size: {len(frames)} frames of at most 1000 bytes")
    check(frames[0][1] and frames[0][2] == 1 and all(not f[1] and f[2] == 0 for f in frames[1:]),
          "RSV1 and the opcode on the first fragment only")
    check(not any(f[0] for f in frames[:-1]) and frames[-1][0], "FIN on the last fragment only")
    # A plain (uncompressed) message is still fine on a deflate connection.
    raw.send_json([16, 3, {"exclude_me": False}, "com.deflate.raw", ["x"]])
    frames, event = await raw.read_message(inflate)
    check(event[4] == ["x"], "an uncompressed message on a deflate connection")
    # Silence: the router pings with auto_ping_size bytes.
    while True:
        fin, rsv1, opcode, body = await raw.read_frame(timeout=5)
        if opcode == 9:
            break
    check(len(body) == 20, f"a ping of auto_ping_size bytes ({len(body)})")
    raw.close()

    # Offers the router cannot honour run uncompressed.
    plain = await RawWs.open(port_a, ext="permessage-deflate; server_max_window_bits=8, x-webkit-deflate-frame")
    check(plain.status == 101 and "sec-websocket-extensions" not in plain.headers,
          "an offer it cannot honour: no extension, still connected")
    plain.close()


async def bomb(port_a, pid):
    url = f"ws://127.0.0.1:{port_a}/"
    bystander = await connect(url, "json")
    before = rss_kib(pid)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = zeros.compress(b"\0" * (64 << 20)) + zeros.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]
    check(len(data) < 100_000, f"the bomb: {len(data)} bytes that inflate to 64 MiB")
    peak = before
    for _ in range(3):
        raw = await RawWs.open(port_a, ext="permessage-deflate")
        raw.send_json(HELLO)
        await raw.read_message(zlib.decompressobj(wbits=-15))
        raw.send_frame(1, data, rsv1=True)
        code = await raw.expect_close()
        peak = max(peak, rss_kib(pid))
        check(code == 1009, f"the bomb gets close 1009 (got {code})")
        raw.close()
    grew = peak - before
    check(grew < 16 * 1024, f"the router's memory stays flat ({grew} KiB more after three bombs)")
    n = await bystander.call("wamp.session.count")
    check(n >= 1, "a bystander session is unaffected")
    await leave(bystander)

    raw = await RawWs.open(port_a, ext="permessage-deflate")
    raw.send_json(HELLO)
    await raw.read_message(zlib.decompressobj(wbits=-15))
    raw.send_frame(1, b"\xff" * 50, rsv1=True)
    check(await raw.expect_close() == 1002, "invalid deflate data: close 1002")
    raw.close()


async def violations(port_a, port_b, port_c):
    # fail_by_drop off (A): a violation gets a close frame; on (B): dropped.
    a = await RawWs.open(port_a)
    a.send_frame(1, b"[]", rsv2=True)
    check(await a.expect_close() == 1002, "a protocol violation: close 1002")
    a.close()
    b = await RawWs.open(port_b)
    check(b.status == 101, "B: upgraded")
    b.send_frame(1, b"[]", rsv2=True)
    check(await b.expect_close() is None, "fail_by_drop: the violator is dropped without a close frame")
    b.close()
    # close_handshake_timeout: the router's close goes unanswered.
    a = await RawWs.open(port_a)
    a.send_frame(1, b"[]", rsv2=True)
    check(await a.close_frame(), "A sends its close frame (after the ABORT)")
    check(await a.eof_within(3), "close_handshake_timeout 200: the connection ends soon after")
    a.close()
    c = await RawWs.open(port_c)
    c.send_frame(1, b"[]", rsv2=True)
    check(await c.close_frame(), "C sends its close frame (after the ABORT)")
    check(not await c.eof_within(3), "close_handshake_timeout 8000: still waiting for the answer after 3 s")
    c.close()

    # Origins: "null" is let in unless allow_null_origin is false.
    a = await RawWs.open(port_a, origin="null")
    check(a.status == 101, "Origin: null accepted (allow_null_origin)")
    a.close()
    a = await RawWs.open(port_a, origin="https://evil.org")
    check(a.status == 403, "an unlisted origin still refused")
    a.close()
    b = await RawWs.open(port_b, origin="null")
    check(b.status == 403, "Origin: null refused with allow_null_origin false")
    b.close()

    # enable_webstatus: a status page (A) or 426 (B).
    for port, want in [(port_a, 200), (port_b, 426)]:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(r.read(), T)
        w.close()
        status = int(data.split()[1])
        check(status == want and b"WAMP WebSocket endpoint" in data, f"a plain GET: {status}")


async def main(port_a, port_b, port_c, pid):
    await compression(port_a)
    await bomb(port_a, pid)
    await violations(port_a, port_b, port_c)


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
