# smtpd logs its sessions as Postfix does, and a log watcher we did not
# write reads them: fail2ban's own postfix filter (fail2ban-regex, from
# Debian's package unpacked under /var/tmp, never installed: it would
# start a service) picks out exactly the clients that misbehaved.
#   127.0.0.1  an unknown recipient (NOQUEUE: reject: RCPT)
#   127.0.0.2  gone after EHLO without QUIT (lost connection after EHLO)
#   127.0.0.3  too many errors (too many errors after RCPT)
#   127.0.0.4  pipelining without EHLO (improper command pipelining)
#   127.0.0.5  a clean session that sends a message: no match
#   127.0.0.6  idle past smtpd.idle_timeout (timeout after EHLO)
#   127.0.0.7  gone after the greeting (lost connection after CONNECT)
#   127.0.0.8  a message of 51 hops, refused at its end (ID: reject:
#              END-OF-MESSAGE, under the ID its client= line gave it)
# Each session has its connect and disconnect lines, the latter with
# Postfix's command counts (rcpt=0/1 for a refused RCPT), and a message
# taken its `ID: client=` line from smtpd. pflogsumm (Debian's package,
# unpacked likewise) summarises the whole log as it would Postfix's: two
# messages received (the clean session's, and one submitted with
# sendmail) and delivered (relayed to Postfix's smtp-sink), their two
# senders and their bytes, one recipient rejected. Then, under load from
# smtp-source, every message's origin line (smtpd's `client=`, pickup's
# `uid=`) comes before any other line about it, as pflogsumm needs to
# credit its sender.
. ./lib.sh
. ./peers.sh
FAIL2BAN=${FAIL2BAN:-/var/tmp/mta-test-fail2ban/usr/bin/fail2ban-regex}
[ -x "$FAIL2BAN" ] || { echo "  skipped: no fail2ban-regex at $FAIL2BAN (scripts/test unpacks it there; or set FAIL2BAN)"; exit 0; }
F2B_ROOT=${FAIL2BAN%/usr/bin/fail2ban-regex}
PFLOGSUMM=${PFLOGSUMM:-/var/tmp/mta-test-pflogsumm/usr/sbin/pflogsumm}
[ -f "$PFLOGSUMM" ] || { echo "  skipped: no pflogsumm at $PFLOGSUMM (scripts/test unpacks it there; or set PFLOGSUMM)"; exit 0; }
write_conf 'smtpd { errors = 3; errors_before_pause = 10; idle_timeout = 2s; }' \
	"relay { host = \"[127.0.0.1]:$RELAY\"; }"
smtp_sink
start_master

# talk SOURCE MODE LINES...: from address SOURCE, each line and its
# reply; then MODE: close at once, read until smtpd closes, or idle until
# smtpd times out; burst: the first line, then the rest in one write.
talk() {
	python3 - "$PORT" "$@" <<'PY'
import socket, sys, time
port, source, mode, lines = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
f = s.makefile("rb")
f.readline()
# burst: the first line, its reply, then the rest in one write.
steps = [[l] for l in lines] if mode != "burst" else [lines[:1], lines[1:]]
for step in steps:
    s.sendall(b"".join(l.encode() + b"\r\n" for l in step))
    if mode == "burst" and step is steps[-1]:
        break
    while True:
        r = f.readline()
        if not r or r[3:4] != b"-":
            break
if mode == "idle":
    # Until smtpd gives up on it: 421, then the close.
    s.settimeout(15)
    rest = s.recv(4096) + s.recv(4096)
    assert rest.startswith(b"421 4.4.2"), rest
if mode in ("read", "burst"):
    s.settimeout(5)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
s.close()
PY
}

swaks --server 127.0.0.1:$PORT --ehlo probe.example --from probe@remote.example --to nosuchuser@localhost \
	--quit-after RCPT >"$W/swaks" 2>&1 || true
grep -q "<\*\* *550 5.1.1" "$W/swaks" || fail "an unknown user was not refused: $(cat "$W/swaks")"
talk 127.0.0.2 close "EHLO gone.example" || fail "the client gone after EHLO"
talk 127.0.0.3 read "EHLO bad.example" "RCPT TO:<a@localhost>" "RCPT TO:<a@localhost>" "RCPT TO:<a@localhost>" ||
	fail "the client with too many errors"
talk 127.0.0.4 burst "HELO pipe.example" "MAIL FROM:<a@remote.example>" "RCPT TO:<root@localhost>" ||
	fail "the client pipelining without EHLO"
