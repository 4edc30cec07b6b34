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

# unpack_deb DIR PACKAGE PROGRAM: PACKAGE's .deb unpacked under DIR (never
# installed), unless DIR/PROGRAM is there already; prints DIR/PROGRAM.
unpack_deb() {
	if [ ! -x "$1/$3" ]; then
		debs=$(mktemp -d)
		(cd "$debs" && chmod 755 . && { apt-get download "$2" >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get download "$2" >/dev/null; }; }) || return 1
		rm -rf "$1" && mkdir -p "$1" && dpkg -x "$debs/$2"_*.deb "$1" || return 1
		chmod 755 "$1"
		rm -rf "$debs"
	fi
	echo "$1/$3"
}

# setup_smtp_source: Postfix's smtp-source load generator (and the rest of
# Postfix, which the interop case runs privately), from the postfix .deb
# unpacked under /var/tmp (never installed: no second MTA on the system).
setup_smtp_source() { unpack_deb /var/tmp/mta-test-postfix postfix usr/sbin/smtp-source; }

# setup_nsd: NSD, an authoritative name server, unpacked under /var/tmp
# (never installed: no name server is started, enabled or left running on
# the system, nothing listens on port 53). The regress case dns_mx runs
# its own on a loopback port with its own configuration and zone. Its
# libraries are ordinary packages (scripts/test installs them).
setup_nsd() { unpack_deb /var/tmp/mta-test-nsd nsd usr/sbin/nsd; }

# setup_mailx: bsd-mailx's mail(1), unpacked under /var/tmp (never
# installed: it depends on default-mta). Its one library not in the base
# system, liblockfile1, is an ordinary package.
setup_mailx() { unpack_deb /var/tmp/mta-test-mailx bsd-mailx usr/bin/bsd-mailx; }

# setup_fail2ban: fail2ban-regex and fail2ban's filters, from its package
# unpacked under /var/tmp (never installed: it would start a service that
# changes the firewall). It needs only python3; the regress case smtp_logs
# runs it over mta's log with its own postfix filter.
setup_fail2ban() { unpack_deb /var/tmp/mta-test-fail2ban fail2ban usr/bin/fail2ban-regex; }

# setup_pflogsumm: pflogsumm, the Postfix log summariser (a Perl script;
# its optional Date::Calc is not needed), unpacked under /var/tmp like the
# other peers. The regress case smtp_logs runs it over mta's log.
setup_pflogsumm() { unpack_deb /var/tmp/mta-test-pflogsumm pflogsumm usr/sbin/pflogsumm; }

# setup_exim: Exim's daemon, from exim4-daemon-light unpacked under
# /var/tmp (never installed: no second MTA on the system). The program is
# set-uid root and runs itself again for deliveries, so the dynamic loader
# ignores LD_LIBRARY_PATH: its libraries come as ordinary packages
# (scripts/test lists them).
setup_exim() { unpack_deb /var/tmp/mta-test-exim exim4-daemon-light usr/sbin/exim4; }
