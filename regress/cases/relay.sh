# Delivery through a relay host, against two peers we did not write.
# Python's aiosmtpd: a message to three recipients is delivered to one,
# bounced for one (550 at RCPT: a failure DSN, parsed as multipart/report)
# and deferred for the other (450: a delay DSN, then a failure DSN when the
# short queue lifetime runs out). Postfix's smtp-sink: delivery with the
# content checked in its dump (lines starting with a dot survive
# dot-stuffing), 4xx at MAIL (deferred, then delivered after a flush), 5xx
# at the end of data (bounced; the DSN to a sender behind the same refusing
# peer bounces too and goes to the postmaster), a disconnect after the end
# of data (deferred, "may be sent more than once"); with the peer down,
# hold, release, requeue, delete and flush through mtactl, and sendmail -q;
# qmgr killed with mail deferred and master restarted: nothing lost.
. ./lib.sh
. ./peers.sh
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" \
	"queue { lifetime = 12s; delay_warning = 3s; backoff { min = 1s; max = 2s; } }" \
	"transport { smtp { dead_time = 1s; } }" \
	"smtp { connection_cache_time = 1s; }"
start_master

# --- aiosmtpd: delivered, bounced, deferred then expired ---
aio_sink
send sender@remote.example ok@remote.example,reject5@remote.example,reject4@remote.example "aio one"
wait_log "to=<ok@remote.example>, relay=127.0.0.1\[127.0.0.1\]:$RELAY, delay=.*dsn=2\.0\.0, status=sent (250 2.0.0 Ok: saved as" 10 ||
	fail "no sent line for ok@remote.example"
wait_log "to=<reject5@remote.example>, .*dsn=5\.1\.1, status=bounced (host 127.0.0.1\[127.0.0.1\] said: 550 5.1.1" 10 ||
	fail "no bounced line for reject5"
wait_log "to=<reject4@remote.example>, .*dsn=4\.2\.1, status=deferred" 10 || fail "no deferred line for reject4"
wait_log "to=<reject4@remote.example>, relay=none, .*status=bounced (message expired in the queue; last error: host 127.0.0.1" 30 ||
	fail "no expiry line for reject4"
# The reports come back to the sender through the same relay.
wait_for 40 empty || fail "the queue did not empty: $(ctl queue)"
/usr/bin/python3 - "$W/aio" <<'PY' || fail "the delivery status notifications are wrong"
import email, glob, json, os, sys
from email import policy
d = sys.argv[1]
msgs = []
for j in sorted(glob.glob(os.path.join(d, "*.json")), key=lambda p: int(os.path.basename(p)[:-5])):
    env = json.load(open(j))
    raw = open(j[:-5] + ".eml", "rb").read()
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in %s" % j
    msgs.append((env, email.message_from_bytes(raw, policy=policy.compat32)))
orig = [m for e, m in msgs if e["from"] == "sender@remote.example"]
assert len(orig) == 1 and orig[0]["Subject"] == "aio one", [m["Subject"] for m in orig]
reports = {}
for env, m in msgs:
    if env["from"] not in ("", "<>"):
        continue
    assert env["to"] == ["sender@remote.example"], env
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    parts = m.get_payload()
    assert parts[1].get_content_type() == "message/delivery-status", parts[1].get_content_type()
    blocks = parts[1].get_payload()
    assert "Reporting-MTA" in str(blocks[0]), str(blocks[0])
    for b in blocks[1:]:
        rcpt = " ".join(b["Final-Recipient"].split())
        for r in ("reject5", "reject4"):
            if rcpt == "rfc822; %s@remote.example" % r:
                text = " ".join(str(b).split())
                reports.setdefault(r, []).append((b["Action"].strip(), b["Status"].strip(), text))
    # The original's header comes back with it.
    assert "Subject: aio one" in m.as_string(), "the original is not returned"
assert "reject5" in reports, [e["from"] for e, m in msgs]
assert [a for a, s, t in reports["reject5"]] == ["failed"], reports.get("reject5")
assert reports["reject5"][0][1] == "5.1.1"
assert "Diagnostic-Code: smtp; 550 5.1.1" in reports["reject5"][0][2], reports["reject5"][0][2]
assert "Remote-MTA: dns; 127.0.0.1" in reports["reject5"][0][2], reports["reject5"][0][2]
r4 = [a for a, s, t in reports["reject4"]]
assert r4 == ["delayed", "failed"], r4
assert reports["reject4"][1][1] == "4.2.1", reports["reject4"][1]
print("  failure, delay and expiry reports parsed as multipart/report")
PY
grep -q "ok@remote.example" "$W/aio/1.json" || fail "aiosmtpd did not get ok@remote.example first"

