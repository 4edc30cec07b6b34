# Packaging: the rc scripts, the FreeBSD and OpenBSD ports and the
# mailer.conf files, against the staged install ($MTA_STAGE) and the built
# programs.
#
# - Both rc scripts pass sh -n and shellcheck, and the ports carry exact
#   copies of them. The FreeBSD script, with a stand-in for rc.subr(8),
#   runs its configuration test for real: the sample configuration passes,
#   a broken one fails, mta_flags and mta_config reach the command; then
#   start, status, reload and stop drive a real master through the
#   script's command, pidfile and precmds, and a broken configuration makes
#   reload and restart fail with the running master left alone. The
#   OpenBSD script, with a stand-in for its rc.subr: rc_configtest passes
#   and fails likewise, pexp matches the master and none of its children,
#   rc_reload reloads it.
# - The staged install's files are exactly pkg-plist's (man pages moved to
#   share/man and gzipped, as the port's MANDIR and the framework do) and
#   the OpenBSD PLIST's (the sample under share/examples), and a stage made
#   with the ports' own make install arguments holds exactly what the
#   lists name; every file has its documented mode (0755 programs, 0711 local, 0444
#   man pages, 0644 sample), nothing is set-id; pkg-plist and PLIST make
#   postdrop set-gid _mtadrop (2555) and nothing else set-id.
# - scripts/cargo-crates --check passes, and fails for a list out of step.
# - Every mailer.conf (etc/mailer.conf, the port's, the lines in
#   pkg-message and in the OpenBSD README) maps the same names to programs
#   the staged install has, or to /usr/bin/true.
# - As root: the staged mailq, reached through that mapping, prints what
#   FreeBSD's periodic/daily/440.status-mailq expects (an empty queue is
#   reported as empty, a queued message shows with its recipient).
#
# When an installed file is added (a new program and its page), update
# the lists this case checks:
#   port/freebsd/mail/mta/pkg-plist      (and, for a program in sbin, the
#                                         strip line of port/freebsd/mail/mta/Makefile)
#   port/openbsd/mail/mta/pkg/PLIST
# and, for a program in sbin or libexec, the list of programs in the mode
# check below (programs).
[ -n "${MTA_STAGE:-}" ] || { echo "  skipped: no staged install (MTA_STAGE)"; exit 0; }
if [ "$(id -u)" = 0 ] && [ -z "${MTA_IN_NS:-}" ]; then
	# The mailq check needs the compiled-in /etc/mta/mta.conf to be ours:
	# a private mount namespace.
	MTA_IN_NS=1 exec unshare -m --propagation private sh ${MTA_TRACE:+-x} "$0"
fi
. ./lib.sh
ROOT=$(cd .. && pwd)
FRC="$ROOT/rc.d/mta.in"
ORC="$ROOT/rc.d/mta.openbsd"
FPORT="$ROOT/port/freebsd/mail/mta"
OPORT="$ROOT/port/openbsd/mail/mta"
STAGE_MTA="$MTA_STAGE/sbin/mta"
[ -x "$STAGE_MTA" ] || fail "no $STAGE_MTA: MTA_STAGE must be a staged install's PREFIX"

# ---------------------------------------------------------------------------
# The rc scripts: syntax, shellcheck, the ports' copies, rcorder header.
for f in "$FRC" "$ORC"; do
	sh -n "$f" || fail "sh -n $f"
done
command -v shellcheck >/dev/null 2>&1 || fail "shellcheck is not installed (scripts/test installs it)"
shellcheck -s sh "$FRC" "$ORC" "$ROOT/scripts/cargo-crates" || fail "shellcheck"
cmp -s "$FRC" "$FPORT/files/mta.in" || fail "port/freebsd/mail/mta/files/mta.in is not a copy of rc.d/mta.in"
cmp -s "$ORC" "$OPORT/pkg/mta.rc" || fail "port/openbsd/mail/mta/pkg/mta.rc is not a copy of rc.d/mta.openbsd"
grep -qx '# PROVIDE: mta mail' "$FRC" || fail "rcorder PROVIDE"
grep -qx '# REQUIRE: LOGIN' "$FRC" || fail "rcorder REQUIRE"
grep -qx '# KEYWORD: shutdown' "$FRC" || fail "rcorder KEYWORD"
grep -q '^USE_RC_SUBR=[[:space:]]*mta$' "$FPORT/Makefile" || fail "the FreeBSD port does not install the rc script"

