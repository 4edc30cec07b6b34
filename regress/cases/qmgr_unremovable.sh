# A queue file that cannot be removed once its mail is delivered (its
# directory, incoming/, made immutable with chattr +i while the delivery
# waits on the peer): qmgr says so, and records every recipient done in
# the file, so a new qmgr that reads the file again delivers nothing a
# second time; once the directory can be changed, the file goes at the
# next start. Postfix's smtp-sink is the peer, delaying its DATA reply.
if [ "$(id -u)" != 0 ]; then echo "  skipped: chattr +i needs root"; exit 0; fi
. ./lib.sh
. ./peers.sh
mkdir "$W/probe" && chattr +i "$W/probe" 2>/dev/null && chattr -i "$W/probe" ||
	{ echo "  skipped: chattr +i does not work here (file system, or no CAP_LINUX_IMMUTABLE)"; exit 0; }
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }"
unfreeze() { chattr -i "$W/spool/incoming" 2>/dev/null || true; }
trap 'set +e; unfreeze; stop_sink; rm -rf "$DUMP"; cleanup' EXIT
copies() { grep -l -- "^Subject: $1" "$DUMP"/* 2>/dev/null | wc -l; }
smtp_sink -w 3
start_master
send sender@remote.example rcpt@remote.example "frozen"
wait_for 5 sh -c "[ -n \"\$(find '$W/spool/incoming' -type f ! -name '.*')\" ]" || fail "not in incoming/"
id=$(basename "$(find "$W/spool/incoming" -type f ! -name '.*' | head -1)")
chattr +i "$W/spool/incoming" || fail "chattr +i incoming/"
wait_log "$id: to=<rcpt@remote.example>, .*status=sent" 15 || fail "not delivered"
wait_log "$id: cannot remove it from incoming/: .*every recipient is recorded done in it" 5 ||
	fail "the failed removal was not logged as recorded"
[ "$(copies frozen)" -eq 1 ] || fail "$(copies frozen) copies at the peer"
[ -f "$W/spool/incoming/$id" ] || fail "the file is gone though its directory is immutable"

# A new qmgr reads the file again: nothing is delivered again. (Not a
# restart of master, which would refuse to start: it sets the owner of
# incoming/.)
q1=$(child_pid qmgr)
kill -KILL "$q1"
wait_for 10 sh -c "q=\$('$MTACTL' -s '$W/mta.sock' status | awk '\$1 == \"qmgr\" && \$NF == \"running\" { print \$2 }'); [ -n \"\$q\" ] && [ \"\$q\" != $q1 ]" ||
	fail "qmgr was not restarted"
wait_for 10 sh -c "[ \$(grep -c '$id: cannot remove it from incoming/' '$LOG') -ge 2 ]" ||
	fail "the file was not read again by the new qmgr"
[ "$(copies frozen)" -eq 1 ] || fail "delivered again after the restart: $(copies frozen) copies"
[ "$(grep -c "$id: to=" "$LOG")" -eq 1 ] || fail "a delivery was attempted again: $(grep "$id: to=" "$LOG")"

# The directory can change again: the next start removes the file.
unfreeze
ctl stop >/dev/null; gone "$MASTER_PID" 10 || fail "did not stop"; MASTER_PID=""
start_master
wait_for 10 empty || fail "the file was not removed: $(queue_files)"
[ "$(copies frozen)" -eq 1 ] || fail "$(copies frozen) copies in the end"
