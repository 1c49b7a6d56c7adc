"""Search for the window (app/storage/search.py) on a real database: plain words are not FTS5
syntax, hits carry a highlighted snippet, title and date, and the scope is respected."""
from __future__ import annotations

import pytest

from app.domain.messages import Role
from app.storage.search import MARK_END, MARK_START, fts_query, search_hits
from app.storage.store import Store


def test_plain_words_become_a_safe_query():
    assert fts_query("lighthouse keeper") == '"lighthouse" "keeper"*'
    assert fts_query("lighthouse ") == '"lighthouse"'
    assert fts_query('a "quoted" - AND (x') == '"a" "quoted" "AND" "x"*'
    assert fts_query(" -- ") is None


def test_hits_are_highlighted_scoped_and_best_first(tmp_path):
    store = Store(tmp_path / "outpost.db")
    first = store.create_conversation("Sea stories", "", None, profile="ana")
    store.add_message(first.id, Role.USER, "Tell me about the lighthouse keeper.")
    reply = store.add_message(first.id, Role.ASSISTANT,
                              "The lighthouse keeper kept the lighthouse lit all night.")
    other = store.create_conversation("Cooking", "", None, profile="ana")
    store.add_message(other.id, Role.USER, "A recipe with no light in it.")
    theirs = store.create_conversation("Bob's", "", None, profile="bob")
    store.add_message(theirs.id, Role.USER, "lighthouse")

    hits = search_hits(store, "lightho", profile="ana")  # a prefix while typing
    assert [h.conversation_id for h in hits] == [first.id, first.id]
    assert hits[0].message_id == reply.id  # the newest first
    assert f"{MARK_START}lighthouse{MARK_END}" in hits[0].snippet
    assert hits[0].conversation_title == "Sea stories" and hits[0].created_at[:4] == \
        reply.created_at[:4]
    assert search_hits(store, 'keeper" (', profile="ana")  # no syntax error
    assert search_hits(store, "lighthouse", conversation_id=other.id) == []
    assert [h.conversation_id for h in search_hits(store, "lighthouse")] .count(theirs.id) == 1
    store.close()


@pytest.mark.parametrize("markdown, reads", [
    ("1. **Take** rescues from **dry** trails", "Take rescues from dry trails"),
    ("# Title\n- item one\n> quoted", "Title\nitem one\nquoted"),
    ("see [the docs](https://example.org/docs) and *this* and _that_ and ***both***",
     "see the docs and this and that and both"),
    # code as written: a span's backticks and a fence's lines left out, nothing else
    ("Call `self._fit(item)` from `__init__`, passing `*args`.",
     "Call self._fit(item) from __init__, passing *args."),
    ("```python\ndef f(*args):\n    return 2**8\n```\nafter *it*",
     "def f(*args):\n    return 2**8\nafter it"),
    # a lone mark is text
    ("a * b * c, 2**8 is 256, count_lamps", "a * b * c, 2**8 is 256, count_lamps"),
])
def test_a_snippet_reads_as_the_message_shows(markdown, reads):
    from app.storage.search import plain_text

    assert plain_text(markdown) == reads


def test_a_snippet_marks_a_word_inside_code():
    from app.storage.search import snippet

    shown = snippet("Call `self._fit(item)` from `__init__`.", "_fit")
    assert shown == f"Call self.{MARK_START}_fit{MARK_END}(item) from __init__."
