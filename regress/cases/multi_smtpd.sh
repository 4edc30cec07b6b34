# Per-role process counts: three smtpd processes share the listener and
# the local-recipient table, each with its own channel to cleanup; killing
# one restarts that one only.
. ./lib.sh
write_conf 'processes { smtpd = 3; }'
"$MTA" -d -f "$CONF" >"$LOG" 2>&1 &
MASTER_PID=$!
wait_status 12 || fail "twelve children did not start"
[ "$(ctl status | awk '$1 == "smtpd" && $NF == "running"' | wc -l)" -eq 3 ] || fail "not three smtpd"
for i in 1 2 3 4 5 6 7 8 9; do
	swaks --server 127.0.0.1:$PORT --from "m$i@remote.example" --to root@localhost >/dev/null 2>&1 || fail "swaks $i"
done
wait_queued 9 || fail "not all queued"
victim=$(child_pid smtpd)
kill -KILL "$victim"
wait_log "smtpd pid $victim killed by SIGKILL" || fail "not noticed"
wait_status 12 || fail "smtpd not replaced"
[ "$(ctl status | awk '$1 == "smtpd" && $NF == "running"' | wc -l)" -eq 3 ] || fail "not three smtpd after restart"
swaks --server 127.0.0.1:$PORT --from after@remote.example --to root@localhost >/dev/null 2>&1 || fail "after restart"
wait_queued 10 || fail "not queued after restart"
grep -q "not a cdb file" "$LOG" && fail "a smtpd could not read the shared table"
exit 0
