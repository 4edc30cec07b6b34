# Local submission from the staged install: postdrop, set-gid to the
# submission group as a package installs it, writes a maildrop stream from
# an ordinary user into maildrop/; pickup hands it to cleanup with that
# user as the submitter. Mail dropped while mta is down is queued when it
# starts; mail dropped while it runs is queued at once (the kernel wakes
# pickup). Hostile files in maildrop/ (a symlink and a hard link to root's
# files, a file without its END record) are set aside, never queued; a
# truncated or oversized stream is refused by postdrop and leaves nothing;
# an envelope address carrying CR LF is refused by cleanup and set aside,
# and the postmaster gets a failure notice; a whole file left under
# postdrop's temporary name by another boot (a crash undid its rename) is
# taken as pickup starts; a message postdrop took and pickup's own limits
# refuse (an edit not reloaded) gets the same notice.
# maildrop.py writes the format from doc/maildrop-format.md on its own.
if [ "$(id -u)" != 0 ]; then echo "  skipped: needs root"; exit 0; fi
[ -n "${MTA_STAGE:-}" ] || { echo "  skipped: no staged install (MTA_STAGE)"; exit 0; }
if [ -z "${MTA_IN_NS:-}" ]; then
	# postdrop reads only the compiled-in /etc/mta/mta.conf: in a private
	# mount namespace that is ours.
	MTA_IN_NS=1 exec unshare -m --propagation private sh ${MTA_TRACE:+-x} "$0"
fi
. ./lib.sh
ensure_user mtadev
private_mta_conf "limits { message_size = 200k; }"
MTA="$MTA_STAGE/sbin/mta"
uid=$(id -u mtadev)
drop() { # drop SENDER RCPT < content: as mtadev, through postdrop
	python3 ./maildrop.py "$@" | runuser -u mtadev -- "$POSTDROP"
}
start_master
ctl stop >/dev/null; gone "$MASTER_PID" 8 || fail "did not stop"; MASTER_PID=""

# While mta is down.
printf 'Subject: while down\n\nqueued later\n' | drop mtadev@localhost root@localhost || fail "postdrop while down"
[ "$(find "$W/spool/maildrop" -type f ! -name '.*' | wc -l)" -eq 1 ] || fail "not in maildrop/"
f=$(find "$W/spool/maildrop" -type f | head -1)
[ "$(stat -c %U:%G:%a "$f")" = "mtadev:_mtadrop:640" ] || fail "maildrop file is $(stat -c %U:%G:%a "$f")"
runuser -u mtadev -- ls "$W/spool/maildrop" >/dev/null 2>&1 && fail "an ordinary user can list maildrop/"

start_master
wait_queued 1 || fail "mail dropped while down not queued"
queue_files | xargs grep -q "from userid $uid" || fail "Received: does not name the submitter"
wait_log "uid=$uid, from=<mtadev@localhost>" || fail "submission not logged with the uid"

# While it runs, 8-bit and long lines included. The kernel wakes pickup
# when postdrop renames the file into place: the next timed look is ten
# seconds after the one at start (every second only without a watch,
# which pickup would have logged), so being queued within two seconds
# shows the wakeup works.
python3 -c 'import sys; sys.stdout.buffer.write(b"Subject: running\r\n\r\n" + b"\xc3\xa9" * 3000 + b"\r\n")' |
	drop mtadev@localhost root@localhost postmaster@localhost || fail "postdrop while running"
