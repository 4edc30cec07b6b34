# SIGTERM stops master and every child within the stop timeout, and
# removes the control socket. Each child is in a session (and process
# group) of its own: SIGTERM to master's process group (a supervisor's,
# or ^C at the terminal of mta -d) reaches master alone, which stops the
# children in order. A master killed outright leaves no child behind:
# each exits when its channel to master closes.
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

# master_leader: master in the foreground, with -v, leading a process
# group of its own; sets MASTER_PID and PIDS (its children's).
master_leader() {
	setsid "$MTA" -dv -f "$CONF" >"$LOG" 2>&1 &
	wait_status $NCHILD || fail "children did not start"
	MASTER_PID=$(ctl status | sed -n 's/.*master pid \([0-9]*\) .*/\1/p')
	[ "$(ps -o pgid= -p "$MASTER_PID" | tr -d ' ')" = "$MASTER_PID" ] || fail "master leads no process group"
	PIDS=""
	for r in control qmgr cleanup smtpd pickup connector smtp bounce local lookup; do
		p=$(child_pid $r)
		[ "$(ps -o sid=,pgid= -p "$p" | tr -s ' ' | sed 's/^ //')" = "$p $p" ] ||
			fail "$r pid $p is not in a session and process group of its own: $(ps -o pid,sid,pgid -p "$p")"
		PIDS="$PIDS $p"
	done
}
master_leader
kill -TERM "-$MASTER_PID"
gone "$MASTER_PID" 8 || fail "master did not stop at its process group's SIGTERM"
for p in $PIDS; do gone "$p" 2 || fail "pid $p left behind"; done
grep "killed by" "$LOG" && fail "a child was killed, not stopped by master"
n=$(grep -c "exited with status 0 (generation 1)" "$LOG")
[ "$n" -eq $NCHILD ] || fail "$n of $NCHILD children stopped by master"

master_leader
kill -KILL "$MASTER_PID"
for p in $PIDS; do gone "$p" 5 || fail "pid $p outlived its master"; done
MASTER_PID=""
exit 0
