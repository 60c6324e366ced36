"""Prepares the throwaway nostr-relay of scripts/servers/nostr.sh before it serves.

Run with the relay's venv python: `python nostr-setup.py CONFIG KEYS_FILE RELAY_URL`. Creates the
sqlite schema (the relay's own alembic migrations), gives every test identity but `stranger` the
reader and writer roles (NIP-42 login), stores their follow lists (kind 3, signed by them) and
writes KEYS_FILE: one line per identity, `name secret_hex public_hex nsec npub`.

Secret keys are sha256("switchboard-test-nostr:" + name): the same on every run and machine, so a
failing test can be replayed by hand.
"""

import asyncio
import hashlib
import os
import sys
import time

from aionostr.event import Event
from aionostr.key import PrivateKey
from nostr_relay.config import Config

PALS = ["ann", "ben", "cid", "dot", "eve"]
API_USERS = ["alice", "bob", "carol", "dave"]
# Profile tests (kind-0 metadata, NIP-05): fay logs in, the others publish profiles.
PROFILE_USERS = ["fay", "gil", "hal", "ivy", "joe"]
# API tests of profiles and follow lists (tests/api/nostr_upstream.rs): kim and ned log in, lou and
# max publish profiles, ned's follow list is deleted and published again.
UPSTREAM_USERS = ["kim", "lou", "max", "ned", "oli", "pat"]
# Chat tests (tests/nostr.rs: retries, catch-up with a message cursor): ray, tom and una log in, sue
# is the raw peer on the other side; nobody follows anybody.
CHAT_USERS = ["ray", "sue", "tom", "una"]
# Not granted any role: the relay lets it log in (NIP-42) but refuses its writes and queries.
STRANGER = "stranger"

# Follow lists (NIP-02): who follows whom, with the petname each contact gets.
FOLLOWS = {pal: [other for other in PALS if other != pal] for pal in PALS}
FOLLOWS.update({"alice": ["bob", "carol", "dave"], "bob": ["alice"], "carol": ["alice"],
                "dave": ["alice"]})
FOLLOWS.update({"fay": ["gil", "hal", "joe"]})
FOLLOWS.update({"kim": ["lou", "max"], "ned": ["oli", "pat"]})


def key(name):
    return PrivateKey(hashlib.sha256(("switchboard-test-nostr:" + name).encode()).digest())


def migrate(config_file):
    """The relay's schema, as `nostr-relay serve` makes it (alembic runs its own event loop)."""
    Config.load(config_file)
    from alembic import config as alembic_config
    import nostr_relay

    ini = os.path.join(os.path.dirname(nostr_relay.__file__), "alembic.ini")
    alembic_config.main([f"-c{ini}", "-q", "upgrade", "head"])


async def main(keys_file, relay_url):
    from nostr_relay.storage import get_storage

    names = PALS + API_USERS + PROFILE_USERS + UPSTREAM_USERS + CHAT_USERS + [STRANGER]
    keys = {name: key(name) for name in names}
    # A minute in the past: a follow list a test publishes "now" is then strictly newer.
    created_at = int(time.time()) - 60
    async with get_storage() as storage:
        for name, secret in keys.items():
            if name != STRANGER:
                await storage.set_auth_roles(secret.public_key.hex(), "arw")
        for name, follows in FOLLOWS.items():
            secret = keys[name]
            event = Event(
                pubkey=secret.public_key.hex(),
                created_at=created_at,
                kind=3,
                content="",
                tags=[["p", keys[f].public_key.hex(), relay_url, f.capitalize()] for f in follows],
            )
            secret.sign_event(event)
            token = {"pubkey": event.pubkey, "roles": {"a", "r", "w"}}
            _, added = await storage.add_event(event.to_json_object(), auth_token=token)
            if not added:
                raise SystemExit(f"the follow list of {name} was not stored")
    with open(keys_file, "w") as out:
        for name, secret in keys.items():
            out.write(f"{name} {secret.hex()} {secret.public_key.hex()} "
                      f"{secret.bech32()} {secret.public_key.bech32()}\n")


if __name__ == "__main__":
    migrate(sys.argv[1])
    asyncio.run(main(sys.argv[2], sys.argv[3]))
