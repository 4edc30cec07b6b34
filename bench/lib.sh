# Sourced by the bench scripts, from the top of the repository, after
# they set W (mta's folder for the run).
top=$(pwd)
H=${BENCH_HARNESS:-$top/../shared/bench}
[ -x "$H/accept.sh" ] || { echo "no bench harness at $H" >&2; exit 2; }
CG=/sys/fs/cgroup/cpuacct/anchors_mta
MTACTL="$top/target/release/mtactl"

# prepare [cargo build options]: the harness's anchors, the mail user and
# submission group master needs as root, and the release build.
prepare() {
	bash "$H/install-anchors.sh" >/dev/null
	id _mta >/dev/null 2>&1 || useradd -r -d /nonexistent -s /usr/sbin/nologin _mta
	getent group _mtadrop >/dev/null 2>&1 || groupadd -r _mtadrop
	cargo build --release -j2 --bins "$@" >/dev/null 2>&1 || { echo "build failed" >&2; exit 1; }
}

# fresh_spool: an empty $W. The previous run's files are deleted, then
# written back and given 6 s: ext4 without a journal (this VM's root file
# system) scans past inodes freed in the last few seconds on every file
# creation, which would charge one run's clean-up to the next. With
# SPOOL_FS=loop, $W is instead a freshly made ext4 (mkfs defaults, with a
# journal) on a loop file in /var/tmp: the same disk, no history.
fresh_spool() {
	umount "$W" 2>/dev/null
	rm -rf "$W"; mkdir -p "$W"
	if [ "${SPOOL_FS:-}" = loop ]; then
		rm -f "$W.img"; truncate -s 4G "$W.img"
		mkfs.ext4 -q -F "$W.img" && mount -o loop "$W.img" "$W" || { echo "cannot mount a loop file system" >&2; exit 1; }
	fi
	sync; sleep 6
}

# drop_spool: unmount the loop file system fresh_spool made.
drop_spool() {
	if [ "${SPOOL_FS:-}" = loop ]; then sleep 1; umount "$W" && rm -f "$W.img"; fi
}

# base_conf [lines...]: $W/mta.conf with what every run shares (mta on
# 127.0.0.1:10030, its spool in $W, no DNS but a server on loopback,
# local.test local) and the lines given.
base_conf() {
	{
		echo 'hostname = "mx.bench.test";'
		echo 'spool = "spool";'
		echo "libexec_directory = \"$top/target/release\";"
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
	sh -c "echo \$\$ > $CG/cgroup.procs; exec $top/target/release/mta -f $W/mta.conf" 2>> "$W/mta.log"
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
