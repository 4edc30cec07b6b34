# qmgr learns of new mail from cleanup, which names each queue file it
# writes to incoming/: an strace of qmgr while 60 messages arrive shows
# it taking every one without listing incoming/ for them (a qmgr that
# looked at the directory on each wakeup would list it again and again),
# and leaving each file in incoming/ for its first attempt (no rename to
# active/). Mail for root without an alias is deferred, so each message
# ends with a file that qmgr opened in incoming/ (cleanup's, or one qmgr
# wrote itself for a message cleanup offered in memory) and moved to
# deferred/; the trace runs until all 60 are deferred. The files qmgr
# writes are synced together, one syncfs at most every 100 ms (not one
# a turn, which under a stalled delivery is hundreds a second).
# When cleanup is restarted, qmgr looks once, and mail still flows.
. ./lib.sh
is_root || { note "skipped: strace needs root to attach"; exit 0; }
command -v strace >/dev/null || fail "strace is not installed"
write_conf
start_master
wait_log "channel to qmgr pid" 10 || true
qm=$(child_pid qmgr)
sleep 1
strace -qq -y -ttt -e trace=getdents64,openat,rename,renameat,renameat2,syncfs -o "$W/trace" -p "$qm" &
ST=$!
sleep 1
send() {
	python3 - "$PORT" "$1" <<'PY' || fail "sending"
import smtplib, sys, threading
def run(k):
    for i in range(20):
        with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
            s.sendmail("t@remote.example", ["root@localhost"], b"Subject: %s %d %d\r\n\r\nbody\r\n" % (sys.argv[2].encode(), k, i))
ts = [threading.Thread(target=run, args=(k,)) for k in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
}
active() { [ "$(grep -c '(queue active)' "$LOG")" -ge "$1" ]; }
send first
in_deferred() { find "$W/spool/deferred" -type f | wc -l; }
deferred() { [ "$(in_deferred)" -ge "$1" ]; }
wait_for 30 active 60 || fail "qmgr took $(grep -c '(queue active)' "$LOG") of 60 messages"
wait_for 30 deferred 60 || fail "$(in_deferred) of 60 messages in deferred/"
kill -INT $ST; wait $ST 2>/dev/null || true
taken=$(sed -n 's/^[0-9.]* openat(.*<\/.*\/incoming>, "\([0-9A-Z]*\)".*/\1/p' "$W/trace" | sort -u | wc -l)
lists=$(grep -c 'getdents64(.*/incoming>' "$W/trace" || true)
note "qmgr opened $taken new queue files, listed incoming/ $lists times"
[ "$taken" -ge 60 ] || fail "the trace shows $taken of the 60 queue files opened"
[ "$lists" -le 4 ] || fail "qmgr listed incoming/ $lists times for 60 messages"
moves=$(grep -c 'rename.*/active>' "$W/trace" || true)
[ "$moves" -eq 0 ] || fail "qmgr moved $moves files to active/ for their first attempt"
# Each syncfs at least 100 ms after the one before (less a margin for
# the trace's own timing).
set -- $(awk '$2 ~ /^syncfs\(/ { if (c && $1 - prev < 0.09) near++; prev = $1; c++ } END { print c + 0, near + 0 }' "$W/trace")
note "qmgr synced $1 times, $2 of them within 90 ms of the sync before"
[ "$1" -ge 1 ] || fail "qmgr never synced the queue files it wrote"
[ "$2" -eq 0 ] || fail "qmgr synced $2 times within 90 ms of its previous sync: $(grep syncfs "$W/trace" | cut -c1-40 | tr '\n' ' ')"
# A new cleanup: qmgr looks once, and the next mail is taken as before.
cl=$(child_pid cleanup)
kill -KILL "$cl"
new_cleanup() { p=$(child_pid cleanup); [ -n "$p" ] && [ "$p" != "$cl" ]; }
wait_for 20 new_cleanup || fail "cleanup was not started again"
sleep 1
send second
wait_for 30 active 120 || fail "after cleanup's restart qmgr took $(grep -c '(queue active)' "$LOG") of 120 messages"
exit 0
