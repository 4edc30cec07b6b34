# A message with one recipient refused for good and one deferred is
# tried again even when its failure notice is still being written at the
# time its next attempt falls due (bounce held stopped past it): the
# deferred recipient is not forgotten by the deferred queue's index. And
# a message held while its notice waits has it sent once released; a
# status that cannot be written is written later, its notice after it;
# and a next attempt further ahead than backoff.max is cut to it.
. ./lib.sh
. ./peers.sh
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" "queue { backoff { min = 1s; max = 2s; } }"
start_master
aio_sink
bounce=$(child_pid bounce)
[ -n "$bounce" ] || fail "no bounce process"
kill -STOP "$bounce"
send sender@remote.example reject5@remote.example,reject4@remote.example "notice held"
wait_log "to=<reject5@remote.example>, .*status=bounced" 10 || { kill -CONT "$bounce"; fail "reject5 not bounced"; }
wait_log "to=<reject4@remote.example>, .*status=deferred" 10 || { kill -CONT "$bounce"; fail "reject4 not deferred"; }
# Past the next attempt (1 s to 2 s away) while the notice waits.
sleep 4
kill -CONT "$bounce"
tries() { grep -c "to=<reject4@remote.example>, .*status=deferred" "$LOG"; }
wait_for 20 sh -c "[ \$(grep -c 'to=<reject4@remote.example>, .*status=deferred' '$LOG') -ge 2 ]" ||
	fail "the deferred recipient was not tried again ($(tries) attempts)"
note "tried again: $(tries) attempts"

# A message put on hold while bounce has its failure notice request, and
# bounce then lost with it, still has its notice sent once released.
bounce=$(child_pid bounce)
kill -STOP "$bounce"
send sender@remote.example reject5-held@remote.example "held notice"
wait_log "to=<reject5-held@remote.example>, .*status=bounced" 10 || { kill -CONT "$bounce"; fail "reject5-held not bounced"; }
id=$(queue_id "held notice") || { kill -CONT "$bounce"; fail "no queue file for the held message"; }
ctl queue hold "$id" >/dev/null || { kill -CONT "$bounce"; fail "hold $id"; }
kill -KILL "$bounce"
wait_log "bounce pid [0-9]* .*restarting" 10 || fail "bounce not restarted"
sleep 2
ctl queue release "$id" >/dev/null || fail "release $id"
wait_log "$id: sender delivery status notification" 20 || fail "the held message's failure notice was never sent"

# A recipient's status that cannot be written (the queue file made
# read-only meanwhile) is written once it can be, and the failure notice,
# which waits for it, is sent then.
smtp=$(child_pid smtp)
[ -n "$smtp" ] || fail "no smtp process"
kill -STOP "$smtp"
send sender@remote.example reject5-ro@remote.example "read-only status"
ro=$(queue_id "read-only status") || { kill -CONT "$smtp"; fail "no queue file for the read-only message"; }
f=$(queue_files | xargs grep -l -- "Subject: read-only status" | head -1)
chmod 0400 "$f"
kill -CONT "$smtp"
wait_log "$ro: cannot open to record a status" 15 || { chmod 0600 "$f"; fail "recording the status did not fail"; }
chmod 0600 "$f"
wait_log "$ro: sender delivery status notification" 30 || fail "the failure notice did not follow the status once written"

# A deferred file whose next attempt (its mtime) lies further ahead than
# queue.backoff.max (the clock set back, the file touched) is tried within
# backoff.max of qmgr reading it, not a day later.
qmgr=$(child_pid qmgr)
[ -n "$qmgr" ] || fail "no qmgr process"
# Caught waiting in deferred/ (not in active/, which a restart empties
# into incoming/ for an attempt at once).
f=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
	kill -STOP "$qmgr"
	f=$(find "$W/spool/deferred" -type f ! -name '.*' | xargs grep -l -- "Subject: notice held" | head -1)
	[ -n "$f" ] && break
	kill -CONT "$qmgr"
	sleep 0.3
done
[ -n "$f" ] || { kill -CONT "$qmgr"; fail "the deferred message is not in deferred/"; }
touch -d '+1 day' "$f"
before=$(tries)
kill -KILL "$qmgr"
kill -CONT "$qmgr" 2>/dev/null
wait_log "qmgr pid [0-9]* .*restarting" 10 || fail "qmgr not restarted"
wait_for 15 sh -c "[ \$(grep -c 'to=<reject4@remote.example>, .*status=deferred' '$LOG') -gt $before ]" ||
	fail "a deferred file dated a day ahead was not tried within backoff.max ($(tries) attempts)"
note "a next attempt a day ahead is cut to backoff.max"

# An attempt that fell due while its message was still active (its
# notice held the move to deferred/ back) is no second copy to set aside.
! grep "a second copy of the message" "$LOG" || fail "an attempt due while active was taken for a second copy"
exit 0
