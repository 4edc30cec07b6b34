# Session bounds: sessions per client address (421 4.7.0), sessions in
# total (421 4.3.2), the idle timeout (421 4.4.2), connections per client
# and time unit (421 4.7.0, trusted networks not counted), and a load of
# 2,000 messages from Postfix's smtp-source, every one queued.
. ./lib.sh
write_conf 'limits { sessions = 6; sessions_per_client = 3; }' 'smtpd { idle_timeout = 2s; session_timeout = 4s; }'
start_master
raw_smtp <<'PY' || fail "session limits"
import os, socket, time, rawsmtp
port = int(os.environ["PORT"])
held = [rawsmtp.Client(port) for _ in range(3)]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
r = s.recv(200)
assert r.startswith(b"421 4.7.0"), r
# Another client address on loopback still gets in, up to the total.
more = [rawsmtp.Client(port, source="127.0.0.2") for _ in range(3)]
s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.3", 0))
r = s.recv(200)
assert r.startswith(b"421 4.3.2"), r
# Idle sessions are closed with 421 4.4.2.
r = held[0].reply(timeout=5)
assert r.startswith(b"421 4.4.2"), r
for c in held[1:] + more:
    c.sock.close()
# A busy session still ends at session_timeout.
c = rawsmtp.Client(port)
start = time.time()
while time.time() - start < 10:
    r = c.cmd(b"NOOP\r\n")
    if not r.startswith(b"250"):
        break
    time.sleep(0.5)
assert r.startswith(b"421 4.4.2"), r
assert 3 < time.time() - start < 7, time.time() - start
print("  per-client, total, idle and session limits answered")
PY
kill -TERM "$MASTER_PID"; gone "$MASTER_PID" 8 || fail "did not stop"; MASTER_PID=""
# The rates per client (Postfix's anvil): 127.0.0.2 may open 3
# connections in 2 s, then gets 421 4.7.0 until its window ends (refused
# attempts count), and give 3 RCPTs and 2 MAILs, then 450 4.7.1;
# 127.0.0.1, in networks, is not counted.
write_conf 'networks = [ "127.0.0.1/32" ];' \
	'limits { connection_rate_per_client = 3; message_rate_per_client = 2; recipient_rate_per_client = 3; rate_time_unit = 2s; }'
start_master
raw_smtp <<'PY' || fail "connection, message and recipient rates"
import os, socket, time, rawsmtp
port = int(os.environ["PORT"])
def greeting(source):
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    r = s.recv(200)
    s.close()
    return r
start = time.time()
got = [greeting("127.0.0.2")[:9] for _ in range(5)]
assert time.time() - start < 1.5, "too slow to test a 2 s window"
assert all(g.startswith(b"220") for g in got[:3]) and got[3:] == [b"421 4.7.0"] * 2, got
assert all(greeting("127.0.0.1").startswith(b"220") for _ in range(6)), "a trusted client was limited"
time.sleep(2.2)
r = greeting("127.0.0.2")
assert r.startswith(b"220"), r
print("  3 connections in 2 s, then 421 4.7.0 until the window ends; networks not counted")
# In the same (new) window: 3 RCPTs, then 450 4.7.1; 2 MAILs, then 450.
c = rawsmtp.Client(port, source="127.0.0.2")
assert c.cmd(b"EHLO rate.example\r\n").startswith(b"250")
assert c.cmd(b"MAIL FROM:<a@remote.example>\r\n").startswith(b"250")
for _ in range(3):
    r = c.cmd(b"RCPT TO:<root@localhost>\r\n")
    assert r.startswith(b"250"), r
r = c.cmd(b"RCPT TO:<root@localhost>\r\n")
assert r.startswith(b"450 4.7.1 Error: too many recipients from 127.0.0.2"), r
assert c.cmd(b"RSET\r\n").startswith(b"250")
assert c.cmd(b"MAIL FROM:<a@remote.example>\r\n").startswith(b"250")
assert c.cmd(b"RSET\r\n").startswith(b"250")
r = c.cmd(b"MAIL FROM:<a@remote.example>\r\n")
assert r.startswith(b"450 4.7.1 Error: too much mail from 127.0.0.2"), r
print("  3 recipients and 2 messages in 2 s, then 450 4.7.1")
PY
wait_log "warning: Connection rate limit exceeded: 5 from unknown\[127\.0\.0\.2\] for service smtp" 5 ||
	fail "the refusals were not logged"
wait_log "NOQUEUE: reject: MAIL from [^ ]*\[127\.0\.0\.2\]: 450 4\.7\.1 Error: too much mail from 127\.0\.0\.2;" 5 ||
	fail "the refused MAIL was not logged"
kill -TERM "$MASTER_PID"; gone "$MASTER_PID" 8 || fail "did not stop"; MASTER_PID=""
if [ -x "${SMTP_SOURCE:-}" ]; then
	write_conf
	start_master
	LD_LIBRARY_PATH=$(dirname "$SMTP_SOURCE")/../lib/postfix "$SMTP_SOURCE" -s 20 -m 2000 -l 5120 \
		-f load@remote.example -t root@localhost 127.0.0.1:$PORT || fail "smtp-source"
	wait_queued 2000 || fail "smtp-source: $(queued) of 2000 queued"
	note "smtp-source: 2000 messages queued"
else
	note "skipped: the load part (SMTP_SOURCE unset: no smtp-source)"
	[ -n "${CI:-}" ] && fail "CI must run the smtp-source load"
fi
exit 0
