# Shared by the regress cases. Each case gets a fresh folder $W with a
# configuration, starts master there and cleans up on exit.
set -eu
: "${MTA_BIN:?MTA_BIN must name the folder of the built programs}"
MTA="$MTA_BIN/mta"
MTACTL="$MTA_BIN/mtactl"
W=$(mktemp -d /tmp/mta-regress.XXXXXX)
chmod 755 "$W"
CONF="$W/mta.conf"
# An SMTP port for this case on loopback, below Linux's ephemeral ports
# (32768 and up): a client's source port there once made the bind fail.
# Cases use up to PORT+3.
PORT=$(( 20000 + $$ % 12000 ))
# The children master starts.
NCHILD=10
LOG="$W/mta.log"
MASTER_PID=""

fail() { echo "FAIL: $*"; [ -f "$LOG" ] && { echo "--- master log:"; cat "$LOG"; }; exit 1; }
note() { echo "  $*"; }

cleanup() {
	if [ -n "$MASTER_PID" ] && kill -0 "$MASTER_PID" 2>/dev/null; then
		kill -TERM "$MASTER_PID" 2>/dev/null || true
		i=0; while kill -0 "$MASTER_PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$MASTER_PID" 2>/dev/null || true
	fi
	rm -rf "$W"
}
trap cleanup EXIT

# write_conf [extra UCL lines...]
write_conf() {
	{
		echo "spool = \"spool\";"
		echo "libexec_directory = \"${LIBEXEC:-$MTA_BIN}\";"
		echo "pidfile = \"mta.pid\";"
		echo "control { socket = \"mta.sock\"; }"
		echo "listen { smtp { address = \"127.0.0.1:$PORT\"; tls = none; } }"
		echo "supervise { restart_delay = 1s; restart_delay_max = 8s; stop_timeout = 5s; }"
		# No case asks the system's resolver: mail for other domains
		# fails its lookup at once and waits in deferred/. A case with a
		# name server of its own names it in DNS_SERVER (dns_mx). smtpd's
		# reverse lookups ask nobody: the resolver names loopback clients
		# itself (RFC 6761: localhost).
		echo "dns { servers = [ \"${DNS_SERVER:-127.0.0.1:9}\" ]; timeout = 1s; attempts = 1; }"
		for l in "$@"; do echo "$l"; done
	} > "$CONF"
}

# start_master: master in the foreground (-d), log in $LOG, waits until
# both children run.
start_master() {
	"$MTA" -d -f "$CONF" >"$LOG" 2>&1 &
	MASTER_PID=$!
	wait_status $NCHILD || fail "children did not start"
}

# mtactl by socket (a case may break the configuration file on purpose).
ctl() { "$MTACTL" -s "$W/mta.sock" "$@"; }

# wait_status N: until status lists N running children (10 s at most).
wait_status() {
	i=0
	while [ $i -lt 100 ]; do
		n=$(ctl status 2>/dev/null | awk '$NF == "running"' | wc -l)
		[ "$n" -ge "$1" ] && return 0
		sleep 0.1; i=$((i + 1))
	done
	return 1
}

# child_pid ROLE: the pid of the running ROLE process.
child_pid() { ctl status | awk -v r="$1" '$1 == r && $NF == "running" { print $2 }' | head -1; }