swaks --server 127.0.0.1:$PORT --local-interface 127.0.0.5 --ehlo clean.example --from sender@remote.example \
	--to rcpt@remote.example >"$W/swaks" 2>&1 || fail "the clean session: $(cat "$W/swaks")"
talk 127.0.0.6 idle "EHLO idle.example" || fail "the idle client was not given up with 421 4.4.2"
talk 127.0.0.7 close || fail "the client gone after the greeting"
python3 - "$PORT" <<'PY' || fail "the message of 51 hops was not refused with 554 5.4.6"
import smtplib, sys
hops = "".join("Received: from hop%d.example by hop%d.example; Tue, 24 Nov 2026 10:00:00 +0000\r\n" % (i, i + 1)
               for i in range(51))
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10, source_address=("127.0.0.8", 0)) as s:
    s.ehlo("loop.example")
    try:
        s.sendmail("loop@remote.example", ["rcpt@remote.example"], (hops + "Subject: loop\r\n\r\nround\r\n").encode())
    except smtplib.SMTPDataError as e:
        sys.exit(0 if e.smtp_code == 554 and e.smtp_error.startswith(b"5.4.6") else 1)
sys.exit(1)
PY
printf 'Subject: local\n\nsubmitted locally\n' |
	"$MTA_BIN/sendmail" -C "$CONF" -i -f local@sender.example rcpt2@remote.example || fail "sendmail"

for a in 1 2 3 4 5 6 7 8; do
	wait_log "smtpd\[[0-9]*\]: disconnect from [^ ]*\[127\.0\.0\.$a\]" 10 || fail "no disconnect line for 127.0.0.$a"
	grep -q "smtpd\[[0-9]*\]: connect from [^ ]*\[127\.0\.0\.$a\]$" "$LOG" || fail "no connect line for 127.0.0.$a"
done
# The lines and their counts.
line() { grep -q "smtpd\[[0-9]*\]: $1" "$LOG" || fail "not logged: $1"; }
line "disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4$"
line "lost connection after EHLO from [^ ]*\[127\.0\.0\.2\]$"
line "disconnect from [^ ]*\[127\.0\.0\.2\] ehlo=1 commands=1$"
line "too many errors after RCPT from [^ ]*\[127\.0\.0\.3\]$"
line "disconnect from [^ ]*\[127\.0\.0\.3\] ehlo=1 rcpt=0/3 commands=1/4$"
line "improper command pipelining after HELO from [^ ]*\[127\.0\.0\.4\]$"
line "disconnect from [^ ]*\[127\.0\.0\.4\] helo=1 commands=1$"
line "disconnect from [^ ]*\[127\.0\.0\.5\] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5$"
line "[0-9A-Z]*: client=[^ ]*\[127\.0\.0\.5\]$"
line "timeout after EHLO from [^ ]*\[127\.0\.0\.6\]$"
line "disconnect from [^ ]*\[127\.0\.0\.6\] ehlo=1 commands=1$"
line "lost connection after CONNECT from [^ ]*\[127\.0\.0\.7\]$"
line "disconnect from [^ ]*\[127\.0\.0\.7\] commands=0/0$"
refused=$(sed -n 's/.*smtpd\[[0-9]*\]: \([0-9A-Z]\{20\}\): client=[^ ]*\[127\.0\.0\.8\]$/\1/p' "$LOG")
[ -n "$refused" ] || fail "no client= line for the message of 51 hops"
line "$refused: reject: END-OF-MESSAGE from [^ ]*\[127\.0\.0\.8\]: 554 5\.4\.6 .*; from=<loop@remote\.example> to=<rcpt@remote\.example> proto=ESMTP helo=<loop\.example>$"
grep -q "lost connection after [A-Z-]* from [^ ]*\[127\.0\.0\.[13456]\]" "$LOG" &&
	fail "a session that ended with QUIT, or was ended by smtpd, was logged as lost"
note "sessions are logged with connect, disconnect (Postfix's command counts), lost connection, timeout, too many errors, improper pipelining"

# fail2ban's postfix filter, in its aggressive mode (every rule), over
# the log as a syslog daemon writes it (a date and the host name before
# each line); only the program name differs from Postfix's.
stamp=$(date '+%b %e %H:%M:%S')
grep 'smtpd\[' "$LOG" | sed "s/^/$stamp mx /" >"$W/maillog"
PYTHONPATH="$F2B_ROOT/usr/lib/python3/dist-packages" python3 "$FAIL2BAN" --out ip "$W/maillog" \
	"$F2B_ROOT/etc/fail2ban/filter.d/postfix.conf[mode=aggressive, _daemon=mta/\w+]" >"$W/f2b" 2>&1 ||
	fail "fail2ban-regex: $(cat "$W/f2b")"
