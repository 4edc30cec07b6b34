# Delivery faults through a relay host, against peers we did not write.
# Postfix's smtp-sink: 5xx at MAIL and at RCPT bounce (the reports to the
# sender bounce too, and the postmaster notices about them, undeliverable,
# are discarded: no notice loop), 4xx at RCPT and at the end of data and
# a 5xx greeting defer (then delivered once the peer takes it); a body
# with bare CR, bare LF and dot lines, submitted with sendmail, goes out
# with CR LF line ends only and dot-stuffed correctly (smtp-sink's dump);
# a message received with SMTPUTF8 that is ASCII throughout is delivered
# to smtp-sink, which has no SMTPUTF8, and one with UTF-8 in a header
# bounces (5.6.7); ORCPT of type utf-8 goes to smtp-sink (DSN, no
# SMTPUTF8) in RFC 6533's 7-bit form (\x{E9}), or as rfc822 when ASCII,
# whether it came as xtext of its bytes or, in an SMTPUTF8 transaction,
# raw (utf-8-addr-unitext); raw without SMTPUTF8 it is refused (501).
# Python's aiosmtpd, which does not offer DSN: NOTIFY=SUCCESS gets a
# success report from us, saying "relayed" for the recipient sent there
# with the server that took it (Remote-MTA) and its reply
# (Diagnostic-Code: smtp) and, in the same report (as root, where local delivery can run as
# nobody), "delivered" for one delivered here into a file through an
# alias and "expanded" for an alias to two files; the smtp process killed with -9
# while a delivery waits for the peer's reply: that message comes again
# (the delivery in flight), every other message exactly once. A peer of
# our own that takes one message per connection and says 421 to the next
# MAIL: the cached connection is replaced by a new one, both delivered.
# A queue file whose content is damaged while it waits: the smtp agent
# finds it, qmgr moves it to corrupt/, nothing is delivered.
. ./lib.sh
. ./peers.sh
# Aliases to files, written as nobody, for the success report.
OUT="$W/out"
mkdir -p "$OUT" && chmod 1777 "$OUT"
printf 'tofile: %s/one\ntolist: %s/l1, %s/l2\n' "$OUT" "$OUT" "$OUT" >"$W/aliases"
# Our host name is not one of our domains: mail to its postmaster goes
# out through the relay too.
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" \
	'hostname = "mx.faults.test";' 'domains = [ "faults.test" ];' \
	"aliases = \"$W/aliases\";" \
	"queue { backoff { min = 1s; max = 2s; } }" \
	"transport { smtp { dead_time = 1s; } }" \
	"smtp { connection_cache_time = 1s; }"
