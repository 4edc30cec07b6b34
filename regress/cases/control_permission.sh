# Peer credentials: an ordinary user is refused by the control process
# but may list the queue. So is the mail user of a master run as root:
# its processes (the connector, which reads DNS answers, among them) must
# not be able to stop mta or take mail out of the queue. Root may do all.
. ./lib.sh
is_root || { note "skipped: needs root to run as another user"; exit 0; }
ensure_user mtaother
write_conf
start_master
chmod 755 "$MTA_BIN" 2>/dev/null || true
out=$(runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" status 2>&1) && fail "ordinary user got status: $out"
echo "$out" | grep -q "permission denied" || fail "no 'permission denied': $out"
grep -q "control request status refused for uid $(id -u mtaother)" "$LOG" || fail "refusal not logged"
runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" queue >/dev/null || fail "ordinary user may not list the queue"
for c in stop status reload "queue delete 1NG5APFQRKP00009BDCR"; do
	# shellcheck disable=SC2086 # the command's words
	out=$(runuser -u _mta -- "$MTACTL" -s "$W/mta.sock" $c 2>&1) && fail "the mail user may $c: $out"
	echo "$out" | grep -q "permission denied" || fail "mail user's $c: no 'permission denied': $out"
done
grep -q "control request stop refused for uid $(id -u _mta)" "$LOG" || fail "the mail user's refusal not logged"
runuser -u _mta -- "$MTACTL" -s "$W/mta.sock" queue >/dev/null || fail "the mail user may not list the queue"
kill -0 "$MASTER_PID" || fail "master stopped"
ctl status >/dev/null || fail "root refused"
exit 0
