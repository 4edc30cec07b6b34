#!/bin/sh
# Runs regress cases, each in its own shell with a time limit, and prints
# "N passed, M failed". A failing case's log is shown.
cd "$(dirname "$0")" || exit 1
: "${MTA_BIN:=$(cd .. && pwd)/target/debug}"
export MTA_BIN
pass=0
fail=0
failed=""
for c in "$@"; do
	log=$(mktemp /tmp/mta-regress-log.XXXXXX)
	if timeout 120 sh "cases/$c.sh" >"$log" 2>&1; then
		pass=$((pass + 1))
		echo "ok   $c"
	else
		fail=$((fail + 1))
		failed="$failed $c"
		echo "FAIL $c"
		sed 's/^/     | /' "$log" | tail -40
	fi
	rm -f "$log"
done
echo "regress: $pass passed, $fail failed"
[ "$fail" = 0 ]
