# master starts control and qmgr; mtactl status lists them with pids,
# generation 1 and the queue counts qmgr reports. As root, master raises
# its own limit on open files to its hard limit, and each child gets the
# limit of its role even above master's hard limit. The spool's modes do
# not depend on the umask master was started with.
. ./lib.sh
write_conf 'limits { sessions = 5000; }'
# The spool's modes are master's, not the umask's of whoever started it.
umask 077
if is_root; then ulimit -S -n 512; ulimit -H -n 2048; fi
start_master
out=$(ctl status)
echo "$out"
echo "$out" | grep -q "generation 1" || fail "no generation 1"
for r in control qmgr cleanup smtpd pickup connector smtp bounce local lookup; do
	p=$(child_pid $r)
	[ -n "$p" ] || fail "$r not running"
	kill -0 "$p" || fail "$r pid $p does not exist"
done
echo "$out" | grep -q "^queue: incoming 0, active 0, deferred 0, hold 0, corrupt 0" || fail "no queue counts"
touch "$W/spool/deferred/x1" "$W/spool/deferred/x2"
ctl status | grep -q "deferred 2" || fail "qmgr does not count deferred/"
ctl -j status | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["ok"] and len(d["children"]) == 10, d' \
	|| fail "bad JSON status"
[ -S "$W/mta.sock" ] || fail "no control socket"
"$MTACTL" -f "$CONF" status | grep -q "generation 1" || fail "mtactl -f does not find the socket"
ls -ld "$W/spool" "$W/spool"/*
if is_root; then
	for d in incoming active deferred hold corrupt; do
		[ "$(stat -c %U:%a "$W/spool/$d")" = "_mta:700" ] || fail "spool/$d not _mta 0700"
	done
	[ "$(stat -c %U:%a "$W/spool")" = "root:755" ] || fail "spool not root 0755"
	nofile() { awk '/^Max open files/ { print $4, $5 }' "/proc/$1/limits"; }
	[ "$(nofile "$MASTER_PID")" = "2048 2048" ] || fail "master's open files: $(nofile "$MASTER_PID"), not 2048 2048"
	s=$(child_pid smtpd); c=$(child_pid connector)
	if (ulimit -H -n 4096) 2>/dev/null; then
		[ "$(nofile "$s")" = "5256 5256" ] || fail "smtpd's open files: $(nofile "$s"), not limits.sessions + 256"
		[ "$(nofile "$c")" = "4096 4096" ] || fail "the connector's open files: $(nofile "$c"), not 4096"
		grep "limit on open files" "$LOG" && fail "a child warns of its limit on open files"
	else
		# A root that may not raise a hard limit (without
		# CAP_SYS_RESOURCE, in a container): the hard limit, and a warning.
		[ "$(nofile "$s")" = "2048 2048" ] || fail "smtpd's open files: $(nofile "$s"), not the hard limit"
		wait_log "mta/smtpd\[$s\]: warning: the limit on open files is 2048, below the 5256 a smtpd process is to have (limits.sessions + 256)" 5 ||
			fail "smtpd does not warn of its limit on open files"
	fi
fi
exit 0
