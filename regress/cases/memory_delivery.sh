# Mail delivered at once never gets a queue file: cleanup hands it to
# qmgr in a sealed memory file, and a message qmgr reports delivered is
# never written out (Linux and FreeBSD; see qmgr.8). An inotify watch on
# incoming/ sees no file created while twenty messages are relayed to
# Postfix's smtp-sink. With the next hop gone, a message that must wait
# gets its queue file (written by qmgr) and lands in deferred/, whole,
# shown by mtactl queue, and is delivered once the next hop is back.
# With queue.memory_time = 1s, a delivery still running after a second
# has its file written meanwhile (and is delivered once), and mtactl
# queue lists a message in memory from its memory file; one deleted by
# the operator while its delivery runs stays deleted when qmgr is killed
# right after; with queue.memory_messages = 0, every message gets its
# file.
. ./lib.sh
. ./peers.sh
[ "$(uname -s)" = Linux ] || { echo "  skipped: the inotify watch is Linux's"; exit 0; }
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" "queue { backoff { min = 1s; max = 2s; } }"
smtp_sink
start_master
# created: the names made in incoming/ while the watch runs, one a line.
/usr/bin/python3 - "$W/spool/incoming" "$W/created" <<'PY' &
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
IN_CREATE, IN_MOVED_TO = 0x100, 0x80
assert fd >= 0 and libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_CREATE | IN_MOVED_TO) >= 0
out = open(sys.argv[2], "a", buffering=1)
out.write("watching\n")
while True:
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        _, mask, _, n = struct.unpack_from("iIII", buf, i)
        out.write(buf[i + 16:i + 16 + n].rstrip(b"\0").decode() + "\n")
        i += 16 + n
PY
WATCH=$!
trap 'set +e; kill $WATCH 2>/dev/null; stop_sink; rm -rf "$DUMP"; cleanup' EXIT
wait_for 5 grep -qs watching "$W/created" || fail "the watch did not start"
i=0
while [ $i -lt 20 ]; do
	i=$((i + 1))
	send sender@remote.example "far@remote.example" "in memory $i"
done
wait_for 20 sh -c "[ \$(grep -l 'Subject: in memory' '$DUMP'/* 2>/dev/null | wc -l) -ge 20 ]" || fail "not all relayed"
wait_for 10 empty || fail "mail left in the queue: $(ctl queue)"
[ "$(grep -vc watching "$W/created")" -eq 0 ] ||
	fail "queue files were written for mail delivered at once: $(grep -v watching "$W/created" | tr '\n' ' ')"
