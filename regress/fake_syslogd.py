#!/usr/bin/env python3
"""A minimal syslogd for the regress suite: binds an AF_UNIX datagram
socket at argv[1] and appends every message to argv[2], one per line,
until killed or for at most argv[3] seconds (default 60)."""
import os
import socket
import sys
import time

path, out = sys.argv[1], sys.argv[2]
limit = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
s.settimeout(0.2)
end = time.time() + limit
with open(out, "ab", buffering=0) as f:
    while time.time() < end:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        f.write(data.rstrip(b"\n") + b"\n")
