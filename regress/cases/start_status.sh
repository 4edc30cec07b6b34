# master starts control and qmgr; mtactl status lists them with pids,
# generation 1 and the queue counts qmgr reports.
. ./lib.sh
write_conf
start_master
out=$(ctl status)
echo "$out"
echo "$out" | grep -q "generation 1" || fail "no generation 1"
for r in control qmgr cleanup smtpd pickup connector smtp bounce local; do
	p=$(child_pid $r)
	[ -n "$p" ] || fail "$r not running"
	kill -0 "$p" || fail "$r pid $p does not exist"
done
echo "$out" | grep -q "^queue: incoming 0, active 0, deferred 0, hold 0, corrupt 0" || fail "no queue counts"
touch "$W/spool/deferred/x1" "$W/spool/deferred/x2"
ctl status | grep -q "deferred 2" || fail "qmgr does not count deferred/"
ctl -j status | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["ok"] and len(d["children"]) == 9, d' \
	|| fail "bad JSON status"
[ -S "$W/mta.sock" ] || fail "no control socket"
"$MTACTL" -f "$CONF" status | grep -q "generation 1" || fail "mtactl -f does not find the socket"
ls -ld "$W/spool" "$W/spool"/*
if is_root; then
	for d in incoming active deferred hold corrupt; do
		[ "$(stat -c %U:%a "$W/spool/$d")" = "_mta:700" ] || fail "spool/$d not _mta 0700"
	done
	[ "$(stat -c %U:%a "$W/spool")" = "root:755" ] || fail "spool not root 0755"
fi
exit 0
