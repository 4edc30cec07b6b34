# Directory users: a user whom only a name service knows, served over an
# AF_UNIX socket as sssd, nslcd and systemd-userdbd serve LDAP users, is
# delivered to. local's root parent looks the user up inside its
# sandbox (getpwnam and getgrouplist connect to the service's socket),
# and the delivery runs as the user's uid. The name service here is
# Debian's nss-systemd (`passwd: files systemd` in nsswitch.conf), asking
# a varlink user database that the case serves itself (userdb.py) under
# /run/systemd/userdb, on a tmpfs of a private mount namespace. The user
# is reached through an alias; a name the service does not know bounces as
# an unknown user. smtpd's local-recipient table holds the users the
# name service lists (master's `local users`, every
# local.directory_refresh), so the user is a recipient of its own, and
# an unknown name is refused at RCPT; a list longer than
# local.directory_user_limit is cut with a warning. A directory that hangs while it
# lists is given up after local.directory_timeout, master answering
# meanwhile, and the table keeps the names listed before; the listing
# runs sandboxed (a seccomp filter, no_new_privs). A directory
# that does not list its users (sssd without `enumerate`) leaves them out
# of the table; smtpd then asks the name service about a local name the
# table lacks (the lookup process, local.directory_lookup): the user is
# taken at RCPT and an unknown name refused with 550 5.1.1. With
# local.directory_lookup off, the unlisted user gets 550 5.1.1; with
# local.recipient_check off every local name is taken: the directory user
# gets the mail, and a name no one has bounces as an unknown user. A name
# service that does not answer a lookup gets the client 451 4.3.0 after
# local.directory_lookup_timeout. A killed lookup process is replaced; at
# a reload an smtpd finishing a session is handed the new one, and the old
# one exits.
if [ "$(id -u)" != 0 ]; then echo "  skipped: needs root"; exit 0; fi
grep -Eq '^passwd:.*[[:space:]]systemd([[:space:]]|$)' /etc/nsswitch.conf ||
	{ echo "  skipped: nsswitch.conf does not ask nss-systemd for users (libnss-systemd)"; exit 0; }
if [ -z "${MTA_IN_NS:-}" ]; then
	MTA_IN_NS=1 exec unshare -m --propagation private sh ${MTA_TRACE:+-x} "$0"
fi
. ./lib.sh
DIRUID=40123
[ -z "$(getent passwd $DIRUID)" ] || fail "uid $DIRUID is taken on this system"
USERDB_PID=""
# The directory is made on the system's /run when missing (a mount point
# is needed), and removed again at the end; the tmpfs on it, with the
# socket, exists in this namespace only.
MADE_USERDB=""
[ -d /run/systemd/userdb ] || { mkdir -p /run/systemd/userdb && MADE_USERDB=1; }
trap 'set +e; [ -z "$USERDB_PID" ] || kill "$USERDB_PID" 2>/dev/null || true; cleanup; umount /run/systemd/userdb 2>/dev/null || true; [ -z "$MADE_USERDB" ] || rmdir /run/systemd/userdb' EXIT
mount -t tmpfs -o mode=755 tmpfs /run/systemd/userdb
mkdir -p "$W/home/diruser"
chown $DIRUID:$DIRUID "$W/home/diruser" && chmod 700 "$W/home/diruser"
python3 ./userdb.py /run/systemd/userdb/io.mta.regress diruser $DIRUID "$W/home/diruser" 2>"$W/userdb.log" &
USERDB_PID=$!
wait_for 5 test -S /run/systemd/userdb/io.mta.regress || fail "the user database did not start"
[ "$(getent passwd diruser | cut -d: -f3,6)" = "$DIRUID:$W/home/diruser" ] ||
	fail "the name service does not answer: $(getent passwd diruser; cat "$W/userdb.log")"
cat >"$W/aliases" <<EOF2
dirmail: diruser
ghost: nosuchdiruser
EOF2
write_conf "aliases = \"$W/aliases\";" 'local { mailbox = "maildir"; }' "queue { backoff { min = 1s; max = 2s; } }"
"$MTA_BIN/sendmail" -C "$CONF" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
start_master
swaks --server 127.0.0.1:$PORT --from sender@localhost --to dirmail@localhost --header "Subject: directory" \
	--body "for the directory user" >"$W/swaks" 2>&1 || { cat "$W/swaks"; fail "swaks"; }
