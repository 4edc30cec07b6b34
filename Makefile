# Build and staged install of mta.
#
# Portable make: works with BSD make (bmake) and GNU make alike. No
# bsd.*.mk includes, no conditionals of either dialect; anything that
# needs a decision is done in the shell.
#
#   make                          cargo build --release --locked
#   make install DESTDIR=/stage   install into a staging tree
#   make install NOBUILD=1 TARGETDIR=dir
#                                 install binaries built elsewhere
#   make lint-man                 mandoc -Tlint the manual pages
#
# Nothing is installed set-uid or set-gid, and no owner is set: a package
# builder running as an ordinary user gets a tree it can archive. Linux
# packagers typically pass MANDIR=$(PREFIX)/share/man and SYSCONFDIR=/etc.

PREFIX ?=	/usr/local
DESTDIR ?=
BINDIR ?=	$(PREFIX)/sbin
LIBEXECDIR ?=	$(PREFIX)/libexec/mta
SYSCONFDIR ?=	$(PREFIX)/etc
MANDIR ?=	$(PREFIX)/man

# Where cargo put the binaries.
TARGETDIR ?=	target/release

CARGO ?=	cargo
CARGOFLAGS ?=	--release --locked -j2
INSTALL ?=	install
MANDOC ?=	mandoc

# Programs run by the user or the administrator, in BINDIR.
PROGRAMS =	mta mtactl sendmail
# Other names of sendmail, as links in BINDIR: it acts by the name it
# was run as.
SENDMAIL_LINKS = mailq newaliases
# Programs started by the master, one per process role, and postdrop
# (which a package installs set-gid to the submission group), in LIBEXECDIR.
# Keep in step with the roles in src/roles.rs.
LIBEXEC_PROGRAMS = control qmgr cleanup smtpd pickup postdrop smtp connector bounce local lookup

.PHONY: all build install uninstall lint-man clean

all: build

build:
	@if [ "$(NOBUILD)" = 1 ]; then \
		echo "NOBUILD=1: using the binaries in $(TARGETDIR)"; \
	else \
		echo "$(CARGO) build $(CARGOFLAGS)"; \
		$(CARGO) build $(CARGOFLAGS); \
	fi

install: all
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR)
	$(INSTALL) -d -m 0755 $(DESTDIR)$(LIBEXECDIR)
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/mta
	$(INSTALL) -d -m 0755 $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -d -m 0755 $(DESTDIR)$(MANDIR)/man8
	@for p in $(PROGRAMS); do \
		echo "$(INSTALL) -m 0755 $(TARGETDIR)/$$p $(DESTDIR)$(BINDIR)/$$p"; \
		$(INSTALL) -m 0755 $(TARGETDIR)/$$p $(DESTDIR)$(BINDIR)/$$p || exit 1; \
	done
	@for l in $(SENDMAIL_LINKS); do \
		echo "ln -sf sendmail $(DESTDIR)$(BINDIR)/$$l"; \
		ln -sf sendmail $(DESTDIR)$(BINDIR)/$$l || exit 1; \
	done
	@for p in $(LIBEXEC_PROGRAMS); do \
		m=0755; [ "$$p" = local ] && m=0711; \
		echo "$(INSTALL) -m $$m $(TARGETDIR)/$$p $(DESTDIR)$(LIBEXECDIR)/$$p"; \
		$(INSTALL) -m $$m $(TARGETDIR)/$$p $(DESTDIR)$(LIBEXECDIR)/$$p || exit 1; \
	done
	$(INSTALL) -m 0644 etc/mta.conf.sample $(DESTDIR)$(SYSCONFDIR)/mta/mta.conf.sample
	@for m in man8/*.8; do \
		[ -f "$$m" ] || continue; \
		echo "$(INSTALL) -m 0444 $$m $(DESTDIR)$(MANDIR)/man8/"; \
		$(INSTALL) -m 0444 $$m $(DESTDIR)$(MANDIR)/man8/ || exit 1; \
	done
	@for m in man8/*.5; do \
		[ -f "$$m" ] || continue; \
		echo "$(INSTALL) -m 0444 $$m $(DESTDIR)$(MANDIR)/man5/"; \
		$(INSTALL) -m 0444 $$m $(DESTDIR)$(MANDIR)/man5/ || exit 1; \
	done

# Removes what install put in place; leaves mta.conf and the spool alone.
uninstall:
	@for p in $(PROGRAMS) $(SENDMAIL_LINKS); do rm -f $(DESTDIR)$(BINDIR)/$$p; done
	@for p in $(LIBEXEC_PROGRAMS); do rm -f $(DESTDIR)$(LIBEXECDIR)/$$p; done
	-rmdir $(DESTDIR)$(LIBEXECDIR) 2>/dev/null
	rm -f $(DESTDIR)$(SYSCONFDIR)/mta/mta.conf.sample
	@for m in man8/*.8; do rm -f $(DESTDIR)$(MANDIR)/man8/$${m#man8/}; done
	@for m in man8/*.5; do rm -f $(DESTDIR)$(MANDIR)/man5/$${m#man8/}; done

lint-man:
	$(MANDOC) -Tlint -Wwarning man8/*

clean:
	$(CARGO) clean
