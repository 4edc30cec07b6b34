# The queue listing (mtactl queue, mailq's format): every queued message
# with its sender and recipients, for any local user; a file that is not a
# valid queue file is moved to corrupt/ and logged, never listed or fatal.
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
if is_root; then
	ensure_user mtaother
	runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" queue | grep -q "in 3 Requests" || fail "ordinary user cannot list"
	runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" stop 2>&1 | grep -q "permission denied" || fail "ordinary user may stop"
fi
exit 0
