# Started by an ordinary user from a staged install, mta runs everything
# as that user, still sandboxed. Its children's limits on open files are
# bound by the hard limit it started with: smtpd, which is to have
# limits.sessions + 256, says so in the log.
. ./lib.sh
is_root || { note "skipped: needs root to create the test user"; exit 0; }
[ -n "${MTA_STAGE:-}" ] || { note "skipped: no staged install (MTA_STAGE)"; exit 0; }
ensure_user mtadev
chown mtadev "$W"
MTA="$MTA_STAGE/sbin/mta"; MTACTL="$MTA_STAGE/sbin/mtactl"
LIBEXEC="$MTA_STAGE/libexec/mta" write_conf
chown mtadev "$CONF"
runuser -u mtadev -- sh -c 'ulimit -n 1024 && exec "$0" -d -f "$1"' "$MTA" "$CONF" >"$LOG" 2>&1 &
MASTER_PID=$!
i=0; until runuser -u mtadev -- "$MTACTL" -f "$CONF" status >/dev/null 2>&1; do
	[ $i -gt 100 ] && fail "unprivileged master not answering"; sleep 0.1; i=$((i + 1)); done
wait_status $NCHILD || fail "children not running"
uid=$(id -u mtadev)
for r in control qmgr cleanup smtpd pickup connector smtp bounce local lookup; do
	p=$(child_pid $r)
	grep -q "^Uid:[[:space:]]*$uid" /proc/$p/status || fail "$r not running as mtadev"
	grep -q '^Seccomp:[[:space:]]*2' /proc/$p/status || fail "$r not sandboxed"
done
grep -q "unprivileged mode" "$LOG" || fail "mode not logged"
wait_log "mta/smtpd\[[0-9]*\]: warning: the limit on open files is 1024, below the 10256 a smtpd process is to have (limits.sessions + 256)" 5 ||
	fail "smtpd does not warn of its limit on open files"
runuser -u mtadev -- "$MTACTL" -f "$CONF" stop >/dev/null || fail "mtadev may not stop its own instance"
gone "$MASTER_PID" 8 || fail "did not stop"
MASTER_PID=""
exit 0
