#!/usr/bin/env python3
"""A misbehaving child for the regress suite, started by master in place of
a real role program. It reads its configuration from the channel at
descriptor 3 and then, by its argv[0]:
  control: sends a frame that does not decode;
  qmgr:    sends a well-formed Status request, which only control may send;
Then it waits to be killed.
  bounce:  says it is ready, waits for master's Stop (ignoring the rest), then
           sends 100 log records at once and exits without a pause:
           master must log every one, though it may reap the process
           before it reads them."""
import os
import socket
import sys
import time

ch = socket.socket(fileno=3)
ch.settimeout(10)
ch.recv(8192)  # the Init message
role = os.path.basename(sys.argv[0])
header = bytes([1, 0, 0, 0, 0, 0, 0, 0])  # version 1, whole message, tag 0
if role == "bounce":
    ch.send(header + bytes([1, 1]))  # ToMaster::Ready { confined: true }
    ch.settimeout(60)
    while ch.recv(8192)[8:] != bytes([2]):  # until FromMaster::Stop
        pass
    for i in range(100):
        text = ("last words %d" % i).encode()
        # ToMaster::Log { at, level: Info, text }: variant 0, the time as
        # a varint (i: the records' order), Info 2, length, bytes.
        ch.send(header + bytes([0, i, 2, len(text)]) + text)
    os._exit(0)
if role == "control":
    ch.send(header + bytes([0xFF, 0xFF, 0xFF]))
else:
    ch.send(header + bytes([2, 1]))  # ToMaster::Status { id: 1 }
time.sleep(30)
