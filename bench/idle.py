#!/usr/bin/env python3
"""Idle-session memory: opens N connections to HOST:PORT at once, reads
each banner, says EHLO and waits for its 250, then holds them all and
sums the proportional set size (PSS) of the processes in a cgroup.
  idle.py HOST PORT N CGROUP_PROCS_FILE
Prints one RESULT line. Loopback only; every wait is bounded."""
import os
import resource
import selectors
import socket
import sys
import time

host, port, n, procs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if not host.startswith("127.") and host != "::1":
    sys.exit("loopback only")
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))


def pss_kb():
    total = 0
    for pid in open(procs).read().split():
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


before = pss_kb()
sel = selectors.DefaultSelector()
state = {}
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    sel.register(s, selectors.EVENT_READ)
    state[s] = [b"", 0]  # buffer, stage: 0 banner, 1 ehlo sent, 2 done
done = 0
end = time.time() + 60
while done < n and time.time() < end:
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        st = state[s]
        if not data:
            sel.unregister(s)
            st[1] = -1
            continue
        st[0] += data
        if st[1] == 0 and st[0].endswith(b"\r\n") and st[0].startswith(b"220"):
            st[0] = b""
            st[1] = 1
            s.send(b"EHLO idle.example\r\n")
        elif st[1] == 1 and b"\r\n250 " in b"\r\n" + st[0]:
            st[1] = 2
            done += 1
time.sleep(1)
held = pss_kb()
refused = sum(1 for v in state.values() if v[1] == -1)
print(f"RESULT test=idle sessions={n} ready={done} refused={refused} pss_before_mb={before/1024:.1f} "
      f"pss_held_mb={held/1024:.1f} per_session_kb={(held-before)/max(done,1):.2f}")
for s in state:
    s.close()
