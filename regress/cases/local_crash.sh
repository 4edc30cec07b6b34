# A local delivery killed with SIGKILL in the middle of writing (issue 7).
# mbox, on a mail spool like Debian's (2775 root:mail): a big message to
# a user whose mbox holds one small message; once the mbox has grown
# past its old size, the `local deliver mbox` worker that delivered the
# small message, and now the big one, gets kill -9. The
# delivery is deferred with the mailbox cut back (the log says from how
# many bytes, fewer than the whole message would make); the mbox reads
# back, by Python's mailbox, as the one old message, intact; no dot-lock
# is left. Flushed, the retry delivers it: two messages, the big one
# whole (its body's SHA-256), by a new worker. Then, switched to Maildir
# by a reload, the `local deliver maildir` worker gets kill -9 while its
# file in tmp/
# grows: deferred, nothing in new/; flushed, exactly one message in new/,
# whole.
. ./lib.sh
is_root || { echo "  skipped: local delivery runs as the recipient (needs root)"; exit 0; }
PY=/usr/bin/python3
U=mtacrash1
# The user goes after master (and with it local's delivery workers).
trap 'cleanup; userdel "$U" >/dev/null 2>&1 || true' EXIT
mkuser "$U"
MAIL="$W/mail"
BOX="$MAIL/$U"
MAILDIR="$W/home/$U/Maildir"
mkdir -p "$MAIL" && chown root:mail "$MAIL" && chmod 2775 "$MAIL"
# The default backoff (minutes) keeps a deferred message waiting until
# the case flushes the queue.
LIMITS="limits { message_size = 64m; }"
write_conf "$LIMITS" "local { mail_spool = \"$MAIL\"; lock_timeout = 20s; worker_idle_time = 120s; }"
start_master

# The big message: about 48 MB in lines of digits (no "From " to quote,
# no "." to stuff), CR LF as sent; the SHA-256 of its body as delivered
# (LF line ends).
"$PY" - "$W/big.eml" "$W/big.sha" <<'PY' || fail "cannot make the big message"
import hashlib, sys
lines = []
h = hashlib.sha256(b"local_crash")
for i in range(600_000):
    if i % 64 == 0:
        h = hashlib.sha256(h.digest())
        hexed = h.hexdigest()
    lines.append("%07d %s%s" % (i, hexed, hexed[: i % 16]))
body = "".join(l + "\n" for l in lines)
head = "From: sender@remote.example\nTo: %s\nSubject: big\n\n" % "mtacrash1@localhost"
with open(sys.argv[1], "wb") as f:
    f.write((head + body).replace("\n", "\r\n").encode())
with open(sys.argv[2], "w") as f:
    f.write(hashlib.sha256(body.encode()).hexdigest() + "\n")
PY
send() { # send FILE|-small
	"$PY" - "$PORT" "$1" <<'PY' || fail "the message was not accepted"
import smtplib, sys
data = open(sys.argv[2], "rb").read() if sys.argv[2] != "-small" else \
    b"From: sender@remote.example\r\nSubject: small\r\n\r\nthe old message\r\n"
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60) as s:
    s.sendmail("sender@remote.example", ["mtacrash1@localhost"], data)
PY
}
# (create=False: a mailbox must never be created by the test, as root)
count() { mbox_count "$1"; }
# sent mailbox|maildir N: N deliveries to the user logged as done (an mbox
# shows a message as soon as its From line is written, before the rest).
# shellcheck disable=SC2317 # called through wait_for
sent() { [ "$(grep -c "to=<$U@localhost>, relay=local, .*status=sent (delivered to $1)" "$LOG" || true)" -ge "$2" ]; }
# worker_pattern KIND: what `pgrep -f` finds this user's delivery worker by.
worker_pattern() {
	case $1 in
	mbox) echo "^local deliver mbox $MAIL $U " ;;
	*) echo "^local deliver maildir $W/home/$U Maildir/ " ;;
	esac
}
# kill_when_growing KIND: wait (60 s at most) until the mailbox (mbox) or
# a file in Maildir/tmp (maildir) has grown past its present size, then
# kill -9 the `local deliver KIND` worker; prints the size it had then
# and the worker's pid.
kill_when_growing() {
	"$PY" - "$1" "$BOX" "$MAILDIR/tmp" "$(worker_pattern "$1")" <<'PY'
import os, signal, subprocess, sys, time
kind, box, tmp, pattern = sys.argv[1:5]
def size():
    if kind == "mbox":
        return os.stat(box).st_size
    try:
        return max([os.stat(os.path.join(tmp, n)).st_size for n in os.listdir(tmp)] or [0])
    except FileNotFoundError:
        return 0
old = size()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    now = size()
    if now > old:
        break
else:
    sys.exit("the %s did not grow within 60 s" % kind)
found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
if len(found) != 1:
    sys.exit("%d local deliver %s processes: %s" % (len(found), kind, found))
os.kill(int(found[0]), signal.SIGKILL)
print(now, found[0])
PY
}

