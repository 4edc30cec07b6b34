# A message with one recipient refused for good and one deferred is
# tried again even when its failure notice is still being written at the
# time its next attempt falls due (bounce held stopped past it): the
# deferred recipient is not forgotten by the deferred queue's index.
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
exit 0
