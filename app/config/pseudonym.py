"""What providers are told about who asks: a pseudonym per profile, never its name.

OpenAI's ``user`` and Anthropic's ``metadata.user_id`` let a provider tell a shared app's end
users apart (abuse monitoring); both ask for an identifier that is not personal information. A
profile's name is, by default, the OS login name. So each profile is sent as ``outpost-`` and
the first 16 hex digits of an HMAC-SHA256 of its name under a secret made once for this install
(``<config dir>/install_secret``, 0600): stable for a profile on this machine, the same on no
other, and not reversible by guessing names. When the secret cannot be written (a read-only
config folder), one is made for this process only.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from app.config import paths
from app.config.atomic_file import write_atomic
from app.domain.errors import FileWriteFailed

FILE = "install_secret"


@functools.lru_cache(maxsize=4)
def _secret(config_dir: str) -> bytes:
    path = paths.config_dir() / FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) == 64:
            return bytes.fromhex(text)
    except (OSError, ValueError):
        pass  # none yet (or not readable): a new one
    made = secrets.token_bytes(32)
    try:
        write_atomic(path, made.hex())
    except FileWriteFailed:
        pass  # this process only: the pseudonym is still not the name
    return made


def provider_user(profile: str) -> str:
    """The identifier sent to providers for ``profile``."""
    secret = _secret(str(paths.config_dir()))  # (per config folder: OUTPOST_HOME in tests)
    mac = hmac.new(secret, profile.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"outpost-{mac[:16]}"
