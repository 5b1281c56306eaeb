"""MQTT 3.1.1 packets written by hand, for the tests that need bytes a
client library will not send (malformed input, unacknowledged messages)."""

import socket
import struct

T = 10


def raw_string(b):
    """An MQTT string: a 2-byte length, then the bytes."""
    return struct.pack(">H", len(b)) + b


def raw_packet(first, body):
    """A packet: its first byte, the remaining length, the body."""
    out = bytearray([first])
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


def raw_connect(client_id, will=None, clean=True, keep_alive=30):
    """A CONNECT for `client_id` (keep-alive 30 s unless told otherwise),
    with a will (topic, payload) and a clean session unless told
    otherwise."""
    flags = 0x02 if clean else 0x00
    payload = raw_string(client_id.encode())
    if will:
        flags |= 0x04
        payload += raw_string(will[0].encode()) + raw_string(will[1])
    return raw_packet(0x10, raw_string(b"MQTT") + bytes([4, flags]) + struct.pack(">H", keep_alive) + payload)


class Raw:
    """An MQTT 3.1.1 client on a plain socket: it reads packets whole and
    acknowledges only when told to."""

    def __init__(self, host, port, client_id, clean=True, will=None, keep_alive=30):
        self.s = socket.create_connection((host, port), timeout=T)
        self.s.sendall(raw_connect(client_id, will=will, clean=clean, keep_alive=keep_alive))
        self.buf = b""

    def packet(self):
        """(first byte, body) of the next packet."""
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = None
                if i is not None and len(self.buf) >= i + n:
                    first, body = self.buf[0], self.buf[i:i + n]
                    self.buf = self.buf[i + n:]
                    return first, body
            got = self.s.recv(4096)
            assert got, "closed"
            self.buf += got

    def publish(self):
        """(dup, topic, packet id, payload) of the next PUBLISH (QoS 1)."""
        first, body = self.packet()
        assert first & 0xF0 == 0x30, f"not a PUBLISH: {first:#x}"
        (tl,) = struct.unpack(">H", body[:2])
        topic = body[2:2 + tl].decode()
        (pid,) = struct.unpack(">H", body[2 + tl:4 + tl])
        return bool(first & 0x08), topic, pid, body[4 + tl:]

    def puback(self, pid):
        self.s.sendall(b"\x40\x02" + struct.pack(">H", pid))

    def connack(self):
        """The CONNACK's return code."""
        first, body = self.packet()
        assert first == 0x20 and len(body) == 2, (first, body)
        return body[1]

    def closed(self, within=T):
        """Whether the server closes the connection within `within` s
        (anything it sends first is skipped)."""
        self.s.settimeout(within)
        try:
            while self.s.recv(4096):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.s.settimeout(T)

    def subscribe(self, filt):
        self.s.sendall(raw_packet(0x82, struct.pack(">H", 1) + raw_string(filt.encode()) + b"\x01"))
        first, body = self.packet()
        assert (first, body) == (0x90, b"\x00\x01\x01"), (first, body)

    def nothing(self, within=0.5):
        self.s.settimeout(within)
        try:
            got = self.s.recv(4096)
        except socket.timeout:
            got = b""
        finally:
            self.s.settimeout(T)
        assert not self.buf + got, f"unexpected {self.buf + got!r}"
