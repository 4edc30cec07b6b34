# Hostile input gets clear replies and no crash or restart: over-long
# lines (the tail is never run as a command), a megabyte without CR LF,
# 200,000 pipelined RCPTs, malformed ESMTP parameters, CR and NUL in EHLO,
# shell metacharacters in MAIL FROM (stored literally), plaintext pipelined
# after STARTTLS (discarded), and a full spool (452 4.3.1).
. ./lib.sh
make_cert
write_conf 'limits { line_length = 512; recipients = 100; }' 'smtpd { error_pause = 10ms; }' 'tls { certificate = "cert.pem"; key = "key.pem"; }' \
	"listen { smtp { address = \"127.0.0.1:$PORT\"; tls = starttls; } }"
sed -i "0,/^listen/{/^listen.*tls = none/d}" "$CONF"
start_master
smtpd=$(child_pid smtpd)
SMTPD_PID=$smtpd raw_smtp <<'PY' || fail "hostile input"
import os, rawsmtp
port = int(os.environ["PORT"])
c = rawsmtp.Client(port)
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
# 512 octets with CR LF: accepted; 513 and 4096: refused, tail skipped.
assert c.cmd(b"NOOP " + b"a" * 505 + b"\r\n").startswith(b"250"), "512"
for n in (513, 4096):
    line = b"NOOP " + b"a" * (n - 5 - 6) + b"QUIT\r\n"
    assert len(line) == n
    r = c.cmd(line)
    assert r.startswith(b"500 5.5.2"), (n, r)
    assert c.cmd(b"NOOP\r\n").startswith(b"250"), "session ended after a long line"
# A megabyte without CR LF, full of commands: none of it runs.
c.send(b"QUIT RSET " * (1 << 17))
c.send(b"\r\nNOOP\r\n")
rs = c.replies_until_idle(idle=1.0)
assert rs[0].startswith(b"500 5.5.2") and rs[-1].startswith(b"250") and len(rs) == 2, rs
# CR and NUL in EHLO.
assert c.cmd(b"EHLO a\rb\r\n").startswith(b"501"), "CR"
assert c.cmd(b"EHLO a\x00b\r\n").startswith(b"501"), "NUL"
c.send(b"QUIT\r\n")

# Malformed parameters.
c = rawsmtp.Client(port)
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
for p, code in [(b"SIZE=-1", b"501"), (b"SIZE=18446744073709551616", b"552"), (b"BODY=8BITMIME BODY=7BIT", b"501"),
                (b"\"unbalanced", b"501"), (b"FOO=bar", b"555")]:
    r = c.cmd(b"MAIL FROM:<a@remote.example> " + p + b"\r\n")
    assert r.startswith(code), (p, r)
assert c.cmd(b"MAIL FROM:<\"unbalanced@remote.example>\r\n").startswith(b"501")
# Shell metacharacters are legal in a local part: stored literally.
assert c.cmd(b"MAIL FROM:<`touch$IFS/tmp/pwned`|x@remote.example>\r\n").startswith(b"250")
assert c.cmd(b"RCPT TO:<root@localhost>\r\n").startswith(b"250")
assert c.cmd(b"DATA\r\n").startswith(b"354")
assert c.cmd(b"Subject: meta\r\n\r\nx\r\n.\r\n").startswith(b"250")
c.send(b"QUIT\r\n")

# 200,000 pipelined RCPTs: bounded replies, then the session is ended.
import threading
c = rawsmtp.Client(port)
c.transaction(b"a@remote.example", [])
def flood():
    try:
        c.sock.settimeout(60)
        c.sock.sendall(b"".join(b"RCPT TO:<r%d@localhost>\r\n" % i for i in range(200000)))
    except OSError:
        pass  # the server ended the session
t = threading.Thread(target=flood)
t.start()
rs = c.replies_until_idle(idle=3.0, limit=60.0)
t.join(70)
assert rs[-1] == b"" or rs[-1].startswith(b"421"), rs[-3:]
assert len(rs) < 1000, len(rs)

# A client that pipelines a million NOOPs and reads nothing for a while:
# smtpd stops reading its commands while the replies back up (its memory
# does not grow with them), and answers every one once it reads.
import time
def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])
smtpd = int(os.environ["SMTPD_PID"])
before = rss_kb(smtpd)
c = rawsmtp.Client(port)
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
n = 1000000
def pipeline():
    try:
        c.sock.settimeout(90)
        c.sock.sendall(b"NOOP\r\n" * n + b"QUIT\r\n")
    except OSError as e:
        print("  pipelining stopped:", e)
