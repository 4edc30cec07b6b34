# Every child runs sandboxed: seccomp filter mode (2) and no_new_privs in
# /proc, as the mail user when master is root, and says so in the log.
. ./lib.sh
is_root && ensure_user _mta
write_conf
start_master
for r in control qmgr cleanup smtpd pickup connector smtp bounce; do
	p=$(child_pid $r)
	st=$(cat /proc/$p/status)
	echo "$st" | grep -E '^(Name|Uid|Seccomp|NoNewPrivs)'
	echo "$st" | grep -q '^Seccomp:[[:space:]]*2' || fail "$r: no seccomp filter"
	echo "$st" | grep -q '^NoNewPrivs:[[:space:]]*1' || fail "$r: no no_new_privs"
	if is_root; then
		uid=$(id -u _mta)
		echo "$st" | grep -q "^Uid:[[:space:]]*$uid[[:space:]]$uid[[:space:]]$uid[[:space:]]$uid" || fail "$r: not running as _mta"
	fi
	ls /proc/$p/fd | sort -n | tr '\n' ' '; echo
	grep -q "$r pid $p running, sandboxed" "$LOG" || fail "$r: not logged as sandboxed"
done
# nothing unconfined, nothing leaked: control has stdio, its channel, the listener and its own poll/channel fds only
n=$(ls /proc/$(child_pid control)/fd | wc -l)
[ "$n" -le 10 ] || fail "control holds $n descriptors"
exit 0