new="$W/home/diruser/Maildir/new"
has_file() { [ -n "$(ls -A "$new" 2>/dev/null)" ]; }
wait_for 20 has_file || fail "nothing in $new; userdb: $(cat "$W/userdb.log")"
f=$(ls "$new"/* | head -1)
[ "$(stat -c %u "$f")" = $DIRUID ] || fail "the message belongs to uid $(stat -c %u "$f"), not $DIRUID"
grep -q "for the directory user" "$f" || fail "the message lacks its body"
grep -q "^Delivered-To: diruser@" "$f" || fail "no Delivered-To for the user: $(head -20 "$f")"
wait_log "to=<diruser@.*orig_to=<dirmail@localhost>.*status=sent" 5 || fail "no log line for the delivery"
grep -q '"userName":"diruser"' "$W/userdb.log" || fail "local did not ask the name service"
# A name the name service does not know: an unknown user (5.1.1), not
# a deferral.
swaks --server 127.0.0.1:$PORT --from sender@localhost --to ghost@localhost --header "Subject: ghost" \
	>"$W/swaks" 2>&1 || { cat "$W/swaks"; fail "swaks ghost"; }
wait_log 'to=<ghost@localhost>.*dsn=5.1.1, status=bounced (unknown user: "nosuchdiruser")' 20 ||
	fail "the unknown name did not bounce"
note "a user known only to a name service over a UNIX socket gets mail as its own uid"
# The first listing, before smtpd started.
wait_log "the directory users changed: local-recipient table rebuilt" 5 ||
	fail "the directory users were not listed into the table"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to diruser@localhost --header "Subject: direct" \
	--body "straight to the directory user" >"$W/swaks" 2>&1 || { cat "$W/swaks"; fail "RCPT to the directory user"; }
wait_for 20 sh -c "grep -l 'straight to the directory user' '$new'/* >/dev/null 2>&1" || fail "the direct mail was not delivered"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to nosuchdiruser@localhost --quit-after RCPT \
	>"$W/swaks" 2>&1 || true
grep -q "<\*\* *550 5.1.1" "$W/swaks" || fail "an unknown name was not refused at RCPT: $(cat "$W/swaks")"
note "directory users are local recipients; unknown names get 550 5.1.1"
# More users than local.directory_user_limit: the first are taken, and
# a warning says so.
write_conf "aliases = \"$W/aliases\";" 'local { mailbox = "maildir"; directory_user_limit = 1; }' \
	"queue { backoff { min = 1s; max = 2s; } }"
ctl reload >/dev/null || fail "reload"
wait_log "generation 2" 10 || fail "not reloaded"
wait_log "the name service lists more than local.directory_user_limit (1) users: the others are not local recipients" 10 ||
	fail "a list past the limit was not reported"
note "a list past local.directory_user_limit is cut, with a warning"
# Back to the default limit: the whole list again.
n=$(grep -c "the directory users changed: local-recipient table rebuilt" "$LOG")
write_conf "aliases = \"$W/aliases\";" 'local { mailbox = "maildir"; }' "queue { backoff { min = 1s; max = 2s; } }"
ctl reload >/dev/null || fail "reload"
wait_log "generation 3" 10 || fail "not reloaded"
wait_for 10 sh -c "[ \$(grep -c 'the directory users changed: local-recipient table rebuilt' '$LOG') -gt $n ]" ||
	fail "the whole list was not taken again"
# A directory that hangs while it lists.
kill "$USERDB_PID"; wait "$USERDB_PID" 2>/dev/null || true
USERDB_HANG_LIST=1 python3 ./userdb.py /run/systemd/userdb/io.mta.regress diruser $DIRUID "$W/home/diruser" \
	2>"$W/userdb.log" &
USERDB_PID=$!
wait_for 5 sh -c "getent passwd diruser >/dev/null" || fail "the user database did not start again"
write_conf "aliases = \"$W/aliases\";" 'local { mailbox = "maildir"; directory_timeout = 2s; directory_refresh = 10s; }' \
	"queue { backoff { min = 1s; max = 2s; } }"
ctl reload >/dev/null || fail "reload"
wait_log "generation 4" 10 || fail "not reloaded"
t0=$(date +%s)
ctl status >/dev/null || fail "master did not answer while the directory hangs"
# The listing runs in its sandbox: a seccomp filter and no_new_privs.
wait_for 5 pgrep -f "local users" >/dev/null || fail "no listing is running"
lu=$(pgrep -f "local users" | head -1)
grep -q '^Seccomp:[[:space:]]*2' /proc/$lu/status || fail "the listing has no seccomp filter: $(grep -E '^(Seccomp|NoNewPrivs)' /proc/$lu/status)"
grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$lu/status || fail "the listing lacks no_new_privs"
wait_log "listing the directory users: it ran past local.directory_timeout and was killed; the local-recipient table keeps the [0-9]* listed before" 15 ||
	fail "the hanging listing was not given up"
[ $(($(date +%s) - t0)) -lt 12 ] || fail "giving up took too long"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to diruser@localhost --quit-after RCPT >"$W/swaks" 2>&1 || true
grep -q "<\*\* *250" "$W/swaks" || grep -q "<- *250 2.1.5" "$W/swaks" ||
	fail "the directory user was lost from the table: $(cat "$W/swaks")"
pgrep -f "local users" >/dev/null && fail "the hanging listing was left running"
note "a hanging directory is given up after local.directory_timeout; the table keeps its users"
# A start while the directory hangs: master starts after the timeout,
# and without a list, a local name the table lacks gets 451, not 550,
# unless the name service knows it as a user.
kill "$MASTER_PID"; wait "$MASTER_PID" 2>/dev/null || true
: >"$LOG"
start_master
grep -q "listing the directory users: it ran past local.directory_timeout and was killed; until one ends, local names not in the table get 451 4.3.0" "$LOG" ||
	fail "the first listing was not given up: $(cat "$LOG")"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to nosuchdiruser@localhost --quit-after RCPT >"$W/swaks" 2>&1 || true
grep -q "<\*\* *451 4.3.0" "$W/swaks" || fail "an unknown name was not refused for now: $(cat "$W/swaks")"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to diruser@localhost --quit-after RCPT >"$W/swaks" 2>&1 || true
grep -q "<- *250 2.1.5" "$W/swaks" || fail "the unlisted directory user was not found by lookup: $(cat "$W/swaks")"
note "before any listing ends, an unknown local name gets 451 4.3.0; a user the name service knows, 250"

# A directory that knows its users by name but does not list them.
kill "$MASTER_PID"; wait "$MASTER_PID" 2>/dev/null || true
kill "$USERDB_PID"; wait "$USERDB_PID" 2>/dev/null || true
USERDB_NO_LIST=1 USERDB_HANG_ONCE=nosuchonce python3 ./userdb.py /run/systemd/userdb/io.mta.regress diruser \
	$DIRUID "$W/home/diruser" 2>"$W/userdb.log" &
USERDB_PID=$!
wait_for 5 sh -c "getent passwd diruser >/dev/null" || fail "the user database did not start again"
! getent passwd | grep -q '^diruser:' || fail "the directory still lists its users"
rcpt_is() { # rcpt_is ADDRESS CODE: the reply to RCPT TO:<ADDRESS> starts with CODE
	swaks --server 127.0.0.1:$PORT --from sender@localhost --to "$1" --quit-after RCPT >"$W/swaks" 2>&1 || true
	grep -Eq "^(<-|<\*\*) +$2 " "$W/swaks"
}
write_conf "aliases = \"$W/aliases\";" 'local { mailbox = "maildir"; }' "queue { backoff { min = 1s; max = 2s; } }"
: >"$LOG"
start_master
wait_log "the directory users changed: local-recipient table rebuilt" 10 || fail "no first listing"
n0=$(grep -c '"userName":"diruser"' "$W/userdb.log")
rcpt_is diruser@localhost 250 || fail "the unlisted directory user was not found at RCPT: $(cat "$W/swaks")"
[ "$(grep -c '"userName":"diruser"' "$W/userdb.log")" -gt "$n0" ] || fail "the name service was not asked"
# Asked once: the answer is remembered (local.directory_lookup_cache).
n1=$(grep -c '"userName":"diruser"' "$W/userdb.log")
rcpt_is diruser@localhost 250 || fail "the directory user was refused the second time: $(cat "$W/swaks")"
[ "$(grep -c '"userName":"diruser"' "$W/userdb.log")" = "$n1" ] || fail "the answer was not remembered"
rcpt_is nosuchdiruser@localhost 550 || fail "a name no one has was not refused: $(cat "$W/swaks")"
grep -q "550 5.1.1" "$W/swaks" || fail "not 5.1.1: $(cat "$W/swaks")"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to diruser@localhost --header "Subject: looked up" \
	--body "to the user looked up" >"$W/swaks" 2>&1 || { cat "$W/swaks"; fail "mail to the user looked up"; }
wait_for 20 sh -c "grep -l 'to the user looked up' '$new'/* >/dev/null 2>&1" ||
	fail "the mail to the user looked up was not delivered"
# The lookup process: the mail user, in its sandbox.
lk=$(pgrep -P "$MASTER_PID" -x lookup | head -1)
[ -n "$lk" ] || fail "no lookup process"
[ "$(stat -c %U /proc/$lk)" = _mta ] || fail "the lookup process runs as $(stat -c %U /proc/$lk), not _mta"
grep -q '^Seccomp:[[:space:]]*2' /proc/$lk/status || fail "the lookup process has no seccomp filter"
grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$lk/status || fail "the lookup process lacks no_new_privs"
note "a directory user the name service does not list is found at RCPT; a name no one has gets 550 5.1.1"
# A lookup process killed while it waits on the name service (which
# answers that name the second time only): master starts another, and
# smtpd asks it again, so the waiting RCPT gets its answer, not 451.
(
	swaks --server 127.0.0.1:$PORT --from sender@localhost --to nosuchonce@localhost --quit-after RCPT \
		>"$W/swaks.once" 2>&1 || true
	grep -Eq "^(<-|<\*\*) +550 " "$W/swaks.once"
) &
ONCE_PID=$!
wait_for 10 grep -q '"userName":"nosuchonce"' "$W/userdb.log" || fail "the name service was not asked"
# Meanwhile the lookup process's other threads answer (its timeout is
# 10s: with one question at a time, this one would wait for it).
t0=$(date +%s)
rcpt_is nosuchbeside@localhost 550 || fail "a name asked while another hangs: $(cat "$W/swaks")"
[ $(($(date +%s) - t0)) -lt 5 ] || fail "a name asked while another hangs waited for it"
kill -9 "$lk"
wait_for 10 sh -c "pgrep -P $MASTER_PID -x lookup | grep -vx $lk >/dev/null" || fail "no new lookup process"
wait "$ONCE_PID" || fail "the RCPT in flight at the crash: $(cat "$W/swaks.once")"
[ "$(grep -c '"userName":"nosuchonce"' "$W/userdb.log")" -ge 2 ] || fail "the question was not asked again"
wait_for 10 rcpt_is nosuchother@localhost 550 || fail "no answer after the lookup process restarted: $(cat "$W/swaks")"
grep -q '"userName":"nosuchother"' "$W/userdb.log" || fail "the new lookup process did not ask the name service"
note "names are looked up at once while one hangs; a lookup process killed is replaced, and the question in flight is asked again of the new one"
# A reload while a session is open: its smtpd, finishing its sessions, is
# handed the new lookup process, and the old one exits at once rather
# than at its stop deadline.
rm -f "$W/held" "$W/held.ready" "$W/held.go"
python3 - "$PORT" "$W/held" <<'PY' &
import os, smtplib, sys, time
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
s.ehlo("held.example")
s.mail("sender@localhost")
open(sys.argv[2] + ".ready", "w").close()
for _ in range(600):
    if os.path.exists(sys.argv[2] + ".go"):
        break
    time.sleep(0.1)
code, msg = s.rcpt("nosuchreload@localhost")
with open(sys.argv[2], "w") as f:
    f.write("%d %s\n" % (code, msg.decode()))
s.quit()
PY
HELD_PID=$!
wait_for 10 test -e "$W/held.ready" || fail "the held session did not start"
old_lk=$(pgrep -P "$MASTER_PID" -x lookup | head -1)
ctl reload >/dev/null || fail "reload"
wait_log "generation 2" 10 || fail "not reloaded"
# (Its stop deadline, supervise.stop_timeout, is 5s here.)
wait_for 3 sh -c "! kill -0 $old_lk 2>/dev/null" || fail "the old lookup process did not exit at the reload"
touch "$W/held.go"
wait "$HELD_PID" || fail "the held session failed"
grep -q "^550 " "$W/held" || fail "the held session's RCPT: $(cat "$W/held")"
grep -q '"userName":"nosuchreload"' "$W/userdb.log" || fail "the held session's smtpd did not ask the new lookup process"
note "at a reload, an smtpd finishing its sessions asks the new lookup process, and the old one exits"
# Lookups off: the unlisted user is unknown, and no lookup process runs.
write_conf "aliases = \"$W/aliases\";" 'local { mailbox = "maildir"; directory_lookup = no; }' \
	"queue { backoff { min = 1s; max = 2s; } }"
ctl reload >/dev/null || fail "reload"
wait_log "generation 3" 10 || fail "not reloaded"
wait_for 10 rcpt_is diruser@localhost 550 || fail "an unlisted directory user was not refused: $(cat "$W/swaks")"
grep -q "550 5.1.1" "$W/swaks" || fail "not 5.1.1: $(cat "$W/swaks")"
wait_for 10 sh -c "! pgrep -P $MASTER_PID -x lookup >/dev/null" || fail "the lookup process still runs"
note "with local.directory_lookup off, an unlisted directory user gets 550 5.1.1"
write_conf "aliases = \"$W/aliases\";" 'local { mailbox = "maildir"; recipient_check = no; }' \
	"queue { backoff { min = 1s; max = 2s; } }"
ctl reload >/dev/null || fail "reload"
wait_log "generation 4" 10 || fail "not reloaded"
wait_for 10 rcpt_is diruser@localhost 250 || fail "with recipient_check off, the directory user was refused: $(cat "$W/swaks")"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to diruser@localhost --header "Subject: unlisted" \
	--body "to the unlisted directory user" >"$W/swaks" 2>&1 || { cat "$W/swaks"; fail "mail to the unlisted user"; }
wait_for 20 sh -c "grep -l 'to the unlisted directory user' '$new'/* >/dev/null 2>&1" ||
	fail "the mail to the unlisted directory user was not delivered"
swaks --server 127.0.0.1:$PORT --from sender@localhost --to nosuchdiruser@localhost --header "Subject: no one" \
	>"$W/swaks" 2>&1 || fail "with recipient_check off, a name no one has was refused: $(cat "$W/swaks")"
wait_log 'to=<nosuchdiruser@localhost>.*dsn=5.1.1, status=bounced (unknown user: "nosuchdiruser")' 20 ||
	fail "the name no one has did not bounce"
note "local.recipient_check off: an unlisted directory user gets mail; a name no one has bounces"
# A name service that does not answer a lookup: 451 4.3.0 after
# local.directory_lookup_timeout, and nothing else waits on it in smtpd.
kill "$MASTER_PID"; wait "$MASTER_PID" 2>/dev/null || true
kill "$USERDB_PID"; wait "$USERDB_PID" 2>/dev/null || true
USERDB_NO_LIST=1 USERDB_HANG_NAME=slowuser python3 ./userdb.py /run/systemd/userdb/io.mta.regress diruser $DIRUID \
	"$W/home/diruser" 2>"$W/userdb.log" &
USERDB_PID=$!
wait_for 5 sh -c "getent passwd diruser >/dev/null" || fail "the user database did not start again"
write_conf "aliases = \"$W/aliases\";" \
	'local { mailbox = "maildir"; directory_lookup_timeout = 2s; directory_lookup_backlog = 1; }' \
	"queue { backoff { min = 1s; max = 2s; } }"
: >"$LOG"
start_master
wait_log "the directory users changed: local-recipient table rebuilt" 10 || fail "no first listing"
t0=$(date +%s)
rcpt_is slowuser@localhost 451 || fail "a lookup with no answer was not refused for now: $(cat "$W/swaks")"
grep -q "451 4.3.0" "$W/swaks" || fail "not 4.3.0: $(cat "$W/swaks")"
t=$(($(date +%s) - t0))
[ $t -ge 1 ] && [ $t -lt 10 ] || fail "the answer took ${t}s (timeout 2s)"
# Users in the table are not held up.
rcpt_is postmaster@localhost 250 || fail "postmaster was held up: $(cat "$W/swaks")"
# The unanswered question still counts (local.directory_lookup_backlog
# 1): the next name is not asked, and is refused for now at once.
t0=$(date +%s.%N)
rcpt_is otherslow@localhost 451 || fail "a question past the backlog was not refused for now: $(cat "$W/swaks")"
awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { exit !(b - a < 1.5) }' || fail "a question past the backlog waited"
grep -q '"userName":"otherslow"' "$W/userdb.log" && fail "a question past the backlog was asked"
note "a lookup the name service never answers gets 451 4.3.0 after local.directory_lookup_timeout; past the backlog, at once"
