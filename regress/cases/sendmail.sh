# sendmail(8) from the staged install, run by an ordinary user, with
# postdrop set-gid as a package installs it: -f while mta is down (queued
# once it starts), -t with Cc and Bcc (Bcc gone from the content), the
# header completed (bare names in its address fields qualified, network
# mail left alone; a line qualified past 998 octets folded again, a long
# -F name folded), -t with addresses it cannot read (nothing queued, exit
# 65; mended, everyone gets it), -bs driven by swaks (its header completed by
# cleanup), -bp and mailq, mail(1) from bsd-mailx (unpacked privately)
# and from s-nail pointed at our sendmail, a maildrop file that cannot
# be removed once queued (queued once, not at each listing, removed once
# it can be), a 1 GiB submission over the size limit (refused quickly,
# nothing left),
# a flood of submissions (all queued, pickup still up), -C refused, and
# newaliases (root only here) whose names smtpd accepts after a reload;
# before it, an aliases file not compiled makes smtpd answer 451 4.3.0
# for names that are no user (users still accepted), with no reload.
if [ "$(id -u)" != 0 ]; then echo "  skipped: needs root"; exit 0; fi
[ -n "${MTA_STAGE:-}" ] || { echo "  skipped: no staged install (MTA_STAGE)"; exit 0; }
if [ -z "${MTA_IN_NS:-}" ]; then
	# sendmail and postdrop read the compiled-in /etc/mta/mta.conf: in a
	# private mount namespace that is ours.
	MTA_IN_NS=1 exec unshare -m --propagation private sh ${MTA_TRACE:+-x} "$0"
