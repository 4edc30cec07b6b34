# Real clients we did not write hand mail to smtpd, and each message is
# queued: swaks (plain, pipelining, STARTTLS; openssl's TLS sessions
# resume from tickets), Python's smtplib, msmtp,
# s-nail, a BDAT (CHUNKING) transaction, a client that half-closes
# after a pipelined QUIT, and an envelope too large to hand to cleanup.
# A message without Date: and Message-ID: from these clients on this
# host gets them; over ::1 with SMTPUTF8, Received: says [IPv6:::1] and
# UTF8SMTP. A recipient the checks refuse is logged as Postfix logs it.
. ./lib.sh
make_cert
write_conf 'tls { certificate = "cert.pem"; key = "key.pem"; }' \
	"listen { smtp { address = \"127.0.0.1:$PORT\"; tls = starttls; } }" \
	"listen smtp6 { address = \"[::1]:$PORT\"; tls = none; }"
# write_conf already wrote one listen block; keep the TLS one only.
sed -i "0,/^listen/{/^listen.*tls = none/d}" "$CONF"
start_master
n=0
check() { n=$((n + 1)); wait_queued $n || fail "$1: message not queued (have $(queued), want $n)"; note "$1: queued"; }

swaks --server 127.0.0.1:$PORT --from sender@remote.example --to root@localhost \
	--header "Subject: swaks plain" --body "plain body" >"$W/swaks1" 2>&1 || { cat "$W/swaks1"; fail "swaks plain"; }
check "swaks plain"
swaks --pipeline --server 127.0.0.1:$PORT --from sender@remote.example --to root@localhost,root+pipelined@localhost \
	--header "Subject: swaks pipelined" >"$W/swaks2" 2>&1 || { cat "$W/swaks2"; fail "swaks --pipeline"; }
check "swaks pipelining"
swaks --tls --server 127.0.0.1:$PORT --from sender@remote.example --to root@localhost \
	--header "Subject: swaks tls" --body "secret body" >"$W/swaks3" 2>&1 || { cat "$W/swaks3"; fail "swaks --tls"; }
grep -q "TLS started" "$W/swaks3" || fail "swaks did not start TLS"
check "swaks STARTTLS"
queue_files | xargs grep -l "secret body" | xargs grep -l "with ESMTPS" | xargs grep -q "TLSv1" \
	|| fail "the STARTTLS message's Received: does not say ESMTPS and the TLS version"
# TLS sessions resume (openssl s_client, TLS 1.3 and 1.2), from a session
# ticket: still after 300 other clients (Python's ssl, full handshakes),
# more than rustls's session cache holds.
s_client() { (sleep 1; printf 'QUIT\r\n') | timeout 10 openssl s_client -starttls smtp -connect "127.0.0.1:$PORT" "$@" 2>&1; }
s_client -tls1_3 -sess_out "$W/tls13.sess" >"$W/tls13.first" || fail "openssl s_client: $(cat "$W/tls13.first")"
s_client -tls1_2 -sess_out "$W/tls12.sess" >"$W/tls12.first" || fail "openssl s_client: $(cat "$W/tls12.first")"
python3 - "$PORT" <<'PY' || fail "300 STARTTLS sessions from Python"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
for i in range(300):
    with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
        s.starttls(context=ctx)
        s.noop()
PY
for v in 13 12; do
	grep -q "^New, TLSv1\.${v#1}," "$W/tls$v.first" || fail "TLS 1.${v#1}: $(grep -E '^(New|Reused),' "$W/tls$v.first")"
	s_client "-tls1_${v#1}" -sess_in "$W/tls$v.sess" >"$W/tls$v.again"
	grep -q "^Reused, TLSv1\.${v#1}," "$W/tls$v.again" ||
		fail "a TLS 1.${v#1} session was not resumed: $(grep -E '^(New|Reused),' "$W/tls$v.again")"
done
note "TLS 1.3 and 1.2 sessions resume from their tickets after 300 other sessions"

