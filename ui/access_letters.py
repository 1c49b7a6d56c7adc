"""Access letters for menu items whose texts are not ours (profile names, providers): each gets
a letter that no other item of its menu has, so Alt and the menu's letters reach every item.

The fixed items of a menu carry theirs in their text ("&Manage profiles…"); pass those letters
as ``taken`` so a name never steals one. ``tests/ui/test_menus.py`` checks every menu of the
window: each item has a letter, none twice.
"""
from __future__ import annotations

from typing import Iterable


def _spots(label: str) -> list[int]:
    """Where a letter may go, best first: the start of each word, then the other letters and
    digits, in order."""
    starts = [i for i, ch in enumerate(label)
              if ch.isalnum() and (i == 0 or not label[i - 1].isalnum())]
    return starts + [i for i, ch in enumerate(label) if ch.isalnum() and i not in starts]


def with_access_letters(labels: Iterable[str], taken: Iterable[str] = ()) -> list[str]:
    """``labels`` as menu texts, each with an access letter not in ``taken`` nor used by an
    earlier label ("ann" -> "&ann", then "anna" -> "a&nna"); a "&" of a label shows as one.
    A label whose every letter is used already gets none."""
    used = {letter.lower() for letter in taken}
    texts = []
    for label in labels:
        spot = next((i for i in _spots(label) if label[i].lower() not in used), None)
        if spot is not None:
            used.add(label[spot].lower())
        texts.append("".join(("&" if i == spot else "") + ("&&" if ch == "&" else ch)
                             for i, ch in enumerate(label)))
    return texts
