# Local delivery, read back by programs we did not write. On a mail spool
# like Debian's (2775 root:mail): mail to a user, to an alias list and to
# user+ext lands in each mbox, owned by the user with the spool's group,
# mode 0600, read by Python's mailbox module (Return-Path, Delivered-To,
# a body "From " line quoted) and by s-nail; ten messages at once to one
# mbox do not interleave; a held dot-lock and flock make the delivery
# wait; a Delivered-To loop bounces; root without an alias waits with a
# reason, and its queue file, damaged meanwhile, goes to corrupt/ once
# the local agent finds its content's CRC wrong; an alias to another
# address is forwarded; an empty .forward
# leaves the mail in the mailbox, and one naming the user's own address
# delivers there; an unknown member of an alias list bounces alone, the
# others (one written user+ext) get the message; an envelope recipient
# naming a command runs nothing; a damaged aliases database makes mail
# for local recipients wait, naming the file, until newaliases mends it
# (no reload); so does an aliases file whose database is gone: smtpd
# answers 451 4.3.0 for alias names meanwhile and still takes users'
# mail, which local defers, root's too, naming the file and newaliases.
# A user made by useradd while mta runs is accepted within seconds, with
# no reload, and gets mail; removed, refused again. Each mailbox has one
# delivery worker, which opens the mailbox
# afresh for each message: a mailbox a mail reader took away between two
# deliveries is made again, by the same worker, for the next. Then,
# switched to Maildir by a reload, mail lands in ~/Maildir/new, read by
# Python, and a burst of messages to one user is delivered by one worker
# process (its pid and count of deliveries are in each file's name).
. ./lib.sh
is_root || { echo "  skipped: local delivery runs as the recipient (needs root)"; exit 0; }
# The users go after master (and with it local's delivery workers, which
# run as them).
trap 'cleanup; for u in mtaloc1 mtaloc2 mtaloc3 mtaloc4; do userdel "$u" >/dev/null 2>&1 || true; done' EXIT
userdel mtaloc4 >/dev/null 2>&1 || true
for u in mtaloc1 mtaloc2 mtaloc3; do mkuser $u; done
: >"$W/home/mtaloc3/.forward"
chown mtaloc3: "$W/home/mtaloc3/.forward"
MAIL="$W/mail"
mkdir -p "$MAIL" && chown root:mail "$MAIL" && chmod 2775 "$MAIL"
H=$(hostname | tr 'A-Z' 'a-z')
cat >"$W/aliases" <<EOF
postmaster: mtaloc1
team: mtaloc1, mtaloc2
tagged+x: mtaloc2
away: someone@remote.example
partly: mtaloc1, nosuchuser9, mtaloc2+lists
EOF
write_conf "aliases = \"$W/aliases\";" "local { mail_spool = \"$MAIL\"; lock_timeout = 20s; worker_idle_time = 120s; }" \
	"queue { backoff { min = 1s; max = 2s; } }"
"$MTA_BIN/sendmail" -C "$CONF" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
start_master
send() { # send TO SUBJECT [swaks options]
	t=$1 s=$2; shift 2
	swaks --server 127.0.0.1:$PORT --from sender@remote.example --to "$t" --header "Subject: $s" "$@" >"$W/swaks" 2>&1 ||
		{ cat "$W/swaks"; fail "swaks: $s"; }
}
count() { mbox_count "$1"; }
has() { [ "$(count "$MAIL/$1")" -ge "$2" ]; }

# --- mbox: a user, an alias list, an extension, a From line ---
send mtaloc1@localhost "direct" --body "$(printf 'hello\nFrom the start\n>From quoted\nend')"
send team@localhost "to the team"
send mtaloc1+lists@localhost "extension"
send tagged+x@localhost "alias with extension"
wait_for 20 has mtaloc1 3 || fail "mtaloc1 got $(count "$MAIL/mtaloc1") of 3"
wait_for 20 has mtaloc2 2 || fail "mtaloc2 got $(count "$MAIL/mtaloc2") of 2"
wait_log "to=<mtaloc1@$H>, orig_to=<team@localhost>, relay=local, .*status=sent (delivered to mailbox)" 5 ||
	fail "no log line for the alias delivery"
[ "$(stat -c '%U:%G %a' "$MAIL/mtaloc1")" = "mtaloc1:mail 600" ] ||
	fail "mailbox is $(stat -c '%U:%G %a' "$MAIL/mtaloc1"), want mtaloc1:mail 600"
