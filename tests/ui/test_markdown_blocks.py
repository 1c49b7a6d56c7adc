"""Where a streaming reply is cut into finished blocks and the one still being written
(``ui.markdown.stable_boundary``): rendering the two parts on their own must give what
rendering the whole gives, whatever comes next."""
from __future__ import annotations

import pytest

from ui.markdown import render, stable_boundary


@pytest.mark.parametrize("text, finished", [
    ("One.\n\nTwo\n", "One.\n\n"),
    ("One.\n\nTwo.\n\nThr", "One.\n\n"),  # a block's first line ends before it counts
    # a loose list is one list: not cut between its items
    ("- a\n\n- b\n\n- c", ""),
    ("- a\n\n- b\n\nAfter it.\n", "- a\n\n- b\n\n"),
    # "2" may yet become "2. b", the same list's second item: not cut until its line ends
    ("1. a\n\n2", ""),
    ("1. a\n\n2. b\n", ""),
    # a code fence is one block however many blank lines it holds, closed or not
    ("```\nx\n\ny\n", ""),
    ("```\nx\n\ny\n```\n\nNext\n", "```\nx\n\ny\n```\n\n"),
    ("Text.", ""),
])
def test_finished_blocks_end_where_nothing_after_can_change_them(text, finished):
    assert text[:stable_boundary(text)] == finished


@pytest.mark.parametrize("text", [
    "1. a\n\n2. b\n\n3. c\n\nEnd.",
    "- a\n\n  more of a\n\n- b\n\nEnd.",
    "Para.\n\n```py\nx = 1\n\n\ny = 2\n```\n\n| a |\n|---|\n| 1 |\n\n> q\n\nEnd.",
])
def test_every_prefix_splits_into_parts_that_render_as_the_whole(text):
    """A reply cut at the boundary of each of its prefixes, as it streams, renders the same as
    the whole reply once it ends."""
    for end in range(1, len(text) + 1):
        cut = stable_boundary(text[:end])
        assert render(text[:cut]) + render(text[cut:]) == render(text), (end, cut)
