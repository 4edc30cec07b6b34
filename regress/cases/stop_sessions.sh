# A full stop ends smtpd's sessions as RFC 5321 (3.8) asks of a server
# that shuts down: a session between commands hears 421 4.3.2 at once; a
# session in the middle of a message (in DATA, or between BDAT chunks)
# may finish it, hears 250 (the message is queued), then 421; one that
# does not finish within half the stop timeout hears 421 then, and its
# message is not queued. Each is logged
# (`shutdown after STAGE from CLIENT`, `disconnect from`), and master
# stops without killing anything. (A reload lets the old smtpd's sessions
# run on: reload_good.)
. ./lib.sh
write_conf
start_master
export MASTER_PID
raw_smtp <<'PY' || fail "sessions at a full stop"
import os, signal, time, rawsmtp
port = int(os.environ["PORT"])
def session(helo, subject):
    c = rawsmtp.Client(port)
    assert c.cmd(b"EHLO " + helo + b"\r\n").startswith(b"250")
    if subject is None:
        return c
    assert c.cmd(b"MAIL FROM:<a@remote.example>\r\n").startswith(b"250")
    assert c.cmd(b"RCPT TO:<b@elsewhere.example>\r\n").startswith(b"250")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    c.send(b"Subject: " + subject + b"\r\n\r\nthe first line\r\n")
    return c
idle = session(b"idle.example", None)
finishes = session(b"finishes.example", b"finished in time")
stalls = session(b"stalls.example", b"never finished")
# Between BDAT chunks: in the middle of a message too.
chunked = session(b"chunked.example", None)
assert chunked.cmd(b"MAIL FROM:<a@remote.example>\r\n").startswith(b"250")
assert chunked.cmd(b"RCPT TO:<b@elsewhere.example>\r\n").startswith(b"250")
first = b"Subject: chunked in time\r\n\r\n"
assert chunked.cmd(b"BDAT %d\r\n" % len(first) + first).startswith(b"250")
time.sleep(0.3)
t0 = time.time()
os.kill(int(os.environ["MASTER_PID"]), signal.SIGTERM)
r = idle.reply(timeout=3)
assert r.startswith(b"421 4.3.2 "), r
assert time.time() - t0 < 1.0, "the idle session waited %.1f s" % (time.time() - t0)
assert idle.reply(timeout=3) == b"", "not closed after the 421"
print("  idle session: 421 4.3.2 at once, closed")
time.sleep(1.0)
r = finishes.cmd(b"the last line\r\n.\r\n")
assert r.startswith(b"250 2.0.0"), r
r = finishes.reply(timeout=3)
assert r.startswith(b"421 4.3.2 "), r
print("  session in DATA: finished its message (250), then 421")
last = b"the only line\r\n"
r = chunked.cmd(b"BDAT %d LAST\r\n" % len(last) + last)
assert r.startswith(b"250 2.0.0"), r
r = chunked.reply(timeout=3)
assert r.startswith(b"421 4.3.2 "), r
print("  session between BDAT chunks: finished its message (250), then 421")
r = stalls.reply(timeout=6)
took = time.time() - t0
assert r.startswith(b"421 4.3.2 "), r
# Half of the stop timeout (5 s), by the 100 ms tick.
assert 2.3 < took < 3.5, "cut after %.1f s" % took
print("  stalled session: 421 after %.1f s" % took)
PY
gone "$MASTER_PID" 8 || fail "master did not stop"
MASTER_PID=""
grep -q "did not stop in time" "$LOG" && fail "master had to kill a child"
for l in "shutdown after EHLO from localhost\[127.0.0.1\]" "shutdown after END-OF-MESSAGE from localhost\[127.0.0.1\]" \
	"shutdown after DATA from localhost\[127.0.0.1\]"; do
	grep -q "smtpd.*$l" "$LOG" || fail "no line: $l"
done
n=$(grep -c "smtpd.*disconnect from localhost\[127.0.0.1\]" "$LOG")
[ "$n" -eq 4 ] || fail "$n disconnect lines, not 4"
# The message finished is queued; the one cut off is not.
for subject in "finished in time" "chunked in time"; do
	[ "$(queue_files | xargs grep -l "Subject: $subject" | wc -l)" -eq 1 ] || fail "the message \"$subject\" is not queued"
done
queue_files | xargs grep -l "Subject: never finished" && fail "the message cut off was queued"
exit 0
