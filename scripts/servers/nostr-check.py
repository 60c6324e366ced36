"""Self-check of the throwaway nostr-relay (scripts/test-env.sh --check), over raw websockets.

Run with the relay's venv python: `python nostr-check.py RELAY_URL KEYS_FILE`. For every test
identity: NIP-42 login, then a query of its follow list, which must be exactly the documented one;
one granted identity must be able to write, the ungranted `stranger` must not, and a query before
login must be refused.
"""

import asyncio
import json
import sys
import time

import websockets
from aionostr.event import Event
from aionostr.key import PrivateKey

PALS = ["ann", "ben", "cid", "dot", "eve"]
EXPECTED = {pal: sorted(o.capitalize() for o in PALS if o != pal) for pal in PALS}
EXPECTED.update({"alice": ["Bob", "Carol", "Dave"], "bob": ["Alice"], "carol": ["Alice"],
                 "dave": ["Alice"], "stranger": None})
EXPECTED.update({"fay": ["Gil", "Hal", "Joe"], "gil": None, "hal": None, "ivy": None, "joe": None})
EXPECTED.update({"kim": ["Lou", "Max"], "lou": None, "max": None, "ned": ["Oli", "Pat"],
                 "oli": None, "pat": None})
EXPECTED.update({"ray": None, "sue": None, "tom": None, "una": None})


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


def signed(secret, kind, content, tags):
    event = Event(pubkey=secret.public_key.hex(), created_at=int(time.time()), kind=kind,
                  content=content, tags=tags)
    secret.sign_event(event)
    return event.to_json_object()


async def login(url, secret):
    ws = await websockets.connect(url)
    msg = await recv(ws)
    assert msg[0] == "AUTH", msg
    # The relay answers AUTH with nothing (no OK): later messages on this socket are handled
    # after it, as the relay reads them in order.
    await ws.send(json.dumps(["AUTH", signed(secret, 22242, "", [["relay", url],
                                                                  ["challenge", msg[1]]])]))
    return ws


async def follow_list(ws, pubkey):
    await ws.send(json.dumps(["REQ", "f", {"kinds": [3], "authors": [pubkey]}]))
    events = []
    while True:
        msg = await recv(ws)
        if msg[0] == "EOSE":
            return events
        if msg[0] != "EVENT":
            raise RuntimeError(f"unexpected answer to the query: {msg}")
        events.append(msg[2])


async def main(url, keys_file):
    keys, ok = {}, True
    for line in open(keys_file):
        name, secret_hex, public_hex, _nsec, _npub = line.split()
        keys[name] = (PrivateKey(bytes.fromhex(secret_hex)), public_hex)
    names = {public: name for name, (_, public) in keys.items()}
    for name, (secret, public) in keys.items():
        if EXPECTED[name] is None:
            continue
        ws = await login(url, secret)
        events = await follow_list(ws, public)
        got = sorted(tag[3] for tag in events[0]["tags"] if tag[0] == "p") if events else None
        got_names = sorted(names.get(tag[1], "?").capitalize()
                           for tag in (events[0]["tags"] if events else []) if tag[0] == "p")
        print(f"    {name:8} follows {got}")
        if got != EXPECTED[name] or got_names != EXPECTED[name] or len(events) != 1:
            print(f"FAIL: {name} follows {got} ({got_names}), expected {EXPECTED[name]}")
            ok = False
        await ws.close()

    secret, _ = keys["ann"]
    ws = await login(url, secret)
    note = signed(secret, 1, "test-env self-check", [])
    await ws.send(json.dumps(["EVENT", note]))
    msg = await recv(ws)
    if msg[:3] != ["OK", note["id"], True]:
        print(f"FAIL: ann could not write: {msg}"); ok = False
    else:
        print("  granted write (ann): ok")
    await ws.close()

    secret, _ = keys["stranger"]
    ws = await login(url, secret)
    note = signed(secret, 1, "should be refused", [])
    await ws.send(json.dumps(["EVENT", note]))
    msg = await recv(ws)
    # The relay's refusal names no event id (and comes after a 2 s throttle).
    if msg[0] != "OK" or msg[2] is not False or "restricted" not in msg[3]:
        print(f"FAIL: the ungranted key could write: {msg}"); ok = False
    else:
        print(f"  ungranted write refused: ok ({msg})")
    await ws.close()

    ws = await websockets.connect(url)
    await recv(ws)  # the challenge, left unanswered
    await ws.send(json.dumps(["REQ", "anon", {"kinds": [3]}]))
    msg = await recv(ws)
    if msg[0] != "NOTICE" or "restricted" not in msg[1]:
        print(f"FAIL: a query without login was not refused: {msg}"); ok = False
    else:
        print(f"  query without login refused: ok ({msg})")
    await ws.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
