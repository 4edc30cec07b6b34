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
printf 'a {\n b = "x\n' > "$W/syntax.conf"
out=$("$MTA" -n -f "$W/syntax.conf" 2>&1) && fail "syntax error accepted"
echo "$out" | grep -q "syntax error" || fail "no syntax error in: $out"
out=$("$MTA" -n -f "$W/missing.conf" 2>&1) && fail "missing file accepted"
echo "$out" | grep -q "missing.conf" || fail "missing file not named: $out"
out=$("$MTA" -x 2>&1) && fail "unknown option accepted"
echo "$out" | grep -q "usage" || fail "no usage for unknown option: $out"
exit 0
