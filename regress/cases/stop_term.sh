# SIGTERM stops master and every child within the stop timeout, and
# removes the control socket.
. ./lib.sh
write_conf
start_master
q=$(child_pid qmgr); c=$(child_pid control)
kill -TERM "$MASTER_PID"
gone "$MASTER_PID" 8 || fail "master did not stop"
gone "$q" 2 || fail "qmgr left behind"
gone "$c" 2 || fail "control left behind"
[ -e "$W/mta.sock" ] && fail "control socket left behind"
grep -q "stopped" "$LOG" || fail "no stop logged"
MASTER_PID=""
exit 0