# --- mbox: one small message, then the big one killed mid-write ---
send -small
wait_for 20 sent mailbox 1 || fail "the small message was not delivered"
worker=$(pgrep -f "$(worker_pattern mbox)") || fail "no worker waits after the first delivery"
OLD=$(stat -c %s "$BOX")
cp "$BOX" "$W/box.before"
send "$W/big.eml" &
sender=$!
killed=$(kill_when_growing mbox) || fail "could not kill the delivery mid-write"
at=${killed% *}
wait "$sender" || fail "the big message was not accepted"
[ "${killed#* }" = "$worker" ] || fail "killed pid ${killed#* }, not the worker $worker that delivered the small message"
note "killed the mbox delivery worker $worker at $at bytes (was $OLD)"
wait_log "to=<$U@localhost>, relay=local, .*status=deferred (delivery killed by SIGKILL; mailbox $U cut back from [0-9]* to $OLD bytes)" 30 ||
	fail "no deferral with the mailbox cut back"
CUT=$(sed -n "s/.*status=deferred (delivery killed by SIGKILL; mailbox $U cut back from \([0-9]*\) to $OLD bytes).*/\1/p" "$LOG" | head -1)
[ "$CUT" -gt "$OLD" ] || fail "cut back from $CUT bytes, no more than the $OLD before"
note "the repair cut the mbox back from $CUT to $OLD bytes"
cmp -s "$BOX" "$W/box.before" || fail "the mbox is not as it was before the killed delivery"
[ ! -e "$BOX.lock" ] || fail "the dot-lock $BOX.lock was left behind"
"$PY" - "$BOX" <<'PY' || fail "the mbox does not read back as the one old message"
import mailbox, sys
msgs = list(mailbox.mbox(sys.argv[1], create=False))
assert [m["Subject"] for m in msgs] == ["small"], [m["Subject"] for m in msgs]
assert msgs[0].get_payload() == "the old message\n", repr(msgs[0].get_payload())
print("  mbox after the kill: the one old message, intact")
PY
ctl queue flush >/dev/null || fail "mtactl queue flush"
wait_for 60 sent mailbox 2 || fail "the retry did not deliver the big message: $(count "$BOX") messages"
FULL=$(stat -c %s "$BOX")
[ "$CUT" -lt "$FULL" ] || fail "the kill came after the whole message ($CUT of $FULL bytes): make it bigger"
"$PY" - "$BOX" "$(cat "$W/big.sha")" <<'PY' || fail "the mbox does not hold the old message and the big one whole"
import hashlib, mailbox, sys
msgs = list(mailbox.mbox(sys.argv[1], create=False))
assert [m["Subject"] for m in msgs] == ["small", "big"], [m["Subject"] for m in msgs]
assert msgs[0].get_payload() == "the old message\n"
got = hashlib.sha256(msgs[1].get_payload().encode()).hexdigest()
assert got == sys.argv[2], "the big body's SHA-256 is %s, not %s" % (got, sys.argv[2])
print("  mbox after the retry: the old message and the big one, whole")
PY
[ ! -e "$BOX.lock" ] || fail "the dot-lock was left behind after the retry"

# --- Maildir, after a reload: killed while its file in tmp/ grows ---
write_conf "$LIMITS" "local { mailbox = \"maildir\"; mail_spool = \"$MAIL\"; lock_timeout = 20s; worker_idle_time = 120s; }"
ctl reload >/dev/null || fail "reload"
sleep 2
killed_before=$(grep -c "status=deferred (delivery killed by SIGKILL)" "$LOG" || true)
send "$W/big.eml" &
sender=$!
killed=$(kill_when_growing maildir) || fail "could not kill the Maildir delivery mid-write"
at=${killed% *}
wait "$sender" || fail "the big message was not accepted"
note "killed the Maildir delivery with $at bytes in tmp/"
wait_for 30 sh -c "[ \"\$(grep -c 'status=deferred (delivery killed by SIGKILL)' '$LOG')\" -gt $killed_before ]" ||
	fail "the killed Maildir delivery was not deferred"
[ -z "$(ls "$MAILDIR/new")" ] || fail "a message in new/ after the killed delivery"
ctl queue flush >/dev/null || fail "mtactl queue flush"
wait_for 60 sent maildir 1 || fail "the retry did not deliver into the Maildir"
"$PY" - "$MAILDIR" "$(cat "$W/big.sha")" <<'PY' || fail "the Maildir does not hold the big message once, whole"
import hashlib, mailbox, os, sys
md, sha = sys.argv[1], sys.argv[2]
new = os.listdir(os.path.join(md, "new"))
assert len(new) == 1, new
assert os.listdir(os.path.join(md, "cur")) == []
msgs = list(mailbox.Maildir(md, create=False))
assert len(msgs) == 1 and msgs[0]["Subject"] == "big", [m["Subject"] for m in msgs]
got = hashlib.sha256(msgs[0].get_payload().encode()).hexdigest()
assert got == sha, "the big body's SHA-256 is %s, not %s" % (got, sha)
# What the killed delivery left in tmp/: part of the message.
whole = os.stat(os.path.join(md, "new", new[0])).st_size
left = [os.stat(os.path.join(md, "tmp", n)).st_size for n in os.listdir(os.path.join(md, "tmp"))]
assert len(left) == 1 and left[0] < whole, "tmp/ holds %s bytes, the message is %d: make it bigger" % (left, whole)
print("  Maildir after the retry: the big message once, whole (the killed delivery left %d bytes in tmp/)" % left[0])
PY
exit 0