fi
. ./lib.sh
ensure_user mtadev
private_mta_conf 'hostname = "mx.test";' "limits { message_size = 1m; }" "aliases = \"$W/aliases\";"
SENDMAIL="$MTA_STAGE/sbin/sendmail"
uid=$(id -u mtadev)
mkdir "$W/home" && chown mtadev "$W/home"
as() { runuser -u mtadev -- env HOME="$W/home" "$@"; }
# message SUBJECT: the queue file holding that subject.
message() { queue_files | xargs grep -l -- "Subject: $1" | head -1; }
# envelope SUBJECT: "sender rcpt rcpt..." of that message, from mtactl -j.
# (qmgr moves files meanwhile: look again while nothing is found)
envelope() {
	k=0
	while [ $k -lt 20 ]; do
		id=$(basename "$(message "$1" 2>/dev/null)")
		e=$(ctl queue list --json | python3 -c '
import json, sys
for m in json.load(sys.stdin)["queue"]:
    if m["id"] == sys.argv[1]:
        print(" ".join([m["sender"]] + [r["address"] for r in m["recipients"]]))' "$id")
		[ -n "$e" ] && { echo "$e"; return 0; }
		sleep 0.2; k=$((k + 1))
	done
}

start_master
ctl stop >/dev/null; gone "$MASTER_PID" 8 || fail "did not stop"; MASTER_PID=""

# -f while mta is down.
printf 'Subject: while down\n\nqueued later\n' | as "$SENDMAIL" -f list-owner@example.org root ||
	fail "sendmail while down"
# Its file cannot be removed once queued (made immutable, where chattr
# works): queued once all the same, not again at each listing, and
# removed once it can be.
stuck=$(find "$W/spool/maildrop" -type f ! -name '.*' | head -1)
if [ -n "$stuck" ] && chattr +i "$stuck" 2>/dev/null; then
	trap 'chattr -i "$stuck" 2>/dev/null || true; cleanup' EXIT
else
	note "skipped: the unremovable maildrop file (chattr +i does not work here)"
	stuck=""
fi
# (an ordinary user cannot read the queue itself: EX_UNAVAILABLE, both reasons)
set +e; as "$MTA_STAGE/sbin/mailq" >/dev/null 2>"$W/err"; rc=$?; set -e
[ $rc -eq 69 ] || fail "mailq while mta is down exited $rc"
grep -q "queue listing unavailable.*is mta running?); reading the queue directly: .*Permission denied" "$W/err" ||
	fail "mailq while down: $(cat "$W/err")"
start_master
wait_queued 1 || fail "mail submitted while down not queued"
if [ -n "$stuck" ]; then
	wait_log "maildrop file $(basename "$stuck"): queued as .* but not removed" 10 ||
		fail "the unremovable maildrop file was not reported"
fi
[ "$(envelope 'while down')" = "list-owner@example.org root@mx.test" ] || fail "envelope: $(envelope 'while down')"
grep -q "from userid $uid" "$(message 'while down')" || fail "Received: does not name the submitter"

# -t with Cc and Bcc; the header gets From:, Date: and Message-ID:.
printf 'To: root\nCc: Post Master <postmaster@mx.test>\nBcc: mtadev\nSubject: extract\n\nbody\n' |
	as "$SENDMAIL" -t || fail "sendmail -t"
wait_queued 2 || fail "-t message not queued"
[ "$(envelope extract)" = "mtadev@mx.test root@mx.test postmaster@mx.test mtadev@mx.test" ] ||
	fail "-t envelope: $(envelope extract)"
f=$(message extract)
grep -q "^Bcc:" "$f" && fail "Bcc: left in the message"
for h in "From: mtadev@mx.test" "Date: " "Message-ID: <.*@mx.test>" "To: root@mx.test"; do
	grep -q "^$h" "$f" || fail "no $h in the -t message"
done

# -C from an ordinary user is refused.
echo x | as "$SENDMAIL" -C /tmp/other.conf root 2>"$W/err" && fail "-C accepted from an ordinary user"
grep -q "only root" "$W/err" || fail "-C: $(cat "$W/err")"

# -bs, driven by swaks over a pipe, with a header of its own that has no
# From:, Date: or Message-ID: (-bs passes it on as it is): cleanup adds
# them after the qualified Cc:.
as swaks --pipe "$SENDMAIL -bs" --from mtadev@mx.test --to root@mx.test \
	--data 'Subject: by swaks\nCc: mtadev\n\nno From, Date or Message-ID\n' \
	>"$W/swaks" 2>&1 || fail "swaks -bs: $(cat "$W/swaks")"
grep -q "<-  250 2.0.0 Ok: queued as maildrop file" "$W/swaks" || fail "-bs: $(cat "$W/swaks")"
wait_queued 3 || fail "-bs message not queued"
[ "$(envelope 'by swaks')" = "mtadev@mx.test root@mx.test" ] || fail "-bs envelope: $(envelope 'by swaks')"
python3 - "$(message 'by swaks')" <<'PY' || fail "-bs: the header was not qualified and completed"
import re, sys
data = open(sys.argv[1], "rb").read()
assert re.search(rb"\r\nSubject: by swaks\r\nCc: mtadev@mx\.test\r\nMessage-ID: <[0-9A-F]{34}@mx\.test>\r\n"
                 rb"Date: [^\r]+ \+0000\r\nFrom: mtadev@mx\.test\r\n\r\nno From", data), data[-300:]
PY
# -bs from a script, as Sendmail and Postfix take it: no HELO, LF line
# ends, everything written at once, addresses without a domain.
printf 'MAIL FROM:<mtadev>\nRCPT TO:<root>\nDATA\nSubject: bs script\n\nfrom a script\n.\nQUIT\n' |
	as "$SENDMAIL" -bs >"$W/bs" 2>&1 || fail "-bs from a script: $(cat "$W/bs")"
grep -q "^250 2.0.0 Ok: queued as maildrop file" "$W/bs" && grep -q "^221 " "$W/bs" || fail "-bs from a script: $(cat "$W/bs")"
wait_queued 4 || fail "-bs script message not queued"
[ "$(envelope 'bs script')" = "mtadev@mx.test root@mx.test" ] || fail "-bs script envelope: $(envelope 'bs script')"
if [ -n "$stuck" ]; then
	# Three listings later, still queued once; removable again, it goes
	# at the next listing (the next submission's).
	[ "$(grep -c "from maildrop file $(basename "$stuck")" "$LOG")" -eq 1 ] ||
		fail "the unremovable maildrop file was queued again: $(grep "$(basename "$stuck")" "$LOG")"
	chattr -i "$stuck"
fi

# -bp and mailq, as the ordinary user.
as "$SENDMAIL" -bp >"$W/bp" || fail "sendmail -bp"
as "$MTA_STAGE/sbin/mailq" >"$W/mailq" || fail "mailq"
grep -q "Requests" "$W/bp" || fail "-bp: $(cat "$W/bp")"
for m in 'while down' extract 'by swaks'; do
	id=$(basename "$(message "$m")")
	grep -q "^$id" "$W/bp" || fail "-bp does not list $id"
	grep -q "^$id" "$W/mailq" || fail "mailq does not list $id"
done

# mail(1) from bsd-mailx, unpacked privately (not installed: it would
# pull in an MTA), told to use our sendmail.
if [ -n "${MAILX:-}" ]; then
	echo "set sendmail=$SENDMAIL" > "$W/mailrc"
	echo "from bsd-mailx" | as env MAILRC="$W/mailrc" "$MAILX" -s "by mailx" -c postmaster@mx.test root ||
		fail "bsd-mailx"
	wait_queued 5 || fail "bsd-mailx message not queued"
	[ "$(envelope 'by mailx')" = "mtadev@mx.test root@mx.test postmaster@mx.test" ] ||
		fail "bsd-mailx envelope: $(envelope 'by mailx')"
	n=5
else
	note "skipped: the bsd-mailx part (MAILX unset)"
	n=4
fi
echo "from s-nail" | as s-nail -:/ -S mta="$SENDMAIL" -S expandaddr -s "by s-nail" -b mtadev root ||
	fail "s-nail"
n=$((n + 1))
wait_queued $n || fail "s-nail message not queued"
[ "$(envelope 'by s-nail')" = "mtadev@mx.test root@mx.test mtadev@mx.test" ] ||
	fail "s-nail envelope: $(envelope 'by s-nail')"
grep -q "^from s-nail" "$(message 'by s-nail')" || fail "s-nail body lost"
if [ -n "$stuck" ]; then
	wait_log "maildrop file $(basename "$stuck"): removed (its message was queued before)" 15 ||
		fail "the maildrop file was not removed once it could be"
	[ "$(grep -c "from maildrop file $(basename "$stuck")" "$LOG")" -eq 1 ] || fail "queued again in the end"
fi

# cron's header: the bare names in its address fields get the domain
# (cleanup does it for local submissions), display names and comments
# kept.
printf 'From: root (Cron Daemon)\nTo: root\nCc: "Post Master" <postmaster>, undisclosed:;\nSubject: cron-like\n\nx\n' |
	as "$SENDMAIL" -t || fail "sendmail -t with cron's header"
n=$((n + 1))
wait_queued $n || fail "cron-like message not queued"
f=$(message cron-like)
for h in "From: root@mx.test (Cron Daemon)" "To: root@mx.test" 'Cc: "Post Master" <postmaster@mx.test>, undisclosed:;'; do
	grep -qF "$h" "$f" || fail "not in the cron-like message: $h"
done

# -t with addresses it cannot read (';' between addresses is read as a
# comma): nothing is queued, the caller hears of each one, and the exit
# status says so (queued for the others with 65, a caller that tries
# again would send them a second copy).
set +e
printf 'To: root; postmaster\nCc: J\366rg <mtadev>, John Smith\nSubject: partly readable\n\nx\n' |
	as "$SENDMAIL" -t 2>"$W/err"
rc=$?
set -e
[ $rc -eq 65 ] || fail "-t with an unreadable address exited $rc"
grep -q 'Cc: cannot read the address "John Smith": display name without <address>; nothing was sent' "$W/err" ||
	fail "-t, unreadable address: $(cat "$W/err")"
[ "$(find "$W/spool/maildrop" -type f | wc -l)" -eq 0 ] || fail "the refused -t message left a maildrop file"
sleep 1
settled $n || fail "the message with an unreadable address was queued"
# Mended: everyone gets it, exit 0.
printf 'To: root; postmaster\nCc: J\366rg <mtadev>\nSubject: mended\n\nx\n' |
	as "$SENDMAIL" -t 2>"$W/err" || fail "-t, mended: $(cat "$W/err")"
n=$((n + 1))
wait_queued $n || fail "the mended message was not queued"
[ "$(envelope mended)" = "mtadev@mx.test root@mx.test postmaster@mx.test mtadev@mx.test" ] ||
	fail "mended envelope: $(envelope mended)"

# Qualified past the line limit: a Cc: line of 140 bare names (982
# octets) gains 8 octets a name, and cleanup folds it again after its
# commas; a long full name (-F) is folded between its words. No header
# line of the queued message is longer than 998 octets.
names=$(seq -f 'n%04g' 1 140 | paste -sd, - | sed 's/,/, /g')
name=$(printf 'Word%s ' $(seq 1 30))
printf 'To: root\nCc: %s\nSubject: long lines\n\nx\n' "$names" |
	as "$SENDMAIL" -F "$name" root 2>"$W/err" || fail "long lines: $(cat "$W/err")"
n=$((n + 1))
wait_queued $n || fail "the long-lines message was not queued"
python3 - "$(message 'long lines')" "$name" <<'PY' || fail "long lines folded wrongly"
import re, sys
data = open(sys.argv[1], "rb").read()
header = data[data.index(b"Received: "):].split(b"\r\n\r\n")[0]
lines = header.split(b"\r\n")
assert all(len(l) <= 998 for l in lines), max(len(l) for l in lines)
unfolded = re.sub(rb"\r\n(?=[ \t])", b"", header)
cc = re.search(rb"^Cc: ([^\r]*)", unfolded, re.M).group(1)
assert cc == b", ".join(b"n%04d@mx.test" % i for i in range(1, 141)), cc[:200]
assert len(re.search(rb"\r\nCc: [^\r]*", header).group(0)) <= 80
frm = re.search(rb"^From: ([^\r]*)", unfolded, re.M).group(1)
assert frm == sys.argv[2].strip().encode() + b" <mtadev@mx.test>", frm
assert re.search(rb"\r\nFrom: Word1 [^\r]*\r\n ", header)
PY

# 1 GiB over a 1 MiB limit: refused as soon as the limit is passed.
start=$(date +%s)
yes "a line of a message far too big" | head -c 1073741824 | as "$SENDMAIL" root 2>"$W/err" &&
	fail "1 GiB submission accepted"
took=$(( $(date +%s) - start ))
[ "$took" -lt 30 ] || fail "refusing 1 GiB took ${took}s"
grep -q "larger than the limit" "$W/err" || fail "1 GiB: $(cat "$W/err")"
[ "$(find "$W/spool/maildrop" -type f | wc -l)" -eq 0 ] || fail "the refused submission left a file"

# newaliases, from the staged link: its names are local recipients once
# master reloads. Before it, the aliases file alone: its names are not
# known yet, but may be aliases, so smtpd answers 451 4.3.0 for names
# that are no user (master notices the file within seconds).
rcpt() { swaks --server "127.0.0.1:$PORT" --from a@example.org --to "$1" --quit-after RCPT >"$W/sw" 2>&1; }
rcpt staff@mx.test && fail "staff accepted before there are aliases"
grep -q "550 5.1.1" "$W/sw" || fail "unknown recipient: $(cat "$W/sw")"
printf 'staff: root,\n  mtadev\n# a comment\npostmaster: root\n' > "$W/aliases"
refused_with() { ! rcpt "$1" && grep -q -- "$2" "$W/sw"; }
wait_for 10 refused_with staff@mx.test "451 4.3.0" || fail "staff while the aliases are not compiled: $(cat "$W/sw")"
rcpt root@mx.test || fail "a user refused while the aliases are not compiled: $(cat "$W/sw")"
"$MTA_STAGE/sbin/newaliases" >"$W/na" || fail "newaliases: $(cat "$W/na")"
grep -q "aliases.cdb: 2 aliases" "$W/na" || fail "newaliases said: $(cat "$W/na")"
as "$MTA_STAGE/sbin/newaliases" 2>"$W/err" && fail "an ordinary user rebuilt the aliases"
grep -q "Permission denied" "$W/err" || fail "newaliases as a user: $(cat "$W/err")"
ctl reload >/dev/null || fail "reload after newaliases"
i=0; until rcpt staff@mx.test; do
	[ $i -ge 50 ] && fail "staff refused after newaliases and reload: $(cat "$W/sw")"
	sleep 0.1; i=$((i + 1))
done

# Network mail keeps its header as the client wrote it.
swaks --server "127.0.0.1:$PORT" --from a@example.org --to root@mx.test --header "To: root" \
	--header "Subject: from the network" >"$W/sw" 2>&1 || fail "swaks: $(cat "$W/sw")"
n=$((n + 1))
wait_queued $n || fail "network message not queued"
grep -q "^To: root$(printf '\r')\$" "$(message 'from the network')" || fail "a network message's To: was rewritten"

# A flood: 300 submissions, 8 at a time.
seq 300 | as xargs -P 8 -I{} sh -c "printf 'Subject: flood {}\n\nx\n' | $SENDMAIL root" ||
	fail "a flood submission failed"
i=0
while [ "$(queued)" -lt $((n + 300)) ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
# (Exactly: two listings that agree, as qmgr moves root's deferred copies.)
[ $i -lt 300 ] || fail "flood: $(queued) queued after 30 s, expected $((n + 300))"
wait_queued $((n + 300)) || fail "flood: $(queued) queued, expected $((n + 300))"
[ "$(find "$W/spool/maildrop" -type f | wc -l)" -eq 0 ] || fail "maildrop/ not emptied after the flood"
[ "$(find "$W/spool/corrupt" -type f | wc -l)" -eq 0 ] || fail "flood files set aside"
ctl status | grep -q "pickup .* running" || fail "pickup is not running"
exit 0
