# What a child logs just before it exits reaches the log: a child waits
# for room in its channel before it exits, and master reads the channel
# of a child it reaps before letting the channel go. A fake bounce
# process answers the stop request with 100 records and exits at once.
. ./lib.sh
is_root || { note "skipped: libexec programs must be root's"; exit 0; }
fake_roles bounce
"$MTA" -d -f "$CONF" >"$LOG" 2>&1 &
MASTER_PID=$!
wait_log "bounce pid [0-9]* running" || fail "the fake bounce did not start"
wait_status "$NCHILD" || fail "children did not start"
kill -TERM "$MASTER_PID"
for _ in $(seq 100); do kill -0 "$MASTER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$MASTER_PID" 2>/dev/null && fail "master did not stop"
n=$(grep -c "mta/bounce\[[0-9]*\]: last words [0-9]*$" "$LOG")
[ "$n" = 100 ] || fail "$n of the 100 last records logged"
grep -q "last words 99$" "$LOG" || fail "the last record is missing"
note "all 100 records a process sent as it exited are in the log"
exit 0
