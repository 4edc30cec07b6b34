# A child that floods master with log records (a fake pickup sending as
# fast as it can) does not keep master from the rest of its work: it
# reads at most a budget of messages from one channel per turn, so
# mtactl still gets answers and SIGTERM still stops the system in time.
. ./lib.sh
is_root || { note "skipped: libexec programs must be root's"; exit 0; }
fake_roles pickup
"$MTA" -d -f "$CONF" >"$LOG" 2>&1 &
MASTER_PID=$!
wait_log "pickup pid [0-9]* running" 10 || fail "the fake pickup did not start"
wait_status "$NCHILD" || fail "children did not start"
sleep 1
# Flooding now: master still answers, each time within a second or two.
for i in 1 2 3; do
	start=$(date +%s%N)
	ctl status >/dev/null || fail "mtactl status failed while a child floods master"
	took=$(( ($(date +%s%N) - start) / 1000000 ))
	[ "$took" -lt 3000 ] || fail "mtactl status took ${took} ms while a child floods master"
	sleep 0.5
done
n=$(grep -c "mta/pickup\[[0-9]*\]: flood$" "$LOG")
[ "$n" -gt 1000 ] || fail "only $n flood records logged: the flood did not happen"
kill -TERM "$MASTER_PID"
# The fake ignores Stop: killed at the stop timeout (5 s).
for _ in $(seq 100); do kill -0 "$MASTER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$MASTER_PID" 2>/dev/null && fail "master did not stop while a child flooded it"
pp=$(sed -n "s/.*pickup pid \([0-9]*\) running.*/\1/p" "$LOG" | head -1)
grep -q "pid $pp did not stop in time; killing it" "$LOG" || fail "the flooding child was not killed at the stop timeout"
note "master answered and stopped while a child flooded it ($n records)"
MASTER_PID=""
exit 0
