# master distrusts its children: one that sends a malformed message, and
# one that sends a message its role may not send, are killed (logged) and
# restarted after the usual pause.
. ./lib.sh
is_root || { note "skipped: libexec programs must be root's"; exit 0; }
fake_roles control qmgr
"$MTA" -d -f "$CONF" >"$LOG" 2>&1 &
MASTER_PID=$!
wait_log "killing control pid [0-9]*: malformed message" || fail "malformed message not answered by a kill"
wait_log "killing qmgr pid [0-9]*: sent a message its role may not send" || fail "forbidden message not answered by a kill"
wait_log "control pid [0-9]* killed by SIGKILL; restarting in 1.0s" || fail "control not restarted"
wait_log "qmgr pid [0-9]* killed by SIGKILL; restarting in 1.0s" || fail "qmgr not restarted"
wait_log "failure 2 in a row" 6 || fail "no second round"
kill -0 "$MASTER_PID" || fail "master died"
cat "$LOG"
exit 0
