# A second master on the same spool refuses to start and names the first.
. ./lib.sh
write_conf
start_master
out=$("$MTA" -d -f "$CONF" 2>&1) && fail "second master started"
echo "$out"
echo "$out" | grep -q "another master is running (pid $MASTER_PID)" || fail "message does not name pid $MASTER_PID: $out"
kill -0 "$MASTER_PID" || fail "first master died"
wait_status $NCHILD || fail "first master's children disturbed"
# A daemon: the lock names the daemon, not the process the shell started
# (gone since).
ctl stop >/dev/null || fail "mtactl stop"
gone "$MASTER_PID" 8 || fail "the first master did not stop"
"$MTA" -f "$CONF" || fail "daemon start failed"
MASTER_PID=$(cat "$W/mta.pid")
out=$("$MTA" -d -f "$CONF" 2>&1) && fail "second master started beside a daemon"
echo "$out"
echo "$out" | grep -q "another master is running (pid $MASTER_PID)" || fail "message does not name the daemon's pid $MASTER_PID: $out"
exit 0