[ "$(grep -c 'removed$' "$LOG")" -ge 20 ] || fail "qmgr did not remove the messages"
echo "  20 messages relayed, no queue file written"
# The next hop gone: the message waits, with its file.
stop_sink
send sender@remote.example "far@remote.example" "must wait" --body "a body that waits"
wait_log "to=<far@remote.example>, .*status=deferred" 15 || fail "not deferred"
id=$(grep "to=<far@remote.example>, .*status=deferred" "$LOG" | head -1 | sed 's/.*: \([0-9A-Z]*\): to=.*/\1/')
grep -qx "$id" "$W/created" || fail "its queue file was not written to incoming/ ($(grep -v watching "$W/created"))"
wait_for 5 sh -c "ls '$W'/spool/deferred/*/$id >/dev/null 2>&1" || fail "not in deferred/"
grep -q "a body that waits" "$W"/spool/deferred/*/"$id" || fail "the deferred file lacks the body"
ctl queue show "$id" >"$W/show" 2>&1 || fail "mtactl queue show: $(cat "$W/show")"
grep -q "far@remote.example" "$W/show" || fail "queue show: $(cat "$W/show")"
smtp_sink
wait_for 20 sh -c "grep -l 'Subject: must wait' '$DUMP'/* >/dev/null 2>&1" || fail "not delivered once the next hop was back"
wait_for 10 empty || fail "mail left in the queue: $(ctl queue)"
[ "$(grep -l 'Subject: must wait' "$DUMP"/* | wc -l)" -eq 1 ] || fail "delivered more than once"
echo "  a deferred message got its queue file"
# queue.memory_time: smtp-sink answers DATA after 3 s. With 30s, the
# delivery ends before any file is written; with 1s, the file is written
# while the delivery runs.
gen=1
slow() { # slow MEMORY_TIME SUBJECT: reload with it, send SUBJECT slowly
	gen=$((gen + 1))
	write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" "queue { backoff { min = 1s; max = 2s; } memory_time = $1; }"
	ctl reload >/dev/null || fail "reload"
	wait_log "generation $gen" 10 || fail "not reloaded"
	wait_status $NCHILD || fail "children did not start again"
	smtp_sink -w 3
	before=$(grep -vc watching "$W/created")
	send sender@remote.example "far@remote.example" "$2"
}
delivered() { wait_for 20 sh -c "grep -l 'Subject: $1' '$DUMP'/* >/dev/null 2>&1" && wait_for 10 empty &&
	[ "$(grep -l "Subject: $1" "$DUMP"/* | wc -l)" -eq 1 ]; }
slow 30s "slow in memory"
# While its delivery runs, the message is listed (from its memory file)
# as active, with its sender and recipient.
out=$(ctl queue) || fail "mtactl queue: $out"
echo "$out" | grep -q '^[0-9A-Z]*\* .* sender@remote.example$' || fail "the message in memory is not listed as active: $out"
echo "$out" | grep -q ' far@remote.example$' || fail "its recipient is not listed: $out"
echo "$out" | grep -q 'in 1 Request\.$' || fail "not one request: $out"
ctl status | grep -q "^queue: incoming 0, active 1, deferred 0," || fail "mtactl status does not count it as active: $(ctl status)"
delivered "slow in memory" || fail "the slow delivery was not made once: $(ctl queue)"
[ "$(grep -vc watching "$W/created")" -eq "$before" ] || fail "a queue file was written within memory_time 30s"
# Deleted by the operator while its delivery runs from memory, then qmgr
# killed at once: the next qmgr does not take it again (cleanup's journal
# heard it was finished, not only written out for the request), and the
# delivery in flight is the only one.
slow 30s "deleted in memory"
id=$(ctl queue | sed -n 's/^\([0-9A-Z]*\)\* .*/\1/p' | head -1)
[ -n "$id" ] || fail "no message in memory to delete: $(ctl queue)"
ctl queue delete "$id" | grep -q deleted || fail "the message in memory was not deleted"
kill -KILL "$(child_pid qmgr)"
wait_log "qmgr pid [0-9]* killed by SIGKILL" 10 || fail "qmgr's death not logged"
wait_status $NCHILD || fail "qmgr not restarted"
sleep 4
wait_for 10 empty || fail "the deleted message came back: $(ctl queue)"
[ "$(grep -c "$id: from=" "$LOG")" -eq 1 ] || fail "the deleted message was taken again after qmgr was killed"
[ "$(grep -l 'Subject: deleted in memory' "$DUMP"/* 2>/dev/null | wc -l)" -le 1 ] || fail "the deleted message was delivered twice"
slow 1s "slow with a file"
wait_for 3 sh -c "[ \$(grep -vc watching '$W/created') -gt $before ]" || fail "no queue file after memory_time 1s"
grep -l 'Subject: slow with a file' "$DUMP"/* >/dev/null 2>&1 && fail "delivered before the file was written (smtp-sink -w)"
delivered "slow with a file" || fail "the slow delivery with a file was not made once: $(ctl queue)"
echo "  a delivery longer than memory_time got its queue file, a shorter one none"
# queue.memory_messages = 0: a file for every message.
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" "queue { memory_messages = 0; }"
ctl reload >/dev/null || fail "reload"
wait_log "generation $((gen + 1))" 10 || fail "not reloaded"
wait_status $NCHILD || fail "children did not start again"
smtp_sink
before=$(grep -vc watching "$W/created")
for i in 1 2 3; do send sender@remote.example "far@remote.example" "on disk $i"; done
wait_for 20 sh -c "[ \$(grep -l 'Subject: on disk' '$DUMP'/* 2>/dev/null | wc -l) -ge 3 ]" || fail "not all relayed"
wait_for 10 empty || fail "mail left in the queue: $(ctl queue)"
[ "$(grep -vc watching "$W/created")" -ge $((before + 3)) ] ||
	fail "memory_messages = 0, and fewer than 3 queue files were written: $(grep -v watching "$W/created" | tr '\n' ' ')"
echo "  memory_messages = 0: every message got its queue file"
exit 0
