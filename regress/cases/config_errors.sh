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

# mtactl config prints the settings in force, as postconf does: -n those
# changed (write_conf's and these), names choose settings or sections,
# and the values read back as the same configuration.
write_conf 'limits { message_size = 20mb; }' 'queue { lifetime = 2d; }' 'transport_map { "example.org" = "lmtp:unix:/run/lmtp"; }'
out=$("$MTACTL" -f "$CONF" config -n) || fail "mtactl config -n: $out"
for want in "limits.message_size = 20971520" "queue.lifetime = 2d" "supervise.stop_timeout = 5s" \
	"listen.smtp.address = \"127.0.0.1:$PORT\"" 'transport_map."example.org" = "lmtp:unix:/run/lmtp"' \
	"spool = \"$W/spool\""; do
	echo "$out" | grep -qxF -- "$want" || fail "no \`$want\` in: $out"
done
echo "$out" | grep -q "^limits.hops" && fail "a default printed with -n: $out"
all=$("$MTACTL" -f "$CONF" config) || fail "mtactl config"
echo "$all" | grep -qxF "limits.hops = 50" || fail "no default in: $all"
[ "$(echo "$all" | wc -l)" -gt "$(echo "$out" | wc -l)" ] || fail "config prints no more than config -n"
out=$("$MTACTL" -f "$CONF" config supervise limits.hops) || fail "config with names"
[ "$(echo "$out" | sed 's/ =.*//' | tr '\n' ' ')" = "limits.hops supervise.restart_delay supervise.restart_delay_max supervise.stable_after supervise.stop_timeout " ] ||
	fail "names chose: $out"
out=$("$MTACTL" -f "$CONF" config limits.hops nosuch 2>&1) && fail "an unknown name accepted"
echo "$out" | grep -q "unknown setting .nosuch." || fail "unknown name not said: $out"
echo "$out" | grep -qxF "limits.hops = 50" || fail "the known name not printed: $out"
out=$("$MTACTL" -j -f "$CONF" config queue.lifetime) || fail "config -j"
[ "$out" = '{"queue.lifetime":"2d"}' ] || fail "config -j: $out"
out=$("$MTACTL" -f "$W/bad.conf" config 2>&1) && fail "mtactl config accepted a bad file"
echo "$out" | grep -q -- "$W/bad.conf:4:" || fail "config error without file and line: $out"
note "mtactl config: defaults, -n, names, -j, errors"
exit 0
