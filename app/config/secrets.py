"""API keys: only in the OS keychain (keyring), never in SQLite, settings, logs or exports.

A keyring backend that is not a secure keychain is refused with a plain explanation and two
explicit choices: keep the key for this session only (memory), or opt in to a file readable only
by the user (mode 0600, ``keys.json``, written whole or not at all). "Not a secure keychain" is
decided for every backend keyring can hand back (``keychain()``): priority below 1 (keyrings.alt's
plaintext and encrypted files, the null and fail backends), a chainer with nothing secure to
write to, and a backend that cannot even be loaded (keyrings.alt's EncryptedKeyring without
pycryptodome raises when asked its priority). An encrypted file keyring would ask for its
password on stdin in the middle of a command: it is refused like the rest. For the CLI, an
environment variable (OPENAI_API_KEY / ANTHROPIC_API_KEY) is used when nothing is stored (after
llm's ``get_key``: explicit -> stored -> environment).

Keys are checked when stored (``validate_key``): printable ASCII without spaces (0x21-0x7e), the
characters an HTTP header can carry; the refusal says what is wrong and where, never the key.
Every key the store reads or writes is remembered by ``app.domain.secrets_mask`` so that it is
masked in whatever Outpost shows, stores or logs; ``KeyStore.all_keys`` lists every stored key
for the chat service's mask, and ``known_keys`` says whose each known key is, so that a message
holding one (pasted by mistake) is refused by name before it is stored or sent.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

import keyring
import keyring.errors
from keyring.backends.chainer import ChainerBackend

from app.config import paths
from app.config.atomic_file import write_atomic
from app.config.providers import ProviderRegistry
from app.domain.errors import OutpostError, StorageError, UsageError
from app.domain.secrets_mask import SecretMask, remember, remembered_owners

SERVICE = "Outpost"
# An environment key is sent only to the provider it was issued by, never to another server
# that merely speaks the same wire format (a custom URL would otherwise receive it).
ENV_VARS = {"api.openai.com": "OPENAI_API_KEY", "api.anthropic.com": "ANTHROPIC_API_KEY"}


def environment_variable(base_url: str) -> str | None:
    """The environment variable whose key is used for the API at ``base_url`` when none is
    stored (None: no variable is, for another server)."""
    return ENV_VARS.get((urlparse(base_url).hostname or "").lower())


def how_to_add_a_key(provider: str, base_url: str) -> str:
    """The ways to give ``provider`` a key, for a sentence that says it has none: the keychain,
    the file only you can read when there is no secure keychain, and the environment variable
    of the official API at ``base_url``."""
    variable = environment_variable(base_url)
    return (f"store one with `outpost keys set {provider}` (without a secure keychain: `outpost "
            f"keys set {provider} --insecure-file`, a file only you can read)"
            + (f", or set {variable}" if variable else ""))
FALLBACKS = ("refuse", "memory", "file")
_log = logging.getLogger(__name__)


class InsecureKeyring(OutpostError):
    kind = "insecure_keyring"
    exit_code = 2


class InvalidKey(UsageError):
    """A key with characters no API key has (spaces, line breaks, control or non-ASCII
    characters): refused when stored, and by an engine given one from elsewhere."""

    kind = "invalid_key"


class KeyFileDamaged(StorageError):
    """``keys.json`` (the insecure-file opt-in) is not what Outpost writes: it is never
    overwritten, so the keys in it are not lost."""

    kind = "key_file_damaged"
    exit_code = 2


def mask(key: str) -> str:
    """``sk-proj-abc...wxyz`` -> ``sk-…wxyz``: enough to recognise, never enough to use."""
    if not key:
        return ""
    prefix = key.split("-", 1)[0] + "-" if "-" in key[:8] else ""
    return f"{prefix}…{key[-4:]}" if len(key) > 8 else "…"


def _what_is_wrong(char: str) -> str:
    if char in "\r\n":
        return "a line break"
    if char == " ":
        return "a space"
    if char == "\t":
        return "a tab"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return "a control character"
    return "a character outside plain ASCII"


def validate_key(key: str, whose: str = "The key") -> str:
    """The key without surrounding whitespace; ``InvalidKey`` (one sentence that never contains
    the key) when it is empty or has a character outside printable ASCII 0x21-0x7e. Spaces inside
    are refused too: no provider issues keys with spaces, and one there is a paste gone wrong."""
    key = key.strip()
    if not key:
        raise InvalidKey(f"{whose} is empty.")
    for position, char in enumerate(key, start=1):
        if not "\x21" <= char <= "\x7e":
            raise InvalidKey(
                f"{whose} contains {_what_is_wrong(char)} at character {position} of "
                f"{len(key)}; API keys are printable ASCII without spaces, so paste it again "
                "exactly as the provider shows it.")
    return key


@dataclass(frozen=True)
class Keychain:
    """What keyring offers here. ``secure``: keys may be stored there. ``problem``: why the
    backend could not even be asked (None when it could)."""

    name: str
    priority: float | None
    secure: bool
    problem: str | None = None

    def describe(self) -> str:
        if self.problem:
            return f"keyring backend {self.name}: {self.problem}"
        priority = "unknown" if self.priority is None else f"{self.priority:g}"
        return f"keyring backend {self.name}, priority {priority}"


def _name(backend: object) -> str:
    return f"{type(backend).__module__}.{type(backend).__name__}"


def _priority(backend: object) -> float | None:
    try:
        return float(backend.priority)  # type: ignore[attr-defined]
    except Exception:  # a backend computes its priority; a broken one raises anything
        return None


def keychain() -> Keychain:
    """The keyring backend and whether it is a secure keychain; never raises."""
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a configured backend that cannot load raises anything
        name = os.environ.get("PYTHON_KEYRING_BACKEND") or "configured in keyringrc.cfg"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Keychain(name, None, False, f"it could not be loaded ({reason})")
    name, priority = _name(backend), _priority(backend)
    if isinstance(backend, ChainerBackend):
        # a chainer writes to its first (highest-priority) backend: that one decides
        try:
            chained = list(backend.backends)
        except Exception:  # one of the chained backends failed to load
            chained = []
        if not chained:
            return Keychain(name, priority, False)
        first = chained[0]
        first_priority = _priority(first)
        return Keychain(f"{name} -> {_name(first)}", first_priority,
                        first_priority is not None and first_priority >= 1)
    return Keychain(name, priority, priority is not None and priority >= 1)


class KeyStore:
    """Reads and writes provider keys. ``fallback`` is the user's explicit choice for a machine
    without a secure keychain: "refuse" (default), "memory" (this session only) or "file"."""

    def __init__(self, fallback: str = "refuse", file_path: Path | None = None):
        if fallback not in FALLBACKS:
            raise UsageError(f"Key fallback must be one of {', '.join(FALLBACKS)}.")
        self.fallback = fallback
        self.file_path = file_path or paths.config_dir() / "keys.json"
        self._memory: dict[str, str] = {}

    @property
    def secure(self) -> bool:
        return keychain().secure

    def _refusal(self, chain: Keychain, failure: str | None = None) -> InsecureKeyring:
        why = (f"The OS keychain could not store the key ({failure})" if failure else
               f"No secure keychain is available ({chain.describe()})")
        return InsecureKeyring(
            f"{why}, so Outpost will not store the key there. Choose one: keep it for this "
            "session only (window: \"Only this session\"; command line: OPENAI_API_KEY / "
            "ANTHROPIC_API_KEY for api.openai.com / api.anthropic.com), or store it in a file "
            f"only you can read (--insecure-file, {self.file_path}, mode 0600).")

    def set(self, provider: str, key: str) -> str:
        """Store ``key``; return where it went ("keychain", "memory" or "file")."""
        key = validate_key(key)
        remember(key, provider)
        chain = keychain()
        failure = None
        if chain.secure:
            try:
                keyring.set_password(SERVICE, provider, key)
            except Exception as exc:  # locked, no D-Bus, a backend's own error type
                failure = SecretMask([key]).scrub(str(exc) or type(exc).__name__)
            else:  # in the keychain now: a plain-file copy from before (--insecure-file) goes
                self._forget_file_copy(provider)
                return "keychain"
        if self.fallback == "memory":
            self._memory[provider] = key
            return "memory"
        if self.fallback == "file":
            data = self._read_file(strict=True)
            data[provider] = key
            self._write_file(data)
            return "file"
        raise self._refusal(chain, failure)

    def get(self, provider: str) -> str | None:
        if provider in self._memory:
            return self._memory[provider]
        value = self._from_keychain(provider)
        if not value and self.file_path.exists():
            value = self._read_file().get(provider)
        remember(value, provider)
        return value or None

    def _from_keychain(self, provider: str) -> str | None:
        if not keychain().secure:
            return None  # an insecure backend is never asked (an encrypted one would prompt)
        try:
            return keyring.get_password(SERVICE, provider)
        except Exception:  # a locked or vanished keychain: as if nothing were stored
            return None

    def delete(self, provider: str) -> None:
        self._memory.pop(provider, None)
        if keychain().secure:
            try:
                keyring.delete_password(SERVICE, provider)
            except Exception:  # nothing stored there, or the keychain is gone: nothing to do
                pass
        self._forget_file_copy(provider)

    def _forget_file_copy(self, provider: str) -> None:
        """Take ``provider``'s key out of ``keys.json``, if it is there."""
        if self.file_path.exists():
            data = self._read_file(strict=True)
            if data.pop(provider, None) is not None:
                self._write_file(data)

    def resolve(self, provider: str, base_url: str, explicit: str | None = None) -> str | None:
        """explicit -> stored -> the environment variable of the official API at ``base_url``
        (OPENAI_API_KEY only for api.openai.com, ANTHROPIC_API_KEY only for api.anthropic.com)."""
        if explicit:
            remember(explicit, provider)
            return explicit
        stored = self.get(provider)
        if stored:
            return stored
        variable = environment_variable(base_url)
        value = os.environ.get(variable, "").strip() if variable else ""
        remember(value, provider)
        return value or None

    def all_keys(self, providers: Iterable[str]) -> frozenset[str]:
        """Every key this store knows (for masking): the session's, the file's, the keychain's
        for each of ``providers``, and the environment's."""
        return frozenset(self.owned_keys(providers))

    def owned_keys(self, providers: Iterable[str], ask_keychain: bool = True) -> dict[str, str]:
        """Every key this store knows -> whose it is (a provider's name, or the environment
        variable it is in): the session's, the keychain's for each of ``providers``
        (``ask_keychain`` False: the keychain is not asked), the file's, and the
        environment's. A key kept in two places is named after the first of these."""
        owners: dict[str, str] = {}
        found = list(self._memory.items())
        if ask_keychain:
            found += [(provider, self._from_keychain(provider) or "") for provider in providers]
        if self.file_path.exists():
            found += list(self._read_file().items())
        found += [(variable, os.environ.get(variable, "").strip())
                  for variable in ENV_VARS.values()]
        for owner, key in found:
            if key:
                owners.setdefault(key, owner)
        for key, owner in owners.items():
            remember(key, None if owner in ENV_VARS.values() else owner)
        return owners

    def _read_file(self, strict: bool = False) -> dict[str, str]:
        """The keys in ``keys.json`` ({} when there is none). A file that cannot be read or is
        not what Outpost writes: ``strict`` (about to write) raises ``KeyFileDamaged``, so the
        keys in it are never overwritten; otherwise it is logged and no key is found there."""
        try:
            data = json.loads(self.file_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            why = "it could not be read" if isinstance(exc, OSError) else "it is not valid JSON"
            return self._damaged(why, strict)
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            return self._damaged("it is not a list of provider keys", strict)
        return data

    def _damaged(self, why: str, strict: bool) -> dict[str, str]:
        message = (f"The key file {self.file_path} is damaged ({why}); Outpost will not "
                   "overwrite it: move it away and store the keys again.")
        if strict:
            raise KeyFileDamaged(message)
        _log.warning("%s", message)
        return {}

    def _write_file(self, data: dict[str, str]) -> None:
        """Whole or not at all (temporary file, fsync, rename), mode 0600 from the first byte."""
        self.file_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.file_path, json.dumps(data), mode=0o600)


