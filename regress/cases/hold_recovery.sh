# A message on hold whose file in hold/ is damaged while its journal
# segment is still there (cleanup stopped before it retired the segment,
# then killed): the restarted cleanup's recovery writes the journal's copy
# to incoming/ (it may not touch hold/), and qmgr keeps the message held,
# the journal's copy in the damaged one's place (which goes to corrupt/,
# logged), instead of delivering it as if never held. Released, it is
# delivered. (qmgr used to take the copy in incoming/ as new mail.)
. ./lib.sh
. ./peers.sh
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }"
start_master
cpid=$(child_pid cleanup)
[ -n "$cpid" ] || fail "no cleanup"
send s@remote.example r@remote.example "held while its journal copy stays"
# Before the segment retires (a second after its first message).
kill -STOP "$cpid"
id=$(queue_id "held while") || { kill -CONT "$cpid"; fail "no queue file"; }
# Nobody listens on the relay port yet: deferred.
wait_log "$id: to=<r@remote.example>, .*status=deferred" 20 || fail "$id was not deferred"
ctl queue hold "$id" >/dev/null || fail "hold $id"
wait_for 10 test -f "$W/spool/hold/$id" || fail "$id not in hold/"
ls "$W/spool/journal" | grep -q '\.jnl$' || fail "the journal segment was retired before cleanup stopped: no case"
damage_queued "held while its journal" || fail "could not damage the queue file"
# From now on the relay takes mail: a copy taken from incoming/ would be
# delivered.
smtp_sink
kill -KILL "$cpid"
wait_log "cleanup pid $cpid killed by SIGKILL" 10 || fail "cleanup's death not logged"
wait_log "journal recovery: .*$id: hold/$id: .*content CRC mismatch.* qmgr holds it in this one's place" 20 ||
	fail "recovery did not write the journal's copy"
wait_log "hold/$id: .*moved to corrupt/.*held in its place" 10 || fail "qmgr did not keep the message held"
note "$(grep -o "hold/$id: .*held in its place" "$LOG" | head -1)"
sleep 2
grep "$id: to=<r@remote.example>, .*status=sent" "$LOG" && fail "the held message was delivered"
[ -z "$(ls "$DUMP")" ] || fail "the relay got mail"
[ -f "$W/spool/hold/$id" ] || fail "$id is not in hold/"
[ ! -e "$W/spool/incoming/$id" ] || fail "$id left in incoming/"
ls "$W/spool/corrupt" | grep -q "^$id" || fail "the damaged copy is not in corrupt/"
ctl queue >"$W/list" || fail "mtactl queue"
grep -q "^$id!" "$W/list" || fail "not listed as held: $(cat "$W/list")"
# Released: the journal's copy, whole, as new mail.
ctl queue release "$id" >/dev/null || fail "release $id"
wait_log "$id: to=<r@remote.example>, .*status=sent" 20 || fail "not delivered after the release"
wait_for 10 sh -c "grep -l 'held while its journal copy stays' '$DUMP'/* >/dev/null 2>&1" ||
	fail "the relay did not get the message whole"
exit 0