# ---------------------------------------------------------------------------
# The FreeBSD script, %%PREFIX%% being the stage, with a stand-in for
# rc.subr: the rc.conf variables come from the environment, and
# run_rc_command does what rc.subr does for the commands used here, from
# the script's own variables (command, command_args, pidfile,
# required_files, extra_commands, *_precmd, configtest_cmd, sig_reload).
cat > "$W/rc.subr.freebsd" <<'EOF'
load_rc_config() { :; }
# pid_of: the pid in $pidfile if that process runs $command (rc.subr's
# check_pidfile matches argv[0] against procname, which is command).
pid_of() {
	[ -r "$pidfile" ] || return 1
	_p=$(head -1 "$pidfile")
	[ -r "/proc/$_p/cmdline" ] || return 1
	[ "$(tr '\0' '\n' < "/proc/$_p/cmdline" | head -1)" = "$command" ] || return 1
	echo "$_p"
}
has_extra() { case " $extra_commands " in *" $1 "*) return 0;; esac; echo "$1 is not in extra_commands"; return 1; }
run_rc_command() {
	eval "rc_flags=\${${name}_flags}"
	eval "_pre=\${${1}_precmd:-}"
	case "$1" in
	_vars)
		printf '%s=%s\n' rcvar "$rcvar" command "$command" command_args "$command_args" \
			pidfile "$pidfile" required_files "$required_files" sig_reload "$sig_reload" \
			start_precmd "$start_precmd" restart_precmd "$restart_precmd" reload_precmd "$reload_precmd" ;;
	configtest)
		has_extra configtest && eval "$configtest_cmd" ;;
	start)
		for _f in $required_files; do [ -r "$_f" ] || { echo "$_f is missing"; return 1; }; done
		if [ -n "$_pre" ]; then eval "$_pre" || return 1; fi
		# shellcheck disable=SC2086
		$command $rc_flags $command_args ;;
	status)
		if _p=$(pid_of); then echo "$name is running as pid $_p."; else echo "$name is not running."; return 1; fi ;;
	reload)
		has_extra reload || return 1
		_p=$(pid_of) || { echo "$name is not running."; return 1; }
		if [ -n "$_pre" ]; then eval "$_pre" || return 1; fi
		kill "-${sig_reload:-HUP}" "$_p" ;;
	stop)
		_p=$(pid_of) || { echo "$name is not running."; return 1; }
		kill -TERM "$_p"
		_i=0; while kill -0 "$_p" 2>/dev/null; do [ $_i -ge 100 ] && return 1; sleep 0.1; _i=$((_i + 1)); done ;;
	restart)
		if [ -n "$_pre" ]; then eval "$_pre" || return 1; fi
		run_rc_command stop || return 1
		run_rc_command start ;;
	*) echo "stand-in rc.subr: $1 not handled"; return 1 ;;
	esac
}
EOF
sed -e "s|%%PREFIX%%|$MTA_STAGE|g" -e "s|^\. /etc/rc\.subr\$|. $W/rc.subr.freebsd|" "$FRC" > "$W/rc.freebsd"
grep -q "^\. $W/rc.subr.freebsd\$" "$W/rc.freebsd" || fail "rc.d/mta.in does not source /etc/rc.subr"
# frc [VAR=value...] COMMAND: the FreeBSD script, no rc.conf knob set but those.
frc() {
	env -u mta_config -u mta_flags -u mta_pidfile -u mta_enable "$@"
}
vars=$(frc sh "$W/rc.freebsd" _vars) || fail "rc.d/mta.in: $vars"
echo "$vars"
var() { echo "$vars" | sed -n "s|^$1=||p"; }
[ "$(var rcvar)" = mta_enable ] || fail "rcvar is not mta_enable"
[ "$(var command)" = "$STAGE_MTA" ] || fail "command is not PREFIX/sbin/mta"
[ "$(var command_args)" = "-f $MTA_STAGE/etc/mta/mta.conf" ] || fail "command_args without the default mta_config"
[ "$(var required_files)" = "$MTA_STAGE/etc/mta/mta.conf" ] || fail "required_files is not mta_config"
default_pid=$(sed -n 's|^# *pidfile = "\(.*\)";.*|\1|p' "$ROOT/etc/mta.conf.sample")
[ -n "$default_pid" ] || fail "no pidfile default in etc/mta.conf.sample"
[ "$(var pidfile)" = "$default_pid" ] || fail "pidfile $(var pidfile) is not mta's default $default_pid"
[ "$(var sig_reload)" = HUP ] || fail "reload is not by SIGHUP"
for p in start_precmd restart_precmd reload_precmd; do
	[ -n "$(var $p)" ] || fail "no $p"