python3 - "$PORT" <<'PY' || fail "smtplib"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.sendmail("py@remote.example", ["root@localhost"], b"Subject: smtplib\r\n\r\nfrom python\r\n")
PY
check "python smtplib"
# Its header had neither Date: nor Message-ID: (nor From:): a client on
# this host gets them, after its last field.
python3 - $(queue_files | xargs grep -l "from python") <<'PY' || fail "smtplib's message was not completed"
import re, sys
data = open(sys.argv[1], "rb").read()
added = re.search(rb"\r\nSubject: smtplib\r\nMessage-ID: <[0-9A-F]{34}@[^>\r\n]+>\r\n"
                  rb"Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n"
                  rb"From: py@remote\.example\r\n\r\nfrom python\r\n", data)
assert added, data[-300:]
PY

printf 'Subject: msmtp\n\nfrom msmtp\n' | msmtp --host=127.0.0.1 --port=$PORT --auth=off --tls=off \
	--from=m@remote.example root@localhost || fail "msmtp"
check "msmtp"

echo "from s-nail" | HOME=$W s-nail -:/ -Sv15-compat -S "mta=smtp://127.0.0.1:$PORT" \
	-S smtp-auth=none -S nosave -S from=s@remote.example -s "s-nail" root@localhost || fail "s-nail"
check "s-nail"

raw_smtp <<'PY' || fail "BDAT"
import os, rawsmtp
c = rawsmtp.Client(int(os.environ["PORT"]))
c.transaction(b"b@remote.example", [b"root@localhost"])
assert c.cmd(b"BDAT 20\r\nSubject: chunked\r\n\r\n") == b"250 2.0.0 20 octets received\r\n"
r = c.cmd(b"BDAT 12 LAST\r\nchunk body\r\n")
assert r.startswith(b"250 2.0.0 Ok: queued as "), r
assert c.cmd(b"QUIT\r\n").startswith(b"221")
PY
check "BDAT"
queue_files | xargs grep -l "chunk body" >/dev/null || fail "BDAT content not stored"

# Over ::1, with SMTPUTF8: the address literal is [IPv6:::1] (RFC 5321
# 4.1.3) and the protocol UTF8SMTP (RFC 6531); ::1 is on this host too.
raw_smtp <<'PY' || fail "SMTPUTF8 over ::1"
import os, rawsmtp
c = rawsmtp.Client(int(os.environ["PORT"]), host="::1")
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
assert c.cmd("MAIL FROM:<jürgen@remote.example> SMTPUTF8\r\n".encode()).startswith(b"250")
assert c.cmd(b"RCPT TO:<root@localhost>\r\n").startswith(b"250")
assert c.cmd(b"DATA\r\n").startswith(b"354")
r = c.cmd("Subject: über ::1\r\n\r\nutf8 over v6\r\n.\r\n".encode())
assert r.startswith(b"250 2.0.0 Ok: queued as "), r
assert c.cmd(b"QUIT\r\n").startswith(b"221")
PY
check "SMTPUTF8 over ::1"
python3 - $(queue_files | xargs grep -l "utf8 over v6") <<'PY' || fail "the ::1 message's header is not as it should be"
import re, sys
data = open(sys.argv[1], "rb").read()
assert re.search(rb"Received: from client\.example \(localhost \[IPv6:::1\]\)\r\n\tby \S+ \(mta\) with UTF8SMTP id ", data), data[:400]
assert re.search(rb"\r\nMessage-ID: <[0-9A-F]{34}@[^>]+>\r\nDate: [^\r]+\r\nFrom: j\xc3\xbcrgen@remote\.example\r\n\r\nutf8", data), data[-300:]
PY

