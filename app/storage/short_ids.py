"""Ids given by their first characters, as git takes a commit's: ``outpost history show 26f0a927``.

Conversation and message ids are 32 hex digits; a command line takes any unique start of one
(at least ``SHORTEST`` digits) among the conversations the profile may open (its own and
those of no profile, as ``Profiles.owns``). A full id is used as it is; a start that fits
none is left as given, so the command reports it as it reports any unknown id.
"""
from __future__ import annotations

import re

from app.domain.errors import UsageError
from app.storage.store import Store, storage_errors

SHORTEST = 4
_HEX_START = re.compile(rf"[0-9a-f]{{{SHORTEST},31}}")
_SQL = {
    "conversation": "SELECT c.id FROM conversations c WHERE c.id GLOB ? "
                    "AND (c.profile IS NULL OR c.profile = ?) LIMIT 2",
    "message": "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
               "WHERE m.id GLOB ? AND (c.profile IS NULL OR c.profile = ?) LIMIT 2",
}


def expand(store: Store, kind: str, given: str, profile: str) -> str:
    """The full id of the ``kind`` ("conversation" or "message") whose id starts with
    ``given``; ``given`` itself when it is not the start of one (or is whole already)."""
    if not _HEX_START.fullmatch(given):
        return given
    with storage_errors(store.path):
        found = [row[0] for row in store.db.execute(_SQL[kind], [given + "*", profile])]
    if len(found) > 1:
        raise UsageError(f"More than one {kind} has an id starting with {given}: give more of "
                         "it.")
    return found[0] if found else given
