# Sourced by scripts/run and scripts/test: installs what they need, idempotently.
#   setup_toolchain        the toolchain pinned in rust-toolchain.toml
#   setup_packages PKG...  Debian packages that are missing (apt-get)

setup_toolchain() {
	channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
	if ! command -v rustup >/dev/null 2>&1; then
		echo "setup: rustup is required (https://rustup.rs or your package manager)" >&2
		return 1
	fi
	if ! rustup run "$channel" rustc --version >/dev/null 2>&1 ||
	   ! rustup component list --toolchain "$channel" --installed 2>/dev/null | grep -q '^rust-src'; then
		rustup toolchain install "$channel" --profile minimal -c rust-src,clippy,rustfmt
	fi
}

setup_packages() {
	missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "setup: missing Debian packages:$missing (run as root, or install them)" >&2
		return 1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# No package may start a service of the system (Dovecot's, say): the
	# tests run their own instances. policy-rc.d exiting 101 tells
	# invoke-rc.d and deb-systemd-invoke so; one already there is kept.
	guard=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		guard=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod 755 "$guard"
	fi
	rc=0
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing || rc=$?
	if [ -n "$guard" ]; then rm -f "$guard"; fi
	return $rc
}

# setup_smtp_source: Postfix's smtp-source load generator, from the postfix
# .deb unpacked under /var/tmp (never installed: no second MTA on the
# system). Prints the program's path.
setup_smtp_source() {
	dir=/var/tmp/mta-test-postfix
	if [ ! -x "$dir/usr/sbin/smtp-source" ]; then
		debs=$(mktemp -d)
		(cd "$debs" && chmod 755 . && { apt-get download postfix >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get download postfix >/dev/null; }; }) || return 1
		rm -rf "$dir" && mkdir -p "$dir" && dpkg -x "$debs"/postfix_*.deb "$dir" || return 1
		rm -rf "$debs"
	fi
	echo "$dir/usr/sbin/smtp-source"
}

# setup_nsd: NSD, an authoritative name server, from its .deb unpacked
# under /var/tmp (never installed: no name server is started, enabled or
# left running on the system, nothing listens on port 53). The regress
# case dns_mx runs its own on a loopback port with its own configuration
# and zone. Its libraries are ordinary packages (scripts/test installs
# them). Prints the program's path.
setup_nsd() {
	dir=/var/tmp/mta-test-nsd
	if [ ! -x "$dir/usr/sbin/nsd" ]; then
		debs=$(mktemp -d)
		(cd "$debs" && chmod 755 . && { apt-get download nsd >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get download nsd >/dev/null; }; }) || return 1
		rm -rf "$dir" && mkdir -p "$dir" && dpkg -x "$debs"/nsd_*.deb "$dir" || return 1
		chmod 755 "$dir"
		rm -rf "$debs"
	fi
	echo "$dir/usr/sbin/nsd"
}

# setup_mailx: bsd-mailx's mail(1), from its .deb unpacked under /var/tmp
# (never installed: it depends on default-mta). Its one library not in
# the base system, liblockfile1, is an ordinary package. Prints the path.
setup_mailx() {
	dir=/var/tmp/mta-test-mailx
	if [ ! -x "$dir/usr/bin/bsd-mailx" ]; then
		debs=$(mktemp -d)
		(cd "$debs" && chmod 755 . && { apt-get download bsd-mailx >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get download bsd-mailx >/dev/null; }; }) || return 1
		rm -rf "$dir" && mkdir -p "$dir" && dpkg -x "$debs"/bsd-mailx_*.deb "$dir" || return 1
		chmod 755 "$dir"
		rm -rf "$debs"
	fi
	echo "$dir/usr/bin/bsd-mailx"
}

# setup_exim: Exim's daemon, from exim4-daemon-light unpacked under
# /var/tmp (never installed: no second MTA on the system). The program is
# set-uid root and runs itself again for deliveries, so the dynamic loader
# ignores LD_LIBRARY_PATH: its libraries come as ordinary packages
# (scripts/test lists them). Prints the program's path.
setup_exim() {
	dir=/var/tmp/mta-test-exim
	if [ ! -x "$dir/usr/sbin/exim4" ]; then
		debs=$(mktemp -d)
		(cd "$debs" && chmod 755 . && { apt-get download exim4-daemon-light >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get download exim4-daemon-light >/dev/null; }; }) || return 1
		rm -rf "$dir" && mkdir -p "$dir" && dpkg -x "$debs"/exim4-daemon-light_*.deb "$dir" || return 1
		chmod 755 "$dir"
		rm -rf "$debs"
	fi
	echo "$dir/usr/sbin/exim4"
}
