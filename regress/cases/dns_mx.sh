# MX routing and client names against a real name server: NSD (Debian's
# nsd, unpacked privately by scripts/setup.sh's setup_nsd, never
# installed) serves the zone dns.test on a loopback port of its own, and
# the connector asks it (dns.servers). The MX hosts are aiosmtpd sinks
# (sink.py) on 127.0.0.2 (a), 127.0.0.3 (b) and ::1 (six), at smtp.port.
#   - two MX, the better one down: delivered to the second in the same
#     attempt; the better one up: delivered there;
#   - a first MX whose address has nothing listening: the next MX; one
#     that greets with 421, or with 554 (a site failure, not a bounce, as
#     with Postfix's smtp_skip_5xx_greeting): the next MX in the same
#     delivery; one that greets but refuses EHLO and then HELO with 550:
#     bounced at once with its 5.7.1, as Postfix does, the next MX never
#     tried, and the sender gets a DSN;
#   - equal preferences: both hosts get mail;
#   - no MX, an A record: the implicit MX; an MX with only AAAA: ::1;
#   - a null MX (RFC 7505): bounced with 5.1.10, and the sender gets a
#     DSN; a domain that does not exist (NXDOMAIN): bounced with 5.4.4;
#   - this host as the best MX left: bounced with 5.4.6 ("loops back to
#     myself"); as a backup MX: the better host gets the mail;
#   - client names: the resolver names loopback itself (RFC 6761, the
#     name server is not asked; smtpd does not even ask the connector):
#     127.0.0.1 and ::1 are `localhost`
#     (forward-confirmed) in Received: and cleanup's client= line, ::1
#     written [IPv6:::1]; mail from 127.0.0.1 that lacks Message-ID:,
#     Date: and From: gets them (a client on this host);
#     127.0.0.10 points to localhost, which does not point back, so it
#     is `unknown` and the connector says why; with the connector stopped
#     the greeting waits smtpd.reverse_lookup_timeout, then `unknown`;
#     smtpd.reverse_lookups = no (after a reload): `unknown`;
#   - client names from the name server: clients in a network namespace
#     the case makes (a veth pair, 10.203.77.0/24) reach mta on the
#     host's end; NSD serves their reverse zone: 10.203.77.2's PTR name
#     points back (forward-confirmed: its name in Received:), 10.203.77.3's
#     does not (`unknown`, and the connector says why); 10.203.77.2's
#     mail, from networks but not from this host, gains no header field.
. ./lib.sh
NSD=${NSD:-/var/tmp/mta-test-nsd/usr/sbin/nsd}
[ -x "$NSD" ] || { echo "  skipped: no nsd at $NSD (scripts/test unpacks it there; or set NSD)"; exit 0; }
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || fail "python3-aiosmtpd is not installed"
MXPORT=$((PORT + 1))
DNSPORT=$((PORT + 2))
DNS_SERVER="127.0.0.1:$DNSPORT"
NSD_PID=""
CONNECTOR_STOPPED=""

