"""Ids given by their first characters, as git takes a commit's: ``outpost history show 26f0a927``.

Conversation and message ids are 32 hex digits; a command line takes any unique start of one
(at least ``SHORTEST`` digits) among the conversations the profile may open (its own and
those of no profile, as ``Profiles.owns``). A whole id is used as it is, even when it is the
start of another (an imported id can be); a start that fits none is left as given, so the
command reports it as it reports any unknown id; a start shorter than ``SHORTEST`` that fits
one is refused as too short.
"""
from __future__ import annotations

import re

from app.domain.errors import UsageError
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store

SHORTEST = 4
_HEX_START = re.compile(rf"[0-9a-fA-F]{{{SHORTEST},}}")
_HEX_SHORT = re.compile(rf"[0-9a-fA-F]{{1,{SHORTEST - 1}}}")
# CROSS JOIN: the message's id index first (else SQLite may read every message of the profile)
_SQL = {
    "conversation": ("SELECT c.id FROM conversations c WHERE c.id {} ? "
                     "AND (c.profile IS NULL OR c.profile = ?) LIMIT 2"),
    "message": ("SELECT m.id FROM messages m CROSS JOIN conversations c "
                "ON c.id = m.conversation_id WHERE m.id {} ? "
                "AND (c.profile IS NULL OR c.profile = ?) LIMIT 2"),
}


def expand(store: Store, kind: str, given: str, profile: str) -> str:
    """The full id of the ``kind`` ("conversation" or "message") whose id starts with
    ``given``; ``given`` itself when it is a whole id (an imported one may be the start of
    another) or not the start of one. Hex digits in either case (ids are lower case)."""
    short = _HEX_SHORT.fullmatch(given) is not None
    if not short and not _HEX_START.fullmatch(given):
        return given
    with storage_errors(store.path):
        if store.db.execute(_SQL[kind].format("="), [given, profile]).fetchall():
            return given
        found = [row[0] for row in store.db.execute(_SQL[kind].format("GLOB"),
                                                    [given.lower() + "*", profile])]
    if short and found:  # (rather than "there is no conversation with id 'd1d'")
        raise UsageError(f"{given!r} is too short to name a {kind}: give at least {SHORTEST} "
                         "characters of its id.")
    if len(found) > 1:
        raise UsageError(f"More than one {kind} has an id starting with {given}: give more of "
                         "it.")
    return found[0] if found else given