# wait_log PATTERN [SECONDS]: until the master log has a line matching PATTERN.
wait_log() {
	i=0; lim=$(( ${2:-10} * 10 ))
	while [ $i -lt $lim ]; do
		grep -q -- "$1" "$LOG" 2>/dev/null && return 0
		sleep 0.1; i=$((i + 1))
	done
	return 1
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds (false after SECONDS).
wait_for() {
	lim=$(( $1 * 10 )); shift; i=0
	until "$@"; do [ $i -ge $lim ] && return 1; sleep 0.1; i=$((i + 1)); done
}

# damage_queued TEXT: change the first byte of TEXT in the queue file
# that holds it (incoming/, active/, hold/ or deferred/; not journal/,
# whose segments hold a copy of each message too), to its upper case,
# within 5 s. Its content's CRC no longer matches.
damage_queued() {
	python3 - "$W/spool" "$1" <<'PY'
import glob, sys, time
text = sys.argv[2].encode()
for _ in range(50):
    for f in [g for d in ("incoming", "active", "hold", "deferred/*") for g in glob.glob(sys.argv[1] + "/" + d + "/*")]:
        try:
            with open(f, "r+b") as q:
                at = q.read().find(text)
                if at >= 0:
                    q.seek(at)
                    q.write(text[:1].upper())
                    sys.exit(0)
        except OSError:
            pass
    time.sleep(0.1)
sys.exit(1)
PY
}

# mkuser NAME [MODE]: a fresh user NAME whose home is $W/home/NAME (mode
# MODE, 700 by default); the case removes it on exit.
mkuser() {
	id "$1" >/dev/null 2>&1 && userdel "$1" >/dev/null 2>&1
	mkdir -p "$W/home" && chmod 755 "$W/home"
	useradd -M -d "$W/home/$1" -s /bin/sh "$1" || fail "useradd $1"
	mkdir -p "$W/home/$1" && chown "$1:" "$W/home/$1" && chmod "${2:-700}" "$W/home/$1"
}

# mbox_count PATH: the messages in an mbox, read by Python's mailbox; 0
# when there is none (create=False: never made by the test, as root).
mbox_count() { /usr/bin/python3 -c 'import mailbox, sys; print(len(mailbox.mbox(sys.argv[1], create=False)))' "$1" 2>/dev/null || echo 0; }

# gone PID [SECONDS]: until PID no longer exists.
gone() {
	i=0; lim=$(( ${2:-10} * 10 ))
	while kill -0 "$1" 2>/dev/null; do
		[ $i -ge $lim ] && return 1
		sleep 0.1; i=$((i + 1))
	done
	return 0
}

ensure_user() {
	id "$1" >/dev/null 2>&1 || useradd -r -d /nonexistent -s /usr/sbin/nologin "$1"
}
is_root() { [ "$(id -u)" = 0 ]; }

# queue_files: every message file in the queue (incoming, active, the
# hashed subfolders of deferred, hold).
queue_files() { find "$W/spool/incoming" "$W/spool/active" "$W/spool/deferred" "$W/spool/hold" -type f ! -name '.*' 2>/dev/null; }

# queued: how many messages are in the queue directories.
queued() { queue_files | wc -l; }

# settled N: exactly N messages queued in two listings 0.2 s apart (qmgr
# may be moving a file between its directories, and one listing taken
# meanwhile can miss it or see it twice).
settled() { [ "$(queued)" -eq "$1" ] && sleep 0.2 && [ "$(queued)" -eq "$1" ]; }

# wait_queued N: until exactly N messages are settled in the queue (60 s
# at most).
wait_queued() { wait_for 60 settled "$1"; }

# make_cert: a self-signed certificate and key in $W for TLS cases.
make_cert() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
		-keyout "$W/key.pem" -out "$W/cert.pem" >/dev/null 2>&1 || fail "openssl could not make a certificate"
}

# raw_smtp: run Python with rawsmtp.py importable and PORT, W in the environment.
raw_smtp() { PORT=$PORT W=$W PYTHONPATH=. python3 - "$@"; }

# private_mta_conf [extra UCL lines...]: for cases running sendmail or
# postdrop, which read the compiled-in /etc/mta/mta.conf. The case has
# re-executed itself in a private mount namespace (MTA_IN_NS); a tmpfs
# there holds its CONF (absolute paths into $W and the staged libexec),
# and the staged postdrop is made set-gid to the submission group, as a
# package installs it.
private_mta_conf() {
	[ -n "${MTA_IN_NS:-}" ] || fail "private_mta_conf outside a private mount namespace"
	mkdir -p /etc/mta
	mount -t tmpfs -o mode=755 tmpfs /etc/mta
	CONF=/etc/mta/mta.conf
	{
		echo "spool = \"$W/spool\";"
		echo "libexec_directory = \"$MTA_STAGE/libexec/mta\";"
		echo "pidfile = \"$W/mta.pid\";"
		echo "control { socket = \"$W/mta.sock\"; }"
		echo "listen { smtp { address = \"127.0.0.1:$PORT\"; tls = none; } }"
		echo "dns { servers = [ \"127.0.0.1:9\" ]; timeout = 1s; attempts = 1; }"
		for l in "$@"; do echo "$l"; done
	} > "$CONF"
	POSTDROP="$MTA_STAGE/libexec/mta/postdrop"
	chgrp _mtadrop "$POSTDROP" && chmod 2755 "$POSTDROP" || fail "cannot make postdrop set-gid"
}

# As root, master runs children as _mta and maildrop/ belongs to _mtadrop.
ensure_group() {
	getent group "$1" >/dev/null 2>&1 || groupadd -r "$1"
}
if is_root; then ensure_user _mta; ensure_group _mtadrop; fi

# fake_roles ROLE...: a libexec folder in $W/libexec where each ROLE is
# fake_child.py (a misbehaving child) and every other role our program,
# and a configuration naming it.
fake_roles() {
	mkdir "$W/libexec"
	for p in control qmgr smtpd cleanup pickup connector smtp bounce local lookup; do
		case " $* " in
		*" $p "*) cp fake_child.py "$W/libexec/$p"; chmod 755 "$W/libexec/$p" ;;
		*) ln -s "$MTA_BIN/$p" "$W/libexec/$p" ;;
		esac
	done
	LIBEXEC="$W/libexec" write_conf
}
