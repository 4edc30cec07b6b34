# SIGHUP and `mtactl reload` with a good configuration start a new
# generation of children; the old ones exit, but for smtpd, whose
# sessions go on past supervise.stop_timeout (5 s here), with the new
# cleanup.
. ./lib.sh
write_conf
start_master
q1=$(child_pid qmgr); c1=$(child_pid control)
# A session in progress across the reload, its DATA 7 s after it.
python3 - "$PORT" "$W" >"$W/across" 2>&1 <<'PY' &
import os, smtplib, sys, time
w = sys.argv[2]
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    s.ehlo()
    s.mail("sender@remote.example")
    print("rcpt", s.rcpt("<postmaster@localhost>")[0], flush=True)
    for _ in range(300):
        if os.path.exists(w + "/go"):
            break
        time.sleep(0.1)
    print("data", s.data(b"Subject: across a reload\r\n\r\nbody\r\n")[0], flush=True)
PY
across=$!
wait_for 10 grep -q '^rcpt 250' "$W/across" || fail "the session before the reload: $(cat "$W/across")"
write_conf 'log { line_length = 4096; }'
kill -HUP "$MASTER_PID"
wait_log "generation 2" || fail "no reload logged"
sleep 7
touch "$W/go"
wait "$across"
grep -q '^data 250' "$W/across" || fail "a session across the reload lost its message: $(cat "$W/across")"
gone "$q1" || fail "old qmgr still running"
gone "$c1" || fail "old control still running"
wait_status $NCHILD || fail "new generation not running"
ctl status | grep -q "generation 2" || fail "status not at generation 2"
ctl status | awk '$1 == "qmgr" && $3 != 2 { exit 1 }' || fail "qmgr not of generation 2"
out=$(ctl reload) || fail "mtactl reload failed: $out"
echo "$out" | grep -q "generation 3" || fail "mtactl reload: $out"
wait_log "generation 3" || fail "no generation 3"
wait_status $NCHILD || fail "generation 3 not running"
exit 0
