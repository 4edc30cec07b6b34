# A broken configuration on reload is logged with file and line, and the
# running children and generation stay as they were.
. ./lib.sh
write_conf
start_master
q1=$(child_pid qmgr)
cp "$CONF" "$W/good.conf"
printf 'spool = "spool";\nlibexec_directory = "%s";\nbogus_key = 1;\n' "$MTA_BIN" > "$CONF"
kill -HUP "$MASTER_PID"
wait_log "reload refused" || fail "bad reload not logged"
grep "reload refused" "$LOG"
grep -q "$CONF:3: .*bogus_key" "$LOG" || fail "log does not name file, line and key"
sleep 0.5
kill -0 "$MASTER_PID" || fail "master died"
[ "$(child_pid qmgr)" = "$q1" ] || fail "qmgr was replaced"
cp "$W/good.conf" "$W/keep.conf"
ctl status | grep -q "generation 1" || fail "generation changed"
out=$(ctl reload 2>&1) && fail "mtactl reload succeeded on a bad configuration"
echo "$out" | grep -q "$CONF:3" || fail "mtactl reload does not say where: $out"
cp "$W/good.conf" "$CONF"
exit 0
