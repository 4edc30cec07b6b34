# LMTP into a real Dovecot (Debian's dovecot-core and dovecot-lmtpd),
# run by the case itself and never the system's: its own configuration,
# base directory, log and mail under $W, an LMTP UNIX socket in $W/lmtp
# and a TCP listener on loopback, users from a passwd-file, the quota
# plugin (a full mailbox is 552 over the socket, 452 over TCP). The
# transport table sends unix.test to the socket and tcp.test over TCP.
# The socket's directory is missing when mta starts: mail for it waits
# with a reason, and master restarts the connector when the directory
# appears, after which the mail is delivered. Over the socket, one
# message to three recipients: alice's copy lands in her Maildir with the
# body byte for byte, bob (over quota, after the content) and nobody (at
# RCPT) bounce, and the report comes back to the sender by LMTP over TCP.
# Over TCP, alice gets hers and bob is deferred, again at each retry,
# while alice keeps exactly one copy; once bob's quota is raised his copy
# arrives and the queue empties. A reload that routes tcp.test to a
# second socket, in a directory the first table did not name, gives the
# new connector that directory: mail goes through it.
. ./lib.sh
is_root || { echo "  skipped: Dovecot delivers as a user of its own (needs root)"; exit 0; }
DOVECOT=/usr/sbin/dovecot
if [ ! -x "$DOVECOT" ] || [ ! -x /usr/lib/dovecot/lmtp ]; then fail "Dovecot is not installed (dovecot-core, dovecot-lmtpd)"; fi
LPORT=$((PORT + 2))
D="$W/dovecot"
SOCKDIR="$W/lmtp"
SOCK="$SOCKDIR/lmtp"
SOCK2="$W/lmtp2/lmtp"
VMAIL="$W/home/mtavmail"
DOVECOT_PID=""
stop_dovecot() {
	[ -n "$DOVECOT_PID" ] || return 0
	kill -TERM "$DOVECOT_PID" 2>/dev/null || true
	gone "$DOVECOT_PID" 10 || kill -KILL "$DOVECOT_PID" 2>/dev/null || true
	DOVECOT_PID=""
}
trap 'set +e; stop_dovecot; userdel mtavmail >/dev/null 2>&1; cleanup' EXIT
mkuser mtavmail

mkdir -p "$D"
cat >"$D/dovecot.conf" <<CONF
base_dir = $D/run
state_dir = $D/state
instance_name = mta-regress-lmtp-$$
protocols = lmtp
listen = 127.0.0.1
ssl = no
log_path = $D/dovecot.log
auth_username_format = %Ln
mail_uid = mtavmail
mail_gid = mtavmail
mail_location = maildir:$VMAIL/%n/Maildir
mail_plugins = quota
passdb {
  driver = passwd-file
  args = $D/users
}
userdb {
  driver = passwd-file
  args = $D/users
}
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=10M
}
service lmtp {
  unix_listener $SOCK {
    mode = 0666
  }
  unix_listener $SOCK2 {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LPORT
  }
}
remote 127.0.0.1 {
  quota_full_tempfail = yes
}
CONF
# bob's mailbox holds 1 kB: full for any of the messages below.
users() { printf 'alice:{PLAIN}x::::::\nbob:{PLAIN}x::::::userdb_quota_rule=*:storage=%s\n' "$1" >"$D/users"; }
users 1
start_dovecot() {
	mkdir -p "$SOCKDIR" "$W/lmtp2" && chmod 755 "$SOCKDIR" "$W/lmtp2"
	"$DOVECOT" -c "$D/dovecot.conf" -F >"$D/out.log" 2>&1 &
	DOVECOT_PID=$!
	wait_for 10 test -S "$SOCK" || fail "Dovecot made no socket: $(cat "$D/out.log" "$D/dovecot.log" 2>/dev/null)"
	wait_for 10 python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$LPORT" ||
		fail "Dovecot does not listen on port $LPORT"
}

# A body with dot lines, a tab, trailing spaces and a long line, big
# enough to fill bob's quota; CR LF line ends, as on the wire.
python3 - "$W/body" <<'PY'
import sys
lines = ["Dear LMTP,", "", ".a leading dot", "..two dots", ".", "tab\there", "trailing spaces   ",
         "x" * 900, "", "end."] + ["filler line %03d %s" % (i, "y" * 40) for i in range(60)]