done
vars=$(frc mta_config=/x/y.conf sh "$W/rc.freebsd" _vars)
[ "$(var command_args)" = "-f /x/y.conf" ] || fail "mta_config does not reach command_args"
[ "$(var required_files)" = "/x/y.conf" ] || fail "mta_config does not reach required_files"

# The configuration test, for real: the sample passes (the source's and the
# staged one), a broken file fails, and so does a bad flag in mta_flags.
# mta -n checks the child programs as a start would, so the samples are
# taken with libexec_directory naming the staged ones (their default names
# where a package puts them), and fail without it.
as_installed() { # sample copy
	sed "s|^# libexec_directory = .*|libexec_directory = \"$MTA_STAGE/libexec/mta\";|" "$1" > "$2"
	grep -q "^libexec_directory = \"$MTA_STAGE/libexec/mta\";" "$2" || fail "$1: no libexec_directory line"
}
as_installed "$ROOT/etc/mta.conf.sample" "$W/sample.conf"
as_installed "$MTA_STAGE/etc/mta/mta.conf.sample" "$W/staged-sample.conf"
out=$(frc mta_config="$W/sample.conf" sh "$W/rc.freebsd" configtest 2>&1) || fail "configtest of the sample failed: $out"
out=$(frc mta_config="$W/staged-sample.conf" sh "$W/rc.freebsd" configtest 2>&1) || fail "configtest of the staged sample failed: $out"
out=$(frc mta_config="$W/sample.conf" mta_flags=-v sh "$W/rc.freebsd" configtest 2>&1) || fail "configtest with mta_flags=-v failed: $out"
sed "s|^libexec_directory = .*|libexec_directory = \"$W/nowhere\";|" "$W/sample.conf" > "$W/noprograms.conf"
out=$(frc mta_config="$W/noprograms.conf" sh "$W/rc.freebsd" configtest 2>&1) && fail "configtest passed a configuration whose programs are missing: $out"
echo "$out" | grep -q "$W/nowhere/control" || fail "configtest does not name the missing program: $out"
{ cat "$ROOT/etc/mta.conf.sample"; echo 'no_such_key = 1;'; } > "$W/broken.conf"
out=$(frc mta_config="$W/broken.conf" sh "$W/rc.freebsd" configtest 2>&1) && fail "configtest passed a broken configuration: $out"
echo "$out" | grep -q "no_such_key" || fail "configtest does not name the bad key: $out"
out=$(frc mta_config="$W/sample.conf" mta_flags=-Z sh "$W/rc.freebsd" configtest 2>&1) && fail "mta_flags does not reach the configuration test: $out"
out=$(frc mta_config="$W/broken.conf" sh "$W/rc.freebsd" start 2>&1) && fail "start with a broken configuration: $out"
[ -e "$W/mta.pid" ] && fail "a master started with a broken configuration"

# A real master through the script: start, status, reload, a broken
# configuration (reload and restart refused, master untouched), restart,
# stop.
LIBEXEC="$MTA_STAGE/libexec/mta" write_conf
cp "$CONF" "$W/good.conf"
fb() { frc mta_config="$CONF" mta_pidfile="$W/mta.pid" sh "$W/rc.freebsd" "$@"; }
# started: the pid in the pid file once the children run.
started() {
	i=0; until [ -s "$W/mta.pid" ]; do [ $i -gt 100 ] && return 1; sleep 0.1; i=$((i + 1)); done
	wait_status $NCHILD || return 1
	cat "$W/mta.pid"
}
generation() { ctl status | sed -n 's/.*master pid [0-9]*.*generation \([0-9]*\).*/\1/p' | head -1; }
out=$(fb start 2>&1) || fail "start: $out"
MASTER_PID=$(started) || fail "start: no master"
out=$(fb status) || fail "status: $out"
echo "$out" | grep -q "running as pid $MASTER_PID\." || fail "status: $out"
g=$(generation); [ -n "$g" ] || fail "no generation in: $(ctl status)"
out=$(fb reload 2>&1) || fail "reload: $out"
i=0; until [ "$(generation)" = $((g + 1)) ]; do [ $i -gt 100 ] && fail "reload: no new generation"; sleep 0.1; i=$((i + 1)); done
g=$((g + 1))
cp "$W/broken.conf" "$CONF"
out=$(fb reload 2>&1) && fail "reload with a broken configuration: $out"
out=$(fb restart 2>&1) && fail "restart with a broken configuration: $out"
kill -0 "$MASTER_PID" 2>/dev/null || fail "a broken configuration took the master down"
[ "$(cat "$W/mta.pid")" = "$MASTER_PID" ] || fail "the pid file changed"
sleep 0.5
[ "$(generation)" = "$g" ] || fail "a broken configuration changed the generation"
cp "$W/good.conf" "$CONF"
old=$MASTER_PID
out=$(fb restart 2>&1) || fail "restart: $out"
gone "$old" 1 || fail "restart: the old master runs"
MASTER_PID=$(started) || fail "restart: no master"
[ "$MASTER_PID" != "$old" ] || fail "restart: the same master"
out=$(fb stop 2>&1) || fail "stop: $out"
gone "$MASTER_PID" 1 || fail "stop: the master runs"
MASTER_PID=""
[ -e "$W/mta.pid" ] && fail "stop: pid file left"
fb status >/dev/null 2>&1 && fail "status says running after stop"

