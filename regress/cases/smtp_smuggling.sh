# SMTP smuggling: for every known non-standard end-of-data sequence, a
# second message hidden after it is never accepted. By default the bare
# line end is refused (554 5.5.2) and the connection closed; with
# smtpd.bare_line_ends = normalize the whole stream stays one message.
. ./lib.sh
write_conf
start_master
raw_smtp <<'PY' || fail "smuggling (reject)"
import os, rawsmtp
port = int(os.environ["PORT"])
variants = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
            b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]
smuggled = (b"MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<root@localhost>\r\nDATA\r\n"
            b"Subject: SMUGGLED\r\n\r\nsmuggled\r\n.\r\n")
for v in variants:
    c = rawsmtp.Client(port)
    c.transaction(b"sender@remote.example", [b"root@localhost"])
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    c.send(b"Subject: carrier\r\n\r\ncarrier" + v + smuggled + b"QUIT\r\n")
    replies = c.replies_until_idle()
    text = b"".join(replies)
    # Nothing after the variant may be taken as a transaction.
    assert b"2.1.0" not in text and b"354" not in text, (v, replies)
    if b"\x00" in v:
        # NUL: the data runs to the real end, and the message is refused.
        assert text.startswith(b"554 5.6.0"), (v, replies)
    else:
        assert text.startswith(b"554 5.5.2"), (v, replies)
        assert c.closed(), v
    print("  variant %r: %s" % (v, text.split(b"\r\n")[0].decode()))
PY
sleep 0.5
[ "$(queued)" -eq 0 ] || fail "a message was queued: $(queued)"
grep -rl "SMUGGLED" "$W/spool" 2>/dev/null && fail "smuggled content stored"
stop_term_master() { kill -TERM "$MASTER_PID"; gone "$MASTER_PID" 8; }
stop_term_master
MASTER_PID=""
# Normalising: the carrier and what follows are one message, the smuggled
# commands are its content, never a second envelope.
write_conf 'smtpd { bare_line_ends = normalize; }'
start_master
raw_smtp <<'PY' || fail "smuggling (normalize)"
import os, rawsmtp
port = int(os.environ["PORT"])
for v in [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n"]:
    c = rawsmtp.Client(port)
    c.transaction(b"sender@remote.example", [b"root@localhost"])
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    c.send(b"Subject: carrier\r\n\r\ncarrier" + v +
           b"MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<root@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n")
    r = c.reply()
    assert r.startswith(b"250 2.0.0 Ok: queued as "), (v, r)
    assert c.cmd(b"QUIT\r\n").startswith(b"221")
PY
wait_queued 4 || fail "normalised messages: $(queued) queued, want 4"
n=$(queue_files | xargs grep -l "smuggler@evil.example" | wc -l)
[ "$n" -eq 4 ] || fail "smuggled commands not kept as content of the carrier"
exit 0
