# Commands, files and .forward, each run as whom it must be. Aliases: a
# command runs as local.default_user (nobody, its uid recorded), as does
# one listed in a root's :include: file; a file is created and written as
# nobody (read back by Python's mailbox); /dev/null takes the mail; exit
# 75 defers, exit 67 bounces with the command's output in the reason, a
# command past local.time_limit is killed and deferred (with what it
# started in a session of its own, out of its process group, and left
# orphaned: `local pipe` is its reaper), and a sender full
# of shell syntax reaches the command's environment filtered (no marker
# file is ever created).
# Forwarding: an alias to a remote address (a new message from the
# owner- alias, Delivered-To on top, checked at smtp-sink), a loop
# between two aliases stopped by Delivered-To. The DSN request through
# forwards (RFC 3461 6.2.7): an alias to one address passes NOTIFY (as
# given), ORCPT (one naming the alias when none was given), RET and
# ENVID on, and no success notice comes from here; an alias to two
# passes NOTIFY without SUCCESS and the sender's ORCPT, and the sender
# hears "expanded"; cleanup logs the same Message-ID for the message and
# its forwarded copy, the one it gave a message that had none included.
# A queue file damaged while its failure notice is due: bounce checks
# the content's CRC before quoting it, qmgr moves the file to corrupt/,
# no notice goes out.
# A user's .forward: \self, a command (runs as the user: uid recorded),
# a remote address (the sender kept), a file, a Maildir, an :include:
# file that calls our sendmail from the staged install (the message
# arrives in another mailbox) and includes itself under 40 spellings of
# its path (each read once, 32 reads at most, 5 deep), and a command that
# tries to read the queue file from local pipe's descriptor (it cannot). root's
# .forward (root reached through `root: root`) runs its command as
# nobody. Unsafe .forward files (group-writable, another user's, in a
# group-writable home, a symbolic link into a directory the user does
# not own) are ignored with a warning: the mail goes to the mailbox and
# their commands never run. A .forward command (python3) that starts a
# thread which connects to a TCP and a UNIX listener of the case's on
# loopback is delivered, as the user (what it wrote shows its uid and
# both greetings): commands run outside local's sandbox. local's command
# spawner killed, local logs it, exits and is started again, and the
# command runs with the new spawner; local killed, its spawner ends. Envelope recipients naming commands, $(...),
# backticks or ${run{...}} run nothing. Aliases added by the staged
# newaliases while mta runs are accepted at RCPT and delivered with no
# reload; `box1: \mtafw1` and `rootbox: \root` reach the mailboxes
# themselves, the users' .forward files not obeyed, and newaliases says
# that it wrote the database format older versions refuse.
if [ "$(id -u)" != 0 ]; then echo "  skipped: needs root"; exit 0; fi
[ -n "${MTA_STAGE:-}" ] || { echo "  skipped: no staged install (MTA_STAGE)"; exit 0; }
if [ -z "${MTA_IN_NS:-}" ]; then
	# sendmail reads the compiled-in /etc/mta/mta.conf, and root's home
	# gets a .forward: both in a private mount namespace.
	MTA_IN_NS=1 exec unshare -m --propagation private sh ${MTA_TRACE:+-x} "$0"
