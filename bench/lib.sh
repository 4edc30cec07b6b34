# Sourced by the bench scripts, from the top of the repository, after
# they set W (mta's folder for the run).
top=$(pwd)
H=${BENCH_HARNESS:-$top/../shared/bench}
[ -x "$H/accept.sh" ] || { echo "no bench harness at $H" >&2; exit 2; }
CG=/sys/fs/cgroup/cpuacct/anchors_mta
# MTA_BINARIES: a directory of mta's release binaries to measure instead
# of target/release (not built then): for comparing two builds in turn.
BIN=${MTA_BINARIES:-$top/target/release}
MTACTL="$BIN/mtactl"

# prepare [cargo build options]: the harness's anchors, the mail user and
# submission group master needs as root, and the release build.
prepare() {
	bash "$H/install-anchors.sh" >/dev/null
	id _mta >/dev/null 2>&1 || useradd -r -d /nonexistent -s /usr/sbin/nologin _mta
	getent group _mtadrop >/dev/null 2>&1 || groupadd -r _mtadrop
	[ -n "${MTA_BINARIES:-}" ] ||
	cargo build --release -j2 --bins "$@" >/dev/null 2>&1 || { echo "build failed" >&2; exit 1; }
}

# The file systems the runs write to. This VM's root file system is ext4
# without a journal, which on every file creation scans past the inodes
# freed in the last minute (five, while their blocks are dirty): one run's
# clean-up, or the MTA measured just before, would slow the next. By
# default (FS=loop) every spool and Maildir a run writes is therefore a
# freshly made ext4 (journaled, initialised whole by mkfs) on a loop file
# on the same disk, for mta and for Postfix alike; FS=root leaves them on
# the root file system. FS=tmpfs puts them in memory, where fsync and
# syncfs cost nothing: not a figure for the targets (nothing is durable),
# but the bound on what the disk takes from a run, by comparison.

# loop_fs DIR: DIR becomes a fresh ext4 on the loop file DIR.img, holding
# a copy of what DIR held (owners and modes kept); unloop_fs DIR undoes it.
loop_fs() {
	case ${FS:-loop} in
	loop) ;;
	tmpfs)
		unloop_fs "$1"
		mkdir -p "$1"
		local t; t=$(mktemp -d)
		mount -t tmpfs -o size=4G,mode=755 tmpfs "$t" && cp -a "$1/." "$t/" && mount --move "$t" "$1" && rmdir "$t" \
			|| { echo "cannot mount a tmpfs at $1" >&2; exit 1; }
		return 0 ;;
	*) return 0 ;;
	esac
	unloop_fs "$1"
	mkdir -p "$1"
	# Inode tables and journal zeroed now, not by a kernel thread during
	# the measurement (mkfs's lazy initialisation).
	truncate -s 4G "$1.img" && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1.img" \
		|| { echo "cannot make a file system in $1.img" >&2; exit 1; }
	local m; m=$(mktemp -d)
	mount -o loop "$1.img" "$m" && cp -a "$1/." "$m/" && umount "$m" && rmdir "$m" \
		&& mount -o loop "$1.img" "$1" || { echo "cannot mount a loop file system at $1" >&2; exit 1; }
}
unloop_fs() {
	while mountpoint -q "$1" 2>/dev/null; do umount "$1" || break; done
	rm -f "$1.img"
}

# fresh_spool: an empty $W (on its own file system, see loop_fs). With
# FS=root, the previous run's files are deleted, then written back and
# given 6 s.
fresh_spool() {
	unloop_fs "$W"
	rm -rf "$W"; mkdir -p "$W"
	loop_fs "$W"
	sync
	[ "${FS:-loop}" != root ] || sleep 6
}

# drop_spool: unmount the file system fresh_spool made.
drop_spool() {
	sleep 1; unloop_fs "$W"
}

# postfix_start, postfix_stop: the harness's Postfix, its queue on a
# fresh file system like mta's.
PFSPOOL=/var/tmp/anchors/postfix/spool
postfix_start() {
	bash "$H/mta.sh" stop postfix >/dev/null
	loop_fs "$PFSPOOL"
	sync
	bash "$H/mta.sh" start postfix >/dev/null
}
postfix_stop() {
	bash "$H/mta.sh" stop postfix >/dev/null
	sleep 1; unloop_fs "$PFSPOOL"
}

# base_conf [lines...]: $W/mta.conf with what every run shares (mta on
# 127.0.0.1:10030, its spool in $W, no DNS but a server on loopback,
# local.test local) and the lines given.
base_conf() {
	{
		echo 'hostname = "mx.bench.test";'
		echo 'spool = "spool";'
		echo "libexec_directory = \"$BIN\";"
		echo 'pidfile = "mta.pid";'
		echo 'control { socket = "mta.sock"; }'
		echo 'domains = [ "local.test" ];'
		echo 'listen { smtp { address = "127.0.0.1:10030"; tls = none; } }'
		echo 'dns { servers = [ "127.0.0.1:53" ]; }'
		for l in "$@"; do echo "$l"; done
	} > "$W/mta.conf"
}

