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


@pytest.fixture
def languages(tmp_path):
    store = Store(tmp_path / "outpost.db")
    chat = store.create_conversation("Languages", "", None, profile="ana")
    for text in ("I write C++ at work.", "C# is fine too.", "The costs of coffee.",
                 "Show me code.", "Send an e-mail or light the lamp.",
                 "Error: NOT FOUND came back.", "Don't panic, we can't fail."):
        store.add_message(chat.id, Role.USER, text)
    yield store
    store.close()


def found(store: Store, query: str | None) -> list[str]:
    return sorted(m.content for m in store.search(query, profile="ana")) if query else []


def test_a_word_with_a_symbol_after_it_is_whole_not_a_prefix(languages):
    """``C++`` or ``C#`` was the prefix "c": every word in c matched (found by a trial)."""
    from app.storage.search import command_line_query

    assert fts_query("C++") == '"C"' and command_line_query("C#") == '"C"'
    assert found(languages, command_line_query("C++")) == ["C# is fine too.",
                                                          "I write C++ at work."]
    assert [h.message_id for h in search_hits(languages, "C#", profile="ana")] != []
    assert all("cost" not in h.snippet for h in search_hits(languages, "C#", profile="ana"))
    assert fts_query("lighthouse keep") == '"lighthouse" "keep"*'  # still typing: a prefix


@pytest.mark.parametrize("query, expected", [
    ("e-mail OR lamp", ["Send an e-mail or light the lamp."]),
    ("Error: NOT FOUND", []),  # "Error" without "FOUND": NOT in capitals is the operator
    ("lamp OR C#", ["C# is fine too.", "I write C++ at work.",
                    "Send an e-mail or light the lamp."]),
    ("don't OR can't", ["Don't panic, we can't fail."]),
    ("C++ AND work", ["I write C++ at work."]),
    ("NEAR/OR", []),
    ("AND", []), ("OR", ["Send an e-mail or light the lamp."]),  # alone, a word
    ("NOT", ["Error: NOT FOUND came back."]),
    ("(coffee OR code", ["Show me code.", "The costs of coffee."]),
    ("NEAR(costs coffee, 2)", ["The costs of coffee."]),
    ('"light the" OR panic*', ["Don't panic, we can't fail.",
                               "Send an e-mail or light the lamp."]),
])
def test_command_line_syntax_never_turns_words_into_an_error(languages, query, expected):
    """One capitalised operator made the whole query raw FTS5: ``Error: NOT FOUND`` was "no
    such column: Error", ``e-mail OR lamp`` "no such column: mail", a lone ``OR`` a syntax
    error (found by a trial). Words in such a query are words; an operator needs two sides."""
    from app.storage.search import command_line_query

    assert found(languages, command_line_query(query)) == expected


def test_cli_search_falls_back_to_the_words_of_a_query_fts5_refuses(outpost_home):
    import json
    import subprocess
    import sys

    from app.config.paths import database_path

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=120)

    [me] = json.loads(cli("profile", "list", "--json").stdout)
    store = Store(database_path())
    chat = store.create_conversation("Stars", "", None, profile=me["name"])
    store.add_message(chat.id, Role.USER, "A star named NEAR the moon.")
    store.close()
    result = cli("history", "search", "NEAR(star")  # a NEAR group left open and no phrase
    assert result.returncode == 0, result.stderr
    assert "A star named NEAR the moon." in result.stdout


def test_hits_come_a_page_at_a_time(tmp_path):
    """``offset``: the next page of the same order (the window's More results, `history
    search --offset`), in every conversation or one; past the last hit, none."""
    store = Store(tmp_path / "outpost.db")
    chat = store.create_conversation("Coast", "", None, profile="ana")
    ids = [store.add_message(chat.id, Role.USER, f"lighthouse {i}").id for i in range(7)]
    newest = ids[::-1]
    for scope in ({"profile": "ana"}, {"conversation_id": chat.id}):
        pages = [search_hits(store, "lighthouse", limit=3, offset=start, **scope)
                 for start in (0, 3, 6, 9)]
        assert [[h.message_id for h in page] for page in pages] == [
            newest[:3], newest[3:6], newest[6:], []], scope
    assert [m.id for m in store.search('"lighthouse"', limit=2, offset=5)] == newest[5:]
    store.close()