# --- smtp-sink: delivery, dot lines, 4xx at MAIL, 5xx at end of data, disconnect ---
smtp_sink
printf 'Subject: dots\r\n\r\n.\r\n..two\r\n.leading dot\r\nend\r\n' >"$W/body"
send sender@remote.example rcpt@remote.example dots --body "$(printf '.\n..two\n.leading dot\nend')"
wait_for 10 empty || fail "not delivered to smtp-sink"
d=$(grep -l "Subject: dots" "$DUMP"/* | head -1)
[ -n "$d" ] || fail "smtp-sink dumped nothing"
grep -q "^X-Rcpt-Args: <rcpt@remote.example>" "$d" || fail "recipient not in the dump"
awk '/^Subject: dots/{s=1} s' "$d" | grep -qx '\.\.two' || fail "a line starting with two dots was changed: $(cat "$d")"
awk '/^Subject: dots/{s=1} s' "$d" | grep -qx '\.leading dot' || fail "a line starting with a dot was changed"
awk '/^Subject: dots/{s=1} s' "$d" | grep -qx '\.' || fail "a lone dot line was lost"
awk '/^Subject: dots/{s=1} s' "$d" | grep -qx 'end' || fail "the message was cut at the dot line"

smtp_sink -r MAIL
send sender@remote.example rcpt@remote.example "mail 4xx"
wait_log "status=deferred (host 127.0.0.1\[127.0.0.1\] said: 450 4.3.0 Error: command failed (in reply to MAIL FROM command))" 10 ||
	fail "4xx at MAIL not deferred"
id=$(queue_id "mail 4xx")
[ -n "$id" ] || fail "the deferred message is not in the queue"
smtp_sink
ctl queue flush | grep -q "to be tried now" || fail "mtactl queue flush"
wait_for 10 empty || fail "not delivered after the flush"
wait_log "$id: to=<rcpt@remote.example>, .*status=sent" 1 || fail "no sent line for $id"

smtp_sink -f .
send sender@local.test rcpt@remote.example "dot 5xx"
wait_log "to=<rcpt@remote.example>, .*status=bounced (host 127.0.0.1\[127.0.0.1\] said: 500 5.3.0 Error: command failed (in reply to end of DATA command))" 10 ||
	fail "5xx at end of data not bounced"
# The sender's domain goes through the same relay, which refuses the
# report too: the double bounce goes to the postmaster (local, which this
# version keeps in the queue).
wait_for 15 sh -c "'$MTACTL' -s '$W/mta.sock' -j queue | grep -q 'postmaster@'" ||
	fail "no double bounce for the postmaster: $(ctl queue)"
ctl -j queue | /usr/bin/python3 -c '
import json, sys
q = json.load(sys.stdin)["queue"]
assert len(q) == 1, q
m = q[0]
assert m["sender"] == "double-bounce@'"$(hostname)"'" and [r["address"] for r in m["recipients"]] == ["postmaster@'"$(hostname)"'"], m
' || fail "the double bounce is not from double-bounce@ to the postmaster: $(ctl -j queue)"
dbl=$(ctl -j queue | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["queue"][0]["id"])')
ctl queue delete "$dbl" | grep -q deleted || fail "delete the double bounce"

smtp_sink -q .
# NOTIFY=NEVER (Python's smtplib): no delay report while it waits below.
python3 - "$PORT" <<'PY' || fail "smtplib: disconnect"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.sendmail("sender@remote.example", ["rcpt@remote.example"], b"Subject: disconnect\r\n\r\nbody\r\n",
               rcpt_options=["NOTIFY=NEVER"])
PY
wait_log "status=deferred (lost connection with the server while waiting for the reply to the end of data -- message may be sent more than once)" 10 ||
	fail "disconnect after the end of data not deferred"

# --- the operator, with the peer down ---
stop_sink
id=$(queue_id "disconnect")
ctl queue hold "$id" | grep -q "put on hold" || fail "hold"
[ -f "$W/spool/hold/$id" ] || fail "held message not in hold/"
ctl queue show "$id" >"$W/show" || fail "show"
grep -q "^queue: hold" "$W/show" && grep -q "^recipient: rcpt@remote.example (deferred" "$W/show" &&
	grep -q "^Subject: disconnect" "$W/show" || fail "show: $(cat "$W/show")"
# (The attempt after the release, not the one before the hold: a requeue
# while it is being delivered is refused, "being delivered now".)
tried=$(grep -c "$id: to=<rcpt@remote.example>, relay=none, .*status=deferred" "$LOG" || true)
ctl queue release "$id" | grep -q released || fail "release"
wait_for 10 sh -c "[ \$(grep -c '$id: to=<rcpt@remote.example>, relay=none, .*status=deferred' '$LOG') -gt $tried ]" ||
	fail "released message not tried"
# (qmgr may not have taken smtp's report yet: "being delivered now".)
k=0
until ctl queue requeue "$id" >"$W/requeue" 2>&1 && grep -q requeued "$W/requeue"; do
	grep -q "being delivered now" "$W/requeue" && [ $k -lt 50 ] || fail "requeue: $(cat "$W/requeue")"
	sleep 0.1; k=$((k + 1))
done
send sender@remote.example doomed@remote.example "doomed"
doomed=$(queue_id "doomed")
ctl queue delete "$doomed" | grep -q deleted || fail "delete"
ctl queue show "$doomed" 2>&1 | grep -q "no such message" || fail "deleted message still there"
wait_log "$doomed: deleted by the operator" 1 || fail "delete not logged"
# Many at once, as with postsuper: several IDs, IDs on standard input
# (the listing's marks dropped), and ALL of one queue.
for i in 1 2 3; do send sender@remote.example "batch$i@remote.example" "batch$i"; done
b1=$(queue_id batch1) && b2=$(queue_id batch2) && b3=$(queue_id batch3) || fail "the batch was not queued"
ctl queue hold "$b1" "$b2" "$b3" >"$W/batch" || fail "hold of three: $(cat "$W/batch")"
[ "$(grep -c "put on hold" "$W/batch")" = 3 ] && grep -q "^hold: 3 of 3 messages$" "$W/batch" ||
	fail "hold of three: $(cat "$W/batch")"
wait_for 10 sh -c "[ \$(ls '$W/spool/hold' | grep -c .) = 3 ]" || fail "the three are not in hold/: $(ls "$W/spool/hold")"
ctl queue | awk '$1 ~ /!$/ { print $1 }' >"$W/held"
[ "$(wc -l <"$W/held")" = 3 ] || fail "the listing does not mark the three held: $(ctl queue)"
ctl queue release - <"$W/held" >"$W/batch" || fail "release from standard input: $(cat "$W/batch")"
grep -q "^release: 3 of 3 messages$" "$W/batch" || fail "release from standard input: $(cat "$W/batch")"
wait_for 10 sh -c "[ \$(ls '$W/spool/hold' | grep -c .) = 0 ]" || fail "hold/ not emptied"
printf '%s\nnot-a-queue-id\n%s\n%s\n' "$b1" "$b2" "$b3" | ctl queue hold - >"$W/batch" 2>&1 &&
	fail "a line that is no queue ID was taken"
grep -q "not-a-queue-id. is not a queue ID" "$W/batch" && grep -q "^hold: 3 of 3 messages$" "$W/batch" ||
	fail "hold from standard input: $(cat "$W/batch")"
ctl queue delete ALL hold >"$W/batch" || fail "delete ALL hold: $(cat "$W/batch")"
grep -q "^delete: 3 of 3 messages$" "$W/batch" || fail "delete ALL hold: $(cat "$W/batch")"
for b in "$b1" "$b2" "$b3"; do wait_log "$b: deleted by the operator" 5 || fail "$b not deleted"; done
ctl queue show "$id" >/dev/null || fail "delete ALL hold took a message not held"
note "hold, release and delete of many: several IDs, IDs on standard input, ALL of a queue"
if is_root; then
	ensure_user mtaother
	runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" queue hold "$id" 2>&1 | grep -q "permission denied" ||
		fail "an ordinary user may hold mail"
fi

# --- restarts: qmgr killed, then master; nothing lost ---
kill -9 "$(child_pid qmgr)"
wait_log "qmgr pid [0-9]* killed by SIGKILL" 10 || true
wait_status $NCHILD || fail "qmgr not restarted"
wait_queued 1 || fail "after qmgr was killed: $(queued) queued, want 1: $(ctl queue)"
# The message deleted just before the kill stays deleted (cleanup's
# journal must have heard that it is finished, not only written).
[ "$(grep -c "$doomed: from=" "$LOG")" -eq 1 ] || fail "the deleted message came back after qmgr was killed"
ctl stop >/dev/null; gone "$MASTER_PID" 10 || fail "master did not stop"; MASTER_PID=""
[ "$(queued)" -eq 1 ] || fail "after stop: $(queued) queued"
smtp_sink
start_master
# sendmail -q asks for the flush as any user would.
"$MTA_BIN/sendmail" -C "$CONF" -q 2>&1 | grep -q "to be tried now" || fail "sendmail -q"
wait_for 15 empty || fail "the held, released and requeued message was never delivered"
grep -l "Subject: disconnect" "$DUMP"/* >/dev/null || fail "not in smtp-sink's dump"
exit 0