sort -u "$W/f2b" >"$W/f2b.ips"
printf '127.0.0.%s\n' 1 2 3 4 7 >"$W/f2b.want"
cmp -s "$W/f2b.ips" "$W/f2b.want" ||
	fail "fail2ban picked out $(tr '\n' ' ' <"$W/f2b.ips"), not 127.0.0.1-4 and 7: $(cat "$W/f2b")"
note "fail2ban's postfix filter picks out the five clients that misbehaved, and neither the clean nor the idle one"

wait_log "to=<rcpt@remote\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:$RELAY, .*status=sent" 20 ||
	fail "the clean session's message was not relayed"
wait_log "to=<rcpt2@remote\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:$RELAY, .*status=sent" 20 ||
	fail "the message submitted with sendmail was not relayed"
sed "s/^/$stamp mx /" "$LOG" >"$W/maillog"
perl "$PFLOGSUMM" --syslog-name=mta "$W/maillog" >"$W/summary" 2>&1 || fail "pflogsumm: $(cat "$W/summary")"
sed -n '/^Grand Totals/,/^Per-/p' "$W/summary" | tr -s ' ' >"$W/totals"
# Received counts the refused message too, as for Postfix's log (its
# client= line came as it began).
for want in "3 received" "2 delivered" "2 rejected" "0 bounced" "2 senders" "2 sending hosts/domains"; do
	grep -q "^ *${want%% *} *[a-z]* *${want#* }" "$W/totals" || fail "pflogsumm does not count $want: $(cat "$W/summary")"
done
grep -Eq "^ *[1-9][0-9]*k? bytes received$" "$W/totals" || fail "pflogsumm counts no bytes received: $(cat "$W/summary")"
grep -A4 "^Host/Domain Summary: Message Delivery" "$W/summary" | grep -Eq "^ +2 +[0-9]+k? +0 .* remote\.example$" ||
	fail "pflogsumm has no two deliveries to remote.example: $(cat "$W/summary")"
for sender in sender@remote.example local@sender.example; do
	sed -n '/^Senders by message count/,/^$/p' "$W/summary" | grep -Eq "^ +1 +$sender$" ||
		fail "pflogsumm does not credit $sender: $(cat "$W/summary")"
done
note "pflogsumm counts the messages received and delivered, credits their two senders, and the two refusals"

# Under load, each message's origin line comes first, before cleanup's,
# qmgr's and smtp's lines about it (it is logged before the message's end
# reaches cleanup); before, smtpd logged it at the verdict, after them.
[ -x "${SMTP_SOURCE:-}" ] || fail "no smtp-source"
LD_LIBRARY_PATH=$(dirname "$SMTP_SOURCE")/../lib/postfix "$SMTP_SOURCE" -s 10 -m 300 -l 2048 \
	-f load@remote.example -t rcpt@remote.example "127.0.0.1:$PORT" >"$W/source" 2>&1 ||
	fail "smtp-source: $(cat "$W/source")"
wait_for 60 sh -c "[ \$(grep -c 'to=<rcpt@remote\.example>.*status=sent' '$LOG') -ge 301 ]" ||
	fail "the load was not all relayed: $(grep -c 'to=<rcpt@remote.example>.*status=sent' "$LOG") of 301"
python3 - "$LOG" <<'PY' || fail "an origin line did not come first"
import re, sys
first, origin = {}, {}
for n, line in enumerate(open(sys.argv[1], errors="replace")):
    m = re.search(r"mta/(\w+)\[\d+\]: ([0-9A-Z]{20}): (\S+)", line)
    if not m:
        continue
    prog, qid, what = m.groups()
    first.setdefault(qid, (n, prog, what))
    if (prog, what.split("=")[0]) in (("smtpd", "client"), ("pickup", "uid")):
        origin.setdefault(qid, n)
late = [q for q, n in origin.items() if first[q][0] != n]
print(f"  {len(origin)} messages, {len(late)} with a line before their origin's")
for q in late[:5]:
    print("  ", q, first[q])
sys.exit(1 if late or len(origin) < 303 else 0)
PY
note "under load, every message's origin line comes before any other about it"
exit 0
