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