# ---------------------------------------------------------------------------
# The OpenBSD script, ${TRUEPREFIX} being the stage, with a stand-in for
# its rc.subr: daemon_flags from mta_flags (rc.conf.local), rc_cmd runs
# the script's rc_configtest before start and reload, as rc.subr does.
# Linux pgrep/pkill have no -T (routing table): the stand-in drops it.
cat > "$W/rc.subr.openbsd" <<'EOF'
daemon_flags=${mta_flags:-$daemon_flags}
# rc.subr's own default, as OpenBSD's sets it.
# shellcheck disable=SC2116,SC2086
pexp="$(eval echo ${daemon}${daemon_flags:+ ${daemon_flags}})"
daemon_rtable=0
pkill() {
	_n=$#
	while [ "$_n" -gt 0 ]; do
		if [ "$1" = -T ]; then shift 2; _n=$((_n - 2)); continue; fi
		set -- "$@" "$1"; shift; _n=$((_n - 1))
	done
	command pkill "$@"
}
rc_cmd() {
	case "$1" in
	configtest) rc_configtest ;;
	check) pgrep -xf "$pexp" ;;
	start) rc_configtest || return 1
		# shellcheck disable=SC2086
		${daemon} ${daemon_flags} ;;
	reload) rc_configtest || return 1
		pgrep -xf "$pexp" >/dev/null || return 1
		rc_reload ;;
	stop) pkill -xf "$pexp" ;;
	*) echo "stand-in rc.subr: $1 not handled"; return 1 ;;
	esac
}
EOF
sed -e "s|\${TRUEPREFIX}|$MTA_STAGE|g" -e "s|^\. /etc/rc\.d/rc\.subr\$|. $W/rc.subr.openbsd|" "$ORC" > "$W/rc.openbsd"
grep -q "^\. $W/rc.subr.openbsd\$" "$W/rc.openbsd" || fail "rc.d/mta.openbsd does not source /etc/rc.d/rc.subr"
grep -q "^daemon=\"$STAGE_MTA\"\$" "$W/rc.openbsd" || fail "daemon is not \${TRUEPREFIX}/sbin/mta"
ob() { env -u mta_flags "$@"; }
out=$(ob mta_flags="-f $W/sample.conf" sh "$W/rc.openbsd" configtest 2>&1) || fail "rc_configtest of the sample: $out"
out=$(ob mta_flags="-f $W/broken.conf" sh "$W/rc.openbsd" configtest 2>&1) && fail "rc_configtest passed a broken configuration: $out"
out=$(ob mta_flags="-f $W/broken.conf" sh "$W/rc.openbsd" start 2>&1) && fail "start with a broken configuration: $out"
[ -e "$W/mta.pid" ] && fail "a master started with a broken configuration"
out=$(ob mta_flags="-f $CONF" sh "$W/rc.openbsd" start 2>&1) || fail "start: $out"
MASTER_PID=$(started) || fail "start: no master"
pids=$(ob mta_flags="-f $CONF" sh "$W/rc.openbsd" check) || fail "check finds no master"
[ "$pids" = "$MASTER_PID" ] || fail "pexp matches $(echo $pids) instead of the master $MASTER_PID alone"
[ "$(ctl status | awk '$NF == "running"' | wc -l)" -ge $NCHILD ] || fail "children not running while checking pexp"
g=$(generation)
out=$(ob mta_flags="-f $CONF" sh "$W/rc.openbsd" reload 2>&1) || fail "reload: $out"
i=0; until [ "$(generation)" = $((g + 1)) ]; do [ $i -gt 100 ] && fail "rc_reload: no new generation"; sleep 0.1; i=$((i + 1)); done
cp "$W/broken.conf" "$CONF"
out=$(ob mta_flags="-f $CONF" sh "$W/rc.openbsd" reload 2>&1) && fail "reload with a broken configuration: $out"
sleep 0.5
[ "$(generation)" = $((g + 1)) ] || fail "a broken configuration changed the generation"
kill -0 "$MASTER_PID" || fail "a broken configuration took the master down"
cp "$W/good.conf" "$CONF"
ob mta_flags="-f $CONF" sh "$W/rc.openbsd" stop || fail "stop"
gone "$MASTER_PID" 10 || fail "stop: the master runs"
MASTER_PID=""

