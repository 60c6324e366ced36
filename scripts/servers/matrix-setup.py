"""Test users and DM rooms for the throwaway Synapse of scripts/servers/matrix.sh; and its check.

Usage: matrix-setup.py setup URL SHARED_SECRET SYNAPSE_PID   wait for /health, make the users and
                                                             the DM rooms (see matrix.sh)
       matrix-setup.py check URL SHARED_SECRET TLS_URL CA    log in as each user, assert m.direct
                                                             contacts, names, a refused password;
                                                             HTTPS trusted with the CA only

Standard library only: it talks to the client-server API like any client would.
"""

import hashlib
import hmac
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

USERS = ["ann", "ben", "cid", "dot", "eve", "alice", "bob", "carol", "dave"]
# (maker, invitee): one DM room each, in both users' m.direct. Keep in step with matrix.sh.
PAIRS = [("ann", "ben"), ("ann", "cid"), ("dot", "eve"),
         ("alice", "bob"), ("alice", "carol"), ("alice", "dave")]
DOMAIN = "localhost"


def mxid(name):
    return "@%s:%s" % (name, DOMAIN)


def password(name):
    return name + "-pw-7Q"


class MatrixError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %s: %s" % (status, body))
        self.status = status


def call(base, method, path, body=None, token=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise MatrixError(e.code, e.read().decode(errors="replace")) from None


def q(text):
    return urllib.parse.quote(text, safe="")


def wait_healthy(base, pid):
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        except (urllib.error.URLError, OSError):
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("Synapse (pid %d) exited during start-up" % pid)
        time.sleep(0.1)
    sys.exit("Synapse did not answer /health within 90 s")


def register(base, secret, name, display_name=None):
    """Shared-secret registration (/_synapse/admin/v1/register); returns an access token."""
    nonce = call(base, "GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), name.encode(), password(name).encode(), b"notadmin"]))
    answer = call(base, "POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": name, "password": password(name), "admin": False,
        "displayname": display_name or name.capitalize(), "mac": mac.hexdigest(),
    })
    return answer["access_token"]


def login(base, name, pw=None):
    return call(base, "POST", "/_matrix/client/v3/login", {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": name},
        "password": pw or password(name),
        "initial_device_display_name": "switchboard test-env",
    })["access_token"]


def setup(base, secret, pid):
    started = time.monotonic()
    wait_healthy(base, int(pid))
    healthy = time.monotonic() - started
    with ThreadPoolExecutor(max_workers=len(USERS)) as pool:
        tokens = dict(zip(USERS, pool.map(lambda u: register(base, secret, u), USERS)))
    direct = {user: {} for user in USERS}

    def make_dm(pair):
        maker, invitee = pair
        room = call(base, "POST", "/_matrix/client/v3/createRoom", {
            "preset": "trusted_private_chat", "is_direct": True, "invite": [mxid(invitee)],
        }, tokens[maker])["room_id"]
        call(base, "POST", "/_matrix/client/v3/join/" + q(room), {}, tokens[invitee])
        return room

    with ThreadPoolExecutor(max_workers=len(PAIRS)) as pool:
        rooms = list(pool.map(make_dm, PAIRS))
    for (maker, invitee), room in zip(PAIRS, rooms):
        direct[maker].setdefault(mxid(invitee), []).append(room)
        direct[invitee].setdefault(mxid(maker), []).append(room)

    def finish(user):
        call(base, "PUT", "/_matrix/client/v3/user/%s/account_data/m.direct" % q(mxid(user)),
             direct[user], tokens[user])
        # Registration logged the user in; that device is not needed.
        call(base, "POST", "/_matrix/client/v3/logout", {}, tokens[user])

    with ThreadPoolExecutor(max_workers=len(USERS)) as pool:
        list(pool.map(finish, USERS))
    print("health after %.1f s; %d users, %d DM rooms in %.1f s"
          % (healthy, len(USERS), len(PAIRS), time.monotonic() - started - healthy))


def check(base, secret, tls_base, ca_file):
    del secret
    ok = check_tls(tls_base, ca_file)
    expected = {user: {} for user in USERS}
    for a, b in PAIRS:
        expected[a][mxid(b)] = b.capitalize()
        expected[b][mxid(a)] = a.capitalize()
    for user in USERS:
        started = time.monotonic()
        token = login(base, user)
        took = time.monotonic() - started
        who = call(base, "GET", "/_matrix/client/v3/account/whoami", token=token)["user_id"]
        direct = call(base, "GET", "/_matrix/client/v3/user/%s/account_data/m.direct"
                      % q(mxid(user)), token=token)
        got = {}
        for contact, rooms in direct.items():
            name = call(base, "GET", "/_matrix/client/v3/profile/%s/displayname" % q(contact),
                        token=token).get("displayname")
            got[contact] = name
            for room in rooms:
                members = call(base, "GET", "/_matrix/client/v3/rooms/%s/joined_members"
                               % q(room), token=token)["joined"]
                if set(members) != {mxid(user), contact}:
                    print("FAIL: %s: DM room %s has members %s" % (user, room, sorted(members)))
                    ok = False
        print("  %-6s login %.2f s as %s; m.direct: %s" % (user, took, who, ", ".join(
            "%s %r" % item for item in sorted(got.items()))))
        if who != mxid(user):
            print("FAIL: %s logged in as %s" % (user, who))
            ok = False
        if got != expected[user]:
            print("FAIL: %s m.direct contacts %r != expected %r" % (user, got, expected[user]))
            ok = False
        call(base, "POST", "/_matrix/client/v3/logout", {}, token)
    try:
        login(base, "ann", "not-the-password")
        print("FAIL: a wrong password was accepted")
        ok = False
    except MatrixError as e:
        if e.status != 403:
            print("FAIL: a wrong password gave %s, expected 403" % e)
            ok = False
        else:
            print("  wrong password refused: ok (403)")
    return ok


def check_tls(tls_base, ca_file):
    """The HTTPS listener answers when its CA is trusted, and only then."""
    url = tls_base + "/_matrix/client/versions"
    try:
        with urllib.request.urlopen(url, timeout=10,
                                    context=ssl.create_default_context(cafile=ca_file)) as r:
            versions = json.loads(r.read())["versions"]
        print("  HTTPS %s with the test CA: ok (%s)" % (tls_base, versions[-1]))
    except (OSError, KeyError, ValueError) as e:
        print("FAIL: HTTPS %s with the test CA: %s" % (tls_base, e))
        return False
    try:
        urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context())
        print("FAIL: the HTTPS certificate is trusted without the test CA")
        return False
    except urllib.error.URLError as e:
        if not isinstance(e.reason, ssl.SSLCertVerificationError):
            print("FAIL: HTTPS without the test CA: %s" % e)
            return False
        print("  certificate refused without the test CA: ok")
    return True


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "setup":
        setup(*sys.argv[2:5])
    elif len(sys.argv) == 6 and sys.argv[1] == "check":
        sys.exit(0 if check(*sys.argv[2:6]) else 1)
    else:
        sys.exit(__doc__)
