# Started by an ordinary user from a staged install, mta runs everything
# as that user, still sandboxed.
. ./lib.sh
is_root || { note "skipped: needs root to create the test user"; exit 0; }
[ -n "${MTA_STAGE:-}" ] || { note "skipped: no staged install (MTA_STAGE)"; exit 0; }
ensure_user mtadev
chown mtadev "$W"
MTA="$MTA_STAGE/sbin/mta"; MTACTL="$MTA_STAGE/sbin/mtactl"
LIBEXEC="$MTA_STAGE/libexec/mta" write_conf
chown mtadev "$CONF"
runuser -u mtadev -- "$MTA" -d -f "$CONF" >"$LOG" 2>&1 &
MASTER_PID=$!
i=0; until runuser -u mtadev -- "$MTACTL" -f "$CONF" status >/dev/null 2>&1; do
	[ $i -gt 100 ] && fail "unprivileged master not answering"; sleep 0.1; i=$((i + 1)); done
wait_status $NCHILD || fail "children not running"
uid=$(id -u mtadev)
for r in control qmgr cleanup smtpd pickup connector smtp bounce local; do
	p=$(child_pid $r)
	grep -q "^Uid:[[:space:]]*$uid" /proc/$p/status || fail "$r not running as mtadev"
	grep -q '^Seccomp:[[:space:]]*2' /proc/$p/status || fail "$r not sandboxed"
done
grep -q "unprivileged mode" "$LOG" || fail "mode not logged"
runuser -u mtadev -- "$MTACTL" -f "$CONF" stop >/dev/null || fail "mtadev may not stop its own instance"
gone "$MASTER_PID" 8 || fail "did not stop"
MASTER_PID=""
exit 0
