#!/bin/bash
# What qmgr holds for a large deferred queue: fills deferred/ with COUNT
# waiting messages (examples/fill_deferred.rs), starts mta on them and
# reports qmgr's resident memory once it has indexed them all; then, with
# the queue still full, relays MSGS new messages through to the harness's
# smtp-sink, and with DRAIN=1 flushes the whole deferred queue into the
# sink and reports qmgr's peak while 20,000 at a time are active.
#   bench/deferred.sh [COUNT=200000] [MSGS=2000]
# Needs root and the harness beside the repository (../shared/bench);
# loopback only. Not a test: it prints RESULT lines.
set -u
cd "$(dirname "$0")/.." || exit 2
W=/var/tmp/mta-bench-deferred
. bench/lib.sh
COUNT=${1:-200000}; MSGS=${2:-2000}
prepare --example fill_deferred

stop_mta() {
	"$MTACTL" -f $W/mta.conf stop >/dev/null 2>&1
	for _ in $(seq 100); do pgrep -f "mta -f $W/mta.conf" >/dev/null || return 0; sleep 0.1; done
	pkill -KILL -f "mta -f $W/mta.conf"
}
start_mta() {
	"$top/target/release/mta" -f $W/mta.conf 2>>$W/mta.log
	for _ in $(seq 100); do "$MTACTL" -f $W/mta.conf status >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "mta did not start" >&2; exit 1
}
# qmgr_kb FIELD: VmRSS or VmHWM of the running qmgr, in KiB.
qmgr_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$(pgrep -x qmgr | head -1)/status"; }
mb() { echo "scale=1; $1 / 1024" | bc; }

stop_mta
rm -rf $W; mkdir -p $W
base_conf 'relay { host = "[127.0.0.1]:10099"; }'
start_mta; stop_mta
t0=$(date +%s.%N)
"$top/target/release/examples/fill_deferred" $W/spool "$COUNT" 5120 >/dev/null || exit 1
chown -R _mta $W/spool/deferred
t1=$(date +%s.%N)
echo "RESULT test=deferred_fill count=$COUNT fill_s=$(echo "$t1 - $t0" | bc | xargs printf %.1f)"

# Started on a full deferred queue: qmgr indexes it (one stat per file)
# and settles.
t0=$(date +%s.%N)
start_mta
last=0; same=0
for _ in $(seq 600); do
	now=$(qmgr_kb VmRSS)
	if [ "$now" = "$last" ]; then same=$((same + 1)); [ $same -ge 10 ] && break; else same=0; last=$now; fi
	sleep 0.2
done
t1=$(date +%s.%N)
echo "RESULT test=deferred_hold count=$COUNT settle_s=$(echo "$t1 - $t0 - 2" | bc | xargs printf %.1f) qmgr_rss_mb=$(mb "$(qmgr_kb VmRSS)") qmgr_peak_mb=$(mb "$(qmgr_kb VmHWM)")"

# New mail still flows while the deferred queue is full.
TIMEOUT=${DRAIN_TIMEOUT:-600} bash "$H/accept.sh" 127.0.0.1:10030 "$MSGS" 20 5120 | grep RESULT
echo "RESULT test=deferred_new count=$COUNT qmgr_rss_mb=$(mb "$(qmgr_kb VmRSS)") qmgr_peak_mb=$(mb "$(qmgr_kb VmHWM)")"

if [ "${DRAIN:-0}" = 1 ]; then
	. "$H/lib.sh"
	fresh_sink
	t0=$(date +%s.%N)
	"$MTACTL" -f $W/mta.conf queue flush >/dev/null
	for _ in $(seq 12000); do
		[ "$(sink_count)" -ge "$COUNT" ] && break
		sleep 0.1
	done
	t1=$(date +%s.%N)
	echo "RESULT test=deferred_flush count=$COUNT relayed=$(sink_count) flush_s=$(echo "$t1 - $t0" | bc | xargs printf %.1f) qmgr_peak_mb=$(mb "$(qmgr_kb VmHWM)")"
fi
stop_mta
