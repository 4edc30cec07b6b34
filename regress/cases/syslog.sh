# As a daemon, master writes its own and its children's records to syslog
# (facility mail, program names mta/<role>), and reconnects when syslogd
# restarts. A reload that changes log.facility applies it. A private mount
# namespace gives the case its own /dev/log.
if [ "$(id -u)" != 0 ]; then echo "  skipped: needs root for a private /dev/log"; exit 0; fi
if [ -z "${MTA_IN_NS:-}" ]; then
	# Re-run this case in a new mount namespace (MTA_TRACE=1 traces it).
	MTA_IN_NS=1 exec unshare -m --propagation private sh ${MTA_TRACE:+-x} "$0"
fi
. ./lib.sh
# In this namespace only: a fresh /dev holding the real null, zero and
# random devices and a /dev/log symlink to our syslogd's socket.
mkdir -p /run/mtalog
mount -t tmpfs tmpfs /run/mtalog
mkdir /run/mtalog/realdev
mount --bind /dev /run/mtalog/realdev
mount -t tmpfs -o mode=755 tmpfs /dev
for d in null zero random urandom; do
	: > "/dev/$d"
	mount --bind "/run/mtalog/realdev/$d" "/dev/$d"
done
SOCK=/run/mtalog/log
ln -s "$SOCK" /dev/log
S1=""; S2=""
trap 'kill $S1 $S2 2>/dev/null || true; cleanup' EXIT
python3 fake_syslogd.py "$SOCK" "$W/syslog.1" 60 & S1=$!
i=0; until [ -S "$SOCK" ]; do [ $i -gt 50 ] && fail "fake syslogd did not start"; sleep 0.1; i=$((i + 1)); done
write_conf 'log { facility = "mail"; }'
"$MTA" -f "$CONF" > "$LOG" 2>&1 || fail "daemon start failed"
i=0; until [ -s "$W/mta.pid" ]; do [ $i -gt 50 ] && fail "no pid file"; sleep 0.1; i=$((i + 1)); done
MASTER_PID=$(cat "$W/mta.pid")
wait_status $NCHILD || fail "children not running"
sleep 0.5
cat "$W/syslog.1"
# facility mail (2) * 8 + info (6) = 22
grep -q '^<22>.* mta/master\[[0-9]*\]: starting mta' "$W/syslog.1" || fail "no master start record at mail.info"
grep -q "mta/master\[$MASTER_PID\]: qmgr pid [0-9]* running, sandboxed" "$W/syslog.1" || fail "no child start record"
# syslogd restarts: a new socket at the same path.
kill $S1; wait $S1 2>/dev/null || true
rm -f "$SOCK"
python3 fake_syslogd.py "$SOCK" "$W/syslog.2" 60 & S2=$!
i=0; until [ -S "$SOCK" ]; do [ $i -gt 50 ] && fail "second syslogd did not start"; sleep 0.1; i=$((i + 1)); done
sleep 1.2
q=$(child_pid qmgr)
kill -KILL "$q"
i=0; until grep -q "qmgr pid $q killed by SIGKILL" "$W/syslog.2" 2>/dev/null; do
	[ $i -gt 50 ] && { cat "$W/syslog.2"; fail "no record after syslogd restart"; }; sleep 0.1; i=$((i + 1)); done
grep -q '^<20>.* mta/master\[[0-9]*\]: warning: ' "$W/syslog.2" ||
	fail "restart warning not at mail.warning with its tag, as Postfix writes it: $(grep '^<20>' "$W/syslog.2")"
# syslogd stops reading (its socket holds 10 datagrams here): master must
# not wait for it. Sessions go on, control answers; once syslogd reads
# again, every record comes (their order: the unit test).
kill -STOP $S2
raw_smtp <<'PY' || fail "sessions while syslogd was stopped"
import os, rawsmtp
for i in range(60):
    c = rawsmtp.Client(int(os.environ["PORT"]))
    assert c.greeting.startswith(b"220"), c.greeting
    assert c.cmd(b"QUIT\r\n").startswith(b"221")
PY
timeout 5 "$MTACTL" -s "$W/mta.sock" status >/dev/null || { kill -CONT $S2; fail "master waited for a stalled syslogd"; }
kill -CONT $S2
i=0; until [ "$(grep -c 'mta/smtpd\[[0-9]*\]: disconnect from' "$W/syslog.2")" -ge 60 ]; do
	[ $i -gt 100 ] && fail "records held for syslogd were not all sent: $(grep -c 'disconnect from' "$W/syslog.2")"
	sleep 0.1; i=$((i + 1))
done
[ "$(grep -c 'mta/smtpd\[[0-9]*\]: connect from' "$W/syslog.2")" -eq 60 ] || fail "a session's record was lost"
grep -q "log records were dropped" "$W/syslog.2" && fail "records dropped though fewer than 10,000 were held"
write_conf 'log { facility = "local3"; }'
ctl reload >/dev/null || fail "reload to log.facility local3 refused"
# facility local3 (19) * 8 + info (6) = 158
i=0; until grep -q "^<158>.* mta/master\[$MASTER_PID\]: reloaded .*: generation 2" "$W/syslog.2" 2>/dev/null; do
	[ $i -gt 50 ] && { cat "$W/syslog.2"; fail "the reload is not logged at local3.info"; }; sleep 0.1; i=$((i + 1)); done
wait_status $NCHILD || fail "the new generation is not running"
grep -q '^<158>.* mta/master\[[0-9]*\]: qmgr pid [0-9]* running' "$W/syslog.2" || fail "the new generation's records not at local3"
grep -q "change only at restart" "$W/syslog.2" && fail "log.facility kept as running"
ctl stop >/dev/null
gone "$MASTER_PID" 8 || fail "did not stop"
MASTER_PID=""
exit 0
