# qmgr killed with SIGKILL under load, twice, while it delivers through a
# relay (Postfix's smtp-sink) from memory, then master: every message
# that got a 250 arrives, and none twice beyond the deliveries in flight
# at each kill (at most the destination's concurrency limit). cleanup
# writes out what qmgr held in memory and had not reported done, and the
# next qmgr delivers those; with master gone, every child stops (cleanup
# has qmgr account for what it was offered first), and the master
# started again delivers what is left. Before, qmgr reported the
# messages it finished only at the end of a turn (after admitting a batch
# of new ones), and cleanup, finding qmgr gone when it sent, did not read
# its last reports: up to 13 delivered twice here for the 2 qmgr kills
# alone at a concurrency of 4.
. ./lib.sh
. ./peers.sh
LIMIT=4
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" "queue { backoff { min = 1s; max = 2s; } }" \
	"transport { smtp { initial_concurrency = $LIMIT; concurrency_limit = $LIMIT; } }"
start_master
smtp_sink
load_start
kill_role_twice qmgr
kills=$KILLS
# master, while the clients still send (they connect again when it is back).
sleep 1
PIDS=$(ctl status | awk '$NF == "running" { print $2 }')
kill -KILL "$MASTER_PID"
kills=$((kills + 1))
for p in $PIDS; do gone "$p" 10 || fail "pid $p outlived its master"; done
"$MTA" -d -f "$CONF" >>"$LOG" 2>&1 &
MASTER_PID=$!
wait_status $NCHILD || fail "children did not start again after master was killed"
load_check "$((kills * LIMIT))"
exit 0
