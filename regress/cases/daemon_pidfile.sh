# Without -d master daemonizes, writes its pid file and removes it on stop.
# Started with a relative -f, it still finds its file at a reload, after
# the daemon moved to /. A start step that fails in the daemon is reported
# by the process the shell started, with exit status 1, and nothing runs.
. ./lib.sh
write_conf
(cd "$W" && "$MTA" -f mta.conf) >"$LOG" 2>&1 || fail "daemon start failed"
i=0; until [ -s "$W/mta.pid" ]; do [ $i -gt 50 ] && fail "no pid file"; sleep 0.1; i=$((i + 1)); done
MASTER_PID=$(cat "$W/mta.pid")
kill -0 "$MASTER_PID" || fail "pid file names no process"
wait_status $NCHILD || fail "children not running"
ctl status | grep -q "master pid $MASTER_PID " || fail "status names another master"
write_conf 'log { line_length = 4096; }'
kill -HUP "$MASTER_PID"
generation() { ctl status 2>/dev/null | grep -q "generation $1"; }
wait_for 10 generation 2 || fail "no reload of mta.conf, given as a relative path"
wait_status $NCHILD || fail "the reloaded children not running"
kill -TERM "$MASTER_PID"
gone "$MASTER_PID" 8 || fail "daemon did not stop"
[ -e "$W/mta.pid" ] && fail "pid file left behind"
MASTER_PID=""

sed -i 's|^pidfile = .*|pidfile = "nosuchdir/mta.pid";|' "$CONF"
out=$("$MTA" -f "$CONF" 2>&1) && fail "a start whose pid file cannot be written exited 0: $out"
echo "$out"
echo "$out" | grep -q "^mta: $W/nosuchdir/mta.pid.*: No such file or directory" || fail "the error is not reported: $out"
ctl status >/dev/null 2>&1 && fail "a master answers after the failed start"
[ -e "$W/mta.sock" ] && fail "the failed start left its control socket"
sed -i 's|^pidfile = .*|pidfile = "mta.pid";|' "$CONF"
"$MTA" -f "$CONF" >"$LOG" 2>&1 || fail "no start after the failed one (the lock not free?): $(cat "$LOG")"
MASTER_PID=$(cat "$W/mta.pid")
ctl status | grep -q "master pid $MASTER_PID " || fail "status names another master than the pid file"
exit 0
