# SIGHUP and `mtactl reload` with a good configuration start a new
# generation of children; the old ones exit.
. ./lib.sh
write_conf
start_master
q1=$(child_pid qmgr); c1=$(child_pid control)
write_conf 'log { line_length = 4096; }'
kill -HUP "$MASTER_PID"
wait_log "generation 2" || fail "no reload logged"
gone "$q1" || fail "old qmgr still running"
gone "$c1" || fail "old control still running"
wait_status $NCHILD || fail "new generation not running"
ctl status | grep -q "generation 2" || fail "status not at generation 2"
ctl status | awk '$1 == "qmgr" && $3 != 2 { exit 1 }' || fail "qmgr not of generation 2"
out=$(ctl reload) || fail "mtactl reload failed: $out"
echo "$out" | grep -q "generation 3" || fail "mtactl reload: $out"
wait_log "generation 3" || fail "no generation 3"
wait_status $NCHILD || fail "generation 3 not running"
exit 0
