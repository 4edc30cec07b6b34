#!/usr/bin/env python3
"""A next hop that never answers: accepts connections on 127.0.0.1:PORT
and holds them without a greeting, so that mta's deliveries stall and a
measurement sees its intake alone. Holds at most 4,096 connections
(raising its own limit on open files for them, so that a soft limit
of 1,024 does not end it on EMFILE; past them, it closes what it
accepts); exits after SECONDS.
  stall.py PORT SECONDS"""
import resource
import selectors
import socket
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = 4096 + 64 if hard == resource.RLIM_INFINITY else min(hard, 4096 + 64)
if soft != resource.RLIM_INFINITY and soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = want
room = 4096 if soft == resource.RLIM_INFINITY else min(4096, soft - 64)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(1024)
sel = selectors.DefaultSelector()
sel.register(listener, selectors.EVENT_READ)
held = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in sel.select(timeout=min(0.5, max(0.0, end - time.monotonic()))):
        conn, _ = listener.accept()
        if len(held) < room:
            held.append(conn)
        else:
            conn.close()
