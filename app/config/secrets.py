"""API keys: only in the OS keychain (keyring), never in SQLite, settings, logs or exports.

A keyring backend whose priority is below 1 (plaintext files, the null/fail backends) is refused
with a plain explanation and two explicit choices: keep the key for this session only (memory), or
opt in to a file readable only by the user (mode 0600). For the CLI, an environment variable
(OPENAI_API_KEY / ANTHROPIC_API_KEY) is used when nothing is stored (after llm's ``get_key``:
explicit -> stored -> environment).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import urlparse

import keyring
import keyring.errors

from app.config import paths
from app.domain.errors import OutpostError, UsageError

SERVICE = "Outpost"
# An environment key is sent only to the provider it was issued by, never to another server
# that merely speaks the same wire format (a custom URL would otherwise receive it).
ENV_VARS = {"api.openai.com": "OPENAI_API_KEY", "api.anthropic.com": "ANTHROPIC_API_KEY"}
FALLBACKS = ("refuse", "memory", "file")


class InsecureKeyring(OutpostError):
    kind = "insecure_keyring"
    exit_code = 2


def mask(key: str) -> str:
    """``sk-proj-abc...wxyz`` -> ``sk-…wxyz``: enough to recognise, never enough to use."""
    if not key:
        return ""
    prefix = key.split("-", 1)[0] + "-" if "-" in key[:8] else ""
    return f"{prefix}…{key[-4:]}" if len(key) > 8 else "…"


def backend_description() -> tuple[str, float]:
    backend = keyring.get_keyring()
    return f"{type(backend).__module__}.{type(backend).__name__}", float(backend.priority)


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
        return backend_description()[1] >= 1

    def _refusal(self) -> InsecureKeyring:
        name, priority = backend_description()
        return InsecureKeyring(
            f"No secure keychain is available (keyring backend {name}, priority {priority:g}), so "
            "Outpost will not store the key there. Choose one: keep it for this session only "
            "(window: \"Only this session\"; command line: OPENAI_API_KEY / ANTHROPIC_API_KEY for "
            "api.openai.com / api.anthropic.com), or store it in a file only you can read "
            f"(--insecure-file, {self.file_path}, mode 0600).")

    def set(self, provider: str, key: str) -> str:
        """Store ``key``; return where it went ("keychain", "memory" or "file")."""
        key = key.strip()
        if not key:
            raise UsageError("The key is empty.")
        if self.secure:
            try:
                keyring.set_password(SERVICE, provider, key)
                return "keychain"
            except keyring.errors.KeyringError as exc:
                raise InsecureKeyring(f"The keychain refused to store the key: {exc}") from None
        if self.fallback == "memory":
            self._memory[provider] = key
            return "memory"
        if self.fallback == "file":
            data = self._read_file()
            data[provider] = key
            self._write_file(data)
            return "file"
        raise self._refusal()

    def get(self, provider: str) -> str | None:
        if provider in self._memory:
            return self._memory[provider]
        if self.secure:
            try:
                value = keyring.get_password(SERVICE, provider)
            except keyring.errors.KeyringError:
                value = None
            if value:
                return value
        if self.file_path.exists():
            return self._read_file().get(provider)
        return None

    def delete(self, provider: str) -> None:
        self._memory.pop(provider, None)
        if self.secure:
            try:
                keyring.delete_password(SERVICE, provider)
            except keyring.errors.PasswordDeleteError:
                pass
        if self.file_path.exists():
            data = self._read_file()
            if data.pop(provider, None) is not None:
                self._write_file(data)

    def resolve(self, provider: str, base_url: str, explicit: str | None = None) -> str | None:
        """explicit -> stored -> the environment variable of the official API at ``base_url``
        (OPENAI_API_KEY only for api.openai.com, ANTHROPIC_API_KEY only for api.anthropic.com)."""
        if explicit:
            return explicit
        stored = self.get(provider)
        if stored:
            return stored
        variable = ENV_VARS.get((urlparse(base_url).hostname or "").lower())
        return (os.environ.get(variable, "") or None) if variable else None

    def _read_file(self) -> dict[str, str]:
        try:
            return json.loads(self.file_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write_file(self, data: dict[str, str]) -> None:
        self.file_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.chmod(self.file_path, stat.S_IRUSR | stat.S_IWUSR)
