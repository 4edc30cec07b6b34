"""A second SMTP peer for the relay cases, on Python's aiosmtpd (Debian's
python3-aiosmtpd; run it with /usr/bin/python3): accepts every recipient
but those whose local part starts with "reject5" (550 5.1.1) or "reject4"
(450 4.2.1), and saves each message as N.eml (the content as received,
CR LF and all) with N.json (the envelope). A message to a local part
starting with "slow" is saved, then the first time only its reply waits
30 s (a file "slow" in DIR says it is waiting): a delivery caught in
flight. Loopback only (HOST: 127.0.0.1 unless given, e.g. 127.0.0.2 or
::1); it runs until killed.

With a certificate and key (PEM) it offers TLS: "starttls" offers
STARTTLS, "implicit" speaks TLS from the first byte (port 465 style), and
"inject" offers STARTTLS but answers it with "220 ready" and "250
injected" in one write, in plaintext, as an attacker on the path would,
and never starts TLS; "failtls" offers STARTTLS, answers it with "220
ready", then the client's hello with a fatal handshake_failure alert, and
closes (a TLS stack that shares nothing with the client's); sessions
that do not ask for STARTTLS take mail as usual.

usage: sink.py PORT DIR [HOST] [starttls|implicit|inject|failtls CERT KEY]"""
import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

port, out = int(sys.argv[1]), sys.argv[2]
args = sys.argv[3:]
host = "127.0.0.1"
if args and args[0] not in ("starttls", "implicit", "inject", "failtls"):
    host = args.pop(0)
if not (host == "::1" or host.startswith("127.")):
    sys.exit("sink.py: loopback addresses only")
mode = args[0] if args else None
count = 0
slowed = False


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("reject5"):
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        if local.startswith("reject4"):
            return "450 4.2.1 <%s>: Recipient address rejected: try again later" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        global count
        count += 1
        with open(os.path.join(out, "%d.eml" % count), "wb") as f:
            f.write(envelope.original_content)
        with open(os.path.join(out, "%d.json" % count), "w") as f:
            json.dump({"from": envelope.mail_from, "mail_options": envelope.mail_options,
                       "to": envelope.rcpt_tos, "rcpt_options": envelope.rcpt_options}, f)
        global slowed
        if not slowed and any(r.split("@")[0].lower().startswith("slow") for r in envelope.rcpt_tos):
            slowed = True
            open(os.path.join(out, "slow"), "w").close()
            await asyncio.sleep(30)
        return "250 2.0.0 Ok: saved as %d" % count


class Injecting(SMTP):
    async def smtp_STARTTLS(self, arg):
        await self.push("220 ready\r\n250 injected")


class InjectingController(Controller):
    def factory(self):
        return Injecting(self.handler, **self.SMTP_kwargs)


class FailingTls(SMTP):
    async def smtp_STARTTLS(self, arg):
        await self.push("220 2.0.0 Ready to start TLS")
        await self._reader.read(1)  # the client's hello has begun
        # Alert, TLS 1.2, length 2: fatal, handshake_failure.
        self.transport.write(bytes([21, 3, 3, 0, 2, 2, 40]))
        self.transport.close()


class FailingTlsController(Controller):
    def factory(self):
        return FailingTls(self.handler, **self.SMTP_kwargs)


options = dict(hostname=host, port=port, decode_data=False, enable_SMTPUTF8=True, data_size_limit=20 << 20)
kind = Controller
if mode is not None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args[1], args[2])
    if mode == "implicit":
        options["ssl_context"] = ctx
    elif mode in ("starttls", "inject", "failtls"):
        options.update(tls_context=ctx, require_starttls=False)
        if mode == "inject":
            kind = InjectingController
        elif mode == "failtls":
            kind = FailingTlsController
    else:
        sys.exit("sink.py: unknown mode " + mode)
c = kind(Handler(), **options)
c.start()
signal.sigwait({signal.SIGTERM, signal.SIGINT})
c.stop()
