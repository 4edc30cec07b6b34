# A child killed with SIGKILL is restarted after a pause; killed again at
# once, the pause grows; status counts the restarts; the peer channel
# (control-qmgr) is handed over so queue counts still work.
. ./lib.sh
write_conf
start_master
q1=$(child_pid qmgr)
kill -KILL "$q1"
wait_log "qmgr pid $q1 killed by SIGKILL; restarting in 1.0s (failure 1 in a row)" || fail "no restart logged"
i=0; while [ "$(child_pid qmgr)" = "$q1" ] || [ -z "$(child_pid qmgr)" ]; do
	[ $i -gt 50 ] && fail "qmgr not restarted"; sleep 0.1; i=$((i + 1)); done
q2=$(child_pid qmgr)
kill -KILL "$q2"
wait_log "qmgr pid $q2 killed by SIGKILL; restarting in 2.0s (failure 2 in a row)" || fail "pause did not grow"
start=$(date +%s)
i=0; while [ "$(child_pid qmgr)" = "$q2" ] || [ -z "$(child_pid qmgr)" ]; do
	[ $i -gt 80 ] && fail "qmgr not restarted the second time"; sleep 0.1; i=$((i + 1)); done
took=$(( $(date +%s) - start ))
note "second restart after about ${took}s"
ctl status | awk '$1 == "qmgr" { print; if ($5 != 2) exit 1 }' || fail "restart count is not 2"
ctl status | grep -q "^queue: incoming 0" || fail "control lost its qmgr channel"
c1=$(child_pid control)
kill -KILL "$c1"
i=0; while [ -z "$(child_pid control)" ] || [ "$(child_pid control)" = "$c1" ]; do
	[ $i -gt 50 ] && fail "control not restarted"; sleep 0.1; i=$((i + 1)); done
ctl status | grep -q "^queue: incoming 0" || fail "new control has no qmgr channel"
exit 0
