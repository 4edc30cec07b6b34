# Round trips through the MTAs mta replaces, each run privately from its
# Debian package: mta -> Postfix -> mta and mta -> Exim -> mta. Python's
# smtplib submits a message whose body has 8-bit UTF-8 text, lines that
# start with dots, a lone dot, a "From " line, trailing blanks, a 998-byte
# line and empty lines; mta relays it to the peer (relay.host), the peer
# rewrites the recipient to a local user of mta and sends it back, and mta
# delivers it into that user's Maildir. The body that arrives must be
# byte-identical to the body sent, and the header must show both hops.
. ./lib.sh
is_root || { echo "  skipped: Postfix and Exim start as root"; exit 0; }
[ -n "${SMTP_SOURCE:-}" ] || { echo "  skipped: no Postfix (SMTP_SOURCE names smtp-source in its unpacked package)"; exit 0; }
[ -n "${EXIM:-}" ] || { echo "  skipped: no Exim (EXIM names exim4 in its unpacked package)"; exit 0; }
PF=$(cd "$(dirname "$SMTP_SOURCE")/../.." && pwd)
[ -x "$PF/usr/lib/postfix/sbin/master" ] || fail "no Postfix master under $PF"
[ -x "$EXIM" ] || fail "no $EXIM"
PF_PORT=$((PORT + 2))
EX_PORT=$((PORT + 3))
PFC="$W/postfix"
EXD="$W/exim"
EXIM_PID=""
stop_peers() {
	if [ -f "$PFC/main.cf" ]; then
		LD_LIBRARY_PATH="$PF/usr/lib/postfix" "$PF/usr/sbin/postfix" -c "$PFC" stop >/dev/null 2>&1 || true
	fi
	[ -z "$EXIM_PID" ] || kill "$EXIM_PID" 2>/dev/null || true
	i=0
	while [ $i -lt 50 ] && { pgrep -f "$PFC" >/dev/null || { [ -n "$EXIM_PID" ] && kill -0 "$EXIM_PID" 2>/dev/null; }; }; do
		sleep 0.1; i=$((i + 1))
	done
	pkill -KILL -f "$PFC" 2>/dev/null || true
}
# The user goes after master (and with it local's delivery workers).
trap 'stop_peers; cleanup; userdel mtart >/dev/null 2>&1 || true' EXIT

# The peers' users, as their Debian packages name them.
getent group postdrop >/dev/null || groupadd -r postdrop
ensure_user postfix
ensure_user mtaexim
# Debian's exim4 looks up its built-in user at start, whatever exim_user
# says; the package would have made it.
ensure_user Debian-exim
mkuser mtart

write_conf "relay { host = \"[127.0.0.1]:$PF_PORT\"; }" \
	"local { mailbox = \"maildir\"; }" \
	"queue { backoff { min = 1s; max = 2s; } }"
start_master

# --- Postfix: relays everything to mta, rewriting rt@peer.test ---
mkdir -p "$PFC/spool" "$PFC/data"
chown postfix: "$PFC/data"
cat >"$PFC/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $PFC/spool
data_directory = $PFC/data
command_directory = $PF/usr/sbin
daemon_directory = $PF/usr/lib/postfix/sbin
meta_directory = $PF/etc/postfix
shlib_directory = $PF/usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH=$PF/usr/lib/postfix
maillog_file = $PFC/maillog
maillog_file_prefixes = $PFC
myhostname = postfix.peer.test
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
virtual_alias_maps = texthash:$PFC/virtual
relayhost = [127.0.0.1]:$PORT
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
CF
printf 'rt@peer.test mtart@localhost\n' >"$PFC/virtual"
cat >"$PFC/master.cf" <<CF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
CF
pf() { LD_LIBRARY_PATH="$PF/usr/lib/postfix" "$PF/usr/sbin/postfix" -c "$PFC" "$@"; }
pf set-permissions >"$W/pf.out" 2>&1 || true
pf start >>"$W/pf.out" 2>&1 || fail "Postfix did not start: $(cat "$W/pf.out")"
port_open() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; }
wait_for 20 port_open "$PF_PORT" || fail "Postfix does not listen: $(cat "$W/pf.out" "$PFC/maillog" 2>/dev/null)"