def _provider_names() -> list[str]:
    try:
        return [config.name for config in ProviderRegistry().list()]
    except OutpostError:  # a damaged providers file: the keys of the others are still found
        return []


def stored_keys() -> frozenset[str]:
    """Every key Outpost keeps (the keychain's for each configured provider, the opt-in file's,
    the environment's, and those this process handled): what the chat service masks."""
    return KeyStore(fallback="file").all_keys(_provider_names())


def known_keys(ask_keychain: bool = True) -> dict[str, str]:
    """Every key Outpost knows -> the words that say whose it is ("your API key for openai",
    "your API key from OPENAI_API_KEY", "one of your API keys"): the keychain's for each
    configured provider, the opt-in file's, those this process handled and the environment's.
    ``ask_keychain`` False leaves the keychain out (a Local only turn opens no socket, D-Bus's
    included); the keys this process already read from it are still known. What a message
    must not hold (``app.chat.service``)."""
    owners: dict[str, str | None] = dict(
        KeyStore(fallback="file").owned_keys(_provider_names(), ask_keychain))
    for key, owner in remembered_owners().items():
        # a provider this process used the key for names it better than a variable does
        if owner and owners.get(key, "") in ("", *ENV_VARS.values()):
            owners[key] = owner
        owners.setdefault(key, owner)
    return {key: _whose(owner) for key, owner in owners.items()}


def _whose(owner: str | None) -> str:
    if not owner:
        return "one of your API keys"
    if owner in ENV_VARS.values():
        return f"your API key from {owner}"
    return f"your API key for {owner}"