NETNS=mtaptr$$
VETH=mvp$$
stop_pid() { kill "$1" 2>/dev/null && gone "$1" 5; }
finish() {
	set +e
	# (deleting the namespace takes the veth pair with it)
	ip netns del "$NETNS" 2>/dev/null || true
	ip link del "$VETH" 2>/dev/null || true
	[ -n "$CONNECTOR_STOPPED" ] && kill -CONT "$CONNECTOR_STOPPED" 2>/dev/null
	for f in "$W"/*.sinkpid; do [ -f "$f" ] && stop_pid "$(cat "$f")"; done
	[ -n "$NSD_PID" ] && stop_pid "$NSD_PID"
	cleanup
}
trap finish EXIT

# --- clients with addresses of their own: a network namespace ---
command -v ip >/dev/null || fail "ip(8) is missing (iproute2; scripts/test installs it)"
ip netns add "$NETNS" || fail "cannot make a network namespace"
ip link add "$VETH" type veth peer name "${VETH}n" || fail "cannot make a veth pair"
ip link set "${VETH}n" netns "$NETNS"
ip addr add 10.203.77.1/24 dev "$VETH" && ip link set "$VETH" up || fail "cannot set up the host's end"
for a in 10.203.77.2 10.203.77.3; do ip netns exec "$NETNS" ip addr add "$a/24" dev "${VETH}n"; done
ip netns exec "$NETNS" ip link set "${VETH}n" up && ip netns exec "$NETNS" ip link set lo up ||
	fail "cannot set up the namespace's end"

# --- the name server ---
mkdir -p "$W/nsd"
cat >"$W/nsd/nsd.conf" <<CONF
server:
	ip-address: 127.0.0.1@$DNSPORT
	port: $DNSPORT
	do-ip6: no
	username: ""
	chroot: ""
	zonesdir: "$W/nsd"
	database: ""
	zonelistfile: "$W/nsd/zone.list"
	xfrdfile: "$W/nsd/xfrd.state"
	xfrdir: "$W/nsd"
	pidfile: "$W/nsd/nsd.pid"
	logfile: "$W/nsd/nsd.log"
	server-count: 1
	verbosity: 1
remote-control:
	control-enable: no
zone:
	name: "dns.test"
	zonefile: "dns.test.zone"
zone:
	name: "77.203.10.in-addr.arpa"
	zonefile: "reverse.zone"
CONF
cat >"$W/nsd/reverse.zone" <<'ZONE'
$ORIGIN 77.203.10.in-addr.arpa.
$TTL 60
@         SOA  ns.dns.test. hostmaster.dns.test. 1 3600 600 86400 60
@         NS   ns.dns.test.
2         PTR  client.dns.test.
3         PTR  liar.dns.test.
ZONE
cat >"$W/nsd/dns.test.zone" <<'ZONE'
$ORIGIN dns.test.
$TTL 60
@         SOA  ns hostmaster 1 3600 600 86400 60
@         NS   ns
ns        A    127.0.0.1
a         A    127.0.0.2
b         A    127.0.0.3
down      A    127.0.0.4
v6        AAAA ::1
; two MX: a is better, b the fall-back
pref      MX   10 a
pref      MX   20 b
; the better MX has nothing listening on its address
dead      MX   5 down
dead      MX   50 b
; equal preferences
equal     MX   10 a
equal     MX   10 b
; no MX: the domain's own address
implicit  A    127.0.0.3
; an MX with an IPv6 address only
six       MX   10 v6
; RFC 7505: this domain accepts no mail
null      MX   0 .
; the better MX answers 421 and hangs up: the next, in the same delivery
busy      MX   5 c
busy      MX   50 b
c         A    127.0.0.5
; this host (mta listens on me's address at smtp.port too): the best MX
; of loop, the backup MX of backup (whose best is a)
loop      MX   10 me
backup    MX   5 a
backup    MX   10 me
me        A    127.0.0.6
; the namespace's clients: one name points back, one elsewhere
client    A    10.203.77.2
liar      A    10.203.77.99
ZONE
"$NSD" -d -c "$W/nsd/nsd.conf" >"$W/nsd/stderr" 2>&1 &
NSD_PID=$!
# dns_answers NAME TYPE: the number of answers the name server gives
# (-1 without an answer), asked over UDP as any resolver would.
dns_answers() {
	/usr/bin/python3 - "$DNSPORT" "$1" "$2" <<'PY'
import socket, struct, sys
port, name, qtype = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
q = struct.pack(">HHHHHH", 0x4d58, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
try:
    s.sendto(q, ("127.0.0.1", port))
    r = s.recv(4096)
    print(struct.unpack(">H", r[6:8])[0] if r[:2] == q[:2] and r[3] & 15 == 0 else -1)
except OSError:
    print(-1)
PY
}
nsd_ready() { [ "$(dns_answers pref.dns.test 15)" = 2 ]; }
wait_for 10 nsd_ready || fail "nsd did not serve the zone: $(cat "$W/nsd/stderr" "$W/nsd/nsd.log" 2>/dev/null)"
note "nsd serves dns.test on 127.0.0.1:$DNSPORT"

# --- the MX hosts ---
# sink NAME HOST: an aiosmtpd sink on HOST at the MX port, saving into $W/NAME.
sink() {
	mkdir -p "$W/$1"
	/usr/bin/python3 ./sink.py "$MXPORT" "$W/$1" "$2" >"$W/$1.log" 2>&1 &
	echo $! >"$W/$1.sinkpid"
	wait_for 5 listening "$2" || fail "sink $1 did not start on $2: $(cat "$W/$1.log")"
}
listening() { /usr/bin/python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()' "$1" "$MXPORT" 2>/dev/null; }
# got NAME SUBJECT: the file sink NAME saved the message with SUBJECT in.
got() { grep -l "^Subject: $2" "$W/$1"/*.eml 2>/dev/null | head -1; }
# submit FROM TO SUBJECT [SOURCE [SERVER]]: one message to mta, from the
# loopback address SOURCE (127.0.0.1), to SERVER (127.0.0.1 or ::1).
submit() {
	/usr/bin/python3 - "$PORT" "$@" <<'PY' || fail "smtplib: $3"
import smtplib, sys
port, frm, to, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
source = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1"
server = sys.argv[6] if len(sys.argv) > 6 else "127.0.0.1"
with smtplib.SMTP(server, port, timeout=20, source_address=(source, 0)) as s:
    s.sendmail(frm, to.split(","), ("Subject: %s\r\n\r\nbody\r\n" % subject).encode())
PY
}
# sent_to RCPT RELAY: the log says RCPT went to RELAY (host[address]).
sent_to() {
	wait_log "to=<$1>, relay=$2:$MXPORT, .*status=sent (250 2.0.0 Ok: saved as" 20 ||
		fail "$1 not sent to $2: $(grep "to=<$1>" "$LOG")"
	if grep "to=<$1>" "$LOG" | grep -q "status=deferred"; then fail "$1 was deferred first"; fi
}

write_conf "smtp { port = $MXPORT; connect_timeout = 5s; connection_cache_time = 0; }" \
	"smtpd { reverse_lookup_timeout = 2s; }" \
	"listen smtp6 { address = \"[::1]:$PORT\"; tls = none; }" \
	"listen veth { address = \"10.203.77.1:$PORT\"; tls = none; }" \
	"listen me { address = \"127.0.0.6:$MXPORT\"; tls = none; }" \
	"networks = [ \"127.0.0.0/8\", \"::1/128\", \"10.203.77.0/24\" ];" \
	"queue { backoff { min = 1s; max = 2s; } }"
start_master
sink b 127.0.0.3
sink six ::1

# The better MX down (nothing on 127.0.0.2): the second, in the same attempt.
submit sender@pref.dns.test down@pref.dns.test "better down"
sent_to down@pref.dns.test 'b\.dns\.test\[127\.0\.0\.3\]'
[ -n "$(got b "better down")" ] || fail "b did not get the message"
# A first MX whose address refuses: the next one.
submit sender@pref.dns.test rcpt@dead.dns.test "dead first"
sent_to rcpt@dead.dns.test 'b\.dns\.test\[127\.0\.0\.3\]'
# The better MX up: it gets the mail.
sink a 127.0.0.2
submit sender@pref.dns.test up@pref.dns.test "better up"
sent_to up@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
[ -n "$(got a "better up")" ] || fail "a did not get the message"
# No MX: the A record.
submit sender@pref.dns.test rcpt@implicit.dns.test "implicit"
sent_to rcpt@implicit.dns.test 'implicit\.dns\.test\[127\.0\.0\.3\]'
# IPv6: an MX with an AAAA record only.
submit sender@pref.dns.test rcpt@six.dns.test "over ipv6"
sent_to rcpt@six.dns.test 'v6\.dns\.test\[::1\]'
[ -n "$(got six "over ipv6")" ] || fail "the IPv6 sink did not get the message"
# A first MX that greets with 421 (smtp.mx_session_limit): the next one,
# in the same delivery, and the 421 in the log.
/usr/bin/python3 - "$MXPORT" >"$W/busy.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.5", int(sys.argv[1])))
s.listen(8)
while True:
    c, _ = s.accept()
    c.sendall(b"421 4.3.2 c.dns.test busy, try another\r\n")
    c.close()
PY
echo $! >"$W/busy.sinkpid"
wait_for 5 listening 127.0.0.5 || fail "the busy MX did not start: $(cat "$W/busy.log")"
submit sender@pref.dns.test rcpt@busy.dns.test "busy first"
sent_to rcpt@busy.dns.test 'b\.dns\.test\[127\.0\.0\.3\]'
grep -q "mta/smtp.*: host c\.dns\.test\[127\.0\.0\.5\] said: 421 4\.3\.2 c\.dns\.test busy.*(trying the next MX address)" "$LOG" ||
	fail "the 421 of the first MX is not logged: $(grep -i "busy\|next MX" "$LOG")"
# The same first MX greeting with 554: the next one too.
stop_pid "$(cat "$W/busy.sinkpid")"
rm -f "$W/busy.sinkpid"
/usr/bin/python3 - "$MXPORT" >"$W/refusing.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.5", int(sys.argv[1])))
s.listen(8)
while True:
    c, _ = s.accept()
    c.sendall(b"554 5.7.1 c.dns.test does not want you\r\n")
    c.settimeout(5)
    try:
        c.recv(100)   # QUIT
        c.sendall(b"221 2.0.0 bye\r\n")
    except OSError:
        pass
    c.close()
PY
echo $! >"$W/refusing.sinkpid"
wait_for 5 listening 127.0.0.5 || fail "the refusing MX did not start: $(cat "$W/refusing.log")"
submit sender@pref.dns.test again@busy.dns.test "refused first"
sent_to again@busy.dns.test 'b\.dns\.test\[127\.0\.0\.3\]'
grep -q "mta/smtp.*: host c\.dns\.test\[127\.0\.0\.5\] said: 554 5\.7\.1 c\.dns\.test does not want you.*(trying the next MX address)" "$LOG" ||
	fail "the 554 greeting of the first MX did not pass the mail on: $(grep -i "want you\|next MX" "$LOG")"
grep -q "status=bounced.*does not want you" "$LOG" && fail "a 554 greeting bounced the mail"
[ -n "$(got b "refused first")" ] || fail "b did not get the message refused by the first MX"
# The same first MX greeting, but refusing EHLO and HELO with 5xx: the
# mail's fault, not the server's (Postfix): bounced, b not tried.
stop_pid "$(cat "$W/refusing.sinkpid")"
rm -f "$W/refusing.sinkpid"
/usr/bin/python3 - "$MXPORT" >"$W/nohelo.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.5", int(sys.argv[1])))
s.listen(8)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    f = c.makefile("rb")
    c.sendall(b"220 c.dns.test ESMTP\r\n")
    try:
        for _ in range(10):
            line = f.readline().upper()
            if not line or line.startswith(b"QUIT"):
                c.sendall(b"221 2.0.0 bye\r\n")
                break
            if line.startswith(b"EHLO"):
                c.sendall(b"502 5.5.2 no EHLO here\r\n")
            elif line.startswith(b"HELO"):
                c.sendall(b"550 5.7.1 c.dns.test takes no mail from you\r\n")
            else:
                c.sendall(b"503 5.5.1 say hello first\r\n")
    except OSError:
        pass
    c.close()
PY
echo $! >"$W/nohelo.sinkpid"
wait_for 5 listening 127.0.0.5 || fail "the HELO-refusing MX did not start: $(cat "$W/nohelo.log")"
submit sender@pref.dns.test helo5@busy.dns.test "helo refused"
wait_log "to=<helo5@busy\.dns\.test>, relay=c\.dns\.test\[127\.0\.0\.5\]:$MXPORT, .*dsn=5\.7\.1, status=bounced (host c\.dns\.test\[127\.0\.0\.5\] said: 550 5\.7\.1 c\.dns\.test takes no mail from you (in reply to EHLO/HELO command))" 20 ||
	fail "a 550 to HELO on the first MX did not bounce: $(grep "helo5@" "$LOG")"
grep -q "takes no mail from you.*(trying the next MX address)" "$LOG" && fail "a 550 to HELO passed the mail to the next MX"
[ -z "$(got b "helo refused")" ] || fail "b got the message whose HELO the first MX refused"
note "preference, fall-back, a dead first MX, a 421 and a 554 first MX, a 550 to HELO, implicit MX and IPv6 routed"

# Equal preferences: sixteen messages, each a connection of its own; the
# chance that one host gets them all is 2 in 65536.
/usr/bin/python3 - "$PORT" <<'PY' || fail "smtplib: equal"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20) as s:
    for i in range(16):
        s.sendmail("sender@pref.dns.test", ["eq%d@equal.dns.test" % i], b"Subject: equal %d\r\n\r\nbody\r\n" % i)
PY
equal_done() { [ "$(grep -c "to=<eq[0-9]*@equal.dns.test>, .*status=sent" "$LOG")" -eq 16 ]; }
wait_for 30 equal_done || fail "not all sixteen equal-preference messages sent: $(grep "@equal.dns.test" "$LOG")"
na=$(grep -c "to=<eq[0-9]*@equal.dns.test>, relay=a\.dns\.test" "$LOG")
nb=$(grep -c "to=<eq[0-9]*@equal.dns.test>, relay=b\.dns\.test" "$LOG")
[ "$na" -gt 0 ] && [ "$nb" -gt 0 ] || fail "equal preferences not shared: a got $na, b got $nb"
note "equal preferences: a got $na, b got $nb"

# A null MX and a domain that does not exist bounce at once; the DSNs go
# back to the sender's domain (a, its best MX).
submit sender@pref.dns.test rcpt@null.dns.test "null mx"
wait_log "to=<rcpt@null.dns.test>, relay=none, .*dsn=5\.1\.10, status=bounced (null\.dns\.test: domain does not accept mail (null MX))" 20 ||
	fail "null MX not bounced with 5.1.10: $(grep "null.dns.test" "$LOG")"
submit sender@pref.dns.test rcpt@nx.dns.test "no such domain"
wait_log "to=<rcpt@nx\.dns\.test>, relay=none, .*dsn=5\.4\.4, status=bounced (Host or domain name not found. Name service error for name=nx\.dns\.test type=MX: Host not found)" 20 ||
	fail "NXDOMAIN not bounced with 5.4.4: $(grep "nx.dns.test" "$LOG")"
# RFC 5321 5.1: this host as the best MX left loops back to itself
# (bounced with 5.4.6, not sent round through our own smtpd until the hop
# count stops it); as a backup MX, the better host gets the mail.
submit sender@pref.dns.test rcpt@loop.dns.test "loop"
wait_log "to=<rcpt@loop\.dns\.test>, relay=none, .*dsn=5\.4\.6, status=bounced (mail for loop\.dns\.test loops back to myself)" 20 ||
	fail "a loop to this host not bounced with 5.4.6: $(grep "loop.dns.test" "$LOG")"
submit sender@pref.dns.test rcpt@backup.dns.test "backup"
sent_to rcpt@backup.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
dsns_back() { [ "$(grep -l "^From: Mail Delivery System <MAILER-DAEMON@" "$W/a"/*.eml 2>/dev/null | wc -l)" -ge 4 ]; }
wait_for 30 dsns_back || fail "the sender did not get four DSNs: $(ls "$W/a")"
/usr/bin/python3 - "$W/a" <<'PY' || fail "the DSNs are wrong"
import email, glob, json, sys
from email import policy
found = {}
for path in glob.glob(sys.argv[1] + "/*.eml"):
    env = json.load(open(path[:-4] + ".json"))
    m = email.message_from_bytes(open(path, "rb").read(), policy=policy.compat32)
    if m.get_content_type() != "multipart/report":
        continue
    assert env["from"] in ("", "<>") and env["to"] == ["sender@pref.dns.test"], env
    for block in m.get_payload()[1].get_payload()[1:]:
        found[" ".join(block["Final-Recipient"].split())] = (block["Action"].strip(), block["Status"].strip())
assert found.get("rfc822; rcpt@null.dns.test") == ("failed", "5.1.10"), found
assert found.get("rfc822; rcpt@nx.dns.test") == ("failed", "5.4.4"), found
assert found.get("rfc822; rcpt@loop.dns.test") == ("failed", "5.4.6"), found
assert found.get("rfc822; helo5@busy.dns.test") == ("failed", "5.7.1"), found
print("  DSNs: null MX failed 5.1.10, NXDOMAIN failed 5.4.4, a loop to this host 5.4.6, HELO refused 5.7.1")
PY

# --- client names ---
# received NAME SUBJECT: the Received: line of the copy sink NAME got.
received() {
	f=$(got "$1" "$2")
	[ -n "$f" ] || fail "sink $1 has no message \"$2\""
	awk '/^Received: /{r=1; printf "%s", $0; next} r && /^[ \t]/{printf " %s", $0; next} r{exit}' "$f" | tr -s ' \t' ' '
}
submit sender@pref.dns.test name1@pref.dns.test "from localhost"
sent_to name1@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
received a "from localhost" | grep -q "(localhost \[127\.0\.0\.1\])" ||
	fail "127.0.0.1 is not localhost in Received: $(received a "from localhost")"
# A client on this host sent no Date:, Message-ID: or From:; it got them.
for h in "Message-ID: <[0-9A-F]\{34\}@" "Date: " "From: sender@pref\.dns\.test"; do
	grep -q "^$h" "$(got a "from localhost")" || fail "the message from 127.0.0.1 lacks $h"
done
grep -q "mta/cleanup.*: client=localhost\[127\.0\.0\.1\]" "$LOG" || fail "cleanup did not log client=localhost[127.0.0.1]"
submit sender@pref.dns.test name6@pref.dns.test "from ::1" ::1 ::1
sent_to name6@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
received a "from ::1" | grep -q "(localhost \[IPv6:::1\])" ||
	fail "::1 is not localhost, or not an IPv6 address literal, in Received: $(received a "from ::1")"
submit sender@pref.dns.test name10@pref.dns.test "from 127.0.0.10" 127.0.0.10
sent_to name10@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
received a "from 127.0.0.10" | grep -q "(unknown \[127\.0\.0\.10\])" ||
	fail "127.0.0.10 is not unknown in Received: $(received a "from 127.0.0.10")"
grep -q "mta/cleanup.*: client=unknown\[127\.0\.0\.10\]" "$LOG" || fail "cleanup did not log client=unknown[127.0.0.10]"
wait_log "mta/connector.*hostname localhost does not resolve to address 127\.0\.0\.10$" 1 ||
	fail "the connector did not say why 127.0.0.10 has no name"
note "client names: localhost for 127.0.0.1 and ::1, unknown for 127.0.0.10"

# From the namespace, names from NSD's reverse zone.
ptr_submit() { # ptr_submit SOURCE TO SUBJECT
	ip netns exec "$NETNS" /usr/bin/python3 - "$PORT" "$@" <<'PY' || fail "smtplib from $1"
import smtplib, sys
port, source, to, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with smtplib.SMTP("10.203.77.1", port, timeout=20, source_address=(source, 0)) as s:
    s.sendmail("sender@pref.dns.test", [to], ("Subject: %s\r\n\r\nbody\r\n" % subject).encode())
PY
}
ptr_submit 10.203.77.2 ptr2@pref.dns.test "from client"
sent_to ptr2@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
received a "from client" | grep -q "(client\.dns\.test \[10\.203\.77\.2\])" ||
	fail "10.203.77.2 is not client.dns.test in Received: $(received a "from client")"
grep -q "mta/cleanup.*: client=client\.dns\.test\[10\.203\.77\.2\]" "$LOG" ||
	fail "cleanup did not log client=client.dns.test[10.203.77.2]"
# A client of networks but not on this host: its mail is relayed as it
# came, without the Date:, Message-ID: and From: it lacks.
if grep -q "^Message-ID:\|^Date:\|^From:" "$(got a "from client")"; then
	fail "the message from 10.203.77.2 was given header fields: $(cat "$(got a "from client")")"
fi
ptr_submit 10.203.77.3 ptr3@pref.dns.test "from liar"
sent_to ptr3@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
received a "from liar" | grep -q "(unknown \[10\.203\.77\.3\])" ||
	fail "10.203.77.3 is not unknown in Received: $(received a "from liar")"
wait_log "mta/connector.*hostname liar\.dns\.test does not resolve to address 10\.203\.77\.3$" 1 ||
	fail "the connector did not say why 10.203.77.3 has no name"
note "client names from NSD: client.dns.test (forward-confirmed), unknown for a PTR that does not point back"

# The connector stopped: the greeting waits reverse_lookup_timeout (2s),
# then the client is unknown; the mail goes once the connector goes on.
# 127.0.0.1 is localhost without a question: greeted at once meanwhile.
CONNECTOR_STOPPED=$(child_pid connector)
kill -STOP "$CONNECTOR_STOPPED"
/usr/bin/python3 - "$PORT" <<'PY' || fail "the greeting did not wait for the bounded lookup"
import smtplib, sys, time
started = time.monotonic()
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20, source_address=("127.0.0.10", 0))
waited = time.monotonic() - started
assert 1.8 <= waited < 5, "greeting after %.2fs" % waited
s.sendmail("sender@pref.dns.test", ["stopped@pref.dns.test"], b"Subject: connector stopped\r\n\r\nbody\r\n")
s.quit()
print("  greeting after %.1fs with the connector stopped" % waited)
started = time.monotonic()
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
waited = time.monotonic() - started
assert waited < 1, "greeting of 127.0.0.1 after %.2fs" % waited
s.quit()
print("  127.0.0.1 greeted after %.2fs: localhost needs no lookup" % waited)
PY
kill -CONT "$CONNECTOR_STOPPED"
CONNECTOR_STOPPED=""
sent_to stopped@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
received a "connector stopped" | grep -q "(unknown \[127\.0\.0\.10\])" ||
	fail "a client whose lookup timed out is not unknown: $(received a "connector stopped")"

# Reverse lookups off (a reload): unknown, at once.
old=$(child_pid smtpd)
write_conf "smtp { port = $MXPORT; connect_timeout = 5s; connection_cache_time = 0; }" \
	"smtpd { reverse_lookups = no; }" \
	"listen smtp6 { address = \"[::1]:$PORT\"; tls = none; }" \
	"listen veth { address = \"10.203.77.1:$PORT\"; tls = none; }" \
	"networks = [ \"127.0.0.0/8\", \"::1/128\", \"10.203.77.0/24\" ];" \
	"queue { backoff { min = 1s; max = 2s; } }"
ctl reload >/dev/null || fail "reload"
gone "$old" 10 || fail "the old smtpd did not stop"
wait_status $NCHILD || fail "the new generation is not running"
submit sender@pref.dns.test off@pref.dns.test "lookups off"
sent_to off@pref.dns.test 'a\.dns\.test\[127\.0\.0\.2\]'
received a "lookups off" | grep -q "(unknown \[127\.0\.0\.1\])" ||
	fail "with reverse_lookups = no the client is not unknown: $(received a "lookups off")"
note "the greeting's wait is bounded; reverse_lookups = no: unknown"

wait_for 20 settled 0 || fail "the queue did not empty: $(ctl queue)"
exit 0
