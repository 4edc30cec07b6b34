# The 250 follows the flush: an strace of cleanup while mail arrives shows
# that every verdict it sends to smtpd comes after an fdatasync of the
# journal that followed the journal's last write, and that every flushed
# batch is answered before the journal is written again. A cleanup that answered
# before flushing would fail here even though no process crashed.
. ./lib.sh
is_root || { note "skipped: strace needs root to attach"; exit 0; }
command -v strace >/dev/null || fail "strace is not installed"
write_conf
start_master
cl=$(child_pid cleanup)
strace -f -qq -y -e trace=write,pwrite64,writev,pwritev,fdatasync,fsync,sendmsg -o "$W/trace" -p "$cl" &
ST=$!
sleep 1
python3 - "$PORT" <<'PY' || fail "load"
import smtplib, sys, threading
def run(k):
    for i in range(40):
        with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
            s.sendmail("t@remote.example", ["root@localhost"], b"Subject: trace %d %d\r\n\r\nbody\r\n" % (k, i))
ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
wait_queued 160 || fail "not all 160 messages queued ($(queued))"
sleep 0.5
kill -INT $ST; wait $ST 2>/dev/null || true
python3 - "$W/trace" <<'PY' || fail "a verdict went out before its flush"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
dirty = False          # journal written since the last fdatasync
answered = True        # a verdict went out since the last flush
sends = flushes = 0
for l in lines:
    m = re.match(r"(?:\d+ +)?(\w+)\((\d+)<([^>]*)>", l)
    if not m or "unfinished" in l:
        continue
    call, fd, path = m.groups()
    # (The progress note beside the segments is no part of a commit.)
    if call in ("write", "pwrite64", "writev", "pwritev") and "/journal/" in path and not path.endswith(".progress"):
        if not answered:
            sys.exit("a flushed batch was never answered before the next write: " + l)
        dirty = True
    elif call in ("fdatasync", "fsync") and "/journal/" in path:
        if dirty:
            answered = False
        dirty = False
        flushes += 1
    elif call == "sendmsg" and path.startswith(("UNIX", "socket")) and fd != "3":
        # Verdicts of one turn share a datagram (the channel coalesces).
        sends += 1
        answered = True
        if dirty:
            sys.exit("verdict sent with an unflushed journal write before it: " + l)
print("  %d sends of verdicts, %d journal flushes, each send after its flush" % (sends, flushes))
if sends == 0 or flushes == 0:
    sys.exit("trace too small: %d sends, %d flushes" % (sends, flushes))
PY
exit 0
