"""Bench identities for the test relay of scripts/servers/nostr.sh, while it serves.

Run with the relay's venv python: `python nostr-bench-keys.py CONFIG COUNT KEYS_FILE`. Gives COUNT
identities the reader and writer roles (NIP-42 login; the relay reads roles from its storage at
each AUTH) and writes KEYS_FILE in the format of the test keys file: one line per identity,
`name secret_hex public_hex nsec npub`. Used by scripts/bench-live.sh for the memory bench.

Secret keys are sha256("switchboard-bench-nostr:" + number): the same on every run.
"""

import asyncio
import hashlib
import sys

from aionostr.key import PrivateKey
from nostr_relay.config import Config


async def main(count, keys_file):
    from nostr_relay.storage import get_storage

    keys = {f"bench{n}": PrivateKey(hashlib.sha256(f"switchboard-bench-nostr:{n}".encode()).digest())
            for n in range(1, count + 1)}
    async with get_storage() as storage:
        for secret in keys.values():
            await storage.set_auth_roles(secret.public_key.hex(), "arw")
    with open(keys_file, "w") as out:
        for name, secret in keys.items():
            out.write(f"{name} {secret.hex()} {secret.public_key.hex()} "
                      f"{secret.bech32()} {secret.public_key.bech32()}\n")


if __name__ == "__main__":
    Config.load(sys.argv[1])
    asyncio.run(main(int(sys.argv[2]), sys.argv[3]))
