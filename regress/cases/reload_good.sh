# SIGHUP and `mtactl reload` with a good configuration start a new
# generation of children; the old ones exit, but for smtpd, whose
# sessions go on past supervise.stop_timeout (5 s here), with the new
# cleanup. A new submission_group is applied: maildrop/ changes group,
# and the new pickup holds it.
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
if is_root; then
	ensure_group mtadrop2
	write_conf 'log { line_length = 4096; }' 'submission_group = "mtadrop2";'
	out=$(ctl reload) || fail "mtactl reload to submission_group mtadrop2 failed: $out"
	wait_log "generation 4" || fail "no generation 4"
	wait_status $NCHILD || fail "generation 4 not running"
	[ "$(stat -c %G:%a "$W/spool/maildrop")" = "mtadrop2:2730" ] ||
		fail "maildrop/ is $(stat -c %G:%a "$W/spool/maildrop"), not mtadrop2:2730"
	gid=$(getent group mtadrop2 | cut -d: -f3)
	p=$(child_pid pickup)
	grep "^Groups:" "/proc/$p/status" | grep -qw "$gid" || fail "pickup does not hold mtadrop2: $(grep Groups "/proc/$p/status")"
	grep "change only at restart" "$LOG" && fail "submission_group kept as running"
	write_conf 'submission_group = "mtanosuchgroup";'
	out=$(ctl reload 2>&1) && fail "a reload to a group that does not exist was accepted"
	echo "$out" | grep -q "mtanosuchgroup" || fail "the refused reload does not name the group: $out"
fi
exit 0
