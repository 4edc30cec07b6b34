# TLS policies of the SMTP client, against Python's aiosmtpd (sink.py)
# offering STARTTLS or implicit TLS with certificates this case makes
# (certs.py: a private CA and, for mx.tls.test, a good certificate, an
# expired one and one for another name). The relay host is
# [mx.tls.test]:port, a name dnsmasq answers for on loopback (the
# connector never reads /etc/hosts and the case never asks the system's
# resolver). Opportunistic: delivered, "Untrusted" and tls= logged. A
# peer whose TLS handshake fails: opportunistic goes on in plain text on
# a new connection (logged, no tls=, delivered once); require defers.
# A peer that answers STARTTLS with "220 ready" and "250 injected" in one
# plaintext write: the session is abandoned, the mail deferred, not
# delivered. relay.tls = require to a peer without STARTTLS: deferred.
# A smtp.tls_policy entry "verify" for the relay's next hop with
# smtp.tls_ca_file: the good certificate delivered, "Verified" and
# tls=...:verified logged; the expired one and the wrong-name one
# deferred with the reason. relay.tls = implicit-verify: delivered over
# verified implicit TLS. A bad CA file: mta -n names key, file and line,
# and a reload with it is refused.
. ./lib.sh
. ./peers.sh
command -v dnsmasq >/dev/null 2>&1 || fail "dnsmasq is not installed (Debian's dnsmasq-base)"
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || fail "python3-cryptography is not installed"
NAME=mx.tls.test
DNSPORT=$((PORT + 2))
DNS_PID=""
trap 'set +e; stop_sink; [ -n "$DNS_PID" ] && kill "$DNS_PID" 2>/dev/null; rm -rf "$DUMP"; cleanup' EXIT

/usr/bin/python3 ./certs.py "$W" "$NAME" || fail "certs.py could not make the certificates"

# dnsmasq in the foreground on loopback: mx.tls.test is 127.0.0.1, other
# names under tls.test do not exist, nothing is forwarded anywhere.
dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces \
	--port="$DNSPORT" --local=/tls.test/ --host-record="$NAME,127.0.0.1" --pid-file= --log-facility=- \
	>"$W/dns.log" 2>&1 &
DNS_PID=$!
dns_up() {
	python3 - "$DNSPORT" "$NAME" <<'PY' 2>/dev/null
import socket, struct, sys
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[2].split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.sendto(q, ("127.0.0.1", int(sys.argv[1])))
r = s.recv(512)
assert r[3] & 15 == 0 and struct.unpack(">H", r[6:8])[0] == 1, r
PY
}
wait_for 5 dns_up || fail "dnsmasq does not answer: $(cat "$W/dns.log")"

