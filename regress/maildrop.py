"""Writes a maildrop stream (doc/maildrop-format.md) to stdout, written
independently of the Rust code so the regress cases check the format as
documented.  Usage: maildrop.py SENDER RCPT... < content
Options by environment: DROP_TRUNCATE=N cuts the stream after N bytes;
DROP_NO_END=1 leaves out the END record; DROP_ORCPT=N gives every
recipient an ORCPT parameter of N bytes."""
import os
import struct
import sys
import zlib


def s(b):
    return struct.pack("<H", len(b)) + b


def rec(tag, payload):
    return tag + struct.pack("<I", len(payload)) + payload


def main():
    sender = sys.argv[1].encode()
    rcpts = [a.encode() for a in sys.argv[2:]]
    content = sys.stdin.buffer.read()
    out = b"MTAD" + struct.pack("<HH", 1, 0)
    out += rec(b"SNDR", s(sender))
    out += rec(b"OPTS", bytes([0, 0, 0]) + b"\x00" + b"\x00")
    orcpt_len = int(os.environ.get("DROP_ORCPT", "0"))
    for r in rcpts:
        if orcpt_len:
            orcpt = (b"rfc822;" + b"o" * orcpt_len)[:orcpt_len]
            out += rec(b"RCPT", s(r) + b"\x01" + s(orcpt) + b"\x00")
        else:
            out += rec(b"RCPT", s(r) + b"\x00" + b"\x00")
    for i in range(0, len(content), 65536):
        out += rec(b"DATA", content[i:i + 65536])
    if not os.environ.get("DROP_NO_END"):
        crc = zlib.crc32(out) & 0xFFFFFFFF
        out += rec(b"END ", struct.pack("<QII", len(content), crc, 0))
    cut = os.environ.get("DROP_TRUNCATE")
    if cut:
        out = out[: int(cut)]
    sys.stdout.buffer.write(out)


main()
