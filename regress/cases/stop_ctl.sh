# `mtactl stop` stops the mail system; afterwards mtactl says it is not running.
. ./lib.sh
write_conf
start_master
q=$(child_pid qmgr)
ctl stop | grep -q stopping || fail "mtactl stop did not answer"
gone "$MASTER_PID" 8 || fail "master did not stop"
gone "$q" 2 || fail "qmgr left behind"
out=$(ctl status 2>&1) && fail "status answered after stop"
echo "$out" | grep -q "is mta running" || fail "unhelpful message: $out"
MASTER_PID=""
exit 0
