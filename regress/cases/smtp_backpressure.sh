# cleanup stopped while a client sends a 40 MB message: smtpd stops
# reading once its queue to cleanup is long (the client waits on TCP),
# and when cleanup goes on the message is queued whole, not refused.
. ./lib.sh
write_conf 'limits { message_size = 64M; }'
start_master
cleanup=$(child_pid cleanup)
[ -n "$cleanup" ] || fail "no cleanup process"
kill -STOP "$cleanup"
CLEANUP_PID=$cleanup raw_smtp <<'PY' || { kill -CONT "$cleanup"; fail "large message with cleanup stopped"; }
import os, signal, threading, time, rawsmtp
c = rawsmtp.Client(int(os.environ["PORT"]), timeout=60)
c.transaction(b"big@remote.example", [b"root@localhost"])
assert c.cmd(b"DATA\r\n").startswith(b"354")
line = b"x" * 998 + b"\r\n"
body = b"Subject: backpressure\r\n\r\n" + line * 40000 + b".\r\n"
def resume():
    time.sleep(3)
    os.kill(int(os.environ["CLEANUP_PID"]), signal.SIGCONT)
threading.Thread(target=resume).start()
c.send(body)
r = c.reply(timeout=60)
assert r.startswith(b"250 2.0.0 Ok: queued as "), r
PY
kill -CONT "$cleanup"
[ "$(child_pid cleanup)" = "$cleanup" ] || fail "cleanup restarted"
wait_queued 1 || fail "the large message is not in the queue"
exit 0
