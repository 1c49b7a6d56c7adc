"""The secret mask is pure: texts and events in, masked texts and events out, tested on every way
a streamed key can be split."""
from __future__ import annotations

import pytest

from app.domain.errors import AuthError, StreamInterrupted
from app.domain.messages import Finished, FinishReason, TextDelta, Usage
from app.domain.secrets_mask import REDACTED, SecretMask, mask_stream

KEY = "sk-mask-test-0a1b2c3d4e5f"
OTHER = "sk-ant-other-99887766"


def streamed(mask: SecretMask, pieces: list[str]) -> tuple[str, list[str]]:
    text = mask.stream()
    out = [text.feed(p) for p in pieces] + [text.flush()]
    return "".join(out), out


def test_whole_texts_lose_every_known_secret_and_keep_the_rest():
    mask = SecretMask([KEY, OTHER, "short", None, ""])
    assert mask.scrub(f"a {KEY} b {OTHER} c short") == f"a {REDACTED} b {REDACTED} c short"
    assert mask.scrub("nothing secret") == "nothing secret"


@pytest.mark.parametrize("cut", range(1, len(KEY)))
def test_a_key_split_across_two_deltas_is_caught_at_every_split(cut):
    text, _ = streamed(SecretMask([KEY]), [f"Your key: {KEY[:cut]}", f"{KEY[cut:]} ok"])
    assert text == f"Your key: {REDACTED} ok"


def test_a_key_sent_one_character_at_a_time_is_caught():
    message = f"[{KEY}] and [{OTHER}]"
    text, pieces = streamed(SecretMask([KEY, OTHER]), list(message))
    assert text == f"[{REDACTED}] and [{REDACTED}]"
    assert not any(KEY[:4] in p for p in pieces)


def test_ordinary_text_is_never_held_back():
    mask = SecretMask([KEY])
    text = mask.stream()
    assert text.feed("Hello there, ") == "Hello there, " and text.held == 0
    assert text.feed("the answer is s") == "the answer is " and text.held == 1  # could be "sk-"
    assert text.feed("ome text") == "some text" and text.held == 0
    assert text.feed("sk-mask") == "" and text.flush() == "sk-mask"  # the end: let it out


def test_a_key_inside_a_longer_key_is_masked_whole():
    long = KEY + "-extended-part"
    assert SecretMask([KEY, long]).scrub(f"x{long}y") == f"x{REDACTED}y"


def test_a_stream_of_events_is_masked_and_keeps_its_order():
    error = StreamInterrupted(f"cut off: the provider said {KEY}", f"partial {KEY}")
    events = [TextDelta("Key "), TextDelta(KEY[:6]), TextDelta(KEY[6:]), TextDelta(" s"),
              Usage(1, 2), Finished(FinishReason.ERROR, error=error)]
    out = list(mask_stream(events, SecretMask([KEY])))
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == f"Key {REDACTED} s"
    assert [type(e) for e in out][-2:] == [Usage, Finished]
    assert str(error) == f"cut off: the provider said {REDACTED}"
    assert error.partial == f"partial {REDACTED}" and KEY not in repr(error.args)


def test_an_error_the_stream_raises_is_masked():
    def failing():
        yield TextDelta("a")
        raise AuthError(f"refused the key {KEY}", 401, "p")

    with pytest.raises(AuthError) as raised:
        list(mask_stream(failing(), SecretMask([KEY])))
    assert str(raised.value) == f"refused the key {REDACTED}"


# -- a key pasted into a message: found by name, never quoted ------------------------------------
def test_find_secret_names_the_longest_known_key_a_text_holds():
    from app.domain.secrets_mask import find_secret

    owners = {KEY: "your API key for acme", KEY + "-longer": "your API key for box",
              "short": "not a key"}
    assert find_secret(f"see {KEY}-longer here", owners) == (KEY + "-longer",
                                                            "your API key for box")
    assert find_secret(f"see {KEY} here", owners) == (KEY, "your API key for acme")
    assert find_secret("a short text", owners) is None  # under MIN_SECRET: not a key
    assert find_secret(f"see {KEY[:-1]} here", owners) is None  # exact keys only


def test_refuse_keys_names_the_message_and_whose_key_it_is_never_the_key():
    from app.domain.errors import KeyInMessage, kind_words
    from app.domain.messages import ChatMessage, Role
    from app.domain.secrets_mask import refuse_keys

    owners = {KEY: "your API key for acme"}
    new = [ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, f"is {KEY} right?")]
    with pytest.raises(KeyInMessage) as refused:
        refuse_keys(new, owners, new_prompt=True)
    assert str(refused.value).startswith("The message contains your API key for acme; remove")
    assert KEY not in str(refused.value) and refused.value.whose == "your API key for acme"
    assert refused.value.exit_code == 2
    assert kind_words(refused.value.kind) == "the message holds your API key"
    earlier = [ChatMessage(Role.USER, f"is {KEY} right?"), ChatMessage(Role.USER, "And now?")]
    with pytest.raises(KeyInMessage, match="^A message in this conversation contains"):
        refuse_keys(earlier, owners, new_prompt=True)
    system = [ChatMessage(Role.SYSTEM, f"Use {KEY}."), ChatMessage(Role.USER, "Hi")]
    with pytest.raises(KeyInMessage, match="^The system prompt of this conversation"):
        refuse_keys(system, owners, new_prompt=True)
    refuse_keys(new, {}, new_prompt=True)  # no known keys: nothing to refuse
    refuse_keys([ChatMessage(Role.USER, "nothing secret")], owners)
