# mta -n: a good configuration passes silently; each bad one fails with
# file, line and key named.
. ./lib.sh
write_conf
"$MTA" -n -f "$CONF" || fail "good configuration refused"

check_bad() { # expected-line expected-text ucl...
	line=$1; text=$2; shift 2
	printf '%s\n' "$@" > "$W/bad.conf"
	if out=$("$MTA" -n -f "$W/bad.conf" 2>&1); then fail "accepted: $*"; fi
	echo "$out" | grep -q -- "$W/bad.conf:$line:" || fail "no file:line $line in: $out"
	echo "$out" | grep -q -- "$text" || fail "no '$text' in: $out"
	note "refused as expected: $out"
}
check_bad 3 "spoool" 'hostname = "mx.example.org";' '' 'spoool = "/var/spool/mta";'
check_bad 2 "control.clients" 'control {' '  clients = "many";' '}'
check_bad 2 "control.sockt" 'control {' '  sockt = "/x";' '}'
check_bad 1 "restart_delay" 'supervise { restart_delay = 10s; restart_delay_max = 1s; }'
check_bad 2 "singleton" '' 'processes { qmgr = 2; }'
check_bad 1 "facility" 'log { facility = "kern"; }'
# An error about several keys names the line of the key at fault.
check_bad 3 "relay.password_file.*needs relay.host" 'relay {' '' '  password_file = "/x";' '}'
check_bad 4 "listen.smtps.tls" 'listen smtps {' '  address = "127.0.0.1:4650";' '' '  tls = implicit;' '}'

# -n makes every check start makes that writes nothing: a file start
# would refuse is refused before a running master is stopped.
check_refused() { # expected-text ucl...
	text=$1; shift
	write_conf "$@"
	if out=$("$MTA" -n -f "$CONF" 2>&1); then fail "mta -n accepted what start refuses ($text)"; fi
	echo "$out" | grep -q -- "$text" || fail "no '$text' in: $out"
	note "refused as expected: $out"
}
make_cert
openssl genpkey -algorithm ed25519 -out "$W/other.pem" 2>/dev/null || fail "openssl could not make a key"
check_refused "key \`tls\`: " "tls { certificate = \"$W/cert.pem\"; key = \"$W/other.pem\"; }"
check_refused "key \`tls.certificate\`: $W/nosuch.pem" "tls { certificate = \"$W/nosuch.pem\"; key = \"$W/key.pem\"; }"
printf 'user:secret\n' > "$W/secret"; chmod 640 "$W/secret"
check_refused "$W/secret: readable or writable by group or others" \
	"relay { host = \"[127.0.0.1]:$PORT\"; tls = require; password_file = \"$W/secret\"; }"
printf 'not a cdb' > "$W/aliases.cdb"
check_refused "$W/aliases.cdb" "aliases = \"$W/aliases\";"
rm "$W/aliases.cdb"
printf 'x\n' > "$W/ca.pem"
check_refused "key \`smtp.tls_ca_file\`: $W/ca.pem" "smtp { tls_ca_file = \"$W/ca.pem\"; }"
mkdir "$W/libexec"
LIBEXEC="$W/libexec"; check_refused "$W/libexec/control: No such file"; unset LIBEXEC
: > "$W/mta.sock"
check_refused "$W/mta.sock: exists and is not a socket"
rm "$W/mta.sock"
mkdir -m 775 "$W/spool"
check_refused "$W/spool: must not be group- or world-writable"
rmdir "$W/spool"
if is_root; then
	check_refused "user \`mtanosuchuser\` does not exist" 'user = "mtanosuchuser";'
	check_refused "group \`mtanosuchgroup\` does not exist" 'submission_group = "mtanosuchgroup";'
fi
write_conf
"$MTA" -n -f "$CONF" || fail "good configuration refused after the bad ones"
[ -e "$W/spool" ] && fail "mta -n made the spool"
printf 'a {\n b = "x\n' > "$W/syntax.conf"
out=$("$MTA" -n -f "$W/syntax.conf" 2>&1) && fail "syntax error accepted"
echo "$out" | grep -q "syntax error" || fail "no syntax error in: $out"
out=$("$MTA" -n -f "$W/missing.conf" 2>&1) && fail "missing file accepted"
echo "$out" | grep -q "missing.conf" || fail "missing file not named: $out"
out=$("$MTA" -x 2>&1) && fail "unknown option accepted"
echo "$out" | grep -q "usage" || fail "no usage for unknown option: $out"
exit 0