i=0
while [ "$(queued)" -lt 2 ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
[ $i -lt 20 ] || [ "$(queued)" -ge 2 ] || fail "a message dropped while mta runs was not queued within 2 s"
note "queued within $((i * 100)) ms of postdrop's return"
# One listing can see a message twice or not at all while qmgr moves it
# between directories (local defers root's copy at once): the exact
# count is taken from two listings that agree.
wait_queued 2 || fail "$(queued) messages queued, not 2"
grep -e "cannot watch maildrop/" -e "no longer notified of arrivals" "$LOG" && fail "pickup does not watch maildrop/"
[ "$(find "$W/spool/maildrop" -type f | wc -l)" -eq 0 ] || fail "maildrop/ not emptied"

# An envelope address with CR LF in it (postdrop checks only the format):
# cleanup refuses it, pickup sets the file aside, nothing is queued.
printf 'Subject: inject\r\n\r\nx\r\n' | drop "$(printf 'a@localhost\r\nRCPT TO:<x@example.org>')" root@localhost ||
	fail "postdrop refused what only cleanup should"
wait_log "refused by cleanup: 553 5.1.3 Error: sender" || fail "CR LF in the sender not refused"
# postdrop took it, so sendmail's caller heard it was sent: a failure
# notice says it was not, to the postmaster here (no mail can go to that
# sender). It waits in the queue, as postmaster has no alias.
wait_log "failure notice to <postmaster@[^>]*> queued as" || fail "no failure notice for the refused file"
# From double-bounce@, as bounce sends the postmaster's: one that cannot
# be delivered is discarded rather than reported again.
nid=$(sed -n 's/.*failure notice to <postmaster@[^>]*> queued as \([0-9A-Z]*\).*/\1/p' "$LOG" | head -1)
wait_log "$nid: .*from=<double-bounce@" || fail "the postmaster's notice $nid is not from double-bounce@: $(grep "$nid" "$LOG")"
wait_queued 3 || fail "$(queued) messages queued, not 2 and the notice"
# (qmgr moves the file as it defers it: look again while it is not found)
k=0
until queue_files | xargs grep -l "Subject: Postmaster Notice: Undelivered Mail" >"$W/notice" 2>/dev/null; do
	[ $k -lt 20 ] || fail "the notice is not in the queue"
	sleep 0.2; k=$((k + 1))
done
for s in "553 5.1.3 Error: sender" "Subject: inject"; do
	grep -q "$s" "$(head -1 "$W/notice")" || fail "the notice does not hold: $s: $(cat "$(head -1 "$W/notice")")"
done
[ "$(find "$W/spool/corrupt" -type f -name 'maildrop.*' | wc -l)" -eq 1 ] || fail "the refused file was not kept in corrupt/"

# Refused by postdrop: nothing left behind.
printf 'Subject: cut\n\nbody\n' | DROP_TRUNCATE=60 drop a@localhost root@localhost 2>"$W/err" && fail "truncated stream accepted"
grep -q "postdrop:" "$W/err" || fail "no message for a truncated stream"
head -c 300000 /dev/zero | tr '\0' 'x' | drop a@localhost root@localhost 2>"$W/err" && fail "oversized stream accepted"
grep -q "larger than the limit" "$W/err" || fail "oversized: $(cat "$W/err")"
[ "$(find "$W/spool/maildrop" -type f | wc -l)" -eq 0 ] || fail "refused streams left files"
# A ^C at sendmail's terminal (its process group), a hang-up or a kill
# while postdrop reads: the signals wait, the stream's end cut short
# removes the file; nothing is left behind for pickup to keep a day.
for sig in INT HUP TERM; do
	mkfifo "$W/in.$sig"
	runuser -u mtadev -- "$POSTDROP" <"$W/in.$sig" >/dev/null 2>"$W/err" & pd=$!
	exec 7>"$W/in.$sig"
	printf 'Subject: cut by %s\n\nbody\n' "$sig" | DROP_TRUNCATE=80 python3 ./maildrop.py a@localhost root@localhost >&7
	for _ in $(seq 50); do [ "$(find "$W/spool/maildrop" -type f -name '.*' | wc -l)" -gt 0 ] && break; sleep 0.1; done
	[ "$(find "$W/spool/maildrop" -type f -name '.*' | wc -l)" -gt 0 ] || fail "SIG$sig: postdrop made no temporary file"
	pkill -"$sig" -f "^$POSTDROP" || kill -"$sig" "$pd"
	sleep 0.3
	exec 7>&-
	wait "$pd" && fail "SIG$sig: a cut stream accepted"
	[ "$(find "$W/spool/maildrop" -type f | wc -l)" -eq 0 ] || fail "SIG$sig: postdrop left $(ls -a "$W/spool/maildrop")"
	rm -f "$W/in.$sig"
done

# Hostile entries put straight into maildrop/ (as a compromised postdrop could).
echo "root's secret" > "$W/secret"; chmod 600 "$W/secret"
ln -s /etc/shadow "$W/spool/maildrop/SYMLINK"
ln "$W/secret" "$W/spool/maildrop/HARDLINK"
printf 'Subject: no end\n\nx\n' | DROP_NO_END=1 python3 ./maildrop.py a@localhost root@localhost > "$W/NOEND"
chgrp _mtadrop "$W/NOEND"; chmod 640 "$W/NOEND"; mv "$W/NOEND" "$W/spool/maildrop/NOEND"
for n in HARDLINK NOEND; do
	wait_log "maildrop file $n: .*moved to corrupt" || fail "$n not set aside"
done
# A symlink cannot be moved (Landlock will not let pickup make one): removed.
wait_log "maildrop file SYMLINK: not a regular file" || fail "SYMLINK not set aside"
[ -e "$W/spool/maildrop/SYMLINK" ] || [ -L "$W/spool/maildrop/SYMLINK" ] && fail "SYMLINK left in maildrop/"
# An envelope more than pickup may hand cleanup in one message (1,000
# recipients with 1,024-octet ORCPTs): postdrop refuses it (65, said on
# stderr); a file that holds one all the same (an older postdrop's) is set
# aside, and the files after it are still taken.
rcpts=$(i=0; while [ $i -lt 1000 ]; do printf 'r%035d@localhost ' $i; i=$((i + 1)); done)
# shellcheck disable=SC2086
rc=0
printf 'Subject: huge envelope\n\nx\n' | DROP_ORCPT=1024 drop mtadev@localhost $rcpts 2>"$W/huge.err" || rc=$?
[ $rc -eq 65 ] || fail "postdrop took the large envelope ($rc)"
grep -q "postdrop: the envelope (.* octets: 1000 recipients and their ORCPT) is more than one message may carry" "$W/huge.err" ||
	fail "postdrop's refusal: $(cat "$W/huge.err")"
# shellcheck disable=SC2086
printf 'Subject: huge envelope\n\nx\n' | DROP_ORCPT=1024 python3 ./maildrop.py mtadev@localhost $rcpts >"$W/HUGE"
chown mtadev:_mtadrop "$W/HUGE"; chmod 640 "$W/HUGE"; mv "$W/HUGE" "$W/spool/maildrop/HUGE"
wait_log "maildrop file [^ ]*: its envelope .*moved to corrupt" 15 || fail "the large envelope was not set aside"
printf 'Subject: after the large envelope\n\nstill taken\n' | drop mtadev@localhost root@localhost || fail "postdrop after"
wait_queued 4 || fail "mail after the large envelope not queued"
# A day-old temporary file: whole (a crash undid postdrop's rename, which
# it cannot sync), it is taken; cut short, it is removed.
printf 'Subject: left complete\n\nrenamed back\n' | python3 ./maildrop.py mtadev@localhost root@localhost > "$W/whole"
printf 'Subject: left cut\n\nx\n' | DROP_NO_END=1 python3 ./maildrop.py mtadev@localhost root@localhost > "$W/cut"
for n in whole cut; do
	chown mtadev:_mtadrop "$W/$n"; chmod 640 "$W/$n"; touch -d '2 days ago' "$W/$n"
	mv "$W/$n" "$W/spool/maildrop/.tmp.old$n"
done
wait_log "maildrop file .tmp.oldwhole: left complete under its temporary name for a day; taken as oldwhole" 15 ||
	fail "a complete temporary file was not taken"
wait_log "maildrop file .tmp.oldcut: left unfinished for a day; removed" 15 || fail "a cut temporary file was not removed"
wait_queued 5 || fail "the complete temporary file's message not queued"
queue_files | xargs grep -q "renamed back" || fail "the complete temporary file's content not queued"
[ "$(queued)" -eq 5 ] || fail "a hostile file was queued"
queue_files | xargs grep -q "root's secret" && fail "root's file was queued"
[ "$(cat "$W/secret")" = "root's secret" ] || fail "root's file changed"
ctl status | grep -q "pickup .* running" || fail "pickup is not running"

# After a crash: postdrop cannot sync maildrop/, so a crash can undo the
# rename of a file sendmail reported as sent. Its temporary name carries
# the boot it was written in; one of another boot has no writer left, and
# whole, it is taken as soon as pickup starts, not a day later. One of
# this boot, just written, may still be on its way to its rename: left.
ctl stop >/dev/null; gone "$MASTER_PID" 8 || fail "did not stop"; MASTER_PID=""
this=$(python3 -c '
h = 0xcbf29ce484222325
for c in ("linux:" + open("/proc/sys/kernel/random/boot_id").read().strip()).encode():
    h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
print("B%016X" % h)')
[ "$this" != B0123456789ABCDEF ] || fail "this boot's tag is the other boot's"
printf 'Subject: crashed\n\nrename undone\n' | python3 ./maildrop.py mtadev@localhost root@localhost > "$W/crashed"
cp "$W/crashed" "$W/writing"
for n in crashed writing; do chown mtadev:_mtadrop "$W/$n"; chmod 640 "$W/$n"; done
mv "$W/crashed" "$W/spool/maildrop/.tmp.B0123456789ABCDEF.crashed"
mv "$W/writing" "$W/spool/maildrop/.tmp.$this.writing"
printf 'Subject: cut\n\ncut short\n' | python3 ./maildrop.py mtadev@localhost root@localhost | head -c 60 >"$W/cut"
chown mtadev:_mtadrop "$W/cut"; chmod 640 "$W/cut"
mv "$W/cut" "$W/spool/maildrop/.tmp.B0123456789ABCDEF.cut"
start_master
wait_log "maildrop file .tmp.B0123456789ABCDEF.crashed: left complete under its temporary name by a postdrop of an earlier boot; taken as crashed" 5 ||
	fail "a whole file of another boot was not taken at start"
wait_queued 6 || fail "the crashed submission was not queued"
queue_files | xargs grep -q "rename undone" || fail "the crashed submission's content not queued"
[ -e "$W/spool/maildrop/.tmp.$this.writing" ] || fail "a file of this boot was taken under its temporary name"
grep -q "maildrop file .tmp.$this.writing" "$LOG" && fail "pickup touched a file of this boot"
# An unfinished file of another boot (put there before the start, with
# the others) waits its day: read once, said once, not read again at each
# of the listings that follow (each arrival).
wait_log "maildrop file .tmp.B0123456789ABCDEF.cut: left unfinished by a postdrop of an earlier boot; removed when a day old" 5 ||
	fail "an unfinished file of another boot was not noticed"
for i in 1 2 3; do
	printf 'Subject: after the cut %s\n\nx\n' $i | drop mtadev@localhost root@localhost || fail "postdrop after the cut file"
	wait_queued $((6 + i)) || fail "message $i after the cut file not queued"
done
[ "$(grep -c 'maildrop file .tmp.B0123456789ABCDEF.cut' "$LOG")" -eq 1 ] ||
	fail "the unfinished file of another boot was judged more than once: $(grep -c '.tmp.B0123456789ABCDEF.cut' "$LOG")"
[ -e "$W/spool/maildrop/.tmp.B0123456789ABCDEF.cut" ] || fail "the unfinished file was removed before its day"

# pickup's limits are master's copy of the configuration, postdrop reads
# the file at each run: edited and not yet reloaded, they differ. A
# message postdrop took (sendmail told its caller it was sent) and pickup
# refuses for its size or its recipients gets the failure notice a
# refusal by cleanup gets.
aside=$(find "$W/spool/corrupt" -type f -name 'maildrop.*' | wc -l)
sed -i 's/^limits .*/limits { message_size = 200k; recipients = 2; }/' "$CONF"
old=$(child_pid pickup)
ctl reload >/dev/null || fail "reload with lower limits"
k=0; until p=$(child_pid pickup 2>/dev/null) && [ -n "$p" ] && [ "$p" != "$old" ]; do
	[ $k -lt 100 ] || fail "no new pickup after the reload"; sleep 0.1; k=$((k + 1)); done
sed -i 's/^limits .*/limits { message_size = 400k; recipients = 10; }/' "$CONF"
{ printf 'Subject: too big for pickup\r\n\r\n'; head -c 300000 /dev/zero | tr '\0' 'x'; } |
	drop mtadev@localhost root@localhost || fail "postdrop refused what only pickup should"
wait_log "refused by pickup (larger than limits.message_size, 200000 bytes): 552 5.3.4" 10 ||
	fail "the message over pickup's size limit was not refused"
printf 'Subject: too many for pickup\r\n\r\nx\r\n' | drop mtadev@localhost a@localhost b@localhost c@localhost ||
	fail "postdrop refused three recipients"
wait_log "refused by pickup (3 recipients, over limits.recipients, 2; the notice names the first 2): 552 5.5.3" 10 ||
	fail "the message over pickup's recipient limit was not refused"
wait_for 10 sh -c "[ \$(grep -c 'failure notice to <mtadev@localhost> queued as' '$LOG') -eq 2 ]" ||
	fail "no failure notice for what pickup refused: $(grep 'failure notice' "$LOG")"
[ "$(find "$W/spool/corrupt" -type f -name 'maildrop.*' | wc -l)" -eq $((aside + 2)) ] ||
	fail "the refused files were not kept in corrupt/"
# Whole, left by a crash under its temporary name, and over pickup's
# limits: taken, and refused with a notice like the others (not taken
# for unfinished, and removed a day later without one).
printf 'Subject: crashed, too many\r\n\r\nx\r\n' |
	python3 ./maildrop.py mtadev@localhost a@localhost b@localhost c@localhost >"$W/over"
chown mtadev:_mtadrop "$W/over"; chmod 640 "$W/over"
mv "$W/over" "$W/spool/maildrop/.tmp.B0123456789ABCDEF.over"
wait_log "maildrop file .tmp.B0123456789ABCDEF.over: left complete under its temporary name .*; taken as over" 15 ||
	fail "a whole temporary file over pickup's limits was not taken"
wait_for 10 sh -c "[ \$(grep -c 'failure notice to <mtadev@localhost> queued as' '$LOG') -eq 3 ]" ||
	fail "no failure notice for the temporary file over pickup's limits"
exit 0