open(sys.argv[1], "wb").write("".join(l + "\r\n" for l in lines).encode())
PY
# submit SUBJECT RCPT[,RCPT...]: from alice@tcp.test, the body above.
submit() {
	python3 - "$PORT" "$1" "$2" "$W/body" <<'PY' || fail "smtplib: $1"
import smtplib, sys
port, subject, rcpts, body = sys.argv[1], sys.argv[2], sys.argv[3], open(sys.argv[4], "rb").read()
msg = ("From: alice@tcp.test\r\nTo: %s\r\nSubject: %s\r\n\r\n" % (rcpts, subject)).encode() + body
with smtplib.SMTP("127.0.0.1", int(port), timeout=10) as s:
    s.sendmail("alice@tcp.test", rcpts.split(","), msg)
PY
}
# messages USER SUBJECT: the files in USER's Maildir whose own Subject
# is SUBJECT (a report returns the original's header in its body).
messages() {
	python3 - "$VMAIL/$1/Maildir" "$2" <<'PY'
import email, glob, os, sys
from email import policy
for f in sorted(glob.glob(os.path.join(sys.argv[1], "new", "*")) + glob.glob(os.path.join(sys.argv[1], "cur", "*"))):
    if email.message_from_binary_file(open(f, "rb"), policy=policy.compat32)["Subject"] == sys.argv[2]:
        print(f)
PY
}
copies() { messages "$1" "$2" | wc -l; }
has() { [ "$(copies "$1" "$2")" -ge 1 ]; }
# same_body USER SUBJECT: the stored body is the one sent (Dovecot keeps
# LF line ends).
same_body() {
	python3 - "$(messages "$1" "$2" | head -1)" "$W/body" <<'PY'
import sys
stored = open(sys.argv[1], "rb").read()
sent = open(sys.argv[2], "rb").read().replace(b"\r\n", b"\n")
sys.exit(0 if stored.split(b"\n\n", 1)[1] == sent else 1)
PY
}

write_conf "transport_map { \"unix.test\" = \"lmtp:unix:$SOCK\"; \"tcp.test\" = \"lmtp:[127.0.0.1]:$LPORT\"; }" \
	"transport { lmtp { dead_time = 1s; } }" \
	"queue { backoff { min = 1s; max = 2s; } }"
mta_n=$("$MTA" -n -v -f "$CONF" 2>&1) || fail "mta -n: $mta_n"

# --- the socket's directory appears after mta started ---
start_master
wait_log "cannot open the socket directory $SOCKDIR" 10 || fail "no warning about the missing socket directory"
submit early alice@unix.test
wait_log "to=<alice@unix.test>, relay=none, .*dsn=4.4.1, status=deferred (connect to $SOCK: its directory $SOCKDIR did not exist" 15 ||
	fail "mail for the missing socket was not deferred with its reason"
start_dovecot
wait_log "transport_map: $SOCKDIR now exists: restarting the connector" 15 || fail "master did not restart the connector"
wait_status $NCHILD || fail "the connector did not come back"
[ "$(grep -c "connector pid .* running, sandboxed" "$LOG")" -ge 2 ] || fail "the new connector is not sandboxed"
wait_for 20 has alice early || fail "the early message never reached alice"
wait_log "to=<alice@unix.test>, relay=$SOCK, .*dsn=2.0.0, status=sent (250 2.0.0 <alice@unix.test> .* Saved)" 5 ||
	fail "no sent line naming the socket"

# --- over the UNIX socket: delivered, over quota after the content, unknown at RCPT ---
submit "over unix" alice@unix.test,bob@unix.test,nobody@unix.test
wait_log "to=<bob@unix.test>, relay=$SOCK, .*dsn=5.2.2, status=bounced (host $SOCK said: 552 5.2.2 <bob@unix.test> Quota exceeded .*(in reply to end of DATA command))" 15 ||
	fail "bob's full mailbox did not bounce after the content"
wait_log "to=<nobody@unix.test>, relay=$SOCK, .*dsn=5.1.1, status=bounced (host $SOCK said: 550 5.1.1 <nobody@unix.test> .*(in reply to RCPT TO command))" 5 ||
	fail "the unknown user did not bounce at RCPT"
