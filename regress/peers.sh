# Shared by the relay cases (after lib.sh): the two peers we did not write,
# Postfix's smtp-sink and Python's aiosmtpd (sink.py), on the port after
# the case's, and helpers to send mail and wait for the queue.
[ -n "${SMTP_SOURCE:-}" ] || { echo "  skipped: no smtp-sink (SMTP_SOURCE names smtp-source beside it)"; exit 0; }
SMTP_SINK="$(dirname "$SMTP_SOURCE")/smtp-sink"
[ -x "$SMTP_SINK" ] || { echo "  skipped: no $SMTP_SINK"; exit 0; }
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || fail "python3-aiosmtpd is not installed"
RELAY=$((PORT + 1))
SINK_PID=""
DUMP=$(mktemp -d /tmp/mta-sink.XXXXXX)
chmod 1777 "$DUMP"
stop_sink() {
	[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && { i=0; while kill -0 "$SINK_PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done; }
	SINK_PID=""
}
trap 'set +e; stop_sink; rm -rf "$DUMP"; cleanup' EXIT
# smtp_sink [options]: Postfix's smtp-sink on the relay port, dumping each
# message into $DUMP.
smtp_sink() {
	stop_sink
	if is_root; then set -- -u nobody "$@"; fi
	LD_LIBRARY_PATH="$(dirname "$SMTP_SOURCE")/../lib/postfix" "$SMTP_SINK" "$@" -d "$DUMP/%M." "127.0.0.1:$RELAY" 50 \
		>"$W/sink.log" 2>&1 &
	SINK_PID=$!
	wait_for 5 port_open || fail "smtp-sink did not start: $(cat "$W/sink.log")"
}
aio_sink() {
	stop_sink
	mkdir -p "$W/aio"
	/usr/bin/python3 ./sink.py "$RELAY" "$W/aio" >"$W/aio.log" 2>&1 &
	SINK_PID=$!
	wait_for 5 port_open || fail "aiosmtpd did not start: $(cat "$W/aio.log")"
}
port_open() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$RELAY" 2>/dev/null; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds.
empty() { settled 0; }
send() { # send FROM TO[,TO...] SUBJECT [swaks options]
	f=$1 t=$2 s=$3; shift 3
	swaks --server 127.0.0.1:$PORT --from "$f" --to "$t" --header "Subject: $s" "$@" >"$W/swaks" 2>&1 ||
		{ cat "$W/swaks"; fail "swaks: $s"; }
}
queue_id() { # queue_id SUBJECT: the ID of the queued message with that subject
	# (files move between the queue directories meanwhile: look again; a
	# message delivered from memory gets its file only when its delivery
	# stalls, queue.memory_time after its commit: 2 s by default)
	n=0
	while [ $n -lt 100 ]; do
		f=$(queue_files | xargs grep -l -- "Subject: $1" 2>/dev/null | head -1)
		[ -n "$f" ] && { basename "$f"; return 0; }
		sleep 0.1; n=$((n + 1))
	done
	return 1
}


# Mail under load, for the cases that kill processes while it flows:
# load_start: four smtplib clients send for 6 s, each message with its
# own token as Subject:, and write the tokens of those acknowledged to
# $W/acked at the end (reconnecting after a refused or lost session);
# sets LOAD_PID.
load_start() {
	/usr/bin/python3 - "$PORT" "$W/acked" <<'PY' &
import smtplib, sys, threading, time
port, out = int(sys.argv[1]), sys.argv[2]
acked, lock = [], threading.Lock()
end = time.time() + 6
def client(c):
    n = 0
    while time.time() < end:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                while time.time() < end:
                    n += 1
                    tok = "tok-%d-%d" % (c, n)
                    msg = "From: s@remote.example\r\nSubject: %s\r\n\r\nbody %s\r\n" % (tok, tok)
                    s.sendmail("s@remote.example", ["r@remote.example"], msg)
                    with lock:
                        acked.append(tok)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)
ts = [threading.Thread(target=client, args=(c,)) for c in range(4)]
for t in ts: t.start()
for t in ts: t.join()
open(out, "w").write("".join(t + "\n" for t in acked))
PY
	LOAD_PID=$!
}

# kill_role ROLE: SIGKILL its process; until master logged it and
# started another.
kill_role() {
	pid=$(child_pid "$1")
	[ -n "$pid" ] || fail "no $1 to kill"
	kill -KILL "$pid"
	wait_log "$1 pid $pid killed by SIGKILL" 10 || fail "$1's death not logged"
	i=0; while [ "$(child_pid "$1")" = "$pid" ] || [ -z "$(child_pid "$1")" ]; do
		[ $i -gt 100 ] && fail "$1 not restarted"; sleep 0.1; i=$((i + 1)); done
}

# kill_role_twice ROLE: kill_role ROLE 1.5 s into the load and again 2 s
# after its successor started; sets KILLS to 2.
kill_role_twice() {
	KILLS=0
	for pause in 1.5 2; do
		sleep "$pause"
		kill_role "$1"
		KILLS=$((KILLS + 1))
	done
}

# load_check TWICE: once the load ended and the queue is empty, every
# acknowledged token is in smtp-sink's dump, and at most TWICE messages
# arrived twice.
load_check() {
	wait "$LOAD_PID" || fail "the sender failed"
	wait_for 60 empty || fail "the queue did not empty: $(ctl queue)"
	sleep 1
	/usr/bin/python3 - "$W/acked" "$DUMP" "$1" <<'PY' || fail "mail lost or delivered twice"
import collections, glob, re, sys
acked = open(sys.argv[1]).read().split()
seen = collections.Counter()
for f in glob.glob(sys.argv[2] + "/*"):
    m = re.search(rb"Subject: (tok-\d+-\d+)", open(f, "rb").read())
    if m:
        seen[m.group(1).decode()] += 1
lost = [t for t in acked if seen[t] == 0]
twice = sum(n - 1 for n in seen.values() if n > 1)
print("  %d acknowledged, %d delivered, %d lost, %d delivered twice" % (len(acked), len(seen), len(lost), twice))
assert len(acked) > 200, "too little mail to prove anything"
assert not lost, lost[:10]
assert twice <= int(sys.argv[3]), "delivered twice: %d" % twice
PY
}