# ---------------------------------------------------------------------------
# The file lists. stage_files DIR: every file and link under DIR.
stage_files() { (cd "$1" && find . ! -type d | sed 's|^\./||' | LC_ALL=C sort); }
stage_files "$MTA_STAGE" > "$W/stage.list"
[ -s "$W/stage.list" ] || fail "empty stage"

# pkg-plist: the files it names (PREFIX-relative; %%DATADIR%% is
# share/mta), its set-id entries, and keywords it should not have.
awk -v out="$W/fbsd.setid" '
	/^[[:space:]]*$/ || /^@comment / { next }
	/^@sample / { print $2; next }
	/^@\(/ { print $0 > out; sub(/^@\([^)]*\) /, ""); print; next }
	/^@/ { print "unexpected keyword: " $0; next }
	{ sub(/^%%DATADIR%%/, "share/mta"); print }
' "$FPORT/pkg-plist" | LC_ALL=C sort > "$W/fbsd.list"
grep -q '^unexpected' "$W/fbsd.list" && fail "pkg-plist: $(grep '^unexpected' "$W/fbsd.list")"
[ "$(cat "$W/fbsd.setid")" = "$(printf '%s\n' '@(,,0711) libexec/mta/local' '@(,_mtadrop,2555) libexec/mta/postdrop')" ] ||
	fail "pkg-plist's entries with a mode are not local 0711 and postdrop 2555 group _mtadrop alone: $(cat "$W/fbsd.setid")"
grep -qx 'etc/rc.d/mta' "$W/fbsd.list" && fail "pkg-plist lists the rc script, which USE_RC_SUBR adds"
grep -qx '@sample etc/mta/mta.conf.sample' "$FPORT/pkg-plist" || fail "pkg-plist: no @sample etc/mta/mta.conf.sample"
# What the port adds to the project's install (its do-install).
port_extra_fbsd='share/mta/mailer.conf.mta'
# The stage mapped to the port's layout: MANDIR=${PREFIX}/share/man, and
# the framework gzips the pages.
{ sed -e 's|^man/\(.*\)$|share/man/\1.gz|' "$W/stage.list"; echo "$port_extra_fbsd"; } | LC_ALL=C sort > "$W/stage.fbsd"
diff -u "$W/fbsd.list" "$W/stage.fbsd" || fail "pkg-plist (-) differs from the staged install (+)"

# The OpenBSD PLIST: files (with how each is listed and its mode and
# group), directories, and the keywords that matter.
awk -v files="$W/obsd.files" -v dirs="$W/obsd.dirs" '
	/^[[:space:]]*$/ || /^@comment / { next }
	/^@mode/ { mode = $2; next }
	/^@group/ { group = $2; next }
	/^@owner/ { owner = $2; next }
	/^@(newuser|newgroup|rcscript|sample|conflict) / { next }
	/^@(bin|man) / { print $2, $1, (mode ? mode : "-"), (group ? group : "-"), (owner ? owner : "-") > files; next }
	/^@/ { print "unexpected keyword: " $0 > files; next }
	/\/$/ { print > dirs; next }
	{ print $1, "plain", (mode ? mode : "-"), (group ? group : "-"), (owner ? owner : "-") > files }
