#!/usr/bin/env python3
"""A next hop that never answers: accepts connections on 127.0.0.1:PORT
and holds them without a greeting, so that mta's deliveries stall and a
measurement sees its intake alone. Holds at most 4,096 connections;
exits after SECONDS.
  stall.py PORT SECONDS"""
import selectors
import socket
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
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
        if len(held) < 4096:
            held.append(conn)
        else:
            conn.close()