# cg_start: mta with all its children in the cpuacct cgroup $CG, waited
# for; cg_stop: stopped, and whatever is left in the cgroup killed.
cg_start() {
	mkdir -p $CG
	sh -c "echo \$\$ > $CG/cgroup.procs; exec $BIN/mta -f $W/mta.conf" 2>> "$W/mta.log"
	for _ in $(seq 50); do "$MTACTL" -f "$W/mta.conf" status >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "mta did not start" >&2; exit 1
}
cg_stop() {
	[ -s "$W/mta.pid" ] && kill -TERM "$(cat "$W/mta.pid")" 2>/dev/null
	for _ in $(seq 50); do [ -z "$(cat $CG/cgroup.procs 2>/dev/null)" ] && break; sleep 0.1; done
	for p in $(cat $CG/cgroup.procs 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
}

# cpu_lines: a RESULT line with the CPU seconds of each process in $CG.
cpu_lines() {
	for p in $(cat $CG/cgroup.procs); do
		printf 'RESULT test=cpu role=%s cpu_s=%s\n' "$(cat /proc/$p/comm)" "$(awk '{ printf "%.2f", ($14 + $15) / 100 }' /proc/$p/stat)"
	done
}

# with_summary SCRIPT [ARGS...]: the bench SCRIPT runs again, inside,
# with its output kept; then the summary line (below) follows it, and
# the outer run exits with the inner one's status. Inside, it does nothing.
with_summary() {
	[ -n "${MTA_BENCH_RUN:-}" ] && return 0
	local r rc
	r=$(mktemp)
	MTA_BENCH_RUN=1 bash "$@" | tee "$r"
	rc=${PIPESTATUS[0]}
	summary "$r"
	rm -f "$r"
	exit "$rc"
}

# summary FILE: the performance targets of the issues, worked out from
# the RESULT lines in FILE (a run's output), as one RESULT test=summary
# line: each ratio, with its target and whether it is met where there is
# one (acceptance at 70% of the bare loopback rate, drain at half of it,
# CPU at a fifth of Postfix's, median commit no slower than Postfix's,
# idle sessions under 100 MiB; local delivery at 5x Postfix). A figure the
# run did not produce (ANCHORS=0: no Postfix) leaves its ratios out.
summary() {
	awk '
	function v(line, key) {
		if (!match(line, " " key "=[^ ]*")) return ""
		return substr(line, RSTART + length(key) + 2, RLENGTH - length(key) - 2)
	}
	# The median of a[1..n] (sorted in place).
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	# name=a/b, and with a target (not "") the target and whether it is met.
	function ratio(name, a, b, target, atleast,   r) {
		if (a == "" || b == "" || b + 0 == 0) return
		r = a / b
		out = out sprintf(" %s=%.3f", name, r)
		if (target == "") return
		out = out sprintf(" %s_target=%s%s %s_met=%s", name, atleast ? ">=" : "<=", target, name,
			(atleast ? r >= target : r <= target) ? "yes" : "no")
	}
	/test=phys_loopback/ { bare += v($0, "mps"); nbare++ }
	/test=accept target=mta / { acc = v($0, "accept_mps"); drain = v($0, "drain_mps"); cpu = v($0, "cpu_ms_per_msg") }
	/test=accept_held target=mta / { hacc = v($0, "accept_mps"); hcpu = v($0, "cpu_ms_per_msg") }
	/test=accept target=postfix / { pacc = v($0, "accept_mps"); pcpu = v($0, "cpu_ms_per_msg") }
	/test=latency target=mta / { lat = v($0, "median_commit_ms") }
	/test=latency target=postfix / { plat = v($0, "median_commit_ms") }
	/test=idle / { idle = v($0, "pss_held_mb"); conns = v($0, "sessions") }
	# local.sh with ROUNDS=N: mta and Postfix in turn, N times.
	/test=local target=mta / { le[++nle] = v($0, "e2e_mps"); lcpu[nle] = v($0, "cpu_ms_per_msg") }
	/test=local target=postfix / { ple[++nple] = v($0, "e2e_mps"); plcpu[nple] = v($0, "cpu_ms_per_msg") }
	END {
		out = ""
		if (nbare) {
			b = bare / nbare
			out = sprintf(" bare_mps=%.1f", b)
			ratio("accept_of_bare", acc, b, 0.7, 1)
			ratio("drain_of_half_bare", drain, b / 2, 1, 1)
			ratio("accept_held_of_bare", hacc, b, "", 1)
		}
		ratio("accept_vs_postfix", acc, pacc, "", 1)
		ratio("cpu_of_postfix", cpu, pcpu, 0.2, 0)
		ratio("commit_of_postfix", lat, plat, 1, 0)
		if (idle != "") out = out sprintf(" idle_sessions=%s idle_pss_mb=%s idle_target=<100 idle_met=%s", conns, idle, idle + 0 < 100 ? "yes" : "no")
		# Each round against its own Postfix run; the ratio of the median round.
		n = nle < nple ? nle : nple
		if (n > 1) {
			each = ""
			for (i = 1; i <= n; i++) {
				r[i] = le[i] / ple[i]; c[i] = lcpu[i] / plcpu[i]
				each = each (i > 1 ? "," : "") sprintf("%.3f", r[i])
			}
			out = out sprintf(" local_rounds=%d local_vs_postfix_each=%s", n, each)
			ratio("local_vs_postfix", median(r, n), 1, 5, 1)
			ratio("local_cpu_of_postfix", median(c, n), 1, "", 0)
		} else {
			ratio("local_vs_postfix", le[1], ple[1], 5, 1)
			ratio("local_cpu_of_postfix", lcpu[1], plcpu[1], "", 0)
		}
		if (out != "") print "RESULT test=summary" out
	}' "$1"
}
