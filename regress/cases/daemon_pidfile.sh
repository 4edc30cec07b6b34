# Without -d master daemonizes, writes its pid file and removes it on stop.
. ./lib.sh
write_conf
"$MTA" -f "$CONF" >"$LOG" 2>&1 || fail "daemon start failed"
i=0; until [ -s "$W/mta.pid" ]; do [ $i -gt 50 ] && fail "no pid file"; sleep 0.1; i=$((i + 1)); done
MASTER_PID=$(cat "$W/mta.pid")
kill -0 "$MASTER_PID" || fail "pid file names no process"
wait_status $NCHILD || fail "children not running"
ctl status | grep -q "master pid $MASTER_PID " || fail "status names another master"
kill -TERM "$MASTER_PID"
gone "$MASTER_PID" 8 || fail "daemon did not stop"
[ -e "$W/mta.pid" ] && fail "pid file left behind"
MASTER_PID=""
exit 0