' "$OPORT/pkg/PLIST"
grep -q '^unexpected' "$W/obsd.files" && fail "PLIST: $(grep '^unexpected' "$W/obsd.files")"
awk '{ print $1 }' "$W/obsd.files" | LC_ALL=C sort > "$W/obsd.list"
sed -e 's|^etc/mta/|share/examples/mta/|' "$W/stage.list" | LC_ALL=C sort > "$W/stage.obsd"
diff -u "$W/obsd.list" "$W/stage.obsd" || fail "PLIST (-) differs from the staged install (+)"
# The directories the package owns: its own folders.
printf 'libexec/mta/\nshare/examples/mta/\n' | diff -u - "$W/obsd.dirs" || fail "PLIST directories"
[ "$(awk '$3 != "-" || $4 != "-" || $5 != "-"' "$W/obsd.files")" = "$(printf '%s\n' 'libexec/mta/local @bin 0711 - -' 'libexec/mta/postdrop @bin 2555 _mtadrop -')" ] ||
	fail "PLIST: entries with a mode or owner are not local 0711 and postdrop 2555 group _mtadrop alone: $(awk '$3 != "-" || $4 != "-" || $5 != "-"' "$W/obsd.files")"
grep -qx '@rcscript ${RCDIR}/mta' "$OPORT/pkg/PLIST" || fail "PLIST: no @rcscript"
grep -qx '@conflict postfix-\*' "$OPORT/pkg/PLIST" || fail "PLIST: no @conflict with postfix (both install sbin/sendmail)"
grep -qx '@newgroup _mtadrop:[0-9]*' "$OPORT/pkg/PLIST" || fail "PLIST: no @newgroup _mtadrop"
grep -qx '@newgroup _mta:[0-9]*' "$OPORT/pkg/PLIST" || fail "PLIST: no @newgroup _mta"
grep -q '^@newuser _mta:[0-9]*:_mta:daemon:[^:]*:/nonexistent:/sbin/nologin$' "$OPORT/pkg/PLIST" || fail "PLIST: no @newuser _mta"
grep -A1 -x 'share/examples/mta/mta.conf.sample' "$OPORT/pkg/PLIST" | grep -qx '@sample ${SYSCONFDIR}/mta/mta.conf' ||
	fail "PLIST: mta.conf.sample is not followed by its @sample"
grep -B1 -x '@bin libexec/mta/postdrop' "$OPORT/pkg/PLIST" | grep -qx '@group _mtadrop' || fail "PLIST: postdrop's @group"
# How each file is listed: programs @bin, pages @man, the rest plain.
while read -r f how _; do
	s=$(echo "$f" | sed 's|^share/examples/mta/|etc/mta/|')
	if [ -L "$MTA_STAGE/$s" ]; then want=plain
	elif [ "$(od -An -tx1 -N4 "$MTA_STAGE/$s" | tr -d ' ')" = 7f454c46 ]; then want=@bin
	else case "$f" in man/*) want=@man;; *) want=plain;; esac
	fi
	[ "$how" = "$want" ] || fail "PLIST: $f is listed $how, not $want"
done < "$W/obsd.files"

# Modes in the staged install. The submission and sendmail cases make the
# staged postdrop set-gid _mtadrop (2755), as the package installs it; that
# is the one change tolerated here.
programs="sbin/mta sbin/mtactl sbin/sendmail libexec/mta/bounce libexec/mta/cleanup libexec/mta/connector libexec/mta/control libexec/mta/local libexec/mta/lookup libexec/mta/pickup libexec/mta/postdrop libexec/mta/qmgr libexec/mta/smtp libexec/mta/smtpd"
# check_modes DIR MAN SAMPLE POSTDROP_OK: every file of DIR has its mode.
check_modes() {
	stage_files "$1" | while read -r f; do
		p="$1/$f"
		m=$(stat -c %a "$p")
		# local runs as each recipient: not readable by them, so the
		# kernel makes it untraceable from its exec on (Linux).
		case " $programs " in *" $f "*) want=755; [ "$f" = libexec/mta/local ] && want=711;; *)
		case "$f" in
		sbin/mailq|sbin/newaliases)
			[ -L "$p" ] && [ "$(readlink "$p")" = sendmail ] || { echo "$f is not a link to sendmail"; continue; }
			continue ;;
		"$2"/man5/*.5*|"$2"/man8/*.8*) want=444 ;;
		"$3") want=644 ;;
		share/mta/mailer.conf.mta) want=644 ;;
		*) echo "$f: no documented mode"; continue ;;
		esac;;
		esac
		if [ "$m" != "$want" ]; then
			if [ "$4" = 1 ] && [ "$f" = libexec/mta/postdrop ] && [ "$m" = 2755 ] && [ "$(stat -c %G "$p")" = _mtadrop ]; then continue; fi
			echo "$f has mode $m, not $want"
		fi
	done
}
out=$(check_modes "$MTA_STAGE" man etc/mta/mta.conf.sample 1)
[ -z "$out" ] || fail "staged install: $out"
out=$(find "$MTA_STAGE" -perm /6000 ! -path "$MTA_STAGE/libexec/mta/postdrop")
[ -z "$out" ] || fail "set-id files in the stage: $out"
[ "$(echo "$programs" | wc -w)" -eq "$(grep -c -e '^sbin/' -e '^libexec/' "$W/stage.list" | awk '{ print $1 - 2 }')" ] ||
	fail "the staged programs are not the list of this case (programs)"

# A stage made with each port's own make install arguments (the programs
# as empty stand-ins), against its list without any mapping, modes strict.
mkdir "$W/bin"
for p in $programs; do : > "$W/bin/${p##*/}"; done
MAKE_CMD=$(command -v make || command -v bmake) || fail "no make"
# port_stage DEST ARGS...: the project's make install into DEST.
port_stage() {
	d=$1; shift
	(cd "$ROOT" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "$MAKE_CMD" -s install NOBUILD=1 TARGETDIR="$W/bin" DESTDIR="$d" PREFIX=/usr/local "$@") >/dev/null ||
		fail "make install $*"
}
port_stage "$W/fbsd-stage" MANDIR=/usr/local/share/man
grep -q 'MANDIR=${PREFIX}/share/man' "$FPORT/Makefile" || fail "the FreeBSD port's do-install does not set MANDIR=\${PREFIX}/share/man"
{ stage_files "$W/fbsd-stage/usr/local" | sed 's|^\(share/man/.*\)$|\1.gz|'; echo "$port_extra_fbsd"; } | LC_ALL=C sort | diff -u "$W/fbsd.list" - ||
	fail "pkg-plist (-) differs from the FreeBSD port's make install (+)"
