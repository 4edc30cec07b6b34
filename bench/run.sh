#!/bin/bash
# Intake and relay benchmark: runs mta on 127.0.0.1:10030 in its own cpuacct cgroup
# and measures it with the harness beside the repository (../shared/bench:
# smtp-source from Postfix's Debian package, unpacked privately), and the
# same measurements against Postfix when its anchor is installed.
#   bench/run.sh [MSGS=20000] [SESSIONS=20] [SIZE=5120]
# Needs root (cgroups), loopback only. Not a test: it prints RESULT lines.
set -u
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.." || exit 2
W=/var/tmp/mta-bench
. bench/lib.sh
with_summary "$self" "$@"
N=${1:-20000}; S=${2:-20}; L=${3:-5120}
prepare
cg_stop
# The bare loopback rate, here and again at the end: this VM's speed
# drifts by tens of percent over minutes, so the rate the MTA is held
# against is taken on both sides of it.
TIMEOUT=0 bash "$H/phys.sh" 200 "$N" 2>/dev/null | grep RESULT | grep -i sink | sed 's/test=phys_loopback/test=phys_loopback when=before/'
fresh_spool
# Everything outside local.test is relayed to the harness's smtp-sink.
base_conf 'limits { sessions = 20000; sessions_per_client = 20000; }' 'relay { host = "[127.0.0.1]:10099"; }'
cg_start
export MTA_CGROUP=$CG MTA_NAME=mta
TIMEOUT=${DRAIN_TIMEOUT:-600} bash "$H/accept.sh" 127.0.0.1:10030 "$N" "$S" "$L" | grep RESULT
cpu_lines
bash "$H/latency.sh" 127.0.0.1:10030 500 "$L" | grep RESULT
# Idle sessions: the shared harness's select() stops at 1024 descriptors.
python3 bench/idle.py 127.0.0.1 10030 "${CONNS:-10000}" $CG/cgroup.procs
queued=$(find $W/spool/incoming $W/spool/active $W/spool/deferred -type f ! -name '.*' | wc -l)
echo "RESULT test=queue target=mta queued_files=$queued"
cg_stop
drop_spool
# Intake alone: the same load while every delivery stalls at a next hop
# that accepts the connection and never answers (bench/stall.py), so
# nothing is relayed and the CPU counted is acceptance's (until the last
# 250). With relaying, the sink's work and the smtp client's share the
# two CPUs with the intake.
fresh_spool
base_conf 'limits { sessions = 20000; sessions_per_client = 20000; }' 'relay { host = "[127.0.0.1]:10098"; }'
python3 bench/stall.py 10098 "${DRAIN_TIMEOUT:-600}" & stall=$!
# Only once it listens: a refused connection would defer every message
# at once (moved to deferred/, one flush each), not stall it.
for _ in $(seq 100); do ss -ltn 2>/dev/null | grep -q '127.0.0.1:10098 ' && break; sleep 0.1; done
cg_start
TIMEOUT=0 bash "$H/accept.sh" 127.0.0.1:10030 "$N" "$S" "$L" | grep RESULT \
	| sed 's/test=accept target=mta/test=accept_held target=mta/; s/ drain_s=[^ ]* drain_mps=[^ ]* relayed=[^ ]*//'
cg_stop
kill $stall 2>/dev/null; wait $stall 2>/dev/null
drop_spool
if [ "${ANCHORS:-1}" = 1 ]; then
	postfix_start
	TIMEOUT=${DRAIN_TIMEOUT:-600} bash "$H/accept.sh" postfix "$N" "$S" "$L" | grep RESULT
	bash "$H/latency.sh" postfix 500 "$L" | grep RESULT
	bash "$H/conc.sh" postfix 1000 3 | grep RESULT
	postfix_stop
fi
TIMEOUT=0 bash "$H/phys.sh" 200 "$N" 2>/dev/null | grep RESULT | grep -i sink | sed 's/test=phys_loopback/test=phys_loopback when=after/'
