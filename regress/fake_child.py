#!/usr/bin/env python3
"""A misbehaving child for the regress suite, started by master in place of
a real role program. It reads its configuration from the channel at
descriptor 3 and then, by its argv[0]:
  control: sends a frame that does not decode;
  qmgr:    sends a well-formed Status request, which only control may send.
Then it waits to be killed."""
import os
import socket
import sys
import time

ch = socket.socket(fileno=3)
ch.settimeout(10)
ch.recv(8192)  # the Init message
role = os.path.basename(sys.argv[0])
header = bytes([1, 0, 0, 0, 0, 0, 0, 0])  # version 1, whole message, tag 0
if role == "control":
    ch.send(header + bytes([0xFF, 0xFF, 0xFF]))
else:
    ch.send(header + bytes([2, 1]))  # ToMaster::Status { id: 1 }
time.sleep(30)