# submit SUBJECT: the test message by Python's smtplib, its body kept in
# $W/body.SUBJECT (LF line ends, as a Maildir holds it).
submit() {
	/usr/bin/python3 - "$PORT" "$1" "$W/body.$1" <<'PY' || fail "smtplib could not submit $1"
import smtplib, sys
port, subject, keep = int(sys.argv[1]), sys.argv[2], sys.argv[3]
body = "\r\n".join([
    "Grüße aus Köln: naïve café, ünïcödé — 8 bits all the way.",
    ".a line that starts with a dot",
    "..two dots",
    ".",
    "From the start of a line",
    "trailing blanks   \t",
    "",
    "x" * 998,
    "",
    "the end",
]) + "\r\n"
msg = ("From: sender@remote.example\r\nTo: rt@peer.test\r\nSubject: %s\r\n"
       "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
       "Content-Transfer-Encoding: 8bit\r\n\r\n" % subject) + body
with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
    s.ehlo("client.test")
    s.sendmail("sender@remote.example", ["rt@peer.test"], msg.encode("utf-8"), mail_options=["BODY=8BITMIME"])
open(keep, "wb").write(body.replace("\r\n", "\n").encode("utf-8"))
PY
}

# arrived SUBJECT STAMP: the message came back into mtart's Maildir with
# the body intact, and STAMP (the peer's own words) in its Received: lines.
arrived() {
	f=""
	i=0
	while [ $i -lt 300 ]; do
		f=$(grep -l "^Subject: $1\$" "$W/home/mtart/Maildir/new/"* 2>/dev/null | head -1) || true
		[ -n "$f" ] && break
		sleep 0.1; i=$((i + 1))
	done
	[ -n "$f" ] || return 1
	/usr/bin/python3 - "$f" "$W/body.$1" "$2" <<'PY'
import sys
got = open(sys.argv[1], "rb").read()
want = open(sys.argv[2], "rb").read()
peer = sys.argv[3].encode()
head, sep, body = got.partition(b"\n\n")
assert sep, "no end of header"
assert body == want, "body differs:\n%r\n---\n%r" % (body[:300], want[:300])
assert b"Delivered-To: mtart@localhost" in head, head
received = [l for l in head.split(b"\n") if l.startswith(b"Received:")]
assert len(received) >= 3, head
assert peer in head, "no %s in the header:\n%s" % (peer.decode(), head.decode("utf-8", "replace"))
PY
}

submit postfixtrip
arrived postfixtrip "by postfix.peer.test (Postfix)" ||
	fail "the message did not come back intact through Postfix: $(cat "$PFC/maillog" 2>/dev/null | tail -20)"
wait_for 10 grep -q "to=<mtart@localhost>, orig_to=<rt@peer.test>, relay=127.0.0.1\[127.0.0.1\]:$PORT,.*status=sent (250 2.0.0 Ok: queued as" "$PFC/maillog" ||
	fail "Postfix did not log the delivery back to mta: $(tail -5 "$PFC/maillog")"
note "mta -> Postfix -> mta: body byte-identical"

# --- Exim: the same, after a reload points the relay at it ---
mkdir -p "$EXD/spool" "$EXD/log"
chown -R mtaexim: "$EXD"
cat >"$EXD/exim.conf" <<CF
exim_path = $EXIM
exim_user = mtaexim
exim_group = mtaexim
spool_directory = $EXD/spool
log_file_path = $EXD/log/%slog
primary_hostname = exim.peer.test
daemon_smtp_ports = $EX_PORT
local_interfaces = 127.0.0.1
keep_environment =
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
domainlist local_domains =
hostlist relay_from_hosts = 127.0.0.1
acl_smtp_rcpt = check_rcpt

begin acl
check_rcpt:
  accept hosts = +relay_from_hosts
  deny   message = relay not permitted

begin routers
back_to_mta:
  driver = manualroute
  transport = to_mta
  route_list = * 127.0.0.1
  self = send
  no_more

begin transports
to_mta:
  driver = smtp
  port = $PORT
  allow_localhost

begin retry
*   *   F,1h,1m

begin rewrite
rt@peer.test mtart@localhost T
CF
"$EXIM" -C "$EXD/exim.conf" -bdf -q5s -odi >"$W/exim.out" 2>&1 &
EXIM_PID=$!
wait_for 20 port_open "$EX_PORT" || fail "Exim does not listen: $(cat "$W/exim.out" "$EXD/log/"* 2>/dev/null)"
sed "s/\[127.0.0.1\]:$PF_PORT/[127.0.0.1]:$EX_PORT/" "$CONF" >"$CONF.new" && mv "$CONF.new" "$CONF"
ctl reload >/dev/null || fail "reload"
wait_log "reloaded .*generation" 10 || fail "the reload did not take"
submit eximtrip
arrived eximtrip "by exim.peer.test with esmtp (Exim 4" ||
	fail "the message did not come back intact through Exim: $(tail -20 "$EXD/log/mainlog" 2>/dev/null)"
note "mta -> Exim -> mta: body byte-identical"
exit 0