wait_for 10 has alice "over unix" || fail "alice did not get her copy"
same_body alice "over unix" || fail "the body in alice's Maildir is not the one sent"
[ "$(copies bob "over unix")" -eq 0 ] || fail "bob's full mailbox got the message"
# The report to the sender, alice@tcp.test, by LMTP over TCP.
wait_for 20 sh -c "grep -l '^Content-Type: multipart/report' '$VMAIL'/alice/Maildir/new/* >/dev/null 2>&1" ||
	fail "no delivery status notification reached the sender"
python3 - "$VMAIL/alice/Maildir/new" <<'PY' || fail "the delivery status notification is wrong"
import email, glob, os, sys
from email import policy
reports = []
for f in glob.glob(os.path.join(sys.argv[1], "*")):
    m = email.message_from_binary_file(open(f, "rb"), policy=policy.compat32)
    if m.get_content_type() == "multipart/report":
        reports.append(m)
assert len(reports) == 1, len(reports)
status = reports[0].get_payload()[1]
assert status.get_content_type() == "message/delivery-status"
got = {}
for block in status.get_payload()[1:]:
    who = " ".join(block["Final-Recipient"].split())
    got[who] = (block["Action"].strip(), block["Status"].strip(), " ".join(block["Diagnostic-Code"].split()),
                block["Remote-MTA"])
bob, nobody = got["rfc822; bob@unix.test"], got["rfc822; nobody@unix.test"]
assert bob[:2] == ("failed", "5.2.2") and bob[2].startswith("smtp; 552 5.2.2 <bob@unix.test> Quota exceeded"), bob
assert nobody[:2] == ("failed", "5.1.1") and nobody[2].startswith("smtp; 550 5.1.1"), nobody
# A socket's path is no DNS name.
assert bob[3] is None and nobody[3] is None, got
assert set(got) == {"rfc822; bob@unix.test", "rfc822; nobody@unix.test"}, got
print("  failure report for bob (5.2.2) and nobody (5.1.1) read back")
PY

# --- over TCP: delivered, and deferred (452) until the quota is raised ---
submit "over tcp" alice@tcp.test,bob@tcp.test
wait_log "to=<bob@tcp.test>, relay=127.0.0.1\[127.0.0.1\]:$LPORT, .*dsn=4.2.2, status=deferred (host 127.0.0.1\[127.0.0.1\] said: 452 4.2.2 <bob@tcp.test> Quota exceeded" 15 ||
	fail "bob's full mailbox was not deferred over TCP"
wait_for 10 has alice "over tcp" || fail "alice did not get her copy over TCP"
same_body alice "over tcp" || fail "the body that came over TCP is not the one sent"
# Tried again (backoff 1-2 s): bob waits, alice is not sent it again.
wait_for 20 sh -c "[ \$(grep -c 'to=<bob@tcp.test>, .*status=deferred' '$LOG') -ge 2 ]" || fail "bob was not tried again"
[ "$(copies alice "over tcp")" -eq 1 ] || fail "alice has $(copies alice "over tcp") copies after bob's retry"
wait_for 5 settled 1 || fail "$(queued) messages queued, want bob's: $(ctl queue)"
users 10M
wait_for 20 has bob "over tcp" || fail "bob's copy never arrived after his quota was raised"
wait_queued 0 || fail "the queue did not empty: $(ctl queue)"
[ "$(copies alice "over tcp")" -eq 1 ] && [ "$(copies bob "over tcp")" -eq 1 ] ||
	fail "alice has $(copies alice "over tcp"), bob $(copies bob "over tcp") copies, want one each"
[ "$(copies alice early)" -eq 1 ] && [ "$(copies alice "over unix")" -eq 1 ] || fail "a message reached alice twice"

# --- a reload: the new table's socket, in a directory new to the connector ---
write_conf "transport_map { \"unix.test\" = \"lmtp:unix:$SOCK\"; \"tcp.test\" = \"lmtp:unix:$SOCK2\"; }" \
	"transport { lmtp { dead_time = 1s; } }" \
	"queue { backoff { min = 1s; max = 2s; } }"
out=$(ctl reload) || fail "mtactl reload: $out"
wait_log "generation 2" 10 || fail "no reload logged"
wait_status $NCHILD || fail "the new generation is not running"
submit "after reload" alice@tcp.test
wait_for 20 has alice "after reload" || fail "no delivery through the new socket"
wait_log "to=<alice@tcp.test>, relay=$SOCK2, .*status=sent" 5 || fail "the mail did not go through $SOCK2"
exit 0
