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
/usr/bin/python3 - "$PORT" "$W/acked" <<'PY' &
import smtplib, sys, threading, time
port, out = int(sys.argv[1]), sys.argv[2]
acked, lock = [], threading.Lock()
end = time.time() + 6
def client(c):
    n = 0
    while time.time() < end:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                while time.time() < end:
                    n += 1
                    tok = "tok-%d-%d" % (c, n)
                    msg = "From: s@remote.example\r\nSubject: %s\r\n\r\nbody %s\r\n" % (tok, tok)
                    s.sendmail("s@remote.example", ["r@remote.example"], msg)
                    with lock:
                        acked.append(tok)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)
ts = [threading.Thread(target=client, args=(c,)) for c in range(4)]
for t in ts: t.start()
for t in ts: t.join()
open(out, "w").write("".join(t + "\n" for t in acked))
PY
SENDER=$!
kills=0
for pause in 1.5 2; do
	sleep "$pause"
	pid=$(child_pid qmgr)
	[ -n "$pid" ] || fail "no qmgr to kill"
	kill -KILL "$pid"
	kills=$((kills + 1))
	wait_log "qmgr pid $pid killed by SIGKILL" 10 || fail "qmgr's death not logged"
	i=0; while [ "$(child_pid qmgr)" = "$pid" ] || [ -z "$(child_pid qmgr)" ]; do
		[ $i -gt 100 ] && fail "qmgr not restarted"; sleep 0.1; i=$((i + 1)); done
done
# master, while the clients still send (they connect again when it is back).
sleep 1
PIDS=$(ctl status | awk '$NF == "running" { print $2 }')
kill -KILL "$MASTER_PID"
kills=$((kills + 1))
for p in $PIDS; do gone "$p" 10 || fail "pid $p outlived its master"; done
"$MTA" -d -f "$CONF" >>"$LOG" 2>&1 &
MASTER_PID=$!
wait_status $NCHILD || fail "children did not start again after master was killed"
wait "$SENDER" || fail "the sender failed"
wait_for 60 empty || fail "the queue did not empty: $(ctl queue)"
sleep 1
/usr/bin/python3 - "$W/acked" "$DUMP" "$((kills * LIMIT))" <<'PY' || fail "mail lost or delivered twice"
import collections, glob, re, sys
acked = open(sys.argv[1]).read().split()
seen = collections.Counter()
for f in glob.glob(sys.argv[2] + "/*"):
    m = re.search(rb"Subject: (tok-\d+-\d+)", open(f, "rb").read())
    if m:
        seen[m.group(1).decode()] += 1
lost = [t for t in acked if seen[t] == 0]
twice = sum(n - 1 for n in seen.values() if n > 1)
print("  %d acknowledged, %d delivered, %d lost, %d delivered twice" % (len(acked), len(seen), len(lost), twice))
assert len(acked) > 200, "too little mail to prove anything"
assert not lost, lost[:10]
assert twice <= int(sys.argv[3]), "delivered twice: %d" % twice
PY
exit 0
