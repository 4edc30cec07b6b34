# Every child runs sandboxed: seccomp filter mode (2) and no_new_privs in
# /proc, as the mail user when master is root, and says so in the log.
# local keeps its own user (root when master is) and its seccomp filter;
# its command spawner, its one child while nothing is delivered, has the
# same user, no filter (it starts users' commands, which must have none),
# and holds nothing but standard input, output and error and its socket
# to local.
. ./lib.sh
is_root && ensure_user _mta
write_conf
start_master
for r in control qmgr cleanup smtpd pickup connector smtp bounce lookup; do
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
lp=$(child_pid local)
[ -n "$lp" ] || fail "no local process"
lst=$(cat /proc/$lp/status)
echo "$lst" | grep -E '^(Name|Uid|Seccomp|NoNewPrivs)'
echo "$lst" | grep -q '^Seccomp:[[:space:]]*2' || fail "local: no seccomp filter"
sp=$(pgrep -P "$lp" || true)
[ -n "$sp" ] && [ "$(echo "$sp" | wc -l)" -eq 1 ] || fail "local's children are not its command spawner alone: '$sp'"
[ "$(tr '\0' ' ' </proc/$sp/cmdline | cut -d' ' -f1-2)" = "local spawner" ] ||
	fail "local's child is not its command spawner: $(tr '\0' ' ' </proc/$sp/cmdline)"
sst=$(cat /proc/$sp/status)
echo "$sst" | grep -E '^(Name|Uid|Seccomp|NoNewPrivs)'
echo "$sst" | grep -q '^Seccomp:[[:space:]]*0' || fail "the command spawner has a seccomp filter"
echo "$sst" | grep -q '^NoNewPrivs:[[:space:]]*0' || fail "the command spawner has no_new_privs"
[ "$(echo "$sst" | grep '^Uid:')" = "$(echo "$lst" | grep '^Uid:')" ] || fail "the command spawner's user is not local's"
fds=$(ls /proc/$sp/fd | sort -n | tr '\n' ' ')
[ "$fds" = "0 1 2 3 " ] || fail "the command spawner holds descriptors $fds: $(ls -l /proc/$sp/fd)"
# nothing unconfined, nothing leaked: control has stdio, its channel, the listener and its own poll/channel fds only
n=$(ls /proc/$(child_pid control)/fd | wc -l)
[ "$n" -le 10 ] || fail "control holds $n descriptors"
exit 0
