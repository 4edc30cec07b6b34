#!/bin/bash
# Local delivery benchmark: smtp-source -> mta -> the Maildir of the
# unprivileged user mailbench (every message fsynced and renamed into
# new/ by a delivery child running as mailbench), first connection to
# last delivery; then the same through Postfix's local(8) in the same run.
# Uses the harness beside the repository (../shared/bench).
#   bench/local.sh [MSGS=20000] [SESSIONS=20] [SIZE=5120]
# Env: LOCALS (local processes, default 1 as in mta's own default), ANCHORS=0
# skips Postfix, ROUNDS=N runs mta and then Postfix N times in turn (the
# summary takes the median of the rounds' ratios), LOCAL_EXTRA='UCL line'
# adds a line to mta's configuration (e.g. a transport limit to compare).
# Needs root (cgroups, a delivery as another user); loopback only. Not a
# test: it prints RESULT lines.
set -u
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.." || exit 2
W=/var/tmp/mta-bench-local
. bench/lib.sh
with_summary "$self" "$@"
N=${1:-20000}; S=${2:-20}; L=${3:-5120}
prepare
id mailbench >/dev/null 2>&1 || { echo "no user mailbench (install-anchors.sh makes it)" >&2; exit 2; }
round() {
cg_stop
# The Maildir belongs to mailbench: a delivery refuses one that does not.
# (Removed before fresh_spool's pause: it holds the last run's 20,000 files.)
MD=/var/tmp/anchors/home/mailbench/Maildir-new
rm -rf "$MD"
fresh_spool
# The harness counts files in ~mailbench/Maildir-new/new.
base_conf 'limits { sessions = 20000; sessions_per_client = 20000; }' "processes { local = ${LOCALS:-1}; }" ${LOCAL_EXTRA:+"$LOCAL_EXTRA"} \
	'local { mailbox = "maildir"; maildir = "Maildir-new/"; }'
install -d -o mailbench -g mailbench -m 700 "$MD"
loop_fs "$MD"
install -d -o mailbench -g mailbench -m 700 "$MD/tmp" "$MD/new" "$MD/cur"
cg_start
export MTA_CGROUP=$CG MTA_NAME=mta
TIMEOUT=${DRAIN_TIMEOUT:-900} bash "$H/local.sh" 127.0.0.1:10030 "$N" "$S" "$L" | grep RESULT
cpu_lines
queued=$(find $W/spool/incoming $W/spool/active $W/spool/deferred -type f ! -name '.*' | wc -l)
echo "RESULT test=local-queue target=mta queued_files=$queued"
cg_stop
unloop_fs "$MD"
drop_spool
if [ "${ANCHORS:-1}" = 1 ]; then
	# The harness makes a missing Maildir as root: Postfix's local then
	# bounces everything. Give it one of mailbench's.
	PD=/var/tmp/anchors/home/mailbench/Maildir-postfix
	rm -rf "$PD"
	install -d -o mailbench -g mailbench -m 700 "$PD"
	loop_fs "$PD"
	install -d -o mailbench -g mailbench -m 700 "$PD/tmp" "$PD/new" "$PD/cur"
	postfix_start
	TIMEOUT=${DRAIN_TIMEOUT:-900} bash "$H/local.sh" postfix "$N" "$S" "$L" | grep RESULT
	postfix_stop
	unloop_fs "$PD"
fi
}
for _ in $(seq "${ROUNDS:-1}"); do round; done
