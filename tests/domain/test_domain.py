"""Domain types: request validation, idempotency keys, and folding a stream into a Reply."""
from __future__ import annotations

import math

import pytest

from app.domain.errors import DownloadFailed, OutpostError, UsageError
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Message,
    MessageStatus,
    Reply,
    Role,
    TextDelta,
    Usage,
    accumulate,
)

HELLO = (ChatMessage(Role.USER, "hello"),)


def test_request_defaults_and_sampling_params():
    request = ChatRequest(model="m", messages=HELLO, stop=("\n\n",), user="alice")
    params = request.sampling_params()
    assert params == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "stop": ["\n\n"],
                      "user": "alice", "idempotency_key": request.idempotency_key}
    assert request.messages[0].as_dict() == {"role": "user", "content": "hello"}


@pytest.mark.parametrize("temperature", [0.0, 1.0, 2.0])
def test_temperature_bounds_are_inclusive(temperature):
    request = ChatRequest(model="m", messages=HELLO, temperature=temperature)
    assert request.temperature == temperature


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": -0.01}, "temperature"),
    ({"temperature": 2.01}, "temperature"),
    ({"temperature": 5}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
])
def test_invalid_sampling_values_are_usage_errors(kwargs, words):
    with pytest.raises(UsageError) as info:
        ChatRequest(model="m", messages=HELLO, **kwargs)
    assert words in str(info.value)
    assert info.value.exit_code == 2
    assert isinstance(info.value, OutpostError)


def test_request_needs_a_message():
    with pytest.raises(UsageError, match="at least one message"):
        ChatRequest(model="m", messages=())


def test_top_p_of_one_is_allowed():
    assert ChatRequest(model="m", messages=HELLO, top_p=1.0).top_p == 1.0


def test_idempotency_key_is_unique_per_request_and_stable_within_one():
    keys = {ChatRequest(model="m", messages=HELLO).idempotency_key for _ in range(200)}
    assert len(keys) == 200
    assert all(key.startswith("turn-") for key in keys)
    request = ChatRequest(model="m", messages=HELLO)
    assert request.sampling_params()["idempotency_key"] == request.idempotency_key
    assert request.sampling_params()["idempotency_key"] == request.idempotency_key


def test_request_is_immutable():
    request = ChatRequest(model="m", messages=HELLO)
    with pytest.raises(AttributeError):
        request.temperature = 1.5  # type: ignore[misc]


def test_accumulate_folds_a_whole_stream():
    usage = Usage(prompt_tokens=10, completion_tokens=3, cached_prompt_tokens=4)
    finish = Finished(FinishReason.STOP, ttft_ms=12.5, tokens_per_s=80.0)
    reply = accumulate([TextDelta("Hel"), TextDelta("lo"), TextDelta(" world"), usage, finish])
    assert reply.text == "Hello world"
    assert reply.usage is usage
    assert reply.finish is finish
    assert usage.evaluated_prompt_tokens == 6


def test_accumulate_is_incremental_on_the_same_reply():
    reply = Reply()
    assert accumulate([TextDelta("a")], reply) is reply
    accumulate([TextDelta("b")], reply)
    assert reply.text == "ab" and reply.usage is None and reply.finish is None
    accumulate([Finished(FinishReason.CANCELLED)], reply)
    assert reply.text == "ab"
    assert reply.finish.reason is FinishReason.CANCELLED


def test_accumulate_of_nothing_is_an_empty_reply():
    reply = accumulate([])
    assert reply.text == "" and reply.usage is None and reply.finish is None


def test_finished_with_error_keeps_the_error():
    error = OutpostError("boom")
    reply = accumulate([TextDelta("part"), Finished(FinishReason.ERROR, error=error)])
    assert reply.finish.error is error
    assert reply.text == "part"


def test_message_as_dict_uses_plain_values():
    message = Message(id="1", conversation_id="c", role=Role.ASSISTANT, content="hi",
                      status=MessageStatus.STREAMING, created_at="t", updated_at="t",
                      params={"temperature": 0.0})
    data = message.as_dict()
    assert data["role"] == "assistant" and data["status"] == "streaming"
    assert data["params"] == {"temperature": 0.0}


