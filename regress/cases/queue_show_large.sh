# `mtactl queue show` of a message whose recipients are far more than
# qmgr can send control in one message on their channel (1 MiB): 5,000
# recipients of about 200 octets, deferred with their reasons, are shown
# whole, a line each, by `mtactl queue show` and `mtactl -j queue show`,
# and qmgr and control go on serving. (qmgr once answered with one
# message, failed to send it, and dropped its channel to control.)
. ./lib.sh
N=5000
write_conf "limits { recipients = 100000; }"
start_master
python3 - "$PORT" "$N" <<'PY' || fail "could not send the message"
import smtplib, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
# A name that does not resolve here (no case asks a real resolver): every
# recipient is deferred, with a reason.
domain = ".".join(["d" * 60] * 2) + ".example"
rcpts = ["r%05d%s@%s" % (i, "x" * 58, domain) for i in range(n)]
with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
    s.sendmail("sender@example.org", rcpts, "Subject: many recipients\r\n\r\nbody\r\n")
PY
in_deferred() { [ -n "$(find "$W/spool/deferred" -type f | head -1)" ]; }
wait_for 60 in_deferred || fail "the message was not deferred"
id=$(basename "$(find "$W/spool/deferred" -type f | head -1)")
ctl queue hold "$id" >/dev/null || fail "hold $id"

ctl queue show "$id" >"$W/show" 2>"$W/show.err" || fail "mtactl queue show: $(cat "$W/show.err")"
n=$(grep -c '^recipient: r[0-9]*x*@d' "$W/show")
[ "$n" -eq $N ] || fail "$n recipients shown, not $N"
grep -q "^queue: hold$" "$W/show" || fail "not shown in hold: $(head -3 "$W/show")"
grep -q "^Subject: many recipients$" "$W/show" || fail "the header is missing"
grep -c "^  reason: " "$W/show" | grep -q "^$N$" || fail "not every recipient has its reason"
ctl -j queue show "$id" >"$W/show.json" || fail "mtactl -j queue show"
size=$(wc -c <"$W/show.json")
[ "$size" -gt 1048576 ] || fail "the answer is $size bytes, not more than the channel's 1 MiB: more recipients"
note "shown: $N recipients, $size bytes of JSON"
python3 - "$W/show.json" "$N" "$id" <<'PY' || fail "mtactl -j queue show is not the whole message"
import json, sys
d = json.load(open(sys.argv[1]))
n, qid = int(sys.argv[2]), sys.argv[3]
assert d["ok"] is True, d.get("error")
m = d["message"]
assert m["id"] == qid and m["queue"] == "hold", (m["id"], m["queue"])
r = m["recipients"]
assert len(r) == n, len(r)
assert [x["address"][:6] for x in r] == ["r%05d" % i for i in range(n)], "out of order"
assert all(x["state"] == "deferred" and x["reason"] for x in r)
PY
# qmgr and control go on: the queue counts come, and a listing.
ctl status | grep -q "^queue: .*hold 1" || fail "status has no queue counts: $(ctl status | tail -1)"
ctl queue >"$W/list" || fail "mtactl queue"
grep -q "^$id!" "$W/list" || fail "the held message is not listed"
grep -q "dropping the Control channel" "$LOG" && fail "qmgr dropped its channel to control"
exit 0