fi
. ./lib.sh
. ./peers.sh
USERS="mtafw1 mtafw2 mtafw3 mtafw4"
LISTENER_PID=""
# The users go after master (and with it local's delivery workers).
trap 'set +e; [ -z "$LISTENER_PID" ] || kill "$LISTENER_PID" 2>/dev/null; stop_sink; rm -rf "$DUMP"; cleanup; for u in $USERS; do userdel "$u" >/dev/null 2>&1 || true; done' EXIT
for u in $USERS; do mkuser "$u" 755; done
NOBODY=$(id -u nobody)
OUT="$W/out"
mkdir -p "$OUT" && chmod 1777 "$OUT"
MAIL="$W/mail"
mkdir -p "$MAIL" && chown root:mail "$MAIL" && chmod 2775 "$MAIL"
SENDMAIL="$MTA_STAGE/sbin/sendmail"
# root's home, private to this namespace.
mount -t tmpfs -o mode=700 tmpfs /root
printf '"|/usr/bin/id -u > %s/root.uid"\n' "$OUT" >/root/.forward
chmod 644 /root/.forward
cat >"$W/aliases" <<EOF
postmaster: mtafw2
root: root
cmd: "|/usr/bin/id -u > $OUT/cmd.uid"
archive: $OUT/archive
devnull: /dev/null
tempfail: "|echo try later; exit 75"
permfail: "|echo no such list >&2; exit 67"
envdump: "|/usr/bin/env > $OUT/env.txt"
slow: "|sleep 30"
escape: "|(setsid sh -c 'echo \$\$ > $OUT/escape.pid; exec sleep 300' &); sleep 30"
fwd: outside@remote.example
owner-fwd: mtafw2
ping: pong@localhost
pong: ping@localhost
incl: :include:$W/list
single: one@remote.example
pair: twoa@remote.example, twob@remote.example
damaged: "|cat > $OUT/damaged.msg; sleep 3; exit 67"
EOF
chmod 644 "$W/aliases"
printf '# a list of root'"'"'s\n"|/usr/bin/id -u > %s/incl.uid", /dev/null\n' "$OUT" >"$W/list"
chmod 644 "$W/list"
private_mta_conf "aliases = \"$W/aliases\";" "local { mail_spool = \"$MAIL\"; time_limit = 4s; lock_timeout = 5s; }" \
	"queue { backoff { min = 30s; max = 60s; } }" "relay { host = \"[127.0.0.1]:$RELAY\"; }"
