"""MQTT 3.1.1 packets written by hand, for the tests that need bytes a
client library will not send (malformed input, unacknowledged messages)."""

import struct


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