[ ! -e "$MAIL/mtaloc1.lock" ] || fail "the dot-lock was left behind"
/usr/bin/python3 - "$MAIL/mtaloc1" "$H" <<'PY' || fail "the mbox does not read back"
import mailbox, sys
box, host = mailbox.mbox(sys.argv[1]), sys.argv[2]
msgs = {m["Subject"]: m for m in box}
assert set(msgs) == {"direct", "to the team", "extension"}, list(msgs)
d = msgs["direct"]
assert d["Return-Path"] == "<sender@remote.example>", d["Return-Path"]
assert d["Delivered-To"] == "mtaloc1@localhost", d["Delivered-To"]
body = d.get_payload()
assert "\n>From the start\n" in body and "\n>>From quoted\n" in body, repr(body)
assert msgs["to the team"]["Delivered-To"] == "mtaloc1@" + host, msgs["to the team"]["Delivered-To"]
assert d.get_from().startswith("sender@remote.example "), d.get_from()
print("  mbox read back by Python's mailbox: 3 messages, headers and From quoting right")
PY
MAIL= HOME="$W/home/mtaloc1" s-nail -N -H -f "$MAIL/mtaloc1" </dev/null >"$W/snail" 2>&1 || true
[ "$(grep -c 'sender@remote' "$W/snail")" -eq 3 ] || fail "s-nail does not list 3 messages: $(cat "$W/snail")"

# --- one worker per mailbox; the mailbox opened by name for each message ---
# workers KIND DIR NAME: the pids of the delivery workers for that mailbox
workers() { pgrep -f "^local deliver $1 $2 $3 " | tr '\n' ' ' | sed 's/ $//'; }
w1=$(workers mbox "$MAIL" mtaloc1)
[ -n "$w1" ] && [ "$(echo "$w1" | wc -w)" -eq 1 ] || fail "delivery workers for mtaloc1: '$w1', want one"
# A mail reader took the mailbox away (as mail(1) removes an empty one).
mv "$MAIL/mtaloc1" "$W/mtaloc1.taken"
send mtaloc1@localhost "after removal"
wait_for 20 has mtaloc1 1 || fail "the removed mailbox was not made again"
[ "$(stat -c '%U:%G %a' "$MAIL/mtaloc1")" = "mtaloc1:mail 600" ] ||
	fail "the new mailbox is $(stat -c '%U:%G %a' "$MAIL/mtaloc1"), want mtaloc1:mail 600"
/usr/bin/python3 - "$MAIL/mtaloc1" <<'PY' || fail "the new mailbox does not hold the one new message"
import mailbox, sys
assert [m["Subject"] for m in mailbox.mbox(sys.argv[1], create=False)] == ["after removal"]
PY
[ "$(count "$W/mtaloc1.taken")" -eq 3 ] || fail "the mailbox taken away changed"
[ "$(workers mbox "$MAIL" mtaloc1)" = "$w1" ] || fail "not the same worker: $w1, then $(workers mbox "$MAIL" mtaloc1)"
note "worker $w1 made the removed mailbox again for the next message"

# --- ten at once to one mbox: no interleaving ---
i=0 pids=""
while [ $i -lt 10 ]; do
	send mtaloc2@localhost "burst $i" --body "$(printf 'line %s\n' $(seq 1 200) | sed "s/^/burst $i /")" &
	pids="$pids $!"; i=$((i + 1))
done
for p in $pids; do wait "$p" || fail "a burst message was not accepted"; done
wait_for 30 has mtaloc2 12 || fail "mtaloc2 got $(count "$MAIL/mtaloc2") of 12"
w2=$(workers mbox "$MAIL" mtaloc2)
[ -n "$w2" ] && [ "$(echo "$w2" | wc -w)" -eq 1 ] || fail "delivery workers for mtaloc2 after the burst: '$w2', want one"
/usr/bin/python3 - "$MAIL/mtaloc2" <<'PY' || fail "the burst interleaved"
import mailbox, sys
for m in mailbox.mbox(sys.argv[1]):
    s = m["Subject"]
    if not s.startswith("burst"):
        continue
    n = s.split()[1]
    lines = m.get_payload().strip("\n").split("\n")
    assert lines == ["burst %s line %d" % (n, k) for k in range(1, 201)], (s, lines[:3])
print("  ten concurrent deliveries intact")
PY

