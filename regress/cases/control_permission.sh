# Peer credentials: an ordinary user who is neither root nor the mail user
# is refused by the control process.
. ./lib.sh
is_root || { note "skipped: needs root to run as another user"; exit 0; }
ensure_user mtaother
write_conf
start_master
chmod 755 "$MTA_BIN" 2>/dev/null || true
out=$(runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" status 2>&1) && fail "ordinary user got status: $out"
echo "$out" | grep -q "permission denied" || fail "no 'permission denied': $out"
grep -q "control request status refused for uid $(id -u mtaother)" "$LOG" || fail "refusal not logged"
ctl status >/dev/null || fail "root refused"
exit 0