# tls_conf [UCL lines...]: the relay host by name, the resolver dnsmasq,
# short retries, no connection cache (each delivery meets the current peer).
tls_conf() {
	write_conf "relay { host = \"[$NAME]:$RELAY\"; $RELAY_TLS }" \
		"queue { backoff { min = 1s; max = 2s; } }" \
		"transport { smtp { dead_time = 1s; } }" \
		"$@"
	sed -i "s/\"127\.0\.0\.1:9\"/\"127.0.0.1:$DNSPORT\"/" "$CONF"
	grep -q "127.0.0.1:$DNSPORT" "$CONF" || fail "the resolver is not dnsmasq"
}
GEN=1
reload() {
	GEN=$((GEN + 1))
	out=$(ctl reload) || fail "reload: $out"
	wait_log "generation $GEN" || fail "no generation $GEN"
	wait_status $NCHILD || fail "generation $GEN not running"
}
# tls_sink DIR [MODE CERT]: sink.py saving into $W/DIR, with TLS in MODE
# (starttls, implicit, inject) with $W/CERT.pem and its key.
tls_sink() {
	stop_sink
	d=$1; shift
	mkdir -p "$W/$d"
	[ $# -eq 2 ] && set -- "$1" "$W/$2.pem" "$W/$2.key"
	/usr/bin/python3 ./sink.py "$RELAY" "$W/$d" "$@" >"$W/$d.log" 2>&1 &
	SINK_PID=$!
	wait_for 5 port_open || fail "aiosmtpd did not start: $(cat "$W/$d.log")"
}
# saved DIR SUBJECT: the sink in $W/DIR saved a message with SUBJECT.
saved() { grep -qs "^Subject: $2" "$W/$1"/*.eml; }
# forget SUBJECT: delete the deferred message with SUBJECT.
forget() {
	id=$(queue_id "$1") || fail "no message \"$1\" in the queue"
	ctl queue delete "$id" | grep -q deleted || fail "delete $id"
}
TLSF='tls=TLSv1\.[23]:TLS[A-Z0-9_]*'
AT="$NAME\[127\.0\.0\.1\]:$RELAY"

# --- opportunistic (the default) ---
RELAY_TLS=""
tls_conf "smtp { connection_cache_time = 0s; }"
start_master
tls_sink opp starttls good
send sender@remote.example opp@remote.example "opportunistic"
wait_log "to=<opp@remote.example>, relay=$AT, $TLSF:untrusted, delay=.*status=sent" 15 ||
	fail "no sent line with tls=...:untrusted for opportunistic TLS"
wait_log "Untrusted TLS connection established to $AT: TLSv1\.[23] with cipher " 1 || fail "no TLS session line"
saved opp opportunistic || fail "the opportunistic message is not at the peer"
note "opportunistic: delivered, $(grep -o "tls=[^,]*" "$LOG" | head -1)"

# --- opportunistic, the handshake failing: plain text, new connection ---
tls_sink failtls failtls good
send sender@remote.example ftls@remote.example "handshake fails"
wait_log "to=<ftls@remote.example>, relay=$AT, delay=.*status=sent" 15 ||
	fail "opportunistic TLS did not go on in plain text after a failed handshake"
grep -q "TLS handshake failed: .*(trying $AT again without TLS)" "$LOG" || fail "the plaintext retry is not logged"
grep -q "to=<ftls@remote.example>, .*status=deferred" "$LOG" && fail "the failed handshake deferred the mail"
[ "$(grep -l "^Subject: handshake fails" "$W/failtls"/*.eml | wc -l)" -eq 1 ] ||
	fail "the message is not at the peer exactly once"

# --- plaintext injected after the 220 to STARTTLS ---
tls_sink inject inject good
send sender@remote.example inj@remote.example "injected"
wait_log "to=<inj@remote.example>, relay=$AT, delay=.*dsn=4\.5\.0, status=deferred (the server sent 14 bytes in plaintext after its 220 reply to STARTTLS, before the TLS handshake" 15 ||
	fail "the injection was not refused"
saved inject injected && fail "the message went to the injecting peer"
forget injected

# --- relay.tls = require to a peer without STARTTLS ---
RELAY_TLS="tls = require;"
tls_conf "smtp { connection_cache_time = 0s; }"
reload
tls_sink plain
send sender@remote.example req@remote.example "required"
wait_log "to=<req@remote.example>, .*dsn=4\.7\.4, status=deferred (TLS is required, but was not offered by the server)" 15 ||
	fail "required TLS without STARTTLS was not deferred"
saved plain required && fail "the message went in plain text"
forget required

# --- required TLS whose handshake fails: deferred, never plain text ---
tls_sink failreq failtls good
send sender@remote.example freq@remote.example "required handshake fails"
wait_log "to=<freq@remote.example>, .*dsn=4\.7\.5, status=deferred (TLS handshake failed" 15 ||
	fail "required TLS with a failing handshake was not deferred"
[ "$(grep -c "again without TLS" "$LOG")" -eq 1 ] || fail "required TLS was retried without TLS"
saved failreq "required handshake fails" && fail "the message went in plain text"
forget "required handshake fails"

# --- verify, from smtp.tls_policy, with the CA file ---
RELAY_TLS=""
tls_conf "smtp { connection_cache_time = 0s; tls_ca_file = \"$W/ca.pem\"; tls_policy { \"[$NAME]:$RELAY\" = verify; } }"
"$MTA" -n -f "$CONF" || fail "mta -n refuses the verifying configuration"
reload
tls_sink good starttls good
send sender@remote.example good@remote.example "verified"
wait_log "to=<good@remote.example>, relay=$AT, $TLSF:verified, delay=.*status=sent" 15 ||
	fail "no sent line with tls=...:verified"
wait_log "Verified TLS connection established to $AT: TLSv1\.[23] with cipher " 1 || fail "no verified session line"
saved good verified || fail "the verified message is not at the peer"

tls_sink expired starttls expired
send sender@remote.example expired@remote.example "expired"
wait_log "to=<expired@remote.example>, .*dsn=4\.7\.5, status=deferred (TLS handshake failed: the certificate of $NAME has expired (not valid after " 15 ||
	fail "the expired certificate was not refused"
saved expired expired && fail "the message went to the server with the expired certificate"
forget expired

tls_sink wrong starttls wrong
send sender@remote.example wrong@remote.example "wrong name"
wait_log "to=<wrong@remote.example>, .*dsn=4\.7\.5, status=deferred (TLS handshake failed: the certificate of $NAME does not name $NAME (it names wrong\.$NAME))" 15 ||
	fail "the certificate for another name was not refused"
saved wrong "wrong name" && fail "the message went to the server with the wrong name"
forget "wrong name"

# --- implicit TLS to the relay host, verified ---
RELAY_TLS="tls = implicit-verify;"
tls_conf "smtp { connection_cache_time = 0s; tls_ca_file = \"$W/ca.pem\"; }"
reload
tls_sink implicit implicit good
send sender@remote.example imp@remote.example "implicit"
wait_log "to=<imp@remote.example>, relay=$AT, $TLSF:verified, delay=.*status=sent" 15 ||
	fail "implicit-verify not delivered"
saved implicit implicit || fail "the implicit TLS message is not at the peer"

# --- a bad CA file: mta -n and a reload refuse it ---
{ head -3 "$W/ca.pem"; echo "not base64 !!!"; echo "-----END CERTIFICATE-----"; } >"$W/bad.pem"
sed -i "s|$W/ca.pem|$W/bad.pem|" "$CONF"
out=$("$MTA" -n -f "$CONF" 2>&1) && fail "mta -n accepted a bad CA file"
echo "$out" | grep -q "key \`smtp.tls_ca_file\`: $W/bad.pem: line 1: the CERTIFICATE block cannot be decoded" ||
	fail "mta -n: $out"
out=$(ctl reload 2>&1) && fail "a reload with a bad CA file was accepted"
echo "$out" | grep -q "bad.pem: line 1" || fail "mtactl reload does not say where: $out"
kill -HUP "$MASTER_PID"
wait_log "reload refused.*bad.pem: line 1" 5 || fail "the refused reload is not logged with file and line"
ctl status | grep -q "generation $GEN" || fail "the running generation changed"
exit 0