# A client that pipelines QUIT after the dot and shuts down its side at
# once still hears that its message is queued, and the message is.
raw_smtp <<'PY' || fail "half-close after QUIT"
import os, socket, rawsmtp
c = rawsmtp.Client(int(os.environ["PORT"]))
c.transaction(b"h@remote.example", [b"root@localhost"])
assert c.cmd(b"DATA\r\n").startswith(b"354")
c.send(b"Subject: half-close\r\n\r\nhalf closed\r\n.\r\nQUIT\r\n")
c.sock.shutdown(socket.SHUT_WR)
r = c.reply()
assert r.startswith(b"250 2.0.0 Ok: queued as "), r
r = c.reply()
assert r.startswith(b"221"), r
assert c.closed()
PY
check "half-close after QUIT"
# The same with two messages in a row pipelined (BDAT): both answered.
raw_smtp <<'PY' || fail "half-close after two pipelined messages"
import os, socket, rawsmtp
c = rawsmtp.Client(int(os.environ["PORT"]))
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
one = b"Subject: half-close one\r\n\r\nfirst of two\r\n"
two = b"Subject: half-close two\r\n\r\nsecond of two\r\n"
c.send(b"MAIL FROM:<h1@remote.example>\r\nRCPT TO:<root@localhost>\r\nBDAT %d LAST\r\n%s" % (len(one), one)
       + b"MAIL FROM:<h2@remote.example>\r\nRCPT TO:<root@localhost>\r\nBDAT %d LAST\r\n%s" % (len(two), two)
       + b"QUIT\r\n")
c.sock.shutdown(socket.SHUT_WR)
replies = [c.reply() for _ in range(7)]
queued = [r for r in replies if r.startswith(b"250 2.0.0 Ok: queued as ")]
assert len(queued) == 2, replies
assert replies[-1].startswith(b"221"), replies
assert c.closed()
PY
n=$((n + 1)); check "half-close after two pipelined messages"
queue_files | xargs grep -l "half closed" >/dev/null || fail "the half-closed client's message not stored"

# A message whose envelope is more than smtpd may hand cleanup (1 MiB:
# here 900 recipients with 1,400-octet ORCPT parameters) is refused with
# 552 5.3.4 at the end of its data; cleanup goes on as it was.
cleanup=$(child_pid cleanup)
raw_smtp <<'PY' || fail "envelope too large"
import os, rawsmtp
c = rawsmtp.Client(int(os.environ["PORT"]))
assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
assert c.cmd(b"MAIL FROM:<big@remote.example>\r\n").startswith(b"250")
# (Each ORCPT differs: a recipient named twice alike is taken once.)
c.send(b"".join(b"RCPT TO:<Postmaster> ORCPT=" + b"x" * 1396 + b"%04d;y\r\n" % i for i in range(900)))
for i in range(900):
    r = c.reply()
    assert r.startswith(b"250"), (i, r)
assert c.cmd(b"DATA\r\n").startswith(b"354")
r = c.cmd(b"Subject: big envelope\r\n\r\nbody\r\n.\r\n")
assert r.startswith(b"552 5.3.4"), r
assert c.cmd(b"QUIT\r\n").startswith(b"221")
PY
[ "$(child_pid cleanup)" = "$cleanup" ] || fail "cleanup restarted after the oversized envelope"
grep -q "content for unknown transaction" "$LOG" && fail "cleanup was sent content without its envelope"
swaks --server 127.0.0.1:$PORT --from after@remote.example --to root@localhost \
	--header "Subject: after the big envelope" >"$W/swaks4" 2>&1 || { cat "$W/swaks4"; fail "swaks after the big envelope"; }
check "a message after the oversized envelope"
# A recipient the checks refuse is logged as Postfix logs it (what log
# watchers such as fail2ban read); a syntax error is not.
swaks --server 127.0.0.1:$PORT --ehlo probe.example --from probe@remote.example --to nosuchuser@localhost \
	--quit-after RCPT >"$W/swaks5" 2>&1 || true
grep -q "<\*\* *550 5.1.1" "$W/swaks5" || fail "an unknown user was not refused: $(cat "$W/swaks5")"
wait_log 'smtpd\[[0-9]*\]: NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1 <nosuchuser@localhost>: Recipient address rejected: User unknown in local recipient table; from=<probe@remote\.example> to=<nosuchuser@localhost> proto=ESMTP helo=<probe\.example>' 5 ||
	fail "the refusal was not logged: $(grep reject "$LOG")"
grep -q "NOQUEUE: reject: RCPT from .*to=<root@localhost>" "$LOG" && fail "an accepted recipient was logged as refused"
note "a refused recipient is logged as NOQUEUE: reject: RCPT from ..."
exit 0
