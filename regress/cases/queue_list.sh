# The queue listing (mtactl queue, mailq's format): every queued message
# with its sender and recipients, for any local user; a file that is not a
# valid queue file is moved to corrupt/ and logged, never listed or fatal.
# mtactl queue shape sums it up by domain and age, as qshape does. With mta
# stopped, mailq reads the queue directly when it may.
. ./lib.sh
write_conf
start_master
for i in 1 2 3; do
	swaks --server 127.0.0.1:$PORT --from "s$i@remote.example" --to root@localhost,postmaster@localhost \
		--header "Subject: q$i" >/dev/null 2>&1 || fail "swaks $i"
done
wait_queued 3 || fail "not queued"
printf 'MTAQ this is no queue file' > "$W/spool/incoming/1NG5CORRUPT000000000"
chown --reference="$W/spool/incoming" "$W/spool/incoming/1NG5CORRUPT000000000" 2>/dev/null || true
out=$(ctl queue) || fail "mtactl queue: $out"
echo "$out"
echo "$out" | grep -q "^-- [0-9]* Kbytes in 3 Requests.$" || fail "not three requests"
for i in 1 2 3; do echo "$out" | grep -q "s$i@remote.example" || fail "sender s$i missing"; done
[ "$(echo "$out" | grep -c 'postmaster@localhost')" -eq 3 ] || fail "recipients missing"
[ -e "$W/spool/incoming/1NG5CORRUPT000000000" ] && fail "corrupt file left in incoming/"
ls "$W/spool/corrupt" | grep -q 1NG5CORRUPT000000000 || fail "corrupt file not in corrupt/"
wait_log "1NG5CORRUPT000000000.*moved to corrupt" || fail "move not logged"
n=$(ctl -j queue | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["queue"]))')
[ "$n" -eq 3 ] || fail "JSON lists $n"
# qshape's table: six recipients at localhost, all younger than 5 minutes;
# by sender, three messages from remote.example.
shape=$(ctl queue shape incoming active deferred hold) || fail "mtactl queue shape: $shape"
echo "$shape"
echo "$shape" | head -1 | grep -Eq "^ +T +5 +10 +20 +40 +80 +160 +320 +640 +1280 +1280\+$" || fail "queue shape's header: $shape"
echo "$shape" | grep -Eq "^ *TOTAL +6 +6( +0){9}$" || fail "queue shape's total: $shape"
echo "$shape" | grep -Eq "^ *localhost +6 +6( +0){9}$" || fail "queue shape's localhost row: $shape"
shape=$(ctl queue shape senders incoming active deferred hold) || fail "mtactl queue shape senders: $shape"
echo "$shape" | grep -Eq "^ *remote\.example +3 +3( +0){9}$" || fail "queue shape by sender: $shape"
ctl -j queue shape incoming active deferred hold | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["ok"] and j["bucket_minutes"][:3] == [5, 10, 20], j
assert [r["domain"] for r in j["shape"]] == ["TOTAL", "localhost"] and j["shape"][1]["total"] == 6, j
' || fail "queue shape as JSON"
note "queue shape counts the recipients by domain and age, and the messages by sender domain"
if is_root; then
	ensure_user mtaother
	runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" queue | grep -q "in 3 Requests" || fail "ordinary user cannot list"
	runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" stop 2>&1 | grep -q "permission denied" || fail "ordinary user may stop"
fi

# mta stopped: mailq reads the queue itself (for root and the mail user;
# the daily periodic job runs it as root), says so on standard error, and
# moves nothing (sendmail.sh: anyone else gets EX_UNAVAILABLE).
printf 'MTAQ no queue file either' > "$W/spool/deferred/1NG5CORRUPT000000001"
ctl stop >/dev/null || fail "stop"
wait_for 10 sh -c "! kill -0 $MASTER_PID 2>/dev/null" || fail "master did not stop"
out=$("$MTA_BIN/sendmail" -C "$CONF" -bp 2>"$W/bp.err") || fail "mailq with mta stopped: $(cat "$W/bp.err")"
echo "$out" | grep -q "^-- [0-9]* Kbytes in 3 Requests.$" || fail "mailq with mta stopped: $out"
grep -q "warning: mta is not running: the queue as read from $W/spool" "$W/bp.err" || fail "no warning: $(cat "$W/bp.err")"
grep -q "deferred/1NG5CORRUPT000000001: not a queue file name" "$W/bp.err" || fail "the stray file not reported: $(cat "$W/bp.err")"
[ -e "$W/spool/deferred/1NG5CORRUPT000000001" ] || fail "mailq moved a file"
exit 0