"$MTA_BIN/sendmail" -C "$CONF" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
start_master
# copies SUBJECT: how many messages with that subject smtp-sink dumped.
copies() { grep -l -- "^Subject: $1" "$DUMP"/* 2>/dev/null | wc -l; }

# --- 5xx at MAIL and RCPT: bounced; the sender is local, so the report
# waits in the queue for the local delivery agent ---
smtp_sink -f MAIL
send sender@remote.example rcpt@remote.example "mail 5xx"
wait_log "to=<rcpt@remote.example>, .*status=bounced (host 127.0.0.1\[127.0.0.1\] said: 500 5.3.0 Error: command failed (in reply to MAIL FROM command))" 10 ||
	fail "5xx at MAIL not bounced"
smtp_sink -f RCPT
send sender@remote.example rcpt@remote.example "rcpt 5xx"
wait_log "to=<rcpt@remote.example>, .*status=bounced (host 127.0.0.1\[127.0.0.1\] said: 500 5.3.0 Error: command failed (in reply to RCPT TO command))" 10 ||
	fail "5xx at RCPT not bounced"
# Both reports went to the sender through the refusing relay and bounced
# too: two double bounces for the postmaster, from double-bounce@, which
# go out through the same relay and are refused as well. Those are
# discarded with a warning (as Postfix does), or each would make a new
# notice for ever.
wait_for 20 sh -c "[ \$(grep -c 'from=<double-bounce@mx.faults.test>: discarding an undeliverable postmaster notice' '$LOG') -eq 2 ]" ||
	fail "the undeliverable postmaster notices were not discarded: $(grep -c discarding "$LOG"), $(ctl queue)"
wait_log "to=<postmaster@mx.faults.test>, .*status=bounced" 1 || fail "the postmaster notices did not go out"
wait_for 10 empty || fail "notices still queued: $(ctl queue)"
sleep 2
[ "$(grep -c 'discarding an undeliverable postmaster notice' "$LOG")" -eq 2 ] || fail "more notices after the discards"
empty || fail "notices made after the discards: $(ctl queue)"

# --- 4xx at RCPT and at the end of data, a 5xx greeting: deferred, then
# delivered ---
smtp_sink -r RCPT
send sender@remote.example rcpt@remote.example "rcpt 4xx"
wait_log "to=<rcpt@remote.example>, .*status=deferred (host 127.0.0.1\[127.0.0.1\] said: 450 4.3.0 Error: command failed (in reply to RCPT TO command))" 10 ||
	fail "4xx at RCPT not deferred"
smtp_sink -r .
send sender@remote.example rcpt@remote.example "dot 4xx"
wait_log "to=<rcpt@remote.example>, .*status=deferred (host 127.0.0.1\[127.0.0.1\] said: 450 4.3.0 Error: command failed (in reply to end of DATA command))" 10 ||
	fail "4xx at the end of data not deferred"
# (Postfix's smtp_skip_5xx_greeting: a site failure, class 4, no bounce.)
smtp_sink -f CONNECT
send sender@remote.example rcpt@remote.example "greeting 5xx"
wait_log "to=<rcpt@remote.example>, .*dsn=4\.3\.0, status=deferred (host 127.0.0.1\[127.0.0.1\] said: 500 5.3.0 Error: command failed (in reply to initial greeting command))" 10 ||
	fail "a 5xx greeting did not defer"
grep -q "status=bounced.*initial greeting" "$LOG" && fail "a 5xx greeting bounced"
stop_sink
rm -f "$DUMP"/*
smtp_sink
ctl queue flush >/dev/null
wait_for 20 empty || fail "the deferred messages were not delivered: $(ctl queue)"
[ "$(copies "rcpt 4xx")" -eq 1 ] || fail "rcpt 4xx: $(copies "rcpt 4xx") copies"
[ "$(copies "dot 4xx")" -eq 1 ] || fail "dot 4xx: $(copies "dot 4xx") copies"
[ "$(copies "greeting 5xx")" -eq 1 ] || fail "greeting 5xx: $(copies "greeting 5xx") copies"

# --- outbound smuggling: bare CR, bare LF, dot lines ---
printf 'Subject: smuggle\n\nbare CR\rin a line\nbare LF next\n.\n.\r\nMAIL FROM:<evil@example.org>\n..two\n.\rx\nend' |
	"$MTA_BIN/sendmail" -C "$CONF" -i -f sender@remote.example rcpt@remote.example || fail "sendmail"
wait_for 20 sh -c "grep -l '^Subject: smuggle' '$DUMP'/* >/dev/null 2>&1" || fail "the smuggle message was not delivered"
d=$(grep -l '^Subject: smuggle' "$DUMP"/* | head -1)
[ "$(copies smuggle)" -eq 1 ] || fail "smuggle: $(copies smuggle) messages at the peer"
# smtp-sink took it as one message; its dump ends each received line in
# LF, so a CR anywhere is a bare CR that went out.
if tr -d '\n' <"$d" | grep -q "$(printf '\r')"; then fail "a bare CR went out: $(od -c "$d" | head -20)"; fi
# The body as dumped (smtp-sink ends its dump with an empty line).
awk '/^Subject: smuggle/{s=1} s && b; s && /^$/{b=1}' "$d" >"$W/got"
# (sendmail makes a CR inside a line a space, as it ends no line.)
printf 'bare CR in a line\nbare LF next\n.\n.\nMAIL FROM:<evil@example.org>\n..two\n. x\nend\n\n' >"$W/want"
cmp -s "$W/got" "$W/want" || fail "the content changed on the way: $(diff "$W/want" "$W/got")"

# --- SMTPUTF8 to a peer without it (smtp-sink offers none) ---
/usr/bin/python3 - "$PORT" <<'PY' || fail "smtplib: SMTPUTF8"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.sendmail("sender@remote.example", ["ascii8@remote.example"],
               b"Subject: smtputf8 ascii\r\n\r\nbody\r\n", mail_options=["SMTPUTF8"])
    s.sendmail("sender@remote.example", ["utf8hdr@remote.example"],
               "Subject: smtputf8 \u00e9t\u00e9\r\n\r\nbody\r\n".encode(), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    # (ORCPT's UTF-8 as xtext of its bytes, as a client unaware of
    # RFC 6533 would send it.)
    s.sendmail("sender@remote.example", ["orcpt1@remote.example", "orcpt2@remote.example"],
               b"Subject: utf-8 orcpt\r\n\r\nbody\r\n", rcpt_options=["ORCPT=utf-8;jos+C3+A9@remote.example"])
    s.sendmail("sender@remote.example", ["orcpt3@remote.example"],
               b"Subject: ascii utf-8 orcpt\r\n\r\nbody\r\n", rcpt_options=["ORCPT=utf-8;plain@remote.example"])
    # Raw UTF-8 (RFC 6533 utf-8-addr-unitext) in an SMTPUTF8 transaction.
    s.sendmail("sender@remote.example", ["orcpt4@remote.example"],
               b"Subject: raw utf-8 orcpt\r\n\r\nbody\r\n", mail_options=["SMTPUTF8"],
               rcpt_options=["ORCPT=utf-8;jos\u00e9@remote.example"])
    # ... and refused without it, saying why.
    s.ehlo()
    s.mail("sender@remote.example")
    s.command_encoding = "utf-8"
    code, text = s.rcpt("orcpt5@remote.example", ["ORCPT=utf-8;jos\u00e9@remote.example"])
    assert code == 501 and b"SMTPUTF8" in text, (code, text)
    s.rset()
PY
wait_log "to=<ascii8@remote.example>, .*status=sent" 10 ||
	fail "an ASCII message received with SMTPUTF8 was not sent to a peer without SMTPUTF8"
wait_log "to=<utf8hdr@remote.example>, .*dsn=5\.6\.7, status=bounced (SMTPUTF8 is required, but was not offered by the server)" 10 ||
	fail "UTF-8 in a header did not require SMTPUTF8"
[ "$(copies "smtputf8 ascii")" -eq 1 ] || fail "smtputf8 ascii: $(copies "smtputf8 ascii") copies"
wait_for 10 sh -c "grep -l '^Subject: ascii utf-8 orcpt' '$DUMP'/* >/dev/null 2>&1" || fail "the utf-8 ORCPT messages were not sent"
d=$(grep -l '^Subject: utf-8 orcpt' "$DUMP"/* | head -1)
[ "$(grep -c '^X-Rcpt-Args: <orcpt[12]@remote.example> ORCPT=utf-8;jos\\x{E9}@remote.example$' "$d")" -eq 2 ] ||
	fail "a UTF-8 ORCPT did not go in RFC 6533's 7-bit form: $(grep '^X-Rcpt-Args' "$d")"
d=$(grep -l '^Subject: ascii utf-8 orcpt' "$DUMP"/* | head -1)
grep -q '^X-Rcpt-Args: <orcpt3@remote.example> ORCPT=rfc822;plain@remote.example$' "$d" ||
	fail "an ASCII utf-8 ORCPT did not go as rfc822: $(grep '^X-Rcpt-Args' "$d")"
wait_for 10 sh -c "grep -l '^Subject: raw utf-8 orcpt' '$DUMP'/* >/dev/null 2>&1" || fail "the raw utf-8 ORCPT message was not sent"
d=$(grep -l '^Subject: raw utf-8 orcpt' "$DUMP"/* | head -1)
grep -q '^X-Rcpt-Args: <orcpt4@remote.example> ORCPT=utf-8;jos\\x{E9}@remote.example$' "$d" ||
	fail "a raw UTF-8 ORCPT did not go in RFC 6533's 7-bit form: $(grep '^X-Rcpt-Args' "$d")"
# (The report goes to the sender through smtp-sink, before the next peer.)
wait_for 20 empty || fail "the SMTPUTF8 report was not delivered: $(ctl queue)"

# --- aiosmtpd: a success report where the peer has no DSN, and for
# local deliveries ---
aio_sink
LOCALS=""
is_root && LOCALS="tofile@faults.test tolist@faults.test"
python3 - "$PORT" $LOCALS <<'PY' || fail "smtplib: NOTIFY=SUCCESS"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.sendmail("sender@remote.example", ["told@remote.example"] + sys.argv[2:],
               b"Subject: notify success\r\nMessage-ID: <success@remote.example>\r\n\r\nbody\r\n",
               mail_options=["RET=HDRS", "ENVID=QQ314159"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
PY
wait_log "to=<told@remote.example>, .*status=sent" 10 || fail "NOTIFY=SUCCESS message not sent"
# cleanup logs each message's Message-ID, as Postfix does.
grep -q "mta/cleanup.*: message-id=<success@remote\.example>$" "$LOG" || fail "cleanup did not log the Message-ID"
if is_root; then
	wait_log "to=<tofile@faults.test>, relay=local, .*status=sent (delivered to file: $OUT/one)" 10 ||
		fail "NOTIFY=SUCCESS message not delivered to the file"
	wait_for 10 test -s "$OUT/l2" || fail "NOTIFY=SUCCESS message not delivered to the list's files"
fi
wait_for 20 empty || fail "the success report was not delivered: $(ctl queue)"
/usr/bin/python3 - "$W/aio" $LOCALS <<'PY' || fail "the success report is wrong"
import email, glob, json, os, sys
from email import policy
d = sys.argv[1]
reports = []
for j in glob.glob(os.path.join(d, "*.json")):
    env = json.load(open(j))
    if env["from"] in ("", "<>"):
        reports.append((env, email.message_from_bytes(open(j[:-5] + ".eml", "rb").read(), policy=policy.compat32)))
assert len(reports) == 1, [e for e, m in reports]
env, m = reports[0]
assert env["to"] == ["sender@remote.example"], env
assert m.get_content_type() == "multipart/report" and m.get_param("report-type") == "delivery-status"
status = m.get_payload()[1].get_payload()
assert "Original-Envelope-Id: QQ314159" in str(status[0]), str(status[0])
got = {}
for block in status[1:]:
    b = " ".join(str(block).split())
    got[" ".join(block["Final-Recipient"].split())] = (block["Action"].strip(), block["Status"].strip(), b)
want = {"rfc822; told@remote.example": "relayed"}
if sys.argv[2:]:
    # Into a file through an alias: final delivery; an alias to two
    # files: expanded (RFC 3461 5.2.7.3).
    want["rfc822; tofile@faults.test"] = "delivered"
    want["rfc822; tolist@faults.test"] = "expanded"
assert {k: v[:2] for k, v in got.items()} == {k: (v, "2.0.0") for k, v in want.items()}, got
# The server's reply, no action word in front, and who gave it.
assert "Remote-MTA: dns; 127.0.0.1 " in got["rfc822; told@remote.example"][2], got
assert "Diagnostic-Code: smtp; 250 " in got["rfc822; told@remote.example"][2], got
if sys.argv[2:]:
    assert "Diagnostic-Code: X-Mta; delivered to file: " in got["rfc822; tofile@faults.test"][2], got
assert "Subject: notify success" in m.as_string(), "RET=HDRS: the original headers are not returned"
assert "\nbody" not in m.get_payload()[2].as_string(), "RET=HDRS: the body came back"
print("  success report parsed: %s, 2.0.0, ENVID kept, headers only" % ", ".join(sorted(want.values())))
PY

# --- a peer whose replies come in pieces (each line split, with pauses;
# the multi-line EHLO reply across several reads) and that closes right
# after its 221: delivered, every reply read whole ---
stop_sink
/usr/bin/python3 - "$RELAY" "$W/dribble" >"$W/dribble.log" 2>&1 <<'PY' &
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(4)
srv.settimeout(20)
def say(c, text):
    for i in range(0, len(text), 3):
        c.sendall(text[i:i + 3])
        time.sleep(0.005)
def serve(c):
    c.settimeout(10)
    f = c.makefile("rb")
    say(c, b"220 dribble.example ESMTP\r\n")
    data = b""
    while True:
        line = f.readline()
        if not line:
            return data
        cmd = line[:4].upper()
        if cmd == b"EHLO":
            say(c, b"250-dribble.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n")
        elif cmd == b"DATA":
            say(c, b"354 go ahead\r\n")
            while True:
                l = f.readline()
                if not l or l == b".\r\n":
                    break
                data += l
            say(c, b"250 2.0.0 queued as DRIBBLE\r\n")
        elif cmd == b"QUIT":
            c.sendall(b"221 2.0.0 bye\r\n")
            c.close()
            return data
        else:
            say(c, b"250 2.0.0 ok\r\n")
# (The first connection may be the test's own check that the port is open.)
data = b""
for _ in range(5):
    try:
        data = serve(srv.accept()[0])
    except OSError:
        continue
    if data:
        break
open(sys.argv[2], "wb").write(data)
PY
SINK_PID=$!
wait_for 5 port_open || fail "the dribbling peer did not start: $(cat "$W/dribble.log")"
send sender@remote.example dribble@remote.example "dribbled"
wait_log "to=<dribble@remote.example>, .*status=sent (250 2.0.0 queued as DRIBBLE)" 15 ||
	fail "not delivered to a peer whose replies come in pieces"
wait_for 15 test -s "$W/dribble" || fail "the dribbling peer did not finish: $(cat "$W/dribble.log")"
grep -q "^Subject: dribbled" "$W/dribble" || fail "the dribbling peer got no message"
SINK_PID=""

# --- smtp killed with -9 mid-delivery ---
rm -rf "$W/aio"; aio_sink
send sender@remote.example before@remote.example "before"
wait_log "to=<before@remote.example>, .*status=sent" 10 || fail "before: not sent"
send sender@remote.example slow@remote.example "in flight"
wait_for 10 test -e "$W/aio/slow" || fail "the slow delivery did not reach the peer"
old=$(child_pid smtp)
kill -9 "$old"
wait_for 10 sh -c "p=\$('$MTACTL' -s '$W/mta.sock' status | awk '\$1 == \"smtp\" && \$NF == \"running\" { print \$2 }'); [ -n \"\$p\" ] && [ \"\$p\" != $old ]" ||
	fail "smtp not restarted"
wait_log "to=<slow@remote.example>, relay=none, .*status=deferred (the delivery agent went away" 10 ||
	fail "the delivery in flight was not deferred"
send sender@remote.example after@remote.example "after"
ctl queue flush >/dev/null
wait_for 30 empty || fail "not everything was delivered after the kill: $(ctl queue)"
/usr/bin/python3 - "$W/aio" <<'PY' || fail "lost or duplicated mail after the kill"
import glob, json, os, sys
n = {}
for j in glob.glob(os.path.join(sys.argv[1], "*.json")):
    for r in json.load(open(j))["to"]:
        n[r] = n.get(r, 0) + 1
assert n.get("before@remote.example") == 1, n
assert n.get("after@remote.example") == 1, n
assert n.get("slow@remote.example") == 2, n   # saved, unanswered, sent again
print("  after the kill: before and after once each, the delivery in flight twice")
PY

# --- a cached connection the peer closes with 421 at the next MAIL: the
# delivery starts again on a new connection (sessions cached for 10s, so
# the second message meets the first one's connection) ---
stop_sink
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" \
	'hostname = "mx.faults.test";' 'domains = [ "faults.test" ];' \
	"queue { backoff { min = 1s; max = 2s; } }" \
	"transport { smtp { dead_time = 1s; } }" \
	"smtp { connection_cache_time = 10s; }"
out=$(ctl reload) || fail "reload: $out"
wait_log "generation 2" || fail "no generation 2"
wait_status $NCHILD || fail "generation 2 not running"
mkdir -p "$W/once"
/usr/bin/python3 - "$RELAY" "$W/once" >"$W/once.log" 2>&1 <<'PY' &
import os, socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(8)
lock = threading.Lock()
count = [0, 0]   # connections, messages
def serve(c):
    c.settimeout(30)
    f = c.makefile("rb")
    c.sendall(b"220 once.example ESMTP\r\n")
    mails = 0
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line[:4].upper()
        if cmd == b"EHLO":
            c.sendall(b"250-once.example\r\n250 8BITMIME\r\n")
        elif cmd == b"MAIL":
            mails += 1
            if mails > 1:
                c.sendall(b"421 4.7.0 one message per connection\r\n")
                c.close()
                return
            c.sendall(b"250 2.1.0 ok\r\n")
        elif cmd == b"DATA":
            c.sendall(b"354 go ahead\r\n")
            data = b""
            while True:
                l = f.readline()
                if not l or l == b".\r\n":
                    break
                data += l
            with lock:
                count[1] += 1
                open(os.path.join(sys.argv[2], "%d.eml" % count[1]), "wb").write(data)
            c.sendall(b"250 2.0.0 queued\r\n")
        elif cmd == b"QUIT":
            c.sendall(b"221 2.0.0 bye\r\n")
            c.close()
            return
        else:
            c.sendall(b"250 2.0.0 ok\r\n")
while True:
    c = srv.accept()[0]
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
SINK_PID=$!
wait_for 5 port_open || fail "the one-message peer did not start: $(cat "$W/once.log")"
send sender@remote.example once1@remote.example "once one"
wait_log "to=<once1@remote.example>, .*status=sent (250 2.0.0 queued)" 15 || fail "once one: not sent"
send sender@remote.example once2@remote.example "once two"
wait_log "to=<once2@remote.example>, .*status=sent (250 2.0.0 queued)" 15 ||
	fail "the second message was not delivered after the cached connection failed"
grep -q "421 4.7.0 one message per connection (in reply to MAIL FROM command) (a cached connection to 127.0.0.1\[127.0.0.1\]:$RELAY; trying again on a new one)" "$LOG" ||
	fail "the cached connection's failure is not logged as such"
grep -q "to=<once2@remote.example>, .*status=deferred" "$LOG" && fail "the second message was deferred"
for s in "once one" "once two"; do
	n=$(grep -l "^Subject: $s" "$W/once"/*.eml 2>/dev/null | wc -l)
	[ "$n" -eq 1 ] || fail "$s: $n copies at the peer"
done

# A queue file whose content is damaged while it waits in the queue (the
# peer down): qmgr reads only the envelope, the smtp agent checks the
# content's CRC and says so, and qmgr moves the file to corrupt/ instead
# of retrying it until it expires; nothing is delivered.
stop_sink
send sender@remote.example damaged@remote.example "damaged" --body "a body to damage"
wait_log "to=<damaged@remote.example>, .*status=deferred" 15 || fail "damaged: not deferred while the peer is down"
damage_queued "a body to damage" || fail "could not damage the queue file"
smtp_sink
ctl queue flush >/dev/null
wait_log "the delivery agent found it corrupt: .*content CRC mismatch; moved to corrupt/" 15 ||
	fail "the damaged queue file was not moved to corrupt/"
grep -rl "A body to damage" "$W/spool/corrupt" >/dev/null || fail "the damaged file is not in corrupt/"
[ "$(copies damaged)" -eq 0 ] || fail "the damaged message was delivered"
grep -q "to=<damaged@remote.example>, .*status=sent" "$LOG" && fail "the damaged message was reported sent"
exit 0
