"""The API keys the window must not show or keep: masked in the draft it writes to window.ini,
in the chat list, the title and the messages of a stored chat, and refused in a system prompt.

Every key the user stored counts, whatever the route of the chat shown: a Local only chat may
hold a key (its turn checks only the keys known without the keychain), and the window shows it
all the same. The keychain is a D-Bus round trip, on the GUI thread here (every draft save,
list refresh and chat opened asks for the keys), so it is asked at most once every
``KEYS_KEPT_S``, and at once after the Providers dialog changed a provider or a key
(``forget``); in between, the keys it gave are known to this process
(``app.domain.secrets_mask.remember``), as are the environment's and the key file's, read each
time (``app.config.secrets.known_keys``)."""
from __future__ import annotations

import time
from typing import Callable

from app.config.secrets import known_keys
from app.domain.secrets_mask import SecretMask

KEYS_KEPT_S = 30.0  # the keychain asked at most this often by the window


class WindowKeys:
    """The keys the window knows now (``known``, ``mask``); ``forget`` makes the next call
    ask the keychain again. ``clock``: seconds, for tests (default ``time.monotonic``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._keychain_read: float | None = None  # when the keychain was last asked

    def known(self) -> dict[str, str]:
        """Every API key Outpost knows -> whose it is."""
        now = self.clock()
        ask = self._keychain_read is None or now - self._keychain_read > KEYS_KEPT_S
        if ask:
            self._keychain_read = now
        return known_keys(ask_keychain=ask)

    def mask(self) -> SecretMask:
        return SecretMask(self.known())

    def forget(self) -> None:
        """A provider or a key changed: the next call asks the keychain again."""
        self._keychain_read = None