out=$(check_modes "$W/fbsd-stage/usr/local" share/man etc/mta/mta.conf.sample 0)
[ -z "$out" ] || fail "FreeBSD port stage: $out"
port_stage "$W/obsd-stage" SYSCONFDIR=/usr/local/share/examples
grep -q 'SYSCONFDIR=${TRUEPREFIX}/share/examples' "$OPORT/Makefile" || fail "the OpenBSD port's do-install does not set SYSCONFDIR"
stage_files "$W/obsd-stage/usr/local" | diff -u "$W/obsd.list" - || fail "PLIST (-) differs from the OpenBSD port's make install (+)"
out=$(check_modes "$W/obsd-stage/usr/local" man share/examples/mta/mta.conf.sample 0)
[ -z "$out" ] || fail "OpenBSD port stage: $out"
out=$(find "$W/fbsd-stage" "$W/obsd-stage" -perm /6000)
[ -z "$out" ] || fail "make install made set-id files: $out"
# Versions: the ports build what Cargo.toml says.
v=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
grep -q "^DISTVERSION=[[:space:]]*$v\$" "$FPORT/Makefile" || fail "FreeBSD port DISTVERSION is not $v"
grep -q "^V =[[:space:]]*$v\$" "$OPORT/Makefile" || fail "OpenBSD port V is not $v"

# ---------------------------------------------------------------------------
# The crate lists: in step with Cargo.lock, and the check can fail.
out=$(sh "$ROOT/scripts/cargo-crates" --check 2>&1) || fail "scripts/cargo-crates --check: $out"
grep -q '^\.include "crates.inc"$' "$OPORT/Makefile" || fail "the OpenBSD port does not include crates.inc"
mkdir -p "$W/cc/scripts" "$W/cc/port/freebsd/mail/mta" "$W/cc/port/openbsd/mail/mta"
cp "$ROOT/scripts/cargo-crates" "$W/cc/scripts/"
cp "$ROOT/Cargo.lock" "$W/cc/"
cp "$FPORT/Makefile.crates" "$W/cc/port/freebsd/mail/mta/"
cp "$OPORT/crates.inc" "$W/cc/port/openbsd/mail/mta/"
sh "$W/cc/scripts/cargo-crates" --check 2>/dev/null || fail "cargo-crates --check fails on a copy"
# The first crate's version, changed in the lock file alone.
sed -i '0,/^version = "/s//version = "9/' "$W/cc/Cargo.lock"
cmp -s "$ROOT/Cargo.lock" "$W/cc/Cargo.lock" && fail "could not change the copy of Cargo.lock"
sh "$W/cc/scripts/cargo-crates" --check 2>/dev/null && fail "cargo-crates --check passes a list out of step with Cargo.lock"

