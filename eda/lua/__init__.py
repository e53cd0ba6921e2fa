"""The Lua scripts of the store, one readable file each, loaded by name."""

from __future__ import annotations

from pathlib import Path

import redis
from redis.commands.core import Script

FOLDER = Path(__file__).parent


def load(client: redis.Redis, name: str) -> Script:
    """The script ``<name>.lua`` beside this module, registered with this client."""
    return client.register_script((FOLDER / f"{name}.lua").read_text())
