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
           before it reads them.
  pickup:  says it is ready, then sends log records as fast as it can for
           20 seconds, packed (a child flooding master), never reading."""
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
if role == "pickup":
    ch.send(header + bytes([1, 1]))  # ToMaster::Ready { confined: true }
    ch.setblocking(True)
    # ToMaster::Log records packed as a corked channel packs them: a
    # MULTI frame (kind 3), each message a 2-byte length and its bytes,
    # some 1,100 to a datagram.
    text = b"flood"
    msg = bytes([0, 0, 2, len(text)]) + text
    one = len(msg).to_bytes(2, "big") + msg
    record = bytes([1, 3, 0, 0, 0, 0, 0, 0]) + one * ((8192 - 8) // len(one))
    end = time.time() + 20
    while time.time() < end:
        try:
            ch.send(record)
        except OSError:
            break
    time.sleep(30)
if role == "control":
    ch.send(header + bytes([0xFF, 0xFF, 0xFF]))
else:
    ch.send(header + bytes([2, 1]))  # ToMaster::Status { id: 1 }
time.sleep(30)
