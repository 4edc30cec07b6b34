"""A varlink user database (systemd's io.systemd.UserDatabase) serving
one user, for nss-systemd: the name service a directory user comes from.
  userdb.py SOCKET NAME UID HOME
Each request is logged to standard error. With USERDB_HANG_LIST set in
the environment, a request to list the users (neither name nor uid) is
never answered: a directory that hangs. With USERDB_NO_LIST, such a request
finds no one, as sssd answers one without `enumerate`: a directory that
knows its users by name but does not list them. With USERDB_HANG_NAME, a
request for that user name is never answered; with USERDB_HANG_ONCE, the
first request for that name is never answered, and later ones are.
Regress only."""
import json
import os
import socket
import sys
import threading
import time

path, name, uid, home = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
service = os.path.basename(path)
record = {"userName": name, "uid": uid, "gid": uid, "homeDirectory": home, "shell": "/bin/sh",
          "realName": "Directory User", "disposition": "regular", "service": service}
NONE = {"error": "io.systemd.UserDatabase.NoRecordFound", "parameters": {}}
hung_once = threading.Lock()


def answer(request):
    method, p = request.get("method", ""), request.get("parameters", {})
    if method == "io.systemd.UserDatabase.GetUserRecord":
        if p.get("service", service) != service:
            return {"error": "io.systemd.UserDatabase.BadService", "parameters": {}}
        if os.environ.get("USERDB_HANG_LIST") and "userName" not in p and "uid" not in p:
            time.sleep(3600)
        if os.environ.get("USERDB_NO_LIST") and "userName" not in p and "uid" not in p:
            return NONE
        if os.environ.get("USERDB_HANG_NAME") and p.get("userName") == os.environ["USERDB_HANG_NAME"]:
            time.sleep(3600)
        if os.environ.get("USERDB_HANG_ONCE") and p.get("userName") == os.environ["USERDB_HANG_ONCE"] \
                and hung_once.acquire(blocking=False):
            time.sleep(3600)
        if p.get("userName", name) == name and p.get("uid", uid) == uid:
            return {"parameters": {"record": record, "incomplete": False}}
        return NONE
    if method in ("io.systemd.UserDatabase.GetGroupRecord", "io.systemd.UserDatabase.GetMemberships"):
        return NONE
    return {"error": "org.varlink.service.MethodNotFound", "parameters": {"method": method}}


def serve(conn):
    buf = b""
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                sys.stderr.write("request %s\n" % msg.decode(errors="replace"))
                sys.stderr.flush()
                conn.sendall(json.dumps(answer(json.loads(msg))).encode() + b"\0")


s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if os.path.exists(path):
    os.unlink(path)
s.bind(path)
os.chmod(path, 0o666)
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
