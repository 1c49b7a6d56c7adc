"""What a profile may be called, and when two names are one profile's (``app.storage.profiles``
keeps the profiles; ``app.storage.quotas`` finds their limits by name).

* A name is 1 to 40 letters, digits, spaces, dots, @, _ or -, starting with a letter or digit,
  and not ``all`` (in any case), which ``outpost usage --profile all`` takes for everyone.
* Names are compared as the database compares them (``collate nocase``: the ASCII letters
  fold, others do not): ``Alice`` and ``alice`` are one profile.
* A removed profile's usage is filed under ``NAME (removed YYYY-MM-DD)``, which no profile can be
  called (brackets are not allowed), so a later profile of that name does not take it over.
"""
from __future__ import annotations

import datetime as dt
import re
import string

from app.domain.errors import ProfileError

EVERYONE = "all"  # what `outpost usage --profile` takes for every profile
_NAME = re.compile(r"^[\w][\w .@-]{0,39}$")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def check_name(name: str) -> str:
    """``name`` stripped, when a profile may be called that; else ProfileError saying why."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise ProfileError(f"{name!r} is not a usable profile name: use 1 to 40 letters, "
                           "digits, spaces, dots, @, _ or -, starting with a letter or digit.")
    if name_key(name) == EVERYONE:
        raise ProfileError(f"{EVERYONE!r} cannot name a profile: `outpost usage --profile "
                           f"{EVERYONE}` means every profile's usage. Choose another name.")
    return name


def name_key(name: str) -> str:
    """A profile name as the database compares names: two names are one profile's when their
    keys are equal."""
    return name.strip().translate(_ASCII_LOWER)


def removed_label(name: str, day: dt.date) -> str:
    """What a profile removed on ``day`` has its usage filed under."""
    return f"{name} (removed {day.isoformat()})"
