# A queue listing far beyond what mtactl once read in one piece (4 MiB):
# 20,000 held messages (copies of one real queue file, each under an ID
# of its own) are listed in full, and the count printed is the count
# queued, by `mtactl queue`, `mtactl -j queue` and `sendmail -bp`. While a
# listing is held up by a reader that does not read (flow control: qmgr
# makes no more of it meanwhile), mail is still delivered, status still
# has qmgr's counts, the same user's second listing is refused as busy,
# and another user lists the whole queue; control.timeout (2 s here)
# bounds reading the request only, not a listing that takes longer.
# Listings whose reader goes away are stopped.
. ./lib.sh
. ./peers.sh
COPIES=20000
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" "queue { backoff { min = 1s; max = 2s; } }"
sed 's|^control { socket = "mta.sock"; }$|control { socket = "mta.sock"; timeout = 2s; }|' "$CONF" >"$CONF.new"
mv "$CONF.new" "$CONF"
grep -q 'timeout = 2s' "$CONF" || fail "cannot set control.timeout"
start_master

# The template: three recipients deferred (nobody listens on the relay
# port yet), with their reasons, then put on hold.
send sender@remote.example a@remote.example,b@remote.example,c@remote.example "template"
wait_log "to=<c@remote.example>, .*status=deferred" 20 || fail "the template was not deferred"
id=$(queue_id template) || fail "no queue file for the template"
ctl queue hold "$id" >/dev/null || fail "hold $id"
wait_for 10 test -f "$W/spool/hold/$id" || fail "$id not in hold/"

# The copies: the queue ID patched into the envelope record, its CRC
# made again, each written with the template's owner and mode.
/usr/bin/python3 - "$W/spool/hold" "$id" "$COPIES" <<'PY' || fail "cannot write the copies"
import os, struct, sys, zlib
d, tid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = os.path.join(d, tid)
st = os.stat(path)
data = bytearray(open(path, "rb").read())
assert data[8:12] == b"ENVL" and data[20:40] == tid.encode(), "unexpected layout"
length = struct.unpack_from("<I", data, 12)[0]
alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
for i in range(n):
    c = "".join(alphabet[(i >> s) & 31] for s in (20, 15, 10, 5, 0))
    qid = tid[:11] + "ZZZZ" + c
    data[20:40] = qid.encode()
    crc = zlib.crc32(bytes(data[8:16]) + bytes(data[20:20 + length]))
    struct.pack_into("<I", data, 16, crc)
    fd = os.open(os.path.join(d, qid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, st.st_mode & 0o7777)
    os.close(fd)
PY
N=$((COPIES + 1))
[ "$(ls "$W/spool/hold" | wc -l)" -eq $N ] || fail "hold/ does not hold $N files"
aio_sink

# count FILE: the messages a mailq-style listing in FILE shows, checked
# against its summary line.
count() {
	tail -1 "$1" | grep -q "^-- [0-9]* Kbytes in $N Requests\.$" || { echo "summary: $(tail -1 "$1")"; return 1; }
	grep -c '^[0-9A-Z]\{20\}[ *!]' "$1"
}

# The whole listing, as text, as JSON and from sendmail -bp.
ctl queue >"$W/list.txt" 2>"$W/list.err" || fail "mtactl queue: $(cat "$W/list.err")"
[ "$(wc -c <"$W/list.txt")" -gt $((4 * 1024 * 1024)) ] || fail "the listing is smaller than 4 MiB"
n=$(count "$W/list.txt") || fail "mtactl queue: $n"
[ "$n" -eq $N ] || fail "mtactl queue lists $n of $N"
[ "$(grep -c '^[0-9A-Z]\{20\}!' "$W/list.txt")" -eq $N ] || fail "not every message is marked held"
ctl -j queue >"$W/list.json" || fail "mtactl -j queue"
n=$(/usr/bin/python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); assert v["ok"]; print(len(v["queue"]))' \
	"$W/list.json") || fail "the JSON listing does not parse"
[ "$n" -eq $N ] || fail "mtactl -j queue lists $n of $N"
"$MTA_BIN/sendmail" -C "$CONF" -bp >"$W/bp.txt" 2>"$W/bp.err" || fail "sendmail -bp: $(cat "$W/bp.err")"
n=$(count "$W/bp.txt") || fail "sendmail -bp: $n"
[ "$n" -eq $N ] || fail "sendmail -bp lists $n of $N"

# A listing held up: its reader takes 64 KiB, then waits for $W/go.
rm -f "$W/go"
ctl queue 2>"$W/slow.err" | /usr/bin/python3 -c '
import os, sys, time
out = open(sys.argv[1], "wb")
out.write(sys.stdin.buffer.read(65536))
out.flush()
for _ in range(600):
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.1)
while True:
    b = sys.stdin.buffer.read(1 << 16)
    if not b:
        break
    out.write(b)
' "$W/slow.txt" "$W/go" &
SLOW=$!
wait_for 10 test -s "$W/slow.txt" || { touch "$W/go"; fail "the held-up listing did not start"; }
# Held up past control.timeout.
sleep 3
# Meanwhile: a delivery, status with qmgr's counts, the same user refused.
send sender@remote.example during@remote.example "during the listing"
wait_log "to=<during@remote.example>, relay=127.0.0.1\[127.0.0.1\]:$RELAY, .*status=sent" 15 ||
	{ touch "$W/go"; fail "no delivery while a listing runs"; }
ctl status >"$W/status" || { touch "$W/go"; fail "status while a listing runs"; }
grep -q "^queue: .*hold $N" "$W/status" || { touch "$W/go"; fail "status without qmgr's counts: $(cat "$W/status")"; }
set +e; ctl queue >/dev/null 2>"$W/busy.err"; rc=$?; set -e
[ $rc -ne 0 ] && grep -q "busy" "$W/busy.err" || { touch "$W/go"; fail "a second listing of the same user: $rc $(cat "$W/busy.err")"; }
if is_root; then
	ensure_user mtaother
	runuser -u mtaother -- "$MTACTL" -s "$W/mta.sock" queue >"$W/other.txt" 2>"$W/other.err" ||
		{ touch "$W/go"; fail "another user's listing: $(cat "$W/other.err")"; }
	n=$(count "$W/other.txt") || { touch "$W/go"; fail "another user's listing: $n"; }
	[ "$n" -eq $N ] || { touch "$W/go"; fail "another user's listing lists $n of $N"; }
fi
kill -0 $SLOW 2>/dev/null || fail "the held-up listing ended early: $(cat "$W/slow.err")"
touch "$W/go"
wait $SLOW || fail "the held-up listing failed"
[ ! -s "$W/slow.err" ] || fail "the held-up listing: $(cat "$W/slow.err")"
n=$(count "$W/slow.txt") || fail "the held-up listing: $n"
[ "$n" -eq $N ] || fail "the held-up listing lists $n of $N"

# Listings whose reader goes away are stopped, in control and in qmgr:
# more of them than qmgr runs at once leave room for a whole one after.
for i in 1 2 3 4 5 6; do
	ctl queue 2>/dev/null | head -c 1000 >/dev/null
done
full() { ctl queue >"$W/after.txt" 2>"$W/after.err"; }
wait_for 10 full || fail "a listing after abandoned ones: $(cat "$W/after.err")"
n=$(count "$W/after.txt") || fail "a listing after abandoned ones: $n"
[ "$n" -eq $N ] || fail "a listing after abandoned ones lists $n of $N"
exit 0
