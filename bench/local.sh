#!/bin/bash
# Local delivery benchmark: smtp-source -> mta -> the Maildir of the
# unprivileged user mailbench (every message fsynced and renamed into
# new/ by a delivery child running as mailbench), first connection to
# last delivery; then the same through Postfix's local(8) in the same run.
# Uses the harness beside the repository (../shared/bench).
#   bench/local.sh [MSGS=20000] [SESSIONS=20] [SIZE=5120]
# Env: LOCALS (local processes, default 4), ANCHORS=0 skips Postfix.
# Needs root (cgroups, a delivery as another user); loopback only. Not a
# test: it prints RESULT lines.
set -u
cd "$(dirname "$0")/.." || exit 2
top=$(pwd)
H=${BENCH_HARNESS:-$top/../shared/bench}
[ -x "$H/local.sh" ] || { echo "no bench harness at $H" >&2; exit 2; }
N=${1:-20000}; S=${2:-20}; L=${3:-5120}
W=/var/tmp/mta-bench-local
CG=/sys/fs/cgroup/cpuacct/anchors_mta
bash "$H/install-anchors.sh" >/dev/null
id _mta >/dev/null 2>&1 || useradd -r -d /nonexistent -s /usr/sbin/nologin _mta
getent group _mtadrop >/dev/null 2>&1 || groupadd -r _mtadrop
id mailbench >/dev/null 2>&1 || { echo "no user mailbench (install-anchors.sh makes it)" >&2; exit 2; }
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
processes { local = ${LOCALS:-4}; }
# The harness counts files in ~mailbench/Maildir-new/new.
local { mailbox = "maildir"; maildir = "Maildir-new/"; }
dns { servers = [ "127.0.0.1:53" ]; }
CONF
# The Maildir belongs to mailbench: a delivery refuses one that does not.
MD=/var/tmp/anchors/home/mailbench/Maildir-new
rm -rf "$MD"
install -d -o mailbench -g mailbench -m 700 "$MD" "$MD/tmp" "$MD/new" "$MD/cur"
sh -c "echo \$\$ > $CG/cgroup.procs; exec $top/target/release/mta -f $W/mta.conf" 2> $W/mta.log
for _ in $(seq 50); do "$top/target/release/mtactl" -f $W/mta.conf status >/dev/null 2>&1 && break; sleep 0.1; done
export MTA_CGROUP=$CG MTA_NAME=mta
TIMEOUT=${DRAIN_TIMEOUT:-900} bash "$H/local.sh" 127.0.0.1:10030 "$N" "$S" "$L" | grep RESULT
for p in $(cat $CG/cgroup.procs); do
	printf 'RESULT test=cpu role=%s cpu_s=%s\n' "$(cat /proc/$p/comm)" "$(awk '{ printf "%.2f", ($14 + $15) / 100 }' /proc/$p/stat)"
done
queued=$(find $W/spool/incoming $W/spool/active $W/spool/deferred -type f ! -name '.*' | wc -l)
echo "RESULT test=local-queue target=mta queued_files=$queued"
stop_mta
if [ "${ANCHORS:-1}" = 1 ]; then
	# The harness makes a missing Maildir as root: Postfix's local then
	# bounces everything. Give it one of mailbench's.
	PD=/var/tmp/anchors/home/mailbench/Maildir-postfix
	rm -rf "$PD"
	install -d -o mailbench -g mailbench -m 700 "$PD" "$PD/tmp" "$PD/new" "$PD/cur"
	bash "$H/mta.sh" start postfix >/dev/null
	TIMEOUT=${DRAIN_TIMEOUT:-900} bash "$H/local.sh" postfix "$N" "$S" "$L" | grep RESULT
	bash "$H/mta.sh" stop postfix >/dev/null
fi