# --- a held lock makes the delivery wait ---
/usr/bin/python3 - "$MAIL" <<'PY' &
import fcntl, os, sys, time
d = sys.argv[1]
lock = os.open(os.path.join(d, "mtaloc2.lock"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
f = open(os.path.join(d, "mtaloc2"), "a")
fcntl.flock(f, fcntl.LOCK_EX)
open(os.path.join(d, "held"), "w").close()
time.sleep(4)
fcntl.flock(f, fcntl.LOCK_UN)
os.unlink(os.path.join(d, "mtaloc2.lock"))
PY
locker=$!
wait_for 5 test -e "$MAIL/held" || fail "the lock holder did not start"
send mtaloc2@localhost "while locked"
sleep 2
[ "$(count "$MAIL/mtaloc2")" -eq 12 ] || fail "delivered while the mailbox was locked"
wait "$locker"
wait_for 20 has mtaloc2 13 || fail "not delivered after the lock was released"

# --- a loop, root, an alias to elsewhere, an empty .forward ---
send mtaloc1@localhost "looped" --add-header "Delivered-To: mtaloc1@localhost"
wait_log "to=<mtaloc1@localhost>, relay=local, .*dsn=5.4.6, status=bounced" 10 || fail "the loop did not bounce"
send root@localhost "for root" --body "waiting for root"
wait_log "to=<root@localhost>, relay=local, .*status=deferred (mail for root is delivered only through an alias" 10 ||
	fail "mail for root without an alias"
# Its content damaged while it waits: the local agent checks the
# content's CRC (qmgr reads only the envelope) and says so, and qmgr
# moves the file to corrupt/ rather than retrying it until it expires.
damage_queued "waiting for root" || fail "could not damage the queue file"
ctl queue flush >/dev/null
wait_log "the delivery agent found it corrupt: .*content CRC mismatch; moved to corrupt/" 15 ||
	fail "the damaged queue file was not moved to corrupt/"
wait_log "local.*: the queue file is corrupt: .*content CRC mismatch" 5 || fail "local did not report the damage"
grep -rl "Waiting for root" "$W/spool/corrupt" >/dev/null || fail "the damaged file is not in corrupt/"
# Mail for root that waits, for the checks further on.
send root@localhost "for root again"
# (Counted at each try: the second may be reported after swaks is done.)
root_waits() {
	[ "$(grep -c "to=<root@localhost>, relay=local, .*status=deferred (mail for root is delivered only through an alias" "$LOG")" -ge 2 ]
}
wait_for 10 root_waits || fail "the second mail for root did not wait"
send away@localhost "away"
wait_log "to=<away@localhost>, relay=local, .*status=sent (forwarded as [0-9A-Z]* to <someone@remote.example>)" 10 ||
	fail "alias to another address"
send mtaloc3@localhost "empty .forward"
wait_for 20 has mtaloc3 1 || fail "mail for a user with an empty .forward"

# --- one bad member of a list fails alone; user+ext in a list is the
# user's mailbox; a .forward naming the user's own address delivers ---
b1=$(count "$MAIL/mtaloc1") b2=$(count "$MAIL/mtaloc2")
send partly@localhost "partly"
wait_log "to=<nosuchuser9@$H>, orig_to=<partly@localhost>, relay=local, .*status=bounced (unknown user" 10 ||
	fail "the unknown member did not bounce alone"
wait_for 20 has mtaloc1 $((b1 + 1)) || fail "the list's first member did not get it"
wait_for 20 has mtaloc2 $((b2 + 1)) || fail "the list's member user+ext did not get it"
echo "mtaloc3@localhost" >"$W/home/mtaloc3/.forward"
send mtaloc3@localhost "own address in .forward"
wait_for 20 has mtaloc3 2 || fail "a .forward naming its own user's address did not deliver to the mailbox"
! grep -q "mail forwarding loop for mtaloc3" "$LOG" || fail "a .forward naming its own user's address looped"
# An address literal of this host is a local domain (RFC 1123 5.2.17):
# delivered here, not relayed to ourselves and bounced as a loop.
send "mtaloc3@[127.0.0.1]" "to an address literal of ours"
wait_for 20 has mtaloc3 3 || fail "mail to an address literal of this host was not delivered locally"
wait_log "to=<mtaloc3@\[127.0.0.1\]>, relay=local, .*status=sent" 5 || fail "no local delivery line for the literal"

# --- a damaged aliases database: mail for local recipients waits
# (4.3.0, naming the file), nothing bounces; newaliases mends it, and
# the mail is delivered, with no reload ---
b1=$(count "$MAIL/mtaloc1") b2=$(count "$MAIL/mtaloc2")
printf 'not a cdb' >"$W/aliases.cdb.new" && mv "$W/aliases.cdb.new" "$W/aliases.cdb"
wait_log "$W/aliases.cdb: not a cdb file; the local-recipient table is kept as it was" 10 ||
	fail "master did not log the damaged aliases database"
send team@localhost "while the aliases are damaged"
wait_log "to=<team@localhost>, relay=local, .*dsn=4.3.0, status=deferred (aliases database $W/aliases.cdb: not a cdb file)" 10 ||
	fail "mail to an alias did not wait while the database was damaged"
wait_log "aliases database $W/aliases.cdb: not a cdb file; mail for local recipients waits until it is mended" 5 ||
	fail "local did not log the damaged aliases database"
"$MTA_BIN/sendmail" -C "$CONF" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
wait_for 20 has mtaloc1 $((b1 + 1)) || fail "mtaloc1 did not get the list's mail once the aliases were mended"
wait_for 20 has mtaloc2 $((b2 + 1)) || fail "mtaloc2 did not get the list's mail once the aliases were mended"
wait_log "aliases database $W/aliases.cdb opened" 5 || fail "local did not log the mended database"
# (the names are those of before the damage: smtpd is kept)
wait_log "aliases database $W/aliases.cdb changed: the local recipients are the same, smtpd kept" 10 ||
	fail "master did not read the mended database"
! grep -q "to=<team@localhost>.*status=bounced" "$LOG" || fail "mail to an alias bounced while the database was damaged"
! grep -q "reloaded" "$LOG" || fail "something reloaded"

# rcpt_is TO CODE: smtpd answers RCPT TO:<TO> with CODE (the reply in $W/rcpt)
rcpt_is() {
	python3 - "$PORT" "$1" >"$W/rcpt" 2>&1 <<'PY' || return 1
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.ehlo()
    s.mail("sender@remote.example")
    code, text = s.rcpt("<%s>" % sys.argv[2])
    print(code, text.decode())
PY
	[ "$(cut -d' ' -f1 "$W/rcpt")" = "$2" ]
}

# --- the aliases file without its database (newaliases never run, or the
# database removed): any local name may be an alias, so nothing bounces:
# smtpd answers 451 4.3.0 for names that are no user and takes users'
# mail, which local defers, root's (waiting since above) too; newaliases
# mends it all, with no reload ---
b1=$(count "$MAIL/mtaloc1")
rm "$W/aliases.cdb"
wait_log "aliases database $W/aliases.cdb does not exist: run newaliases to compile $W/aliases; until then" 10 ||
	fail "master did not log the missing aliases database"
wait_for 10 rcpt_is team@localhost 451 || fail "an alias name while the aliases are not compiled: $(cat "$W/rcpt")"
grep -q "^451 4.3.0 <team@localhost>: Recipient address rejected: Temporary lookup failure" "$W/rcpt" ||
	fail "the temporary refusal: $(cat "$W/rcpt")"
rcpt_is mtaloc1@localhost 250 || fail "a user while the aliases are not compiled: $(cat "$W/rcpt")"
send mtaloc1@localhost "while not compiled"
uncompiled="aliases database $W/aliases.cdb does not exist: run newaliases to compile $W/aliases"
wait_log "to=<mtaloc1@localhost>, relay=local, .*dsn=4.3.0, status=deferred ($uncompiled)" 10 ||
	fail "mail to a user was not deferred while the aliases were not compiled"
wait_log "to=<root@localhost>, relay=local, .*dsn=4.3.0, status=deferred ($uncompiled)" 10 ||
	fail "mail to root was not deferred for the missing database"
wait_log "$uncompiled; mail for local recipients waits until then" 5 || fail "local did not log the missing database"
[ "$(count "$MAIL/mtaloc1")" -eq "$b1" ] || fail "delivered while the aliases were not compiled"
"$MTA_BIN/sendmail" -C "$CONF" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
wait_for 20 has mtaloc1 $((b1 + 1)) || fail "the user's mail was not delivered once the aliases were compiled"
wait_for 10 rcpt_is team@localhost 250 || fail "the alias refused after newaliases: $(cat "$W/rcpt")"
! grep -q "status=bounced (unknown user: \"team\"" "$LOG" || fail "an alias name bounced as an unknown user"
! grep -q "reloaded" "$LOG" || fail "something reloaded"

# --- a user made while mta runs: accepted within seconds, no reload,
# also in a session that began before (smtpd takes the new table in
# place, its sessions go on) ---
rcpt_is mtaloc4@localhost 550 || fail "mtaloc4 accepted before it exists: $(cat "$W/rcpt")"
rm -f "$W/go" "$W/same"
python3 - "$PORT" "$W" >"$W/same" 2>&1 <<'PY' &
import os, smtplib, sys, time
w = sys.argv[2]
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    s.ehlo()
    s.mail("sender@remote.example")
    print("before", s.rcpt("<mtaloc4@localhost>")[0], flush=True)
    for _ in range(200):
        if os.path.exists(w + "/go"):
            break
        time.sleep(0.1)
    print("after", s.rcpt("<mtaloc4@localhost>")[0], flush=True)
PY
same=$!
wait_for 10 grep -q '^before 550' "$W/same" || fail "the early session: $(cat "$W/same")"
replaced=$(grep -c "local-recipient table replaced" "$LOG")
mkuser mtaloc4
wait_log "password file /etc/passwd changed: local-recipient table rebuilt and sent to [0-9]* smtpd" 10 ||
	fail "master did not log the new password file"
wait_for 5 test "$(grep -c "local-recipient table replaced" "$LOG")" -gt "$replaced" ||
	fail "smtpd did not take the new table"
touch "$W/go"
wait "$same"
grep -q '^after 250' "$W/same" || fail "a session begun before the new user did not take it: $(cat "$W/same")"
wait_for 10 rcpt_is mtaloc4@localhost 250 || fail "the new user was not accepted without a reload: $(cat "$W/rcpt")"
send mtaloc4@localhost "to a new user"
wait_for 20 has mtaloc4 1 || fail "the new user's mail was not delivered"
# (-f: its idle delivery worker still runs as it)
userdel -f mtaloc4 2>/dev/null || fail "userdel mtaloc4"
wait_for 10 rcpt_is mtaloc4@localhost 550 || fail "a removed user still accepted: $(cat "$W/rcpt")"
! grep -q "reloaded" "$LOG" || fail "something reloaded"

# --- the envelope never names a command ---
python3 - "$PORT" "$W" <<'PY'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.ehlo()
    s.mail("sender@remote.example")
    for r in ['"|touch %s/marker"@localhost' % sys.argv[2], '"/%s/marker"@localhost' % sys.argv[2]]:
        code, _ = s.rcpt("<%s>" % r)
        assert code >= 500, (r, code)
PY
[ $? -eq 0 ] || fail "an envelope command or file recipient was accepted"
[ ! -e "$W/marker" ] || fail "a command from the envelope ran"

# --- Maildir, after a reload ---
write_conf "aliases = \"$W/aliases\";" "local { mailbox = \"maildir\"; mail_spool = \"$MAIL\"; worker_idle_time = 120s; }"
ctl reload >/dev/null || fail "reload"
sleep 2
# The reload stopped the old local process, and its workers with it.
[ -z "$(workers mbox "$MAIL" mtaloc2)" ] || fail "an mbox worker outlived its local process"
# A small message (the parent hands the worker its content) and one of
# 100 KiB (more than a job may carry: the worker reads the queue file).
send mtaloc2@localhost "to the maildir" --body "small body"
big=$(/usr/bin/python3 -c 'print("\n".join("%04d " % i + "y" * 993 for i in range(100)))')
send mtaloc2@localhost "large to the maildir" --body "$big"
wait_for 20 sh -c "[ \$(ls '$W/home/mtaloc2/Maildir/new/' 2>/dev/null | wc -l) -ge 2 ]" || fail "nothing in the Maildir"
/usr/bin/python3 - "$W/home/mtaloc2/Maildir" <<'PY' || fail "the Maildir does not read back"
import mailbox, sys
box = mailbox.Maildir(sys.argv[1], create=False)
msgs = {m["Subject"]: m for m in box}
assert sorted(msgs) == ["large to the maildir", "to the maildir"], sorted(msgs)
for m in msgs.values():
    assert m["Delivered-To"] == "mtaloc2@localhost"
assert msgs["to the maildir"].get_payload().strip() == "small body", msgs["to the maildir"].get_payload()
big = "\n".join("%04d " % i + "y" * 993 for i in range(100))
got = msgs["large to the maildir"].get_payload().strip()
assert got == big, (len(got), len(big))
print("  Maildir read back by Python's mailbox, a small and a 100 KiB message")
PY
[ "$(stat -c %U "$W/home/mtaloc2/Maildir/new")" = mtaloc2 ] || fail "the Maildir is not the user's"
[ -z "$(ls "$W/home/mtaloc2/Maildir/tmp")" ] || fail "a file was left in tmp/"

# burst N TO SUBJECT: N messages sent at once ("SUBJECT 0" and on), each
# accepted.
burst() {
	_i=0 _pids=""
	while [ $_i -lt "$1" ]; do
		send "$2" "$3 $_i" &
		_pids="$_pids $!"; _i=$((_i + 1))
	done
	for _p in $_pids; do wait "$_p" || fail "a message of the burst to $2 was not accepted"; done
}

# --- a burst to one user: one worker process delivers it all ---
burst 8 mtaloc2@localhost "maildir burst"
wait_for 30 sh -c "[ \$(ls '$W/home/mtaloc2/Maildir/new' | wc -l) -ge 10 ]" || fail "the burst did not reach the Maildir"
# Names are SECS.MUSECSPpidQn.HOST: one pid, ten deliveries counted by it.
procs=$(ls "$W/home/mtaloc2/Maildir/new" | sed -n 's/^[0-9]*\.M[0-9]*P\([0-9]*\)Q[0-9]*\..*/\1/p' | sort -u)
[ "$(echo "$procs" | wc -l)" -eq 1 ] || fail "the Maildir burst was delivered by processes $(echo $procs)"
[ "$(ls "$W/home/mtaloc2/Maildir/new" | sed -n 's/.*Q\([0-9]*\)\..*/\1/p' | sort -n | tr '\n' ' ')" = "0 1 2 3 4 5 6 7 8 9 " ] ||
	fail "the worker did not count ten deliveries: $(ls "$W/home/mtaloc2/Maildir/new")"
[ "$(workers maildir "$W/home/mtaloc2" Maildir/)" = "$procs" ] || fail "the worker $procs is not the one waiting"
note "one worker (pid $procs) delivered all ten messages to the Maildir"

# --- a burst to a list of two users: a batch's two Maildirs are
# committed side by side, each message lands once in each ---
burst 6 team@localhost "list burst"
listed="cat '$W'/home/mtaloc1/Maildir/new/* '$W'/home/mtaloc2/Maildir/new/* 2>/dev/null | grep -c '^Subject: list burst'"
wait_for 30 sh -c "[ \$($listed) -ge 12 ]" || fail "the list burst did not reach both Maildirs"
sleep 0.5
for u in mtaloc1 mtaloc2; do
	n=$(grep -l "^Subject: list burst" "$W/home/$u/Maildir/new/"* | wc -l)
	[ "$n" -eq 6 ] || fail "$u has $n copies of the 6 list messages"
	[ -z "$(ls "$W/home/$u/Maildir/tmp")" ] || fail "a file was left in $u's tmp/"
done

# --- two local processes: each user's burst is still delivered by one
# worker (qmgr keeps a user's mail to one local process), not split ---
for u in mtaloc1 mtaloc2; do ls "$W/home/$u/Maildir/new" > "$W/$u.before"; done
write_conf "aliases = \"$W/aliases\";" "local { mailbox = \"maildir\"; mail_spool = \"$MAIL\"; worker_idle_time = 120s; }" \
	'processes { local = 2; }'
ctl reload >/dev/null || fail "reload with two local processes"
# (The new generation starts in turn: wait for it rather than a fixed time.)
two_locals() { [ "$(pgrep -P "$MASTER_PID" -f "^([^ ]*/)?local$" | wc -l)" -eq 2 ]; }
wait_for 15 two_locals || fail "not two local processes: $(pgrep -a -P "$MASTER_PID")"
burst 8 mtaloc1@localhost "two processes" &
b1=$!
burst 8 mtaloc2@localhost "two processes"
wait $b1 || fail "the burst to mtaloc1 was not accepted"
for u in mtaloc1 mtaloc2; do
	wait_for 30 sh -c "[ \$(grep -l '^Subject: two processes' '$W/home/$u/Maildir/new/'* 2>/dev/null | wc -l) -ge 8 ]" ||
		fail "the burst to $u did not reach the Maildir"
	procs=$(ls "$W/home/$u/Maildir/new" | grep -v -x -F -f "$W/$u.before" |
		sed -n 's/^[0-9]*\.M[0-9]*P\([0-9]*\)Q[0-9]*\..*/\1/p' | sort -u)
	[ "$(echo "$procs" | wc -l)" -eq 1 ] || fail "the burst to $u was delivered by the workers $(echo $procs)"
	note "with two local processes, one worker (pid $procs) delivered $u's burst"
done
exit 0
