#!/bin/bash
# Intake and relay benchmark: runs mta on 127.0.0.1:10030 in its own cpuacct cgroup
# and measures it with the harness beside the repository (../shared/bench:
# smtp-source from Postfix's Debian package, unpacked privately), and the
# same measurements against Postfix when its anchor is installed.
#   bench/run.sh [MSGS=20000] [SESSIONS=20] [SIZE=5120]
# Needs root (cgroups), loopback only. Not a test: it prints RESULT lines.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
H=${BENCH_HARNESS:-$top/../shared/bench}
[ -x "$H/accept.sh" ] || { echo "no bench harness at $H" >&2; exit 2; }
N=${1:-20000}; S=${2:-20}; L=${3:-5120}
W=/var/tmp/mta-bench
CG=/sys/fs/cgroup/cpuacct/anchors_mta
bash "$H/install-anchors.sh" >/dev/null
# master runs as root: its mail user and submission group must exist.
id _mta >/dev/null 2>&1 || useradd -r -d /nonexistent -s /usr/sbin/nologin _mta
getent group _mtadrop >/dev/null 2>&1 || groupadd -r _mtadrop
cargo build --release -j2 --bins >/dev/null 2>&1 || { echo "build failed" >&2; exit 1; }

stop_mta() {
	[ -s $W/mta.pid ] && kill -TERM "$(cat $W/mta.pid)" 2>/dev/null
	for _ in $(seq 50); do [ -z "$(cat $CG/cgroup.procs 2>/dev/null)" ] && break; sleep 0.1; done
	for p in $(cat $CG/cgroup.procs 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
}
stop_mta
rm -rf $W; mkdir -p $W $CG
cat > $W/mta.conf <<CONF
hostname = "mx.bench.test";
spool = "spool";
libexec_directory = "$top/target/release";
pidfile = "mta.pid";
control { socket = "mta.sock"; }
domains = [ "local.test" ];
listen { smtp { address = "127.0.0.1:10030"; tls = none; } }
limits { sessions = 20000; sessions_per_client = 20000; }
# Everything outside local.test is relayed to the harness's smtp-sink.
relay { host = "[127.0.0.1]:10099"; }
dns { servers = [ "127.0.0.1:53" ]; }
CONF
# The MTA and all its children in the cgroup; stderr log in $W.
sh -c "echo \$\$ > $CG/cgroup.procs; exec $top/target/release/mta -f $W/mta.conf" 2> $W/mta.log
for _ in $(seq 50); do "$top/target/release/mtactl" -f $W/mta.conf status >/dev/null 2>&1 && break; sleep 0.1; done
export MTA_CGROUP=$CG MTA_NAME=mta
TIMEOUT=${DRAIN_TIMEOUT:-600} bash "$H/accept.sh" 127.0.0.1:10030 "$N" "$S" "$L" | grep RESULT
for p in $(cat $CG/cgroup.procs); do
	printf 'RESULT test=cpu role=%s cpu_s=%s\n' "$(cat /proc/$p/comm)" "$(awk '{ printf "%.2f", ($14 + $15) / 100 }' /proc/$p/stat)"
done
bash "$H/latency.sh" 127.0.0.1:10030 500 "$L" | grep RESULT
# Idle sessions: the shared harness's select() stops at 1024 descriptors.
python3 bench/idle.py 127.0.0.1 10030 "${CONNS:-10000}" $CG/cgroup.procs
queued=$(find $W/spool/incoming $W/spool/active $W/spool/deferred -type f ! -name '.*' | wc -l)
echo "RESULT test=queue target=mta queued_files=$queued"
stop_mta
if [ "${ANCHORS:-1}" = 1 ]; then
	bash "$H/mta.sh" start postfix >/dev/null
	TIMEOUT=${DRAIN_TIMEOUT:-600} bash "$H/accept.sh" postfix "$N" "$S" "$L" | grep RESULT
	bash "$H/latency.sh" postfix 500 "$L" | grep RESULT
	bash "$H/conc.sh" postfix 1000 3 | grep RESULT
	bash "$H/mta.sh" stop postfix >/dev/null
fi
TIMEOUT=0 bash "$H/phys.sh" 2000 "$N" 2>/dev/null | grep RESULT | grep -i sink
