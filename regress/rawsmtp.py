"""A raw SMTP client for the regress suite: sends exact bytes (including
the malformed ones real clients never send) and collects the replies.
Loopback only; every wait is bounded."""
import socket
import ssl
import time


class Client:
    def __init__(self, port, host="127.0.0.1", timeout=5.0, source=None):
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=src)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self, timeout=5.0):
        """One complete reply (possibly multi-line); b'' if the server closed."""
        end = time.time() + timeout
        while True:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    out = b"\r\n".join(lines[: i + 1]) + b"\r\n"
                    self.buf = b"\r\n".join(lines[i + 1 :])
                    return out
                if len(line) < 4 or line[3:4] != b"-":
                    raise AssertionError("malformed reply line %r" % line)
            left = end - time.time()
            if left <= 0:
                raise TimeoutError("no reply; have %r" % self.buf[:200])
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return b""
            self.buf += chunk

    def cmd(self, line):
        self.send(line)
        return self.reply()

    def replies_until_idle(self, idle=0.5, limit=10.0):
        """Every reply that arrives until the server is quiet for `idle` s."""
        out = []
        end = time.time() + limit
        while time.time() < end:
            try:
                r = self.reply(timeout=idle)
            except TimeoutError:
                break
            if r == b"":
                out.append(b"")
                break
            out.append(r)
        return out

    def closed(self, timeout=3.0):
        """Whether the server has closed the connection."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def starttls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def transaction(self, sender, rcpts, ehlo=b"EHLO client.example\r\n"):
        assert self.cmd(ehlo).startswith(b"250")
        assert self.cmd(b"MAIL FROM:<%s>\r\n" % sender).startswith(b"250"), "MAIL"
        for r in rcpts:
            assert self.cmd(b"RCPT TO:<%s>\r\n" % r).startswith(b"250"), "RCPT"