# ---------------------------------------------------------------------------
# mailer.conf: every copy maps the same names, to staged programs or true.
# mailer_lines FILE [SED]: "name path" lines of FILE (or of the indented
# block of a message), PREFIX written /usr/local.
mailer_lines() {
	sed -e 's|%%PREFIX%%|/usr/local|g' -e 's|${TRUEPREFIX}|/usr/local|g' "$1" |
		awk '$1 ~ /^(sendmail|send-mail|mailq|newaliases|hoststat|purgestat)$/ && NF == 2 && $2 ~ /^\// { print $1, $2 }'
}
mailer_lines "$ROOT/etc/mailer.conf" > "$W/mailer.ref"
[ "$(awk '{ print $1 }' "$W/mailer.ref" | LC_ALL=C sort | tr '\n' ' ')" = "hoststat mailq newaliases purgestat send-mail sendmail " ] ||
	fail "etc/mailer.conf does not map exactly sendmail, send-mail, mailq, newaliases, hoststat, purgestat"
[ "$(grep -cv -e '^#' -e '^[[:space:]]*$' "$ROOT/etc/mailer.conf")" -eq 6 ] || fail "etc/mailer.conf has other lines"
for f in "$FPORT/files/mailer.conf.mta.in" "$FPORT/files/pkg-message.in" "$OPORT/pkg/README"; do
	mailer_lines "$f" | diff -u "$W/mailer.ref" - || fail "$f maps other programs than etc/mailer.conf"
done
while read -r n p; do
	case "$p" in
	/usr/bin/true) ;;
	/usr/local/*) [ -x "$MTA_STAGE/${p#/usr/local/}" ] && [ -f "$MTA_STAGE/${p#/usr/local/}" ] || fail "mailer.conf: $n -> $p is not in the staged install" ;;
	*) fail "mailer.conf: $n -> $p is neither a staged program nor /usr/bin/true" ;;
	esac
done < "$W/mailer.ref"
grep -q '^SUB_FILES=.*mailer\.conf\.mta' "$FPORT/Makefile" || fail "the FreeBSD port does not substitute mailer.conf.mta"
grep -qx '%%DATADIR%%/mailer.conf.mta' "$FPORT/pkg-plist" || fail "pkg-plist does not list mailer.conf.mta"

# ---------------------------------------------------------------------------
# mailq as FreeBSD's periodic/daily/440.status-mailq runs it (as root): the
# mailq of mailer.conf, its output shown, and the lines that are neither
# "Mail queue is empty" nor "Total requests" counted (more than none means
# mail is waiting); with daily_status_mailq_shorten, the recipient lines
# (indented, with an @) counted per address.
if ! is_root; then
	note "skipped: the mailq check (needs root: the staged mailq reads /etc/mta/mta.conf)"
	exit 0
fi
private_mta_conf || fail "cannot mount a private /etc/mta"
MTA="$STAGE_MTA"
MAILQ="$MTA_STAGE/$(awk '$1 == "mailq" { sub("^/usr/local/", "", $2); print $2 }' "$W/mailer.ref")"
status_mailq() { # [shorten]: the count 440.status-mailq computes
	if [ "${1:-}" = shorten ]; then
		"$MAILQ" | grep -E '^[[:space:]]+[^[:space:]]+@' | sort | uniq -c | sort -nr | awk '$1 >= 1 { print $1, $2 }'
	else
		"$MAILQ"
	fi | tee -a "$W/mailq.out" | grep -Ev '((Mail |m)queue is empty|Total requests)' | wc -l
}
start_master
[ "$(status_mailq)" -eq 0 ] || fail "440.status-mailq would report an empty queue as mail: $(cat "$W/mailq.out")"
grep -qx 'Mail queue is empty' "$W/mailq.out" || fail "mailq: $(cat "$W/mailq.out")"
swaks --server 127.0.0.1:$PORT --from sender@remote.example --to waiting@remote.example >/dev/null 2>&1 || fail "swaks"
wait_queued 1 || fail "not queued"
[ "$(status_mailq)" -gt 0 ] || fail "440.status-mailq would not report the queued message: $(cat "$W/mailq.out")"
[ "$(status_mailq shorten)" -eq 1 ] || fail "shortened: $(cat "$W/mailq.out")"
tail -1 "$W/mailq.out" | grep -qx '1 waiting@remote.example' || fail "shortened mailq: $(tail -1 "$W/mailq.out")"
cat "$W/mailq.out"
exit 0
