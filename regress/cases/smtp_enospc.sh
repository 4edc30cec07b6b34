# A spool that fills up while mail arrives: the message that no longer
# fits gets 451 4.3.0, never 250, and every message that got 250 is in
# the queue. Then a message with too many Received: headers is refused
# with 554 5.4.6, and a 256 MiB header line gets 552 without smtpd growing.
. ./lib.sh
is_root || { note "skipped: needs root to mount a small file system"; exit 0; }
mkdir -p "$W/spool"
mount -t tmpfs -o size=3m tmpfs "$W/spool" || fail "cannot mount tmpfs"
trap 'kill -TERM $MASTER_PID 2>/dev/null || true; sleep 1; umount "$W/spool" 2>/dev/null || true; cleanup' EXIT
chmod 755 "$W/spool"
write_conf 'queue { min_free_space = 0; }' 'limits { message_size = 300kb; }'
start_master
raw_smtp <<'PY' || fail "ENOSPC"
import os, rawsmtp
port = int(os.environ["PORT"])
acked, refused = [], []
for i in range(40):
    c = rawsmtp.Client(port)
    c.transaction(b"a@remote.example", [b"root@localhost"])
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    r = c.cmd(b"Subject: fill %d\r\n\r\n" % i + (b"y" * 998 + b"\r\n") * 200 + b".\r\n")
    if r.startswith(b"250"):
        acked.append(r.split()[-1].decode())
    else:
        assert r.startswith(b"451 4.3.0"), r
        refused.append(i)
    c.send(b"QUIT\r\n")
assert refused, "the spool never filled"
open(os.environ["W"] + "/acked", "w").write("\n".join(acked))
print("  %d accepted, %d refused with 451 4.3.0" % (len(acked), len(refused)))
PY
sleep 1
while read -r id; do
	queue_files | grep -q "/$id$" || fail "acknowledged $id is not in the queue"
done < "$W/acked"
kill -TERM "$MASTER_PID"; gone "$MASTER_PID" 8; MASTER_PID=""
umount "$W/spool"
write_conf 'limits { hops = 5; }'
start_master
smtpd=$(child_pid smtpd)
raw_smtp <<'PY' || fail "hops or long header"
import os, rawsmtp, threading
port = int(os.environ["PORT"])
c = rawsmtp.Client(port)
c.transaction(b"a@remote.example", [b"root@localhost"])
assert c.cmd(b"DATA\r\n").startswith(b"354")
r = c.cmd(b"".join(b"Received: from hop%d\r\n" % i for i in range(6)) + b"Subject: loop\r\n\r\nx\r\n.\r\n")
assert r.startswith(b"554 5.4.6"), r
c = rawsmtp.Client(port)
c.transaction(b"a@remote.example", [b"root@localhost"])
assert c.cmd(b"DATA\r\n").startswith(b"354")
def send():
    line = b"X-Long: " + b"z" * (1 << 20)
    for _ in range(256):
        c.sock.sendall(line)
    c.sock.sendall(b"\r\n\r\nbody\r\n.\r\n")
t = threading.Thread(target=send); t.start()
r = c.reply(timeout=60)
t.join(60)
assert r.startswith(b"552 5.3.4"), r
PY
rss=$(awk '/^VmHWM/ { print $2 }' /proc/$smtpd/status)
note "smtpd peak RSS after a 256 MiB header line: ${rss} kB"
[ "$rss" -lt 65536 ] || fail "smtpd grew to $rss kB"
exit 0