def test_enums_have_the_stored_string_values():
    assert [s.value for s in MessageStatus] == ["complete", "streaming", "interrupted", "error"]
    assert [r.value for r in FinishReason] == ["stop", "length", "cancelled", "error"]
    assert Role("user") is Role.USER


def test_every_error_kind_has_plain_words():
    """A kind reaches the user only through ``kind_words``: each one of the tree has words, and
    none of them is the identifier itself."""
    import importlib

    from app.domain import errors

    for module in ("app.config.secrets", "app.domain.context", "app.storage.profiles",
                   "app.storage.quotas"):  # their errors join the tree
        importlib.import_module(module)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    kinds = {OutpostError.kind} | {cls.kind for cls in subclasses(OutpostError)}
    assert kinds <= set(errors.KIND_WORDS), kinds - set(errors.KIND_WORDS)
    for kind in kinds:
        assert "_" not in errors.kind_words(kind), kind
    assert errors.kind_words("connection_failed") == "could not connect"
    assert errors.kind_words("something_new") == "something new"
    assert errors.kind_words(None) == "an error"


def test_a_stored_reason_with_a_kind_reads_in_words():
    from app.domain.errors import with_kind_words

    assert with_kind_words("openai failed before answering (connection_failed): answered "
                           "locally") == ("openai failed before answering (could not connect): "
                                          "answered locally")
    assert with_kind_words("x stream broke (timeout)") == "x stream broke (timed out)"
    assert with_kind_words("kept (as_is) and (free)") == "kept (as_is) and (free)"


def test_a_stream_that_broke_after_text_is_said_as_what_broke_it():
    """A connection that broke mid-answer was "could not connect"; a timeout wrapped as an
    interrupted stream was "the connection broke"."""
    from app.domain import errors
    from app.domain.errors import (
        ConnectionFailed,
        StreamInterrupted,
        TimeoutError_,
        break_kind,
    )

    dropped = StreamInterrupted("cut", "part", cause=ConnectionFailed("reset"))
    stalled = StreamInterrupted("cut", "part", cause=TimeoutError_("nothing for 30 s"))
    assert errors.kind_words(break_kind(dropped)) == "the connection broke"
    assert errors.kind_words(break_kind(stalled)) == "timed out"
    assert break_kind(ConnectionFailed("reset")) == "stream_interrupted"
    assert break_kind(StreamInterrupted("cut", "part")) == "stream_interrupted"


def test_a_notice_in_the_middle_of_a_reply_on_a_terminal_starts_a_line():
    import io

    from app.cli.commands.ask import _ReplyLine

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err, line = Terminal(), Terminal(), _ReplyLine()
    line.wrote("The quick brown fox")
    line.break_for_notice(out, err)
    line.break_for_notice(out, err)  # once
    assert err.getvalue() == "\n" and out.getvalue() == ""
    line.wrote("jumps.\n")
    line.break_for_notice(out, err)
    piped = io.StringIO()  # a reply piped elsewhere: its stream is left exactly as it is
    line.wrote("half a line")
    line.break_for_notice(piped, err)
    assert err.getvalue() == "\n"


def test_a_resumable_download_failure_says_each_front_ends_way_to_resume():
    full = DownloadFailed("The disk holding /m is full: tiny stopped after 10 bytes (kept in "
                          "tiny.gguf.part)", resumable=True, first="free some space")
    assert str(full) == ("The disk holding /m is full: tiny stopped after 10 bytes (kept in "
                         "tiny.gguf.part); free some space and run the same command again to "
                         "resume.")
    assert full.saying("press Retry to resume it") == (
        "The disk holding /m is full: tiny stopped after 10 bytes (kept in tiny.gguf.part). "
        "Free some space, then press Retry to resume it.")
    refused = DownloadFailed("The server answered 404 Not Found for u; nothing was downloaded.")
    assert not refused.resumable and refused.saying("press Retry") == str(refused)