"$SENDMAIL" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
smtp_sink
start_master
H=$(hostname | tr 'A-Z' 'a-z')
# dumped SUBJECT: smtp-sink's dump of the message with that subject: its
# own (first) Subject: line, not one in a notice that quotes it.
dumped() {
	for f in "$DUMP"/*; do
		case "$(grep -m1 '^Subject: ' "$f" 2>/dev/null)" in "Subject: $1"*) echo "$f"; return 0 ;; esac
	done
}
has_dump() { [ -n "$(dumped "$1")" ]; }
send() { # send TO SUBJECT [swaks options]
	t=$1 s=$2; shift 2
	swaks --server 127.0.0.1:$PORT --from sender@remote.example --to "$t" --header "Subject: $s" "$@" >"$W/swaks" 2>&1 ||
		{ cat "$W/swaks"; fail "swaks: $s"; }
}
count() { mbox_count "$1"; }
has() { [ "$(count "$1")" -ge "$2" ]; }

# --- commands and files of the aliases: as nobody ---
send cmd@localhost "to a command"
wait_for 10 test -s "$OUT/cmd.uid" || fail "the alias command did not run"
[ "$(cat "$OUT/cmd.uid")" = "$NOBODY" ] || fail "the alias command ran as uid $(cat "$OUT/cmd.uid"), not nobody"
wait_log "to=<cmd@localhost>, relay=local, .*status=sent (delivered to command: /usr/bin/id -u" 5 ||
	fail "no log line for the command"
send incl@localhost "through an include"
wait_for 10 test -s "$OUT/incl.uid" || fail "the :include: file's command did not run"
[ "$(cat "$OUT/incl.uid")" = "$NOBODY" ] || fail "the :include: command ran as uid $(cat "$OUT/incl.uid")"
send archive@localhost "to a file"
wait_for 10 has "$OUT/archive" 1 || fail "the alias file got nothing"
[ "$(stat -c '%U %a' "$OUT/archive")" = "nobody 600" ] || fail "the file is $(stat -c '%U %a' "$OUT/archive")"
/usr/bin/python3 - "$OUT/archive" <<'PY' || fail "the file does not read back"
import mailbox, sys
m = list(mailbox.mbox(sys.argv[1]))
assert len(m) == 1 and m[0]["Subject"] == "to a file" and m[0]["Delivered-To"] == "archive@localhost", m
PY
send devnull@localhost "to nowhere"
wait_log "to=<devnull@localhost>, relay=local, .*status=sent (discarded (/dev/null))" 10 || fail "/dev/null"
send tempfail@localhost "exit 75"
wait_log "to=<tempfail@localhost>, relay=local, .*dsn=4.3.0, status=deferred (command \"echo try later; exit 75\": command exited with status 75: try later)" 10 ||
	fail "a command's exit 75 did not defer"
send permfail@localhost "exit 67"
wait_log "to=<permfail@localhost>, relay=local, .*dsn=5.3.0, status=bounced (command .*exited with status 67: no such list)" 10 ||
	fail "a command's exit 67 did not bounce with its output"
# (the local part within 64 octets: the markers go to the command's
# working directory, nobody's home, or to / where nobody cannot write;
# the test looks for them in both)
send envdump@localhost "hostile sender" --from '"$(touch m1)`touch m2`${run{/bin/touch /tmp/m3}}"@remote.example'
wait_for 10 test -s "$OUT/env.txt" || fail "the env command did not run"
grep -q '^SENDER=' "$OUT/env.txt" || fail "no SENDER in the command's environment: $(cat "$OUT/env.txt")"
grep '^SENDER=' "$OUT/env.txt" | grep -q '[$`(){}" ]' && fail "SENDER unfiltered: $(grep '^SENDER=' "$OUT/env.txt")"
grep -q '^RECIPIENT=envdump@localhost$' "$OUT/env.txt" || fail "RECIPIENT: $(cat "$OUT/env.txt")"
grep -q '^LOCAL=envdump$' "$OUT/env.txt" && grep -q '^DOMAIN=localhost$' "$OUT/env.txt" || fail "LOCAL/DOMAIN"
grep -q "^HOME=/" "$OUT/env.txt" && grep -q '^USER=nobody$' "$OUT/env.txt" || fail "USER/HOME"
[ "$(grep -c . "$OUT/env.txt")" -le 12 ] || fail "more than the fixed environment: $(cat "$OUT/env.txt")"
send slow@localhost "slow"
wait_log "to=<slow@localhost>, relay=local, .*status=deferred (command \"sleep 30\": command stopped after 4s)" 15 ||
	fail "a command past its time limit"
send escape@localhost "escape"
wait_log "to=<escape@localhost>, relay=local, .*status=deferred (command .*: command stopped after 4s)" 15 ||
	fail "a command that started a session of its own, past its time limit"
escaped=$(cat "$OUT/escape.pid" 2>/dev/null)
[ -n "$escaped" ] || fail "the command did not start its own session"
gone_in() { ! kill -0 "$1" 2>/dev/null; }
wait_for 5 gone_in "$escaped" || { kill -9 "$escaped"; fail "what the command started with setsid outlived it"; }
note "a command past its time limit is killed with what it started in a session of its own"
# Forwarded through an alias: a new message from the owner- alias, with
# Delivered-To on top, relayed to smtp-sink.
send fwd@localhost "through an alias" --body "forwarded body"
wait_for 15 has_dump "through an alias" || fail "the forwarded message did not reach smtp-sink"
d=$(dumped "through an alias")
grep -q "^X-Mail-Args: <owner-fwd@$H>" "$d" || fail "the forwarded message is not from owner-fwd: $(head -8 "$d")"
grep -q "^X-Rcpt-Args: <outside@remote.example>" "$d" || fail "the forwarded recipient: $(head -8 "$d")"
grep -q "^Delivered-To: fwd@localhost" "$d" || fail "no Delivered-To in the forwarded message: $(cat "$d")"
grep -q "^forwarded body" "$d" || fail "the body was not forwarded: $(cat "$d")"
wait_log "to=<fwd@localhost>, relay=local, .*status=sent (forwarded as [0-9A-Z]* to <outside@remote.example>)" 5 ||
	fail "no log line for the forward"
# ping forwards to pong and pong to ping: the second visit is a loop.
send ping@localhost "ping pong"
wait_log "to=<ping@localhost>, relay=local, .*dsn=5.4.6, status=bounced (mail forwarding loop for ping@localhost)" 15 ||
	fail "a forwarding loop was not stopped"
# The DSN request through forwards.
python3 - "$PORT" <<'PY' || fail "smtplib: DSN through forwards"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.sendmail("sender@remote.example", ["single@localhost"],
               b"Subject: dsn single\r\nMessage-ID: <dsn-single@remote.example>\r\n\r\nbody\r\n",
               mail_options=["RET=HDRS", "ENVID=FWD1"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    s.sendmail("sender@remote.example", ["pair@localhost"], b"Subject: dsn pair\r\n\r\nbody\r\n",
               mail_options=["ENVID=FWD2"], rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Pair@remote.example"])
PY
wait_for 15 has_dump "dsn single" || fail "the message for single@localhost was not forwarded"
d=$(dumped "dsn single")
grep -q "^X-Mail-Args: <sender@remote.example> .*RET=HDRS ENVID=FWD1" "$d" ||
	fail "RET and ENVID were not passed on: $(grep '^X-' "$d")"
grep -q "^X-Rcpt-Args: <one@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;single@localhost$" "$d" ||
	fail "NOTIFY and ORCPT were not passed on to one address: $(grep '^X-' "$d")"
wait_for 15 has_dump "dsn pair" || fail "the message for pair@localhost was not forwarded"
d=$(dumped "dsn pair")
grep -q "^X-Mail-Args: <sender@remote.example> .*ENVID=FWD2" "$d" || fail "ENVID was not passed on: $(grep '^X-' "$d")"
[ "$(grep -c '^X-Rcpt-Args: <two[ab]@remote.example> NOTIFY=DELAY ORCPT=rfc822;Pair@remote.example$' "$d")" -eq 2 ] ||
	fail "an expansion's copies: $(grep '^X-' "$d")"
wait_for 15 sh -c "grep -l '^Action: expanded' '$DUMP'/* >/dev/null 2>&1" || fail "no \"expanded\" notice for pair@localhost"
r=$(grep -l "^Action: expanded" "$DUMP"/* | head -1)
grep -q "^Final-Recipient: rfc822; pair@localhost" "$r" && grep -q "^Original-Recipient: rfc822; Pair@remote.example" "$r" &&
	grep -q "^Original-Envelope-Id: FWD2" "$r" || fail "the \"expanded\" notice: $(cat "$r")"
wait_log "to=<one@remote.example>, .*status=sent" 10 || fail "the copy for one@remote.example was not sent"
sleep 2
! grep -l "single@localhost" "$DUMP"/* 2>/dev/null | xargs grep -l "^Action:" >/dev/null 2>&1 ||
	fail "a success notice came for the forward to one address, which passed NOTIFY on"
# The Message-ID, logged for the message and for its forwarded copy;
# the one cleanup gave a message without one, too.
[ "$(grep -c "mta/cleanup.*: message-id=<dsn-single@remote\.example>$" "$LOG")" -eq 2 ] ||
	fail "the Message-ID was not logged for the message and its copy: $(grep 'message-id=' "$LOG")"
fwd_line=$(grep "to=<pair@localhost>, relay=local, .*status=sent (forwarded as " "$LOG" | head -1)
orig_id=$(echo "$fwd_line" | sed 's/.*: \([0-9A-Z]*\): to=<pair@localhost>.*/\1/')
copy_id=$(echo "$fwd_line" | sed 's/.*forwarded as \([0-9A-Z]*\) .*/\1/')
mid=$(grep "mta/cleanup.*: $orig_id: message-id=" "$LOG" | sed 's/.*message-id=//')
echo "$mid" | grep -q "^<[0-9A-F]*@[^>]*>$" || fail "cleanup did not log the Message-ID it gave: <$mid>"
grep -q "mta/cleanup.*: $copy_id: message-id=$mid$" "$LOG" || fail "the copy's Message-ID: $(grep "$copy_id" "$LOG")"
# A queue file damaged while its failure notice is due (the command has
# read the message; it fails after). Mail delivered at once has no queue
# file; this one, 2 s in delivery, gets its file then (qmgr's MEMORY_AGE).
send damaged@localhost "to be damaged" --body "a body to damage"
wait_for 10 grep -q "a body to damage" "$OUT/damaged.msg" || fail "the command for damaged@localhost did not run"
damage_queued "a body to damage" || fail "could not damage the queue file"
wait_log "to=<damaged@localhost>, relay=local, .*status=bounced" 10 || fail "damaged@localhost did not bounce"
wait_log "bounce found it corrupt: .*content CRC mismatch; moved to corrupt/.*, no notice sent" 10 ||
	fail "bounce quoted a damaged queue file, or it was not moved to corrupt/"
grep -rl "A body to damage" "$W/spool/corrupt" >/dev/null || fail "the damaged file is not in corrupt/"
sleep 1
! grep -l "to be damaged" "$DUMP"/* >/dev/null 2>&1 || fail "a notice quoted the damaged message"
# root's own .forward: its command runs as nobody.
send root@localhost "for root"
wait_for 10 test -s "$OUT/root.uid" || fail "root's .forward command did not run"
[ "$(cat "$OUT/root.uid")" = "$NOBODY" ] || fail "root's .forward command ran as uid $(cat "$OUT/root.uid")"

# --- a user's .forward ---
F1="$W/home/mtafw1"
cat >"$F1/.forward" <<EOF
\\mtafw1, "|/usr/bin/id -u > $OUT/fw1.uid", other@remote.example
$F1/saved, $F1/md/
:include:$F1/inc
"|cat /proc/\$PPID/fd/3 > $OUT/stolen 2>/dev/null; exit 0"
EOF
# The include includes itself, under 40 spellings of its path (d/../inc,
# d/../d/../inc, ...): each spelling is read once, and no more than 32
# includes in all.
mkdir -p "$F1/d" && chown mtafw1: "$F1/d"
{
	echo "\"|$SENDMAIL -f mtafw1@localhost mtafw2@localhost\""
	p="$F1/inc"
	for _ in $(seq 40); do echo ":include:$p"; p=$(echo "$p" | sed 's|/inc$|/d/../inc|'); done
} >"$F1/inc"
chown mtafw1: "$F1/.forward" "$F1/inc"; chmod 644 "$F1/.forward" "$F1/inc"
send mtafw1@localhost "forwarded by mtafw1"
wait_for 10 has "$MAIL/mtafw1" 1 || fail "\\mtafw1 did not reach the mailbox"
wait_for 10 test -s "$OUT/fw1.uid" || fail "the .forward command did not run"
# The queue file (every recipient of the message, blind copies too) is
# not the user's to read: not from local pipe's descriptors either.
wait_for 10 test -e "$OUT/stolen" || fail "the .forward command reading local pipe's descriptor did not run"
[ ! -s "$OUT/stolen" ] || fail "a .forward command read the queue file from local pipe: $(head -c 200 "$OUT/stolen")"
[ "$(cat "$OUT/fw1.uid")" = "$(id -u mtafw1)" ] || fail "the .forward command ran as uid $(cat "$OUT/fw1.uid")"
wait_for 10 has "$F1/saved" 1 || fail "the .forward file got nothing"
[ "$(stat -c %U "$F1/saved")" = mtafw1 ] || fail "the .forward file is not the user's"
wait_for 10 sh -c "ls '$F1/md/new' 2>/dev/null | grep -q ." || fail "the .forward Maildir got nothing"
wait_for 20 has "$MAIL/mtafw2" 1 || fail "the message sent by our sendmail from the .forward did not arrive"
/usr/bin/python3 - "$MAIL/mtafw2" "$F1/md" <<'PY' || fail "the resent message"
import mailbox, sys
m = list(mailbox.mbox(sys.argv[1]))
assert len(m) == 1 and m[0]["Subject"] == "forwarded by mtafw1", [x["Subject"] for x in m]
assert m[0]["Return-Path"] == "<mtafw1@localhost>", m[0]["Return-Path"]
d = list(mailbox.Maildir(sys.argv[2], create=False))
assert len(d) == 1 and d[0]["Delivered-To"].startswith("mtafw1@"), d
PY
wait_log "mtafw1's :include:$F1/inc: included again; skipped" 5 || fail "the include loop was not stopped"
wait_log "mtafw1's :include:$F1/\(d/\.\./\)*inc: more than 32 includes; skipped" 5 || fail "the includes were not bounded"
wait_log "mtafw1's :include:$F1/\(d/\.\./\)*inc: nested more than 5 deep; skipped" 5 || fail "the nesting was not bounded"
wait_for 15 has_dump "forwarded by mtafw1" || fail "the .forward's address got nothing"
d=$(dumped "forwarded by mtafw1")
grep -q "^X-Mail-Args: <sender@remote.example>" "$d" || fail "a .forward changed the sender: $(head -8 "$d")"
grep -q "^X-Rcpt-Args: <other@remote.example>" "$d" && grep -q "^Delivered-To: mtafw1@$H" "$d" ||
	fail "the .forward's forward: $(cat "$d")"

# --- a .forward command that opens sockets from a thread, as
# dovecot-lda, spamc, logger or any Go program does: it runs as the user
# with no sandbox of local's (socket() and new threads work) ---
# A listener on loopback, TCP and UNIX, greeting each connection (60 s
# and eight connections at most).
/usr/bin/python3 - "$W/net.port" "$W/net.sock" <<'PY' &
import os, select, socket, sys, time
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen(8)
unix = socket.socket(socket.AF_UNIX)
unix.bind(sys.argv[2])
os.chmod(sys.argv[2], 0o666)
unix.listen(8)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % tcp.getsockname()[1])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
end = time.time() + 60
for _ in range(8):
    left = end - time.time()
    if left <= 0:
        break
    ready, _, _ = select.select([tcp, unix], [], [], left)
    for s in ready:
        c, _ = s.accept()
        c.sendall(b"hello-tcp\n" if s is tcp else b"hello-unix\n")
        c.close()
PY
LISTENER_PID=$!
wait_for 10 test -s "$W/net.port" || fail "the test's listener did not start"
F4="$W/home/mtafw4"
cat >"$F4/net.py" <<'PY'
import os, socket, sys, threading
port, path, out = sys.argv[1:4]
message = sys.stdin.read()
got = {}
def talk():
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
        got["tcp"] = s.makefile().readline().strip()
    with socket.socket(socket.AF_UNIX) as u:
        u.settimeout(10)
        u.connect(path)
        got["unix"] = u.makefile().readline().strip()
t = threading.Thread(target=talk)
t.start()
t.join()
if "Subject: over the network" not in message or len(got) != 2:
    print("the command got", got)
    sys.exit(75)
with open(out, "w") as f:
    f.write("%d %s %s\n" % (os.getuid(), got["tcp"], got["unix"]))
PY
printf '"|/usr/bin/python3 %s/net.py %s %s %s/net.out"\n' "$F4" "$(cat "$W/net.port")" "$W/net.sock" "$OUT" >"$F4/.forward"
chown mtafw4: "$F4/.forward" "$F4/net.py"; chmod 644 "$F4/.forward" "$F4/net.py"
send mtafw4@localhost "over the network"
wait_log "to=<mtafw4@$H>.*relay=local, .*status=\\(sent\\|deferred\\|bounced\\)" 15 || fail "the network command was not run"
grep "to=<mtafw4@$H>.*relay=local, .*status=deferred" "$LOG" &&
	fail "the network command failed: $(grep "to=<mtafw4@$H>.*relay=local" "$LOG")"
wait_log "to=<mtafw4@$H>.*relay=local, .*status=sent (delivered to command: /usr/bin/python3 " 5 ||
	fail "the network command: $(grep "to=<mtafw4@$H>" "$LOG")"
[ "$(cat "$OUT/net.out")" = "$(id -u mtafw4) hello-tcp hello-unix" ] || fail "the network command wrote $(cat "$OUT/net.out")"
[ "$(stat -c %U "$OUT/net.out")" = mtafw4 ] || fail "the network command's file is $(stat -c %U "$OUT/net.out")'s"

# --- the command spawner, local's one helper outside its sandbox: one
# that ends is replaced (local exits and is started again), and it ends
# with local ---
# new_local OLD: the pid of the local process started after OLD.
new_local() {
	i=0
	while [ -z "$(child_pid local)" ] || [ "$(child_pid local)" = "$1" ]; do
		[ $i -gt 100 ] && fail "local was not started again after $1"
		sleep 0.1; i=$((i + 1))
	done
	child_pid local
}
spawner_of() { pgrep -P "$1" -f "^local spawner " || true; }
lp=$(child_pid local)
sp=$(spawner_of "$lp")
[ -n "$sp" ] || fail "local $lp has no command spawner: $(ps -o pid,args --ppid "$lp")"
kill -KILL "$sp"
wait_log "mta/local\[$lp\]: .*the command spawner was lost (it ended); starting again" 10 ||
	fail "local did not notice its command spawner's end"
gone "$lp" 10 || fail "local did not exit without its command spawner"
lp=$(new_local "$lp")
rm -f "$OUT/net.out"
send mtafw4@localhost "over the network"
wait_for 15 test -s "$OUT/net.out" || fail "the network command did not run with the new spawner: $(grep "to=<mtafw4@$H>" "$LOG")"
sp=$(spawner_of "$lp")
[ -n "$sp" ] || fail "the new local $lp has no command spawner"
kill -KILL "$lp"
gone "$sp" 5 || fail "the command spawner $sp outlived its local"
new_local "$lp" >/dev/null

# --- unsafe .forward files are ignored: the mail goes to the mailbox ---
F3="$W/home/mtafw3"
n=0
unsafe() { # unsafe WHY SUBJECT: the .forward as set up is ignored with WHY
	n=$((n + 1))
	send mtafw3@localhost "$2"
	wait_for 10 has "$MAIL/mtafw3" $n || fail "$2: the mail did not reach the mailbox"
	wait_log "$1; ignored" 5 || fail "$2: no warning \"$1\""
	[ ! -e "$OUT/unsafe" ] || fail "$2: the command of an unsafe .forward ran"
}
printf '"|touch %s/unsafe"\n' "$OUT" >"$F3/.forward"
chown mtafw3: "$F3/.forward"; chmod 664 "$F3/.forward"
unsafe "$F3/.forward: writable by group or others" "group-writable .forward"
chmod 644 "$F3/.forward"; chown mtafw2: "$F3/.forward"
unsafe "$F3/.forward: owned by another user" "another user's .forward"
chown mtafw3: "$F3/.forward"; chmod 775 "$F3"
unsafe "$F3/.forward: in a directory writable by group or others" "group-writable home"
chmod 755 "$F3"; mkdir "$W/elsewhere"; mv "$F3/.forward" "$W/elsewhere/fwd"; ln -s "$W/elsewhere/fwd" "$F3/.forward"
unsafe "$F3/.forward: a symbolic link into $W/elsewhere, which the user does not own" "symbolic link elsewhere"

# --- the envelope never names a command ---
python3 - "$PORT" "$OUT" <<'PY' || fail "a hostile envelope recipient was accepted"
import smtplib, sys
out = sys.argv[2]
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.ehlo()
    s.mail("sender@remote.example")
    for r in ['"|touch %s/e1"@localhost' % out, '"%s/e2"@localhost' % out, '"$(touch %s/e3)"@localhost' % out,
              '"`touch %s/e4`"@localhost' % out, '"${run{/bin/touch %s/e5}}"@localhost' % out]:
        code, _ = s.rcpt("<%s>" % r)
        assert code >= 500, (r, code)
PY
sleep 1
for m in m1 m2 m3 e1 e2 e3 e4 e5 unsafe; do [ ! -e "$OUT/$m" ] || fail "a command from the envelope ran ($m)"; done
nh=$(getent passwd nobody | cut -d: -f6)
for m in "$nh/m1" "$nh/m2" /m1 /m2 /tmp/m3; do [ ! -e "$m" ] || fail "a command from the sender ran ($m)"; done

# --- newaliases while mta runs: the new aliases are accepted at RCPT and
# delivered with no reload; \user is the mailbox itself, its .forward
# not read ---
rcpt() { swaks --server "127.0.0.1:$PORT" --from a@remote.example --to "$1" --quit-after RCPT >"$W/sw" 2>&1; }
rcpt box1@localhost && fail "box1 accepted before newaliases"
grep -q "550 5.1.1" "$W/sw" || fail "an unknown recipient: $(cat "$W/sw")"
printf 'box1: \\mtafw1\nrootbox: \\root\n' >>"$W/aliases"
grep -q "format 2" "$W/bi" && fail "format 2 without \\user: $(cat "$W/bi")"
"$SENDMAIL" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
grep -q "aliases.cdb: 20 aliases, longest [0-9]* bytes, format 2 (\\\\user: an mta without \\\\user refuses it)\$" "$W/bi" ||
	fail "newaliases did not say it wrote format 2: $(cat "$W/bi")"
wait_for 10 rcpt box1@localhost || fail "box1 refused after newaliases: $(cat "$W/sw")"
wait_log "aliases database $W/aliases.cdb changed: local-recipient table rebuilt and sent to [0-9]* smtpd" 5 ||
	fail "master did not log the new aliases"
n1=$(count "$MAIL/mtafw1") s1=$(count "$F1/saved") d1=$(ls "$F1/md/new" | wc -l)
send box1@localhost "to box1"
wait_for 10 has "$MAIL/mtafw1" $((n1 + 1)) || fail "\\mtafw1 in the aliases did not reach the mailbox"
wait_log "to=<mtafw1@$H>, orig_to=<box1@localhost>, relay=local, .*status=sent (delivered to mailbox)" 5 ||
	fail "no log line for the delivery through box1"
sleep 1
[ "$(count "$F1/saved")" -eq "$s1" ] && [ "$(ls "$F1/md/new" | wc -l)" -eq "$d1" ] ||
	fail "mtafw1's .forward was obeyed for \\mtafw1"
! grep -q "^Subject: to box1" "$DUMP"/* 2>/dev/null || fail "mtafw1's .forward forwarded the mail for \\mtafw1"
rm -f "$OUT/root.uid"
send rootbox@localhost "to root's mailbox"
wait_for 10 has "$MAIL/root" 1 || fail "\\root in the aliases did not reach root's mailbox"
[ ! -e "$OUT/root.uid" ] || fail "root's .forward was obeyed for \\root"
! grep -q "reloaded" "$LOG" || fail "something reloaded"
exit 0
