# mta stopped while pickup waits for cleanup's word on what it handed
# over. A failure notice for a file pickup refused (over its own
# limits.recipients) is with cleanup, which cannot take it (stopped, then
# killed at the stop timeout): the file stays in maildrop/ and at the next
# start it is refused again and its notice queued, once; it used to go to
# corrupt/ first, and the notice was lost. A message cleanup commits as
# it stops, while pickup is about to stop too: pickup waits for the
# verdict and removes the file, so the next start does not queue it a
# second time; it used to exit at once and leave the file behind.
if [ "$(id -u)" != 0 ]; then echo "  skipped: needs root"; exit 0; fi
. ./lib.sh
ensure_user mtadev
write_conf "limits { recipients = 2; }"
# drop NAME SENDER RCPT... < content: a maildrop file from mtadev, as
# postdrop leaves it.
drop() {
	name=$1; shift
	python3 ./maildrop.py "$@" >"$W/$name" || fail "maildrop.py"
	chown mtadev:_mtadrop "$W/$name" && chmod 640 "$W/$name" || fail "chown"
	mv "$W/$name" "$W/spool/maildrop/$name"
}
# stopped: master is gone; its log kept.
stopped() {
	gone "$MASTER_PID" 15 || fail "master did not stop"
	MASTER_PID=""
	cat "$LOG" >>"$W/all.log"
}
notices() { grep -c "failure notice to <s@remote.example> queued as" "$W/all.log" "$LOG" | awk -F: '{ n += $2 } END { print n }'; }

# --- a notice with cleanup at the stop ---
start_master
c=$(child_pid cleanup)
kill -STOP "$c"
printf 'Subject: three\r\n\r\nx\r\n' | drop THREE s@remote.example a@remote.example b@remote.example c@remote.example
wait_log "maildrop file THREE: refused by pickup (3 recipients" 10 || { kill -CONT "$c"; fail "THREE not refused"; }
ctl stop >/dev/null || fail "mtactl stop"
stopped
[ -f "$W/spool/maildrop/THREE" ] || fail "the refused file left maildrop/ while its notice was not queued"
grep -q "maildrop file THREE: no word from cleanup on its failure notice" "$W/all.log" ||
	fail "pickup did not say the notice was not answered"
[ "$(notices)" -eq 0 ] || fail "a notice was queued while cleanup was stopped"
start_master
wait_log "maildrop file THREE: failure notice to <s@remote.example> queued as" 10 || fail "the notice was not sent at the next start"
wait_log "maildrop file THREE: refused by pickup .*moved to corrupt/" 10 || fail "THREE not set aside after its notice"
[ ! -e "$W/spool/maildrop/THREE" ] || fail "THREE left in maildrop/"
[ "$(notices)" -eq 1 ] || fail "$(notices) notices queued, not one"

# --- a message committed as mta stops ---
c=$(child_pid cleanup); p=$(child_pid pickup)
kill -STOP "$c"
printf 'Subject: only once\r\n\r\nx\r\n' | drop ONCE s@remote.example r@remote.example
# pickup reads it and hands it over whole; cleanup cannot answer yet.
sleep 1
kill -STOP "$p"
# Master asks every child to stop; then cleanup commits the message it
# has (its channel from pickup became readable first) and answers as it
# stops; then pickup sees the stop before the verdict.
kill -TERM "$MASTER_PID"
wait_log "stopping: asking children to finish" 5 || fail "master is not stopping"
kill -CONT "$c"
wait_log "uid=$(id -u mtadev), from=<s@remote.example>" 5 || { kill -CONT "$p"; fail "cleanup did not commit ONCE"; }
kill -CONT "$p"
stopped
[ ! -e "$W/spool/maildrop/ONCE" ] || fail "the queued message's file was left in maildrop/"
start_master
sleep 2
n=$(queue_files | xargs grep -l "Subject: only once" | wc -l)
[ "$n" -eq 1 ] || fail "ONCE queued $n times"
exit 0
