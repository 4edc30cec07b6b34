# Deliveries in flight across a reload and across a stop and a start are
# made once. The old qmgr drains: it hands out no new deliveries, waits
# for the reports of those in flight and writes them into the queue
# files, and only then exits; the new qmgr starts after it and finds
# nothing left to deliver. Two deliveries are caught in flight each time:
# one to an SMTP next hop of our own (below) that answers the end of the
# data only 3 s after it, and, as root (local delivery runs as the
# recipient), one to an alias naming a command that sleeps 3 s and then
# appends a line to a file. Each is counted where it lands (the next hop's
# messages, the command's runs) and in the log (status=sent once).
# During the drain new mail is taken in and `mtactl queue` answers; the
# new qmgr delivers that mail.
. ./lib.sh
HOP=$((PORT + 1))
OUT="$W/out"
mkdir -p "$OUT" "$W/hop" && chmod 1777 "$OUT"
# The next hop: ESMTP without extensions, one message at a time; each end
# of data is recorded in dots (at once) and in accepted (when answered,
# DELAY seconds later), with the message's Subject.
cat >"$W/hop.py" <<'PY'
import socketserver, sys, time
port, out, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])

def note(name, text):
    with open(out + "/" + name, "a") as f:
        f.write(text + "\n")

class Session(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 hop.test ESMTP")
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO" or verb == b"HELO":
                self.reply("250 hop.test")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.reply("250 ok")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            elif verb == b"DATA":
                self.reply("354 go on")
                subject = "?"
                while True:
                    l = self.rfile.readline(65536)
                    if not l or l == b".\r\n":
                        break
                    if l.lower().startswith(b"subject:"):
                        subject = l[8:].strip().decode("ascii", "replace")
                if not l:
                    return
                note("dots", subject)
                time.sleep(delay)
                note("accepted", subject)
                self.reply("250 ok: " + subject)
            else:
                self.reply("502 no")

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

Server(("127.0.0.1", port), Session).serve_forever()
PY
python3 "$W/hop.py" "$HOP" "$W/hop" 3 >"$W/hop.log" 2>&1 &
HOP_PID=$!
trap 'set +e; kill $HOP_PID 2>/dev/null; cleanup' EXIT
LOCAL="" ALIASES=""
if is_root; then
	LOCAL=1
	printf 'slowcmd: "|echo run >> %s/runs; sleep 3; echo done >> %s/done"\n' "$OUT" "$OUT" >"$W/aliases"
	ALIASES="aliases = \"$W/aliases\";"
else
	note "not root: the local delivery part is left out (local delivery runs as the recipient)"
fi
write_conf "relay { host = \"[127.0.0.1]:$HOP\"; }" "$ALIASES" \
	"queue { backoff { min = 1s; max = 2s; } }" "smtp { connection_cache_time = 1s; }"
[ -z "$LOCAL" ] || "$MTA_BIN/sendmail" -C "$CONF" -bi >"$W/bi" 2>&1 || fail "newaliases: $(cat "$W/bi")"
hop_up() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$HOP" 2>/dev/null; }
wait_for 5 hop_up ||
	fail "the next hop did not start: $(cat "$W/hop.log")"
start_master

send() { # send TO SUBJECT
	swaks --server 127.0.0.1:$PORT --from sender@remote.example --to "$1" --header "Subject: $2" >"$W/swaks" 2>&1 ||
		{ cat "$W/swaks"; fail "swaks: $2"; }
}
lines() { n=$(grep -c -x -- "$2" "$1" 2>/dev/null) || true; echo "${n:-0}"; }
# has FILE LINE N: FILE has LINE at least N times.
has() { [ "$(lines "$1" "$2")" -ge "$3" ]; }
sent() { grep -c -- "to=<$1>, .*status=sent" "$2" || true; }
# inflight ROUND N: mail to the next hop (and to the command, its Nth
# run) caught in flight.
inflight() {
	send "far-$1@remote.example" "$1"
	[ -n "$LOCAL" ] && send slowcmd@localhost "$1"
	wait_for 10 has "$W/hop/dots" "$1" 1 || fail "$1: the next hop did not get the message"
	[ -z "$LOCAL" ] || wait_for 10 has "$OUT/runs" "run" "$2" || fail "$1: the command did not start"
}
# once ROUND N LOG: each delivery made once (the command's Nth run), the
# queue empty.
once() {
	wait_for 30 settled 0 || fail "$1: mail left in the queue: $(ctl queue)"
	# Long enough for a repeat to show.
	sleep 4
	[ "$(lines "$W/hop/dots" "$1")" -eq 1 ] || fail "$1: the next hop got it $(lines "$W/hop/dots" "$1") times"
	[ "$(lines "$W/hop/accepted" "$1")" -eq 1 ] || fail "$1: the next hop took it $(lines "$W/hop/accepted" "$1") times"
	[ "$(sent "far-$1@remote.example" "$3")" -eq 1 ] || fail "$1: $(sent "far-$1@remote.example" "$3") lines with status=sent"
	if [ -n "$LOCAL" ]; then
		[ "$(lines "$OUT/runs" "run")" -eq "$2" ] || fail "$1: the command ran $(lines "$OUT/runs" "run") times, not $2"
		[ "$(lines "$OUT/done" "done")" -eq "$2" ] || fail "$1: the command ended $(lines "$OUT/done" "done") times, not $2"
		[ "$(sent slowcmd@localhost "$3")" -eq "$2" ] || fail "$1: $(sent slowcmd@localhost "$3") lines for the command"
	fi
	settled 0 || fail "$1: mail queued again: $(ctl queue)"
}

# --- a reload while both are in flight ---
inflight reload 1
ctl reload >/dev/null || fail "mtactl reload failed"
wait_log "generation 2" || fail "no reload logged"
# The queue listed (by the old qmgr, which serves the new control) and
# mail taken in while the old qmgr drains.
ctl queue >"$W/list" 2>&1 || fail "mtactl queue during the drain: $(cat "$W/list")"
grep -q "sender@remote.example" "$W/list" || fail "mtactl queue during the drain listed nothing: $(cat "$W/list")"
send later@remote.example "taken during the drain"
once reload 1 "$LOG"
grep -q "qmgr.*stopping: waiting for the reports of [0-9]* deliver" "$LOG" || fail "the old qmgr did not wait for its deliveries"
grep -q "did not stop in time" "$LOG" && fail "a process was killed at the reload"
grep -q "left unreported" "$LOG" && fail "the old qmgr gave up on a delivery"
wait_log "to=<later@remote.example>, .*status=sent" 15 || fail "the mail taken during the drain was not delivered"

# --- a stop while both are in flight, then a start ---
inflight stop 2
ctl stop >/dev/null || fail "mtactl stop failed"
gone "$MASTER_PID" 15 || fail "master did not stop"
cp "$LOG" "$W/stop.log"
grep -q "qmgr.*stopping: waiting for the reports of [0-9]* deliver" "$W/stop.log" || fail "qmgr did not wait at the stop"
grep -q "did not stop in time" "$W/stop.log" && fail "a process was killed at the stop"
start_master
once stop 2 "$W/stop.log"
[ "$(sent "far-stop@remote.example" "$LOG")" -eq 0 ] || fail "stop: sent again after the start"
[ -z "$LOCAL" ] || [ "$(sent slowcmd@localhost "$LOG")" -eq 0 ] || fail "stop: the command ran again after the start"
exit 0