t = threading.Thread(target=pipeline)
t.start()
time.sleep(3)
held = rss_kb(smtpd)
assert held - before < 4096, "smtpd grew from %d to %d kB holding replies" % (before, held)
c.sock.settimeout(90)
got, data = 0, b""
deadline = time.time() + 90
while time.time() < deadline:
    chunk = c.sock.recv(1 << 20)
    if not chunk:
        break
    data += chunk
    lines = data.split(b"\r\n")
    data = lines.pop()
    got += sum(1 for l in lines if l == b"250 2.0.0 Ok")
    if any(l.startswith(b"221") for l in lines):
        break
t.join(10)
assert got == n, "%d of %d NOOPs answered" % (got, n)
print("  %d pipelined NOOPs answered; smtpd %d kB before, %d kB while they waited" % (n, before, held))

# STARTTLS with plaintext pipelined behind it: the MAIL must not run in TLS.
c = rawsmtp.Client(port)
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
assert c.reply().startswith(b"220 2.0.0")
c.starttls()
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
r = c.cmd(b"RCPT TO:<root@localhost>\r\n")
assert r.startswith(b"503"), r
c.send(b"QUIT\r\n")

# Inside TLS, commands whose replies are far larger than they are (HELP):
# more than rustls buffers at once (64 KiB) is written as the client
# reads, not a reason to drop the session.
c = rawsmtp.Client(port)
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
assert c.cmd(b"STARTTLS\r\n").startswith(b"220")
c.starttls()
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
n = 3000
c.send(b"HELP\r\n" * n + b"NOOP\r\n")
got, size = 0, 0
for _ in range(n):
    r = c.reply(timeout=10)
    assert r.startswith(b"214"), (got, r)
    got, size = got + 1, size + len(r)
assert c.reply(timeout=10).startswith(b"250 2.0.0"), "no NOOP reply after the HELPs"
assert size > 128 * 1024, size
print("  %d pipelined HELPs in TLS answered (%d kB of replies)" % (got, size // 1024))
c.send(b"QUIT\r\n")

# Commands and the client's end of the stream in one breath (smtpd may
# read both at once): every command is answered and the session ends at
# once, not at the idle timeout. Repeated, for the timings to vary.
import socket
for i in range(40):
    c = rawsmtp.Client(port)
    c.send(b"EHLO client.example\r\n" + b"NOOP\r\n" * (i % 3))
    c.sock.shutdown(socket.SHUT_WR)
    start = time.time()
    rs = [c.reply(timeout=3) for _ in range(1 + i % 3)]
    assert rs[0].startswith(b"250") and all(r.startswith(b"250 2.0.0") for r in rs[1:]), (i, rs)
    assert c.reply(timeout=3) == b"", i
    assert time.time() - start < 2, (i, time.time() - start)
    c.sock.close()

# Urgent data between two commands (telnet's interrupt), all of it queued
# before smtpd reads (smtpd stopped meanwhile): a read stops at the
# urgent mark; the command after it is answered all the same, at once.
import signal
for i in range(5):
    c = rawsmtp.Client(port)
    os.kill(int(os.environ["SMTPD_PID"]), signal.SIGSTOP)
    try:
        c.sock.send(b"NOOP\r\n!", socket.MSG_OOB)
        c.send(b"NOOP\r\n")
        time.sleep(0.1)
    finally:
        os.kill(int(os.environ["SMTPD_PID"]), signal.SIGCONT)
    start = time.time()
    rs = [c.reply(timeout=3) for _ in range(2)]
    assert all(r.startswith(b"250 2.0.0") for r in rs), (i, rs)
    assert time.time() - start < 2, (i, time.time() - start)
    c.sock.close()
print("  all hostile inputs answered")
PY
[ "$(child_pid smtpd)" = "$smtpd" ] || fail "smtpd was restarted"
wait_queued 1 || fail "the metacharacter message was not queued"
queue_files | xargs grep -q 'touch$IFS/tmp/pwned`|x@remote.example' || fail "sender not stored literally"
[ -e /tmp/pwned ] && fail "a shell ran the sender"
rss=$(awk '/^VmHWM/ { print $2 }' /proc/$smtpd/status)
note "smtpd peak RSS ${rss} kB"
[ "$rss" -lt 65536 ] || fail "smtpd grew to $rss kB"
kill -TERM "$MASTER_PID"; gone "$MASTER_PID" 8 || fail "did not stop"; MASTER_PID=""

# A full spool: mail is refused with 452 4.3.1 (min_free_space above any disk).
write_conf 'queue { min_free_space = 1000000000000000; }'
start_master
sleep 1.5
raw_smtp <<'PY' || fail "full spool"
import os, rawsmtp
c = rawsmtp.Client(int(os.environ["PORT"]))
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
r = c.cmd(b"MAIL FROM:<a@remote.example>\r\n")
assert r.startswith(b"452 4.3.1"), r
PY
exit 0
